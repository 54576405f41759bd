"""The Rubin Science Platform's gateway on 127.0.0.1 (``tests/rsp_standin/server.py``).

``rsp_factory`` makes started stand-ins for one test (stopped after it):
SIAv2, DataLink, SODA cutouts and whole files of the DECam triplet, and,
with ``tap=True``, the tests' DaCHS TAP service behind the same gateway.
Each wants the bearer token `TOKEN`, which the fixture puts in
``RSP_TOKEN``.  ``rsp`` is one with TAP and no faults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rsp_standin.server import RspStandin

#: The access token the stand-in accepts.
TOKEN = "gt-zooprep-test.0123456789abcdefABCDEF"


@pytest.fixture
def rsp_factory(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, test_data: Path
) -> Iterator[Callable[..., RspStandin]]:
    """Make started RSP stand-ins (``tap=True`` puts DaCHS behind them)."""
    made: list[RspStandin] = []

    def make(*, tap: bool = False, **kwargs: Any) -> RspStandin:
        upstream = request.getfixturevalue("dachs_tap").url if tap else None
        kwargs.setdefault("token", TOKEN)
        standin = RspStandin(
            test_data / "decam_sfft", tap_upstream=upstream, **kwargs
        ).__enter__()
        made.append(standin)
        monkeypatch.setenv("RSP_TOKEN", TOKEN)
        return standin

    yield make
    for standin in made:
        standin.__exit__(None, None, None)


@pytest.fixture
def rsp(rsp_factory: Callable[..., RspStandin]) -> RspStandin:
    """The RSP stand-in with the tests' DaCHS as its TAP service."""
    return rsp_factory(tap=True)
