"""Placeholder until its owner lands the select stage."""

from typing import Any


def select(*args: Any, **kwargs: Any) -> Any:
    """Not built yet."""
    raise NotImplementedError("select")
