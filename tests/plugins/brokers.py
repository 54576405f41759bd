"""The alert brokers' web APIs on 127.0.0.1 (``tests/brokers/standin.py``).

``broker_standin`` serves Lasair, Fink and ALeRCE for one test, with the
real alerts of ``tests/data`` as its objects; it sets ``LASAIR_TOKEN`` to a
token it accepts and ``ALERCE_CONFIG_PATH`` to a client configuration that
points the alerce client at it.  ``broker_standin_factory`` makes one with
other settings (rate limit, objects, cutout expiry, latency).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokers.standin import BrokerStandin

TOKEN = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def broker_standin_factory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., BrokerStandin]]:
    """Make started stand-ins (stopped at the end of the test)."""
    made: list[BrokerStandin] = []

    def make(**kwargs: Any) -> BrokerStandin:
        kwargs.setdefault("tokens", (TOKEN,))
        standin = BrokerStandin(**kwargs).__enter__()
        made.append(standin)
        config = tmp_path / f"alerce-{len(made)}.json"
        config.write_text(json.dumps(standin.alerce_config()))
        monkeypatch.setenv("ALERCE_CONFIG_PATH", str(config))
        monkeypatch.setenv("LASAIR_TOKEN", TOKEN)
        return standin

    yield make
    for standin in made:
        standin.__exit__(None, None, None)


@pytest.fixture
def broker_standin(
    broker_standin_factory: Callable[..., BrokerStandin],
) -> BrokerStandin:
    """The three brokers on one loopback server, Lasair at 100 calls/hour."""
    return broker_standin_factory()
