"""Placeholder until its owner lands the results stage."""

from typing import Any


def results(*args: Any, **kwargs: Any) -> Any:
    """Not built yet."""
    raise NotImplementedError("results")
