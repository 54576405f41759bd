"""Where pixels come from: FITS path templates, alert stamps, a Butler repository.

`ButlerImages` needs the optional ``butler`` extra (``lsst-daf-butler``); it is
imported lazily, so ``zooprep.images`` imports without it.
"""

from __future__ import annotations

from typing import Any

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
    "read_alert_records",
    "stack_cutouts",
]


def __getattr__(name: str) -> Any:
    if name == "ButlerImages":
        from zooprep.images.butler import ButlerImages

        return ButlerImages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
