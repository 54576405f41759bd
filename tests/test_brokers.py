"""Selecting and rendering sources from the alert brokers Lasair, Fink and ALeRCE.

Each broker's own client (``lasair``, ``alerce``; Fink has none, so plain
``requests``) talks to the loopback stand-in of its web API
(``tests/brokers/standin.py``), whose objects are the real Rubin alerts of
``tests/data`` and whose cutouts are their real stamps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import zooprep
from tests.brokers.standin import BrokerStandin, objects_from_alerts
from tests.classifier_model import series_plot_errors
from tests.plugins.brokers import TOKEN
from zooprep.cli import cli
from zooprep.errors import InputError, RateLimited
from zooprep.run import Run

pytest.importorskip("lasair")

#: The objects of the real alerts that have a history (hundreds of sources).
BIG = (170028485706776685, 170028513894596704, 313893023095193658,
       313897383979122767, 314002971860926640)  # fmt: skip


def _few() -> dict[int, Any]:
    """Broker objects with short histories (fast tests): the newest 3 sources."""
    return objects_from_alerts(history=3)


def _sources(run: Path) -> dict[int, Any]:
    with Run.open(run, lock=False) as r:
        return {s.id: s for s in r.iter_sources()}


def _select(run: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["select", str(run), *args], catch_exceptions=False)


# -- Lasair ---------------------------------------------------------------------


def test_lasair_query_gives_a_source_per_diasource_with_cutouts(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """A query finds the objects; sources older than Lasair keeps cutouts for
    (a year) are not sources, but stay in the light curve."""
    objects = objects_from_alerts()
    newest = max(s["midpointMjdTai"] for o in objects.values() for s in o.sources)
    # "now" a year after 40 days before the newest source: only the sources
    # of those 40 days still have cutouts.
    now = newest + 365 - 40
    standin = broker_standin_factory(objects=objects, now_mjd=now)
    run = tmp_path / "run"
    out = _select(run, "--lasair-query", "nDiaSources > 100",
                  "--lasair-endpoint", standin.lasair_endpoint)  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = _sources(run)
    young = {
        int(s["diaSourceId"])
        for o in objects.values()
        for s in o.sources
        if now - s["midpointMjdTai"] <= 365
    }
    assert set(rows) == young
    assert 0 < len(young) < sum(len(o.sources) for o in objects.values())
    assert {int(s.row["diaObjectId"]) for s in rows.values()} <= set(BIG)
    # one query page and one object() call per object, nothing else
    assert standin.count("/api/query/") == 1
    assert standin.count("/api/object/") == len(BIG)
    # a rerun of the same command asks Lasair nothing: the answers are in the run
    again = _select(run, "--lasair-query", "nDiaSources > 100",
                    "--lasair-endpoint", standin.lasair_endpoint)  # fmt: skip
    assert again.exit_code == 0, again.output
    assert standin.count("/api/") == 1 + len(BIG)
    saved = (run / "zooprep.toml").read_text()
    assert TOKEN not in saved
    assert "lasair" in saved


def test_lasair_watchlist_gives_the_sources_of_the_objects_on_it(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """``--lasair-query watchlist:N``: the objects on watchlist N, not those on
    another list, one source per diaSource with cutouts."""
    objects = _few()
    standin = broker_standin_factory(objects=objects)
    first, second, other = sorted(objects)[:3]
    standin.watch(42, [first, second])
    standin.watch(7, [other])
    run = tmp_path / "run"
    out = _select(run, "--lasair-query", "watchlist:42",
                  "--lasair-endpoint", standin.lasair_endpoint)  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = _sources(run)
    expected = {
        int(s["diaSourceId"]) for i in (first, second) for s in objects[i].sources
    }
    assert set(rows) == expected
    assert {int(s.row["diaObjectId"]) for s in rows.values()} == {first, second}
    # one query and one object() call per object on the list
    assert standin.count("/api/query/") == 1
    assert standin.count("/api/object/") == 2
    assert f"selected {len(expected)} sources from lasair" in out.output
    assert "query watchlist:42" in out.output
    # an empty watchlist gives no source, and says so
    empty = _select(tmp_path / "empty", "--lasair-query", "watchlist:99",
                    "--lasair-endpoint", standin.lasair_endpoint)  # fmt: skip
    assert empty.exit_code == 0, empty.output
    assert not _sources(tmp_path / "empty")
    assert "selected 0 sources from lasair" in empty.output


def test_lasair_sources_render_with_their_cutouts_and_whole_light_curve(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """Render fetches the three FITS cutouts of each source and draws the
    object's whole history (sources and forced photometry) as its light curve."""
    objects = objects_from_alerts(history=40)
    standin = broker_standin_factory(objects=objects)
    run = tmp_path / "run"
    oid = BIG[0]
    zooprep.select(run, lasair_objects=str(oid), per_object="latest",
                   lasair_endpoint=standin.lasair_endpoint)  # fmt: skip
    rows = _sources(run)
    assert len(rows) == 1
    done = zooprep.render(run, lightcurve="flux", lightcurve_json=True)
    assert done.rendered == 1
    assert not done.failed
    (source,) = _sources(run).values()
    assert standin.count("/fits/") == 3
    doc = json.loads((run / source.files[-1]).read_text())
    assert series_plot_errors(doc) == []  # what the classifier draws
    points = sum(len(series["seriesData"]) for series in doc["data"])
    assert points == len(objects[oid].sources) + len(objects[oid].forced)
    assert any("forced" in series["seriesOptions"]["label"] for series in doc["data"])


def test_lasair_rate_limit_is_waited_for_then_the_select_goes_on(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """At 3 calls per 2 s zooprep waits for free calls and never gets a 429."""
    standin = broker_standin_factory(objects=_few(), rate=3, period=2.0)
    run = tmp_path / "run"
    zooprep.select(run, lasair_objects=",".join(map(str, standin.objects)),
                   lasair_rate="3/2", lasair_endpoint=standin.lasair_endpoint)  # fmt: skip
    assert standin.refused == 0
    assert {int(s.row["diaObjectId"]) for s in _sources(run).values()} == set(
        standin.objects
    )


def test_lasair_429_from_a_shared_token_is_waited_out(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """Another program uses the same token: Lasair answers 429 although zooprep
    counted few calls; zooprep waits a slot and asks again."""
    standin = broker_standin_factory(objects=_few(), rate=2, period=1.5)
    run = tmp_path / "run"
    zooprep.select(run, lasair_objects=",".join(map(str, standin.objects)),
                   lasair_rate="100/1.5", lasair_endpoint=standin.lasair_endpoint)  # fmt: skip
    assert standin.refused > 0
    assert len({int(s.row["diaObjectId"]) for s in _sources(run).values()}) == len(
        standin.objects
    )


def test_lasair_rate_limit_stops_cleanly_and_the_same_command_continues(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """With no wait allowed, select stops at the limit (exit 75, the rows so far
    kept); the same command later asks only for the objects it lacks."""
    standin = broker_standin_factory(objects=_few(), rate=3, period=2.0)
    ids = ",".join(map(str, sorted(standin.objects)))
    run = tmp_path / "run"
    args = ["--lasair-objects", ids, "--lasair-rate", "3/2", "--broker-wait", "0",
            "--lasair-endpoint", standin.lasair_endpoint]  # fmt: skip
    out = _select(run, *args)
    assert out.exit_code == 75, out.output
    assert "interrupted:" in out.output
    assert "Lasair's limit of 3 calls per 2 s is used up" in out.output
    assert "run the same command to continue" in out.output
    counts = [len(_sources(run))]
    while out.exit_code == 75 and len(counts) < 10:
        time.sleep(2.2)
        out = _select(run, *args)
        counts.append(len(_sources(run)))
    assert out.exit_code == 0, out.output
    assert counts == sorted(counts)
    assert counts[0] > 0
    assert len(counts) > 2
    # each object was asked for once in all those runs
    assert standin.count("/api/object/") == len(standin.objects)
    assert {int(s.row["diaObjectId"]) for s in _sources(run).values()} == set(
        standin.objects
    )


def test_lasair_token_missing_or_wrong_is_refused_before_starting(
    broker_standin: BrokerStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line, exit 2, no run left half made; the token is never printed."""
    endpoint = ["--lasair-endpoint", broker_standin.lasair_endpoint]
    monkeypatch.delenv("LASAIR_TOKEN")
    out = _select(tmp_path / "a", "--lasair-objects", str(BIG[0]), *endpoint)
    assert out.exit_code == 2
    assert "set LASAIR_TOKEN" in out.output
    monkeypatch.setenv("LASAIR_TOKEN", "wrong-token-123")
    out = _select(tmp_path / "b", "--lasair-objects", str(BIG[0]), *endpoint)
    assert out.exit_code == 2
    assert "Lasair refused the token in LASAIR_TOKEN" in out.output
    assert "wrong-token-123" not in out.output
    assert out.output.count("\n") == 1


def test_lasair_bad_objects_fail_with_their_reason_and_the_rest_carry_on(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """An error in a 200, a 200 that is not JSON, an unknown object and an
    object whose cutouts have all expired: one failed row each, with why."""
    objects = _few()
    standin = broker_standin_factory(objects=objects)
    ok, err, garbage = sorted(objects)[:3]
    standin.faults["error_200"] = {err}
    standin.faults["garbage_200"] = {garbage}
    run = tmp_path / "run"
    ids = f"{ok},{err},{garbage},12345"
    out = _select(run, "--lasair-objects", ids,
                  "--lasair-endpoint", standin.lasair_endpoint)  # fmt: skip
    assert out.exit_code == 1, out.output
    rows = _sources(run)
    reasons = sorted(s.reason for s in rows.values() if s.status == "failed")
    assert len(reasons) == 3
    assert any(f"Cassandra timeout reading object {err}" in r for r in reasons)
    assert any("Cannot parse Json" in r for r in reasons)
    assert any("12345" in r and "404" in r for r in reasons)
    assert {
        int(s.row["diaObjectId"]) for s in rows.values() if s.status == "selected"
    } == {ok}
    # an error answer is not kept: it was asked twice (one retry), then failed
    calls = [p for _, p, _ in standin.calls if p == "/api/object/"]
    assert len(calls) == 1 + 2 + 2 + 1

    expired = broker_standin_factory(objects=objects, now_mjd=70000.0)
    out = _select(tmp_path / "old", "--lasair-objects", str(ok),
                  "--lasair-endpoint", expired.lasair_endpoint)  # fmt: skip
    assert out.exit_code == 1
    (row,) = _sources(tmp_path / "old").values()
    assert row.status == "failed"
    assert "no source with cutouts (Lasair keeps cutouts for a year" in row.reason


def test_lasair_cutout_that_is_not_fits_fails_its_row_only(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """An HTML error page instead of a cutout: that row fails, the others render."""
    objects = _few()
    standin = broker_standin_factory(objects=objects)
    run = tmp_path / "run"
    zooprep.select(run, lasair_objects=",".join(map(str, objects)),
                   lasair_endpoint=standin.lasair_endpoint)  # fmt: skip
    rows = _sources(run)
    bad = sorted(rows)[0]
    standin.faults["html_cutout"] = {bad}
    done = zooprep.render(run)
    assert done.failed == 1
    assert done.rendered == len(rows) - 1
    reason = _sources(run)[bad].reason
    assert "not FITS: an HTML page" in reason
    assert f"/fits/{bad}_cutout" in reason


def test_lasair_select_killed_resumes_without_asking_again(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """kill -9 during a select: the answers kept in the run are not asked for again."""
    objects = _few()
    standin = broker_standin_factory(objects=objects, latency=0.4)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "zooprep", "select", str(run), "--lasair-objects",
           ",".join(map(str, sorted(objects))), "--lasair-endpoint",
           standin.lasair_endpoint]  # fmt: skip
    env = {**os.environ, "LASAIR_TOKEN": TOKEN}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    end = time.monotonic() + 60
    while standin.count("/api/object/") < 2 and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    asked = standin.count("/api/object/")
    assert 0 < asked < len(objects)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # At most the one answer in flight at the kill is asked twice.
    assert standin.count("/api/object/") <= len(objects) + 1
    assert {int(s.row["diaObjectId"]) for s in _sources(run).values()} == set(objects)


def test_object_ids_come_from_a_list_or_a_file(tmp_path: Path) -> None:
    """Comma lists, one id a line with comments, a CSV with a diaObjectId column;
    a bad id names the file and line."""
    from zooprep.readers.brokers import object_ids

    assert object_ids("3, 1,3", "--x") == [3, 1]
    many = ",".join(str(10**17 + i) for i in range(500))  # no file name is that long
    assert len(object_ids(many, "--x")) == 500
    lines = tmp_path / "ids.txt"
    lines.write_text("# my objects\n170028485706776685\n\n313893023095193658  # nice\n")
    assert object_ids(lines, "--x") == [170028485706776685, 313893023095193658]
    table = tmp_path / "ids.csv"
    table.write_text("ra,diaObjectId\n1.0,170028485706776685\n2.0,7\n")
    assert object_ids(table, "--x") == [170028485706776685, 7]
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2e5\n")
    with pytest.raises(InputError, match=r"bad.txt:2: '2e5' is not an object id"):
        object_ids(bad, "--x")


# -- Fink and ALeRCE --------------------------------------------------------------


def test_fink_objects_select_and_render_with_fits_cutouts(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """Fink's sources and forced photometry (r: columns) and its FITS cutouts."""
    objects = _few()
    standin = broker_standin_factory(objects=objects)
    run = tmp_path / "run"
    missing = objects[BIG[1]].sources[-1]["diaSourceId"]
    standin.faults["fink_missing_cutout"] = {int(missing)}
    result = zooprep.select(run, fink_objects=f"{BIG[0]},{BIG[1]}",
                            fink_endpoint=standin.url)  # fmt: skip
    want = {int(s["diaSourceId"]) for o in BIG[:2] for s in objects[o].sources}
    assert set(_sources(run)) == want
    assert result.selected == len(want)
    assert standin.count("/api/v1/sources") == 2
    assert standin.count("/api/v1/fp") == 2
    row = _sources(run)[int(missing)].row
    assert row["f_xm_simbad_otype"] == "Fail"
    done = zooprep.render(run, lightcurve="flux")
    assert done.failed == 1
    assert "not FITS: an empty body" in _sources(run)[int(missing)].reason


def test_alerce_objects_select_and_render_with_gzipped_stamps(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """ALeRCE's detections (measurement_id, band numbers) and gzipped stamps."""
    pytest.importorskip("alerce")
    objects = _few()
    standin = broker_standin_factory(objects=objects)
    run = tmp_path / "run"
    zooprep.select(run, alerce_objects=str(BIG[2]), per_object="latest")
    (row,) = _sources(run).values()
    newest = objects[BIG[2]].sources[-1]
    assert row.id == newest["diaSourceId"]
    assert row.row["band"] == newest["band"]
    done = zooprep.render(run)
    assert done.rendered == 1
    assert standin.count("/stamps_api/stamp") == 3


def test_alerce_missing_stamp_fails_its_row_after_retries(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """ALeRCE answers 500 for a stamp it has not got: tried again, then the row fails."""
    pytest.importorskip("alerce")
    objects = _few()
    broker_standin_factory(objects=objects)
    obj = objects[BIG[3]]
    sid = int(obj.sources[-1]["diaSourceId"])
    run = tmp_path / "run"
    zooprep.select(run, alerce_objects=str(BIG[3]), per_object="latest")
    del obj.stamps[sid]
    done = zooprep.render(run)
    assert done.failed == 1
    assert "HTTP 500 after 4 tries" in _sources(run)[sid].reason


def test_rate_limited_is_an_interruption_with_its_own_exit_status() -> None:
    """Scripts tell "try again later" (75) from a failure (1) or a signal."""
    exc = RateLimited(3, "(Lasair's limit ...)")
    assert exc.exit_code == 75
    assert str(exc).startswith("interrupted: 3 done (Lasair's limit")


def test_the_lasair_example_runs_against_the_stand_in(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """examples/lasair_objects.py: select, render with light curves, dry-run upload."""
    standin = broker_standin_factory(objects=_few())
    script = Path(__file__).resolve().parent.parent / "examples" / "lasair_objects.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "run"),
            f"{BIG[0]},{BIG[4]}",
            "--latest",
            "--endpoint",
            standin.lasair_endpoint,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LASAIR_TOKEN": TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 rendered" in proc.stdout
    assert "nothing uploaded" in proc.stdout


def test_fink_tag_and_alerce_query_find_their_objects(
    broker_standin_factory: Any, tmp_path: Path
) -> None:
    """Each broker's query form: a Fink tag, ALeRCE's query_objects (paged)."""
    pytest.importorskip("alerce")
    objects = _few()
    standin = broker_standin_factory(objects=objects)
    standin.tags["early_sn_candidates"] = {BIG[0], BIG[2]}
    zooprep.select(tmp_path / "fink", fink_tag="early_sn_candidates",
                   fink_endpoint=standin.url, per_object="latest")  # fmt: skip
    found = {int(s.row["diaObjectId"]) for s in _sources(tmp_path / "fink").values()}
    assert found == {BIG[0], BIG[2]}
    with pytest.raises(InputError, match=r"--fink-tag 'nope'.*not a valid tag"):
        zooprep.select(tmp_path / "bad", fink_tag="nope", fink_endpoint=standin.url)

    standin.classes = {o: "SN" for o in BIG[1:4]}
    zooprep.select(tmp_path / "alerce", per_object="latest",
                   alerce_query="classifier=stamp_classifier class_name=SN")  # fmt: skip
    found = {int(s.row["diaObjectId"]) for s in _sources(tmp_path / "alerce").values()}
    assert found == set(BIG[1:4])
    with pytest.raises(InputError, match="Invalid parameter: colour"):
        zooprep.select(tmp_path / "bad2", alerce_query="colour=red")
