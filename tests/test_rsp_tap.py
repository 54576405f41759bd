"""The Rubin Science Platform by TAP: the tests' DaCHS serves DP1 tables.

A DP1 user queries ``dp1.DiaSource`` and friends through pyvo, sync or
async; these tests drive the real DaCHS of ``tests/plugins/dachs.py``.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import zooprep
from tests.plugins.dachs import DachsTap
from tests.plugins.rsp import TOKEN
from tests.rsp_standin.rows import (
    DECAM_FIRST_ID,
    DECAM_PIXELS,
    DECAM_VISIT,
    table_rows,
)
from tests.rsp_standin.server import RspStandin
from zooprep.lightcurves import FORCED
from zooprep.run import Run

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


# -- zooprep select --tap ---------------------------------------------------------


def _ids(run: Path) -> list[int]:
    with Run.open(run, lock=False) as r:
        return sorted(s.id for s in r.iter_sources())


def _expected_ids(test_data: Path, keep: Any = None) -> list[int]:
    rows = table_rows(test_data)["DiaSource"]
    return sorted(int(r["diaSourceId"]) for r in rows if keep is None or keep(r))


def _no_token_in(run: Path) -> None:
    for path in run.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_select_reads_a_whole_dp1_table_in_pages_with_exact_64_bit_ids(
    tmp_path: Path, rsp: RspStandin, test_data: Path
) -> None:
    run = tmp_path / "run"
    result = zooprep.select(
        run,
        tap=rsp.tap_url,
        table="dp1.DiaSource",
        tap_mode="sync",
        tap_page_size=40,
    )
    expected = _expected_ids(test_data)
    assert result.selected == len(expected) == 298
    assert _ids(run) == expected
    assert DECAM_FIRST_ID + len(DECAM_PIXELS) - 1 in _ids(run)  # > 2**62, exact
    pages = [q for q in rsp.queries if q.startswith("SELECT TOP 40 *")]
    assert len(pages) == 298 // 40 + 1
    assert all("ORDER BY diaSourceId" in q for q in pages)
    saved = tomllib.loads((run / "zooprep.toml").read_text())["select"]
    assert (saved["kind"], saved["tap"], saved["table"]) == (
        "tap",
        rsp.tap_url,
        "dp1.DiaSource",
    )
    _no_token_in(run)


def test_tap_filters_select_what_the_same_filters_select_from_the_apdb(
    tmp_path: Path, rsp: RspStandin, apdb_sqlite: Path
) -> None:
    filters: dict[str, Any] = {
        "where": "reliability > 0.01 and not isDipole and psfFlux > 0",
        "band": ["r"],
        "visit": [943296, 982985],
    }
    zooprep.select(tmp_path / "apdb", apdb=f"sqlite:///{apdb_sqlite}", **filters)
    zooprep.select(
        tmp_path / "tap",
        tap=rsp.tap_url,
        table="dp1.DiaSource",
        tap_mode="sync",
        tap_page_size=50,
        **filters,
    )
    assert _ids(tmp_path / "tap") == _ids(tmp_path / "apdb")
    assert 0 < len(_ids(tmp_path / "tap")) < 290
    # booleans are compared on the rows, the rest by the service
    assert all("isDipole" not in q for q in rsp.queries)
    assert any(
        "reliability IS NOT NULL AND reliability > 0.01" in q for q in rsp.queries
    )


def test_limit_and_a_seeded_sample_match_the_apdb_reader(
    tmp_path: Path, rsp: RspStandin, apdb_sqlite: Path
) -> None:
    common: dict[str, Any] = {"visit": [943296, 982985]}
    tap: dict[str, Any] = {
        "tap": rsp.tap_url,
        "table": "dp1.DiaSource",
        "tap_mode": "sync",
        **common,
    }
    apdb = {"apdb": f"sqlite:///{apdb_sqlite}", **common}
    zooprep.select(tmp_path / "t1", limit=7, **tap)
    zooprep.select(tmp_path / "a1", limit=7, **apdb)
    assert _ids(tmp_path / "t1") == _ids(tmp_path / "a1")
    assert len(_ids(tmp_path / "t1")) == 7
    zooprep.select(tmp_path / "t2", sample=20, seed=3, **tap)
    zooprep.select(tmp_path / "a2", sample=20, seed=3, **apdb)
    assert _ids(tmp_path / "t2") == _ids(tmp_path / "a2")


def test_async_uws_jobs_select_the_same_rows_as_sync(
    tmp_path: Path, rsp: RspStandin, test_data: Path
) -> None:
    zooprep.select(
        tmp_path / "run",
        tap=rsp.tap_url,
        table="dp1.DiaSource",
        band=["i"],
        tap_page_size=5,
    )
    assert _ids(tmp_path / "run") == _expected_ids(
        test_data, lambda r: r["band"] == "i"
    )
    assert rsp.requests["/api/tap/async"] >= 2  # one job per page, and more
    _no_token_in(tmp_path / "run")


def test_a_query_runs_once_and_a_rerun_reads_its_kept_result(
    tmp_path: Path, rsp: RspStandin, test_data: Path
) -> None:
    run = tmp_path / "run"
    query = (
        "SELECT diaSourceId, visit, detector, band, ra, dec, psfFlux, isDipole "
        "FROM dp1.DiaSource WHERE band = 'r' AND snr > 10"
    )
    args = {"tap": rsp.tap_url, "query": query, "where": "not isDipole"}
    first = zooprep.select(run, **args)
    asked = list(rsp.queries)
    assert asked.count(query) == 1
    again = zooprep.select(run, **args)
    assert rsp.queries == asked  # nothing asked again
    assert (first.selected, again.selected) == (len(_ids(run)), 0)
    assert _ids(run) == _expected_ids(
        test_data,
        lambda r: r["band"] == "r" and (r["snr"] or 0) > 10 and not r["isDipole"],
    )


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from zooprep.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_a_wrong_token_is_one_line_naming_the_service_not_the_token(
    tmp_path: Path, rsp: RspStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSP_TOKEN", "gt-wrong-token-secret")
    result = _cli(
        "select",
        str(tmp_path / "run"),
        "--tap",
        rsp.tap_url,
        "--table",
        "dp1.DiaSource",
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1] == (
        f"Error: --tap {rsp.tap_url}: the service refused the credentials (401); "
        "set RSP_TOKEN to a valid RSP access token"
    )
    assert "gt-wrong-token-secret" not in result.output


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "SELECT nosuchcolumn FROM dp1.DiaSource",
            "nosuchcolumn",
        ),
        (
            "SELECT ra, dec, band FROM dp1.DiaSource WHERE band = 'i'",
            "has no diaSourceId column; select needs diaSourceId, visit, detector "
            "and ra, dec (or x, y)",
        ),
        (
            "SELECT diaSourceId, visit, detector, ra, dec FROM dp1.DiaSource",
            "the service stopped at its row limit (250 rows)",
        ),
    ],
    ids=["adql-error", "no-id-column", "truncated"],
)
def test_bad_queries_stop_before_anything_is_recorded_with_one_line(
    tmp_path: Path, rsp: RspStandin, query: str, expected: str
) -> None:
    run = tmp_path / "run"
    result = _cli("select", str(run), "--tap", rsp.tap_url, "--query", query)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: --tap {rsp.tap_url}: ")
    assert expected in line
    assert not (run / "state.sqlite").exists() or _ids(run) == []


def test_a_page_larger_than_the_service_limit_is_an_error_not_a_short_run(
    tmp_path: Path, rsp: RspStandin
) -> None:
    run = tmp_path / "run"
    result = _cli(
        "select", str(run), "--tap", rsp.tap_url, "--table", "dp1.DiaSource",
        "--tap-mode", "sync", "--tap-page-size", "1000",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "stopped at its row limit" in result.output
    assert _ids(run) == []


def _paged_select(rsp: Any, run: Path) -> list[str]:
    """``zooprep select RUN --tap …`` of dp1.DiaSource in pages of 10 rows."""
    return [
        sys.executable, "-m", "zooprep", "select", str(run), "--tap", rsp.tap_url,
        "--table", "dp1.DiaSource", "--tap-mode", "sync", "--tap-page-size", "10",
    ]  # fmt: skip


def _signal_after(
    cmd: list[str], rsp: Any, queries: int, signum: int, returncode: int
) -> None:
    """Run ``cmd`` and send it ``signum`` once the service has had ``queries``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(rsp.queries) >= queries:
            proc.send_signal(signum)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == returncode, err


def test_a_stopped_tap_select_continues_after_the_last_recorded_id(
    tmp_path: Path, rsp_factory: Any, test_data: Path
) -> None:
    rsp = rsp_factory(tap=True, latency=0.2)
    run = tmp_path / "run"
    cmd = _paged_select(rsp, run)
    _signal_after(cmd, rsp, 6, signal.SIGTERM, 143)  # the column probe, five pages
    recorded = _ids(run)
    assert 0 < len(recorded) < 298
    asked = len(rsp.queries)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _ids(run) == _expected_ids(test_data)
    first_page = rsp.queries[asked + 1]  # after the TOP 1 look at the columns
    assert f"diaSourceId > {max(recorded)}" in first_page
    assert len(rsp.queries) - asked < 298 // 10 + 2  # the recorded pages not again


def test_a_tap_select_killed_with_sigkill_resumes_with_nothing_lost_or_doubled(
    tmp_path: Path, rsp_factory: Any, test_data: Path
) -> None:
    rsp = rsp_factory(tap=True, latency=0.2)
    run = tmp_path / "run"
    cmd = _paged_select(rsp, run)
    # the column probe and 15 of 30 pages; killed, so not finished
    _signal_after(cmd, rsp, 16, signal.SIGKILL, -signal.SIGKILL)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _ids(run) == _expected_ids(test_data)  # each id once


# -- light curves from TAP ----------------------------------------------------------


def test_tap_light_curves_equal_the_apdb_ones_in_two_queries_per_chunk(
    tmp_path: Path, rsp: RspStandin, apdb_sqlite: Path
) -> None:
    from zooprep.readers.history import (
        ApdbHistory,
        TapHistory,
        history_source,
        light_curves_for,
    )

    run = tmp_path / "run"
    zooprep.select(
        run, tap=rsp.tap_url, table="dp1.DiaSource", visit=[982985], tap_mode="sync"
    )
    with Run.open(run, lock=False) as r:
        rows = [(s.id, s.row) for s in r.iter_sources()]
        history = history_source(r.settings.select)
    assert isinstance(history, TapHistory)
    assert (history.url, history.schema) == (rsp.tap_url, "dp1")
    history.chunk = 40
    asked = len(rsp.queries)
    from_tap = light_curves_for(history, rows)
    from_apdb = light_curves_for(ApdbHistory(f"sqlite:///{apdb_sqlite}"), rows)
    chunks = -(-len({row["diaObjectId"] for _, row in rows}) // 40)
    assert len(rsp.queries) - asked == history.queries == 2 * chunks
    assert any("JOIN dp1.Visit" in q for q in rsp.queries[asked:])
    assert from_tap.keys() == from_apdb.keys()
    forced = 0
    for sid, curve in from_tap.items():
        want = from_apdb[sid]
        assert not isinstance(curve, str), curve
        assert not isinstance(want, str)
        order, other = (
            np.lexsort((curve.flux, curve.mjd)),
            np.lexsort((want.flux, want.mjd)),
        )
        np.testing.assert_allclose(curve.mjd[order], want.mjd[other])
        np.testing.assert_allclose(curve.flux[order], want.flux[other], rtol=1e-6)
        assert list(curve.kind[order]) == list(want.kind[other])
        forced += int((curve.kind == FORCED).sum())
    assert forced > 0


def test_render_draws_light_curves_of_a_tap_run(
    tmp_path: Path, rsp: RspStandin
) -> None:
    run = tmp_path / "run"
    zooprep.select(
        run,
        tap=rsp.tap_url,
        table="dp1.DiaSource",
        visit=[DECAM_VISIT],
        tap_mode="sync",
    )
    result = zooprep.render(run, sizes=[30], jobs=1, lightcurve="flux")
    assert (result.rendered, result.failed) == (8, 0)
    with Run.open(run, lock=False) as r:
        files = [f for s in r.iter_sources() for f in s.files]
    curves = [f for f in files if f.endswith("_lightcurve.png")]
    assert len(curves) == 8, files
    assert all((run / f).stat().st_size > 0 for f in curves)


def test_the_dp1_example_runs_against_the_rsp_stand_in(
    tmp_path: Path, rsp: RspStandin
) -> None:
    """examples/rsp_dp1.py: select by TAP, render by SODA, manifest, rehearsed upload."""
    script = Path(__file__).resolve().parent.parent / "examples" / "rsp_dp1.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "run"),
            "--tap",
            rsp.tap_url,
            "--visit",
            str(DECAM_VISIT),
            "--limit",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RSP_TOKEN": TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert "5 rendered" in proc.stdout
    assert "nothing uploaded" in proc.stdout
    _no_token_in(tmp_path / "run")


def test_a_history_chunk_over_the_row_limit_is_asked_again_in_halves(
    tmp_path: Path, rsp: RspStandin, apdb_sqlite: Path
) -> None:
    from zooprep.readers.history import ApdbHistory, history_source, light_curves_for

    run = tmp_path / "run"
    zooprep.select(
        run, tap=rsp.tap_url, table="dp1.DiaSource", visit=[943296, 982985],
        tap_mode="sync", tap_page_size=100,
    )  # fmt: skip
    with Run.open(run, lock=False) as r:
        rows = [(s.id, s.row) for s in r.iter_sources()]
        history = history_source(r.settings.select)
    # 376 forced sources and 290 sources in one chunk: over the limit of 250
    from_tap = light_curves_for(history, rows)
    from_apdb = light_curves_for(ApdbHistory(f"sqlite:///{apdb_sqlite}"), rows)
    assert history.queries > 2
    for sid, curve in from_tap.items():
        want = from_apdb[sid]
        assert not isinstance(curve, str), curve
        assert not isinstance(want, str)
        assert sorted(curve.mjd.tolist()) == pytest.approx(sorted(want.mjd.tolist()))
