"""Fixtures shared by the whole test suite.

Fixtures that start real services live in ``tests/plugins/`` (one module per
service) and are loaded here, so each stays small.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.plugins.postgres",
    "tests.plugins.panoptes",
    "tests.plugins.chromium",
    "tests.plugins.kafka",
    "tests.plugins.brokers",
    "tests.plugins.dachs",
    "tests.plugins.rsp",
]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The real test data kept in the repository (``tests/data``).

    Each folder's README gives the files' origin and licence.
    """
    # readers resolve links; compare like with like
    return (Path(__file__).parent / "data").resolve()


@pytest.fixture(scope="session")
def apdb_sqlite(test_data: Path) -> Path:
    """The real ci_dc2 Rubin APDB (SQLite, 290 DiaSources)."""
    return test_data / "apdb" / "ci_dc2_apdb.sqlite3"


@pytest.fixture(autouse=True)
def _no_real_zooniverse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see real credentials and never reach the real Zooniverse."""
    for name in (
        "PANOPTES_USERNAME",
        "PANOPTES_PASSWORD",
        "PANOPTES_CLIENT_ID",
        "PANOPTES_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
