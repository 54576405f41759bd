"""Placeholder until its owner lands the preview stage."""

from typing import Any


def preview(*args: Any, **kwargs: Any) -> Any:
    """Not built yet."""
    raise NotImplementedError("preview")
