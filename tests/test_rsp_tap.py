"""The Rubin Science Platform by TAP: the tests' DaCHS serves DP1 tables.

A DP1 user queries ``dp1.DiaSource`` and friends through pyvo, sync or
async; these tests drive the real DaCHS of ``tests/plugins/dachs.py``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from tests.plugins.dachs import DachsTap
from tests.rsp_standin.rows import DECAM_FIRST_ID, DECAM_PIXELS, DECAM_VISIT

pyvo = pytest.importorskip("pyvo")

pytestmark = pytest.mark.tap


@pytest.fixture
def service(dachs_tap: DachsTap) -> Iterator[Any]:
    """pyvo's TAPService on the tests' DaCHS, its HTTP session closed after."""
    import requests

    with requests.Session() as session:
        yield pyvo.dal.TAPService(dachs_tap.url, session=session)
    gc.collect()  # an unclosed connection warns here, in the test that made it


def test_a_dp1_user_reads_diasources_through_pyvo_sync_with_exact_ids(
    dachs_tap: DachsTap, service: Any
) -> None:
    result = service.run_sync(
        "SELECT diaSourceId, visit, band, ra, dec FROM dp1.DiaSource "
        f"WHERE visit = {DECAM_VISIT} ORDER BY diaSourceId"
    )
    table = result.to_table()
    assert [int(i) for i in table["diaSourceId"]] == [
        DECAM_FIRST_ID + k for k in range(len(DECAM_PIXELS))
    ]
    assert set(table["band"]) == {"i"}
    assert result.query_status == "OK"


def test_an_async_join_gives_forced_photometry_times_from_visit(
    dachs_tap: DachsTap, service: Any
) -> None:
    job = service.submit_job(
        "SELECT f.diaObjectId, f.psfDiffFlux, v.expMidptMJD "
        "FROM dp1.ForcedSourceOnDiaObject AS f "
        "JOIN dp1.Visit AS v ON f.visit = v.visit ORDER BY f.diaObjectId",
        maxrec=dachs_tap.hard_limit,
    )
    try:
        job.run()
        job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
        assert job.phase == "COMPLETED"
        table = job.fetch_result().to_table()
    finally:
        job.delete()
    assert len(table) == dachs_tap.hard_limit  # 376 forced sources: the limit
    assert set(round(float(t), 3) for t in table["expMidptMJD"]) <= {
        60961.233,
        61028.123,
    }


def test_the_service_says_overflow_when_it_stops_at_its_row_limit(
    dachs_tap: DachsTap, service: Any
) -> None:
    assert service.hardlimit == dachs_tap.hard_limit
    result = service.run_sync(
        "SELECT diaSourceId FROM dp1.DiaSource", maxrec=dachs_tap.hard_limit
    )
    assert dachs_tap.counts["DiaSource"] > dachs_tap.hard_limit
    assert len(result) == dachs_tap.hard_limit
    assert result.query_status == "OVERFLOW"
