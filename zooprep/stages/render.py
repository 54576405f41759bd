"""Placeholder until its owner lands the render stage."""

from typing import Any


def render(*args: Any, **kwargs: Any) -> Any:
    """Not built yet."""
    raise NotImplementedError("render")
