"""The exceptions zooprep raises, all under one base class.

::

    ZooprepError                 anything zooprep reports to a user
    ├── InputError               bad input: a file, a column, a flag (CLI exit 2)
    │   └── ManifestEditError    a reviewed manifest damaged ids or file names
    ├── RunError                 the run directory cannot be used as asked (exit 2)
    │   ├── RunLocked            another process holds the run directory
    │   ├── SettingsMismatch     a stage re-run with settings that contradict the run
    │   └── StorageError         the run directory cannot be written: disk full,
    │                            quota, read-only (what is saved stays consistent)
    ├── Interrupted              SIGTERM, SIGINT or SIGHUP stopped a stage cleanly
    │   │                        (exit 128 + the signal's number)
    │   └── RateLimited          a broker's rate limit stopped it cleanly (exit 75)
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
    "Interrupted",
    "ManifestEditError",
    "PanoptesError",
    "QuotaError",
    "RateLimited",
    "RunError",
    "RunLocked",
    "SettingsMismatch",
    "StorageError",
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


class StorageError(RunError):
    """The run directory (or an output file) cannot be written.

    A full disk, an exhausted quota, a read-only file system.  Everything
    recorded before the error is kept and consistent: free space (or make the
    directory writable) and run the same command again.

    Parameters
    ----------
    message : str
        What failed, naming the path, what was saved and what to do.
    path : str
        The file or directory that could not be written.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class Interrupted(ZooprepError):
    """A stage stopped after SIGTERM, SIGINT or SIGHUP, with its work recorded.

    Parameters
    ----------
    signum : int
        The signal received; ``exit_code`` is ``128 + signum`` as a shell
        reports a process ended by that signal.
    done : int
        Rows finished (and recorded) by this call before it stopped.
    what : str
        Optional note after the count, e.g. ``(manifest not written)``.
    """

    def __init__(self, signum: int, done: int, what: str = "") -> None:
        note = f" {what}" if what else ""
        super().__init__(
            f"interrupted: {done} done{note}; run the same command to continue"
        )
        self.signum = signum
        self.done = done
        self.exit_code = 128 + signum


class RateLimited(Interrupted):
    """A broker's rate limit stopped a stage cleanly, with its work recorded.

    Raised instead of waiting longer than allowed for the broker's next free
    call.  ``exit_code`` is 75 (``EX_TEMPFAIL``: try again later).

    Parameters
    ----------
    done : int
        Rows finished (and recorded) before it stopped.
    what : str
        Which limit, and when the next call is allowed.
    """

    def __init__(self, done: int, what: str) -> None:
        super().__init__(0, done, what)
        self.what = what
        self.exit_code = 75


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
