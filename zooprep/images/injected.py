"""Images with fakes in them: the science and difference images as render sees them.

``zooprep fakes`` draws every fake of an image once, photon noise included,
and keeps the counts it adds as small stamps (`Injection`, saved in
``RUN/fakes/<n>.npz``).  `InjectedImage` wraps a `~zooprep.images.fitsimage.FitsImage`
so that every section read from it has those stamps added: every cutout
from that image, of a fake or of a real source beside it, shows the same
fakes, as an image the pipeline had injected would.  Only the science and
difference images are wrapped; the template is read as it is.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.files import atomic_write
from zooprep.images.fitsimage import FitsImage

__all__ = [
    "PLANS",
    "InjectedImage",
    "Injection",
    "inject",
    "load_injection",
    "load_plans",
    "plan_key",
    "save_injection",
]

#: The record of a run's fakes, image by image, relative to the run
#: (``zooprep fakes`` writes it; its ``plan`` ``n`` is ``fakes/<n>.npz``).
PLANS = "fakes/plans.json"


@dataclass(frozen=True)
class Injection:
    """The counts the fakes of one image add, and which files they go into.

    Attributes
    ----------
    science, difference : str
        The two files (as the image source names them) the stamps are added to.
    corners : numpy.ndarray
        ``(n, 2)`` integers: image pixel ``(y0, x0)`` of each stamp's first pixel.
    stamps : numpy.ndarray
        ``(n, k, k)`` float32: the counts each fake adds.
    """

    science: str
    difference: str
    corners: np.ndarray = field(repr=False)
    stamps: np.ndarray = field(repr=False)

    def add_to(self, out: np.ndarray, ys: slice, xs: slice) -> None:
        """Add the stamps overlapping image section ``[ys, xs]`` to ``out`` (in place)."""
        y_lo, y_hi = ys.start or 0, ys.stop
        x_lo, x_hi = xs.start or 0, xs.stop
        k = self.stamps.shape[1] if len(self.stamps) else 0
        for (y0, x0), stamp in zip(self.corners, self.stamps, strict=True):
            a, b = max(int(y0), y_lo), min(int(y0) + k, y_hi)
            c, d = max(int(x0), x_lo), min(int(x0) + k, x_hi)
            if a >= b or c >= d:
                continue
            out[a - y_lo : b - y_lo, c - x_lo : d - x_lo] += stamp[
                a - y0 : b - y0, c - x0 : d - x0
            ]


class InjectedImage:
    """A `FitsImage` whose reads carry the fakes of an `Injection`.

    Everything but `read` is the wrapped image's (path, header, WCS, origin,
    shape, pixels).
    """

    def __init__(self, image: FitsImage, injection: Injection) -> None:
        self._image = image
        self._injection = injection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._image, name)

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        """The pixels ``[ys, xs]`` (float32, NaN for blanks) with the fakes added."""
        out = self._image.read(ys, xs)
        self._injection.add_to(out, ys, xs)
        return out


def inject(
    images: Sequence[FitsImage], injection: Injection | None
) -> list[FitsImage | InjectedImage]:
    """``(science, template, difference)`` with the fakes added to the first and last.

    Raises
    ------
    ValueError
        The images are not the ones the fakes were drawn for.
    """
    science, template, difference = images
    if injection is None:
        return [science, template, difference]
    for image, planned, role in (
        (science, injection.science, "science"),
        (difference, injection.difference, "difference"),
    ):
        if os.fspath(image.path) != planned:
            raise ValueError(
                f"the fakes were drawn for {role} {planned}, not {image.path}; "
                "render with the images 'zooprep fakes' used"
            )
    return [
        InjectedImage(science, injection),
        template,
        InjectedImage(difference, injection),
    ]


def save_injection(path: Path, injection: Injection) -> None:
    """Write an `Injection` to ``path`` (``.npz``, atomically)."""
    buf = io.BytesIO()
    np.savez(
        buf,
        science=np.array(injection.science),
        difference=np.array(injection.difference),
        corners=np.asarray(injection.corners, dtype=np.int64),
        stamps=np.asarray(injection.stamps, dtype=np.float32),
    )
    atomic_write(path, buf.getvalue())


def load_injection(path: Path) -> Injection:
    """Read an `Injection` written by `save_injection`."""
    with np.load(path, allow_pickle=False) as data:
        return Injection(
            science=str(data["science"]),
            difference=str(data["difference"]),
            corners=np.asarray(data["corners"], dtype=np.int64),
            stamps=np.asarray(data["stamps"], dtype=np.float32),
        )


def plan_key(key: Any) -> str:
    """An image source's group key as text (how an image's plan is found again)."""
    if isinstance(key, tuple | list):
        return json.dumps([None if k is None else str(k) for k in key])
    return json.dumps(str(key))


def load_plans(run_path: Path) -> dict[str, Path]:
    """The injection file of each image of a run, by `plan_key` (empty without fakes)."""
    path = Path(run_path) / PLANS
    if not path.is_file():
        return {}
    records = json.loads(path.read_text(encoding="utf-8")).get("images", [])
    return {
        str(rec["key"]): Path(run_path) / "fakes" / f"{rec['plan']}.npz"
        for rec in records
    }
