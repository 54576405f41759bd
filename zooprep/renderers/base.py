"""The interface of every renderer: cutouts (and the source's row) in, PNG bytes out.

A renderer of your own plugs in as ``zooprep.render(run, renderer=MyRenderer())``:
it needs both methods (``render`` for the triplet, ``render_frames`` for
``--layout frames`` and ``both``), must be picklable (it is sent to the
worker processes) and should give byte-identical PNGs for identical input.
"""

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
        """Return the PNG file's bytes for one source (its triplet)."""
        ...

    def render_frames(self, cutouts: Cutouts, row: Mapping[str, Any]) -> list[bytes]:
        """Return one PNG per panel: template, science, difference of each size."""
        ...
