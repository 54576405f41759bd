"""The exceptions zooprep raises, all under one base class.

::

    ZooprepError                 anything zooprep reports to a user
    ├── InputError               bad input: a file, a column, a flag (CLI exit 2)
    │   └── ManifestEditError    a reviewed manifest damaged ids or file names
    ├── RunError                 the run directory cannot be used as asked (exit 2)
    │   ├── RunLocked            another process holds the run directory
    │   └── SettingsMismatch     a stage re-run with settings that contradict the run
    └── UploadError              talking to Zooniverse failed (exit 1)
        ├── AuthError            no or bad credentials, expired session
        ├── QuotaError           the upload would exceed the user's subject quota
        └── PanoptesError        the Panoptes API answered an error (has ``status``)

``str(exc)`` is always one line that names the file, row or source id concerned
and never contains a credential.  Failures of single rows (a source off the
image, an all-NaN cutout, one failed upload) are not raised: they are recorded
in the run state with their reason, and the stage carries on.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "InputError",
    "ManifestEditError",
    "PanoptesError",
    "QuotaError",
    "RunError",
    "RunLocked",
    "SettingsMismatch",
    "UploadError",
    "ZooprepError",
]


class ZooprepError(Exception):
    """Base class of every error zooprep reports."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep messages to one line, whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class InputError(ZooprepError):
    """Bad input: a missing file or column, a corrupt table, a bad flag value."""


class ManifestEditError(InputError):
    """A reviewed ``manifest.csv`` came back with damaged ids or file names.

    Parameters
    ----------
    message : str
        What is wrong, naming the rows.
    rows : list of int
        1-based line numbers of the offending rows in the CSV file.
    """

    def __init__(self, message: str, rows: list[int] | None = None) -> None:
        super().__init__(message)
        self.rows = list(rows or [])


class RunError(ZooprepError):
    """The run directory cannot be used as asked."""


class RunLocked(RunError):
    """Another process is working on the same run directory."""


class SettingsMismatch(RunError):
    """A stage was re-run with settings that contradict those of the run."""


class UploadError(ZooprepError):
    """Talking to Zooniverse failed."""

    exit_code = 1


class AuthError(UploadError):
    """Credentials are missing, wrong or expired."""

    exit_code = 2


class QuotaError(UploadError):
    """The upload does not fit in the user's remaining subject quota."""

    exit_code = 2


class PanoptesError(UploadError):
    """The Panoptes API answered with an error.

    Parameters
    ----------
    message : str
        What was attempted and what the server said.
    status : int or None
        The HTTP status, when there was a response.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
