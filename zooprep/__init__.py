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

import sys
import types
from typing import TYPE_CHECKING, Any

from zooprep import errors
from zooprep.errors import (
    AuthError,
    InputError,
    Interrupted,
    ManifestEditError,
    PanoptesError,
    QuotaError,
    RunError,
    RunLocked,
    SettingsMismatch,
    StorageError,
    UploadError,
    ZooprepError,
)
from zooprep.options import (
    FakesOptions,
    ImageOptions,
    ManifestOptions,
    RenderOptions,
    ResultsOptions,
    SelectOptions,
    UploadOptions,
)
from zooprep.run import Run

if TYPE_CHECKING:
    from zooprep.demo import demo
    from zooprep.preview import preview
    from zooprep.stages.fakes import fakes
    from zooprep.stages.manifest import manifest
    from zooprep.stages.render import render
    from zooprep.stages.results import results
    from zooprep.stages.select import select
    from zooprep.stages.upload import upload
    from zooprep.status import status

#: The stage functions and the modules that define them.  They are imported
#: on first use (PEP 562), so that ``import zooprep`` and the ``zooprep``
#: command start without loading astropy, matplotlib or the upload stack.
_LAZY = {
    "demo": "zooprep.demo",
    "fakes": "zooprep.stages.fakes",
    "manifest": "zooprep.stages.manifest",
    "preview": "zooprep.preview",
    "render": "zooprep.stages.render",
    "results": "zooprep.stages.results",
    "select": "zooprep.stages.select",
    "status": "zooprep.status",
    "upload": "zooprep.stages.upload",
}


def __getattr__(name: str) -> Any:
    """Import a stage function the first time it is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zooprep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``zooprep.status`` stays the function after ``import zooprep.status``.

    Importing a submodule binds it on its package; ``status``, ``preview``
    and ``demo`` share their module's name, so that binding would hide the
    function until `__getattr__` is asked for it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "FakesOptions",
    "ImageOptions",
    "InputError",
    "Interrupted",
    "ManifestEditError",
    "ManifestOptions",
    "PanoptesError",
    "QuotaError",
    "RenderOptions",
    "ResultsOptions",
    "Run",
    "RunError",
    "RunLocked",
    "SelectOptions",
    "SettingsMismatch",
    "StorageError",
    "UploadError",
    "UploadOptions",
    "ZooprepError",
    "__version__",
    "demo",
    "errors",
    "fakes",
    "manifest",
    "preview",
    "render",
    "results",
    "select",
    "status",
    "upload",
]
