"""Placeholder until its owner lands the demo stage."""

from typing import Any


def demo(*args: Any, **kwargs: Any) -> Any:
    """Not built yet."""
    raise NotImplementedError("demo")
