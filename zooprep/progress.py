"""Progress reporting: a `Reporter` that stages call, and does nothing by default.

Library code never prints; the CLI passes a reporter that draws a rich
progress bar (or plain log lines when stderr is not a terminal).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullReporter", "Reporter"]


class Reporter(Protocol):
    """What a stage tells about its progress."""

    def start(self, stage: str, total: int | None) -> None:
        """A stage begins ``total`` units of work (None when unknown)."""
        ...

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """``n`` more units are done, ``failed`` of them failed."""
        ...

    def finish(self) -> None:
        """The stage is over."""
        ...


class NullReporter:
    """A reporter that reports nothing (the library default)."""

    def start(self, stage: str, total: int | None) -> None:
        """Do nothing."""

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """Do nothing."""

    def finish(self) -> None:
        """Do nothing."""
