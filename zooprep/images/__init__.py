"""Where pixels come from: FITS path templates, alert stamps, a Butler repository.

`ButlerImages` needs the optional ``butler`` extra (``lsst-daf-butler``); it is
imported lazily, so ``zooprep.images`` imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from zooprep.errors import InputError
from zooprep.images.base import Cutouts, Failed, ImageSource, Triplet
from zooprep.images.cutout import stack_cutouts
from zooprep.images.fits import FitsImages
from zooprep.images.stamps import AlertStamps, read_alert_records

__all__ = [
    "AlertStamps",
    "ButlerImages",
    "Cutouts",
    "Failed",
    "FitsImages",
    "ImageSource",
    "Triplet",
    "absolute",
    "from_settings",
    "read_alert_records",
    "stack_cutouts",
]


def from_settings(settings: Mapping[str, Any], kind: str | None) -> ImageSource:
    """The image source ``[render.images]`` describes, or the run implies.

    ``settings`` holds the command line's words: ``science``, ``template``,
    ``difference`` (path templates) and ``position``; or ``butler``,
    ``collections`` and the ``*_type`` dataset names.  An alert run
    (``kind == "alerts"``) without them uses its packets' stamps.
    """
    if settings.get("butler"):
        from zooprep.images.butler import ButlerImages

        names = {
            "science_type": "science",
            "template_type": "template",
            "difference_type": "difference",
            "position": "position",
        }
        kwargs = {names[k]: settings[k] for k in names if k in settings}
        return ButlerImages(
            settings["butler"], settings.get("collections") or [], **kwargs
        )
    paths = [settings.get(k) for k in ("science", "template", "difference")]
    if any(paths):
        if not all(paths):
            raise InputError("give all three of --science, --template and --difference")
        science, template, difference = (str(p) for p in paths)
        return FitsImages(
            science, template, difference, position=settings.get("position", "auto")
        )
    if kind == "alerts":
        return AlertStamps()
    raise InputError(
        "no images given: use --science/--template/--difference path "
        "templates or --butler REPO"
    )


def absolute(images: Mapping[str, Any]) -> dict[str, Any]:
    """Anchor relative path templates at the current directory, so a resumed run finds them."""
    out = dict(images)
    for key in ("science", "template", "difference", "butler"):
        value = out.get(key)
        if isinstance(value, str) and "://" not in value and not os.path.isabs(value):
            out[key] = os.path.join(os.getcwd(), value)
    return out


def __getattr__(name: str) -> Any:
    if name == "ButlerImages":
        from zooprep.images.butler import ButlerImages

        return ButlerImages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
