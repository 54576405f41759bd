"""The interface of every renderer: cutouts (and the source's row) in, PNG bytes out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from zooprep.images.base import Cutouts

__all__ = ["Renderer"]


@runtime_checkable
class Renderer(Protocol):
    """Turns one source's cutouts into the picture volunteers see.

    Implementations are picklable (sent to worker processes) and deterministic:
    the same input gives byte-identical PNG files.
    """

    def render(self, cutouts: Cutouts, row: Mapping[str, Any]) -> bytes:
        """Return the PNG file's bytes for one source."""
        ...
