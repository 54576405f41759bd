"""Where pixels come from: FITS path templates, alert stamps, a Butler repository.

`ButlerImages` needs the optional ``butler`` extra (``lsst-daf-butler``); it is
imported lazily, so ``zooprep.images`` imports without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from zooprep.errors import InputError
from zooprep.images.base import Cutouts, Failed, ImageSource, Triplet
from zooprep.images.cutout import stack_cutouts
from zooprep.images.fits import FitsImages
from zooprep.images.stamps import AlertStamps, read_alert_records
from zooprep.vocabulary import BUTLER_DATASET_TYPES

if TYPE_CHECKING:
    from zooprep.options import ImageOptions, RenderOptions, SelectOptions

__all__ = [
    "AlertStamps",
    "ButlerImages",
    "Cutouts",
    "Failed",
    "FitsImages",
    "ImageSource",
    "Triplet",
    "absolute",
    "from_options",
    "read_alert_records",
    "stack_cutouts",
]


def __getattr__(name: str) -> Any:
    if name == "ButlerImages":
        from zooprep.images.butler import ButlerImages

        return ButlerImages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_options(
    options: RenderOptions, kind: str | None, select: SelectOptions | None = None
) -> ImageSource:
    """The image source the options describe, or the one the run's source implies.

    Render and fakes build the run's images the same way; ``select`` (the
    run's saved select settings) gives a TAP run's service, next to which its
    SIA is.
    """
    images = options.images
    if images.soda or (kind == "tap" and not images.templates() and not images.butler):
        from zooprep.images.soda import SodaImages, default_sia_url

        url = images.soda
        if not url:
            if select is None or not select.tap:
                raise InputError("a TAP run needs --soda SIA_URL to find its images")
            url = default_sia_url(select.tap, select.table or select.query)
        return SodaImages(url)
    if images.butler:
        from zooprep.images.butler import ButlerImages

        return ButlerImages(
            images.butler,
            list(images.collections or ()),
            science=images.science_type or BUTLER_DATASET_TYPES["science"],
            template=images.template_type or BUTLER_DATASET_TYPES["template"],
            difference=images.difference_type or BUTLER_DATASET_TYPES["difference"],
            position=options.position,
        )
    templates = images.templates()
    if templates is not None:
        return FitsImages(*templates, position=options.position)
    if kind == "alerts":
        return AlertStamps()
    if kind in ("lasair", "fink", "alerce"):
        from zooprep.images.brokers import BrokerCutouts

        return BrokerCutouts()
    if kind == "kafka":
        from zooprep.images.brokers import StreamImages

        return StreamImages()
    raise InputError(
        "no images given: use --science/--template/--difference path "
        "templates or --butler REPO"
    )


def absolute(images: ImageOptions) -> ImageOptions:
    """Anchor relative path templates at the current directory, so a resumed run finds them."""
    changes = {}
    for key in ("science", "template", "difference", "butler"):
        value = getattr(images, key)
        if isinstance(value, str) and "://" not in value and not os.path.isabs(value):
            changes[key] = os.path.join(os.getcwd(), value)
    return images.merge(changes) if changes else images
