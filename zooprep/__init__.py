"""zooprep: put difference-imaging sources in front of Zooniverse volunteers.

The four stages, each a function of the same name as its command::

    import zooprep

    zooprep.select("run1", apdb="sqlite:///apdb.sqlite3", limit=100)
    zooprep.render("run1", images={"science": "...", "template": "...",
                                   "difference": "..."})
    zooprep.manifest("run1")
    zooprep.upload("run1", zooprep.UploadOptions(project="1234", subject_set="b1"))

Every stage keeps its progress in the run directory, so it can be interrupted
and called again.
"""

from zooprep import errors
from zooprep.demo import demo
from zooprep.errors import (
    AuthError,
    InputError,
    ManifestEditError,
    PanoptesError,
    QuotaError,
    RunError,
    RunLocked,
    SettingsMismatch,
    UploadError,
    ZooprepError,
)
from zooprep.options import RenderOptions, SelectOptions, UploadOptions
from zooprep.preview import preview
from zooprep.run import Run
from zooprep.stages.manifest import manifest
from zooprep.stages.render import render
from zooprep.stages.results import results
from zooprep.stages.select import select
from zooprep.stages.upload import upload
from zooprep.status import status

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "InputError",
    "ManifestEditError",
    "PanoptesError",
    "QuotaError",
    "RenderOptions",
    "Run",
    "RunError",
    "RunLocked",
    "SelectOptions",
    "SettingsMismatch",
    "UploadError",
    "UploadOptions",
    "ZooprepError",
    "__version__",
    "demo",
    "errors",
    "manifest",
    "preview",
    "render",
    "results",
    "select",
    "status",
    "upload",
]
