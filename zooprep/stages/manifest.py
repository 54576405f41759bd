"""Placeholder until its owner lands the manifest stage."""

from typing import Any


def manifest(*args: Any, **kwargs: Any) -> Any:
    """Not built yet."""
    raise NotImplementedError("manifest")
