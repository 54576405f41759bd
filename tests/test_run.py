"""The run directory as crash-safe, exclusive state."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import zooprep
from tests.killing import kill_at_random, timed_run
from zooprep.errors import InputError, RunError, RunLocked
from zooprep.options import RenderOptions, UploadOptions
from zooprep.run import FORMAT_VERSION, Run

BIG_ID = 506428274000265570  # a real ci_dc2 diaSourceId: above 2**53


def test_create_and_reopen_keeps_64bit_ids_exact(tmp_path: Path) -> None:
    with Run.create(tmp_path / "run") as run:
        res = run.add_sources(
            [
                {"diaSourceId": BIG_ID, "ra": 55.7},
                {"diaSourceId": BIG_ID + 1, "ra": float("nan")},
            ],
            id_column="diaSourceId",
        )
        assert res.added == 2
    with Run.open(tmp_path / "run") as run:
        rows = list(run.iter_sources())
    assert [s.id for s in rows] == [BIG_ID, BIG_ID + 1]
    assert rows[0].row["diaSourceId"] == BIG_ID
    assert rows[1].row["ra"] is None  # NaN is stored as missing, not as garbage


def test_float_ids_that_lost_digits_are_refused(tmp_path: Path) -> None:
    with (
        Run.create(tmp_path / "run") as run,
        pytest.raises(InputError, match=r"row 1: .*float and may have lost digits"),
    ):
        run.add_sources([{"diaSourceId": float(BIG_ID)}], id_column="diaSourceId")


def test_duplicated_ids_are_reported_and_added_once(tmp_path: Path) -> None:
    with Run.create(tmp_path / "run") as run:
        res = run.add_sources([{"id": 1}, {"id": 2}, {"id": 1}], id_column="id")
        assert (res.added, res.duplicates) == (2, [1])
        again = run.add_sources([{"id": 2}, {"id": 3}], id_column="id")
        assert (again.added, again.already_in_run) == (1, 1)
        assert len(run) == 3


def test_second_process_on_the_same_run_is_refused_with_the_holders_pid(
    tmp_path: Path,
) -> None:
    Run.create(tmp_path / "run").close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from zooprep.run import Run
            with Run.open({str(tmp_path / "run")!r}):
                print('locked', flush=True)
                time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=rf"in use by process {holder.pid}"):
            Run.open(tmp_path / "run")
        # Read-only users (status, preview) are still welcome.
        with Run.open(tmp_path / "run", lock=False) as run:
            assert len(run) == 0
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # A killed holder leaves no stale lock behind.
    Run.open(tmp_path / "run").close()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no run directory at"),
        (
            lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),
            "not a zooprep run directory",
        ),
        (
            lambda p: (p.mkdir(), (p / "state.sqlite").write_bytes(b"garbage" * 200)),
            "state.sqlite is unreadable",
        ),
    ],
    ids=["missing", "foreign", "corrupt"],
)
def test_bad_run_directories_get_one_clear_line_and_are_left_alone(
    tmp_path: Path, setup, message: str
) -> None:
    path = tmp_path / "run"
    setup(path)
    before = (
        sorted((f.name, f.read_bytes()) for f in path.iterdir())
        if path.exists()
        else None
    )
    with pytest.raises(RunError, match=message) as info:
        Run.open(path)
    assert "\n" not in str(info.value)
    after = (
        sorted((f.name, f.read_bytes()) for f in path.iterdir() if f.name != ".lock")
        if path.exists()
        else None
    )
    assert after == before


def test_creating_a_run_in_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(RunError, match="not empty and is not a zooprep run"):
        Run.create(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def _empty_state(path: Path, statements: str) -> None:
    db = sqlite3.connect(path / "state.sqlite")
    db.executescript(statements)
    db.close()


@pytest.mark.parametrize(
    "leftovers",
    [
        lambda p: (p / ".lock").write_text("12345"),
        lambda p: (
            (p / ".lock").write_text("12345"),
            (p / ".state.sqlite.12345.tmp").write_bytes(b"SQLite format 3\x00"),
        ),
        # killed inside SQLite's first transaction: its rollback journal too
        lambda p: (
            (p / ".lock").write_text("12345"),
            (p / ".state.sqlite.12345.tmp").write_bytes(b"SQLite format 3\x00"),
            (p / ".state.sqlite.12345.tmp-journal").write_bytes(b"\xd9\xd5\x05\xf9"),
        ),
        # what zooprep 0.1.0 could leave: a state file without its tables ...
        lambda p: _empty_state(p, ""),
        # ... or with the meta table but no format version in it
        lambda p: _empty_state(
            p, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        ),
    ],
    ids=[
        "lock-only",
        "temporary-state",
        "temporary-journal",
        "no-tables",
        "no-version",
    ],
)
def test_a_select_killed_while_creating_the_run_resumes_with_the_same_command(
    tmp_path: Path, leftovers
) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    catalog = tmp_path / "sources.csv"
    catalog.write_text(
        "diaSourceId,visit,detector,x,y\n506990000000001037,1,2,3,4\n3,1,2,5,6\n"
    )
    path = tmp_path / "run"
    path.mkdir()
    leftovers(path)
    result = CliRunner().invoke(cli, ["select", str(path), "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    with Run.open(path) as run:
        assert sorted(s.id for s in run.iter_sources()) == [3, 506990000000001037]
    assert not list(path.glob(".state.sqlite.*.tmp*"))


def test_render_on_a_directory_that_is_not_a_run_says_how_to_start_one(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zooprep", "render", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: {tmp_path} is not a zooprep run directory (no state.sqlite); "
        f"start a run there with 'zooprep select {tmp_path} ...'"
    ]


def test_a_run_from_a_newer_zooprep_is_refused(tmp_path: Path) -> None:
    Run.create(tmp_path / "run").close()
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'format_version'",
        (str(FORMAT_VERSION + 1),),
    )
    db.commit()
    db.close()
    with pytest.raises(RunError, match="made by a newer zooprep"):
        Run.open(tmp_path / "run")


@contextlib.contextmanager
def _read_only(path: Path):
    """Make a directory unwritable, even for root (immutable flag)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def test_a_read_only_run_directory_is_reported_and_unchanged(tmp_path: Path) -> None:
    with Run.create(tmp_path / "run") as run:
        run.add_sources([{"id": 1}], id_column="id")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with _read_only(tmp_path / "run"), pytest.raises(RunError, match="not writable"):
        Run.open(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_settings_survive_and_are_toml(tmp_path: Path) -> None:
    with Run.create(tmp_path / "run") as run:
        run.save(
            RenderOptions(
                sizes=[32, 64], cmap="bone", images={"science": "a/{visit}.fits"}
            )
        )
    with Run.open(tmp_path / "run") as run:
        render = run.settings.render
        assert render is not None
        assert render.sizes == (32, 64)
        assert render.cmap == "bone"
        assert render.images.science == "a/{visit}.fits"
        assert render.annotate is False  # not saved: its default
    document = tomllib.loads((tmp_path / "run" / "zooprep.toml").read_text())
    assert document["render"] == {
        "options": {"sizes": [32, 64], "cmap": "bone"},
        "images": {"science": "a/{visit}.fits"},
    }


def test_saving_one_section_keeps_the_others_even_those_zooprep_does_not_know(
    tmp_path: Path,
) -> None:
    with Run.create(tmp_path / "run") as run:
        run.save(RenderOptions(sizes=[32]))
    path = tmp_path / "run" / "zooprep.toml"
    path.write_text(path.read_text() + '\n[mytool]\nnote = "kept"\n')
    with Run.open(tmp_path / "run") as run:
        run.save(UploadOptions.record(project="1", subject_set_id="2"))
        assert run.settings.sections == ("render", "mytool", "upload")
        assert run.settings.upload.project == "1"
    document = tomllib.loads(path.read_text())
    assert document["mytool"] == {"note": "kept"}
    assert document["render"]["options"] == {"sizes": [32]}


def test_a_bad_value_in_zooprep_toml_is_one_line_naming_the_file(
    tmp_path: Path,
) -> None:
    with Run.create(tmp_path / "run") as run:
        run.save(RenderOptions(sizes=[32]))
    path = tmp_path / "run" / "zooprep.toml"
    path.write_text("[render.options]\nsizes = [2000]\n")  # edited by hand
    with Run.open(tmp_path / "run") as run, pytest.raises(RunError) as info:
        run.settings  # noqa: B018
    assert str(info.value) == (
        f"{path} [render] sizes: 2000 is out of range; each size must be "
        "between 3 and 1024 pixels"
    )


# -- kill -9 at random moments -------------------------------------------------

WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from zooprep.errors import RunError
    from zooprep.files import atomic_write
    from zooprep.run import Run

    path, n = Path(sys.argv[1]), int(sys.argv[2])
    try:
        run = Run.create(path)
    except RunError:
        run = Run.open(path)
    with run:
        # stage 1: select (idempotent: ids already present are kept)
        run.add_sources(({"id": 10**17 + i, "v": i} for i in range(n)), "id", batch=37)
        # stage 2: "render": write a file, then record it, row by row
        for src in run.iter_sources(["selected"]):
            rel = f"out/{src.id}.txt"
            atomic_write(path / rel, f"{src.row['v']}\\n".encode() * 50)
            if src.row["v"] % 7 == 3:
                run.mark_failed(src.id, "render", f"row {src.row['v']} is off the image")
            else:
                run.update(src.id, status="rendered", files=[rel])
    print("done")
""")


def _final_state(path: Path) -> list[tuple]:
    with Run.open(path) as run:
        return [(s.id, s.status, s.reason, tuple(s.files)) for s in run.iter_sources()]


def _files_whole(path: Path) -> None:
    """Every recorded file is complete; no partial file is visible under its name."""
    with Run.open(path) as run:
        for src in run.iter_sources(["rendered"]):
            text = (path / src.files[0]).read_text()
            assert text == f"{src.row['v']}\n" * 50


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_moments_then_rerun_reaches_the_same_state(
    tmp_path: Path, seed: int
) -> None:
    n = 400
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    duration = timed_run([sys.executable, str(script), str(reference), str(n)])

    def nothing_half_written() -> None:
        if (victim / "state.sqlite").exists():
            _files_whole(victim)

    kills = kill_at_random(
        [sys.executable, str(script), str(victim), str(n)],
        seed,
        rounds=12,
        duration=duration,
        check=nothing_half_written,
    )
    out = subprocess.run(
        [sys.executable, str(script), str(victim), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "done"
    assert kills > 0
    assert _final_state(victim) == _final_state(reference)
    _files_whole(victim)


def test_status_json_shows_counts_failures_and_the_next_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    with Run.create(tmp_path / "run") as run:
        run.add_sources([{"id": i} for i in range(5)], "id")
        run.update(0, status="rendered", files=["cutouts/0/0.png"])
        run.mark_failed(1, "render", "source is off the image: /data/x.fits")
        run.mark_failed(2, "render", "source is off the image: /data/y.fits")
        run.save(RenderOptions(images={"science": "x"}))
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["selected"] == 2
    assert report["counts"]["failed"] == 2
    assert report["failures"]["render"] == [
        {
            "reason": "source is off the image",
            "count": 2,
            "examples": ["1", "2"],
            "example": "source is off the image: /data/x.fits",
        }
    ]
    assert report["next"] == f"zooprep render {tmp_path / 'run'}"


def test_status_groups_failures_by_what_went_wrong_not_by_url_or_path(
    tmp_path: Path,
) -> None:
    with Run.create(tmp_path / "run") as run:
        run.add_sources([{"id": i} for i in range(7)], "id")
        for i, visit in enumerate((1234567, 1234568, 1234569)):
            url = f"http://store.example.org/{visit}/42/science.fits"
            run.mark_failed(i, "render", f"{url}: no such object")
        run.mark_failed(3, "render", "s3://b/9/tmpl.fits: access denied (HTTP 403): x")
        for i, x in ((4, 5000.0), (5, -30.5)):
            run.mark_failed(
                i,
                "render",
                f"source at x={x}, y=11.0 is off the science image "
                f"/data/{i}/sci.fits (400x300 pixels)",
            )
        run.mark_failed(6, "upload", "source 6: subject 99: the store answered 201 "
                        "twice but file 1 is missing")  # fmt: skip
    report = zooprep.status(tmp_path / "run")
    render = {item["reason"]: item for item in report["failures"]["render"]}
    assert sorted(render) == [
        "access denied (HTTP 403)",
        "no such object",
        "source is off the science image",
    ]
    assert render["no such object"]["count"] == 3
    assert render["no such object"]["examples"] == [0, 1, 2]
    assert render["no such object"]["example"] == (
        "http://store.example.org/1234567/42/science.fits: no such object"
    )
    assert render["source is off the science image"]["count"] == 2
    (upload,) = report["failures"]["upload"]
    assert upload["reason"] == "the store answered twice but file is missing"


def test_status_json_writes_64_bit_source_ids_as_exact_strings(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    big = 506428274000265570  # a double would make it ...265600
    with Run.create(tmp_path / "run") as run:
        run.add_sources([{"id": big}, {"id": big + 1}], "id")
        run.mark_failed(big, "render", "source is off the image: /data/x.fits")
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"506428274000265570"' in result.stdout
    report = json.loads(result.stdout)
    assert report["failures"]["render"][0]["examples"] == [str(big)]
    assert zooprep.status(tmp_path / "run")["failures"]["render"][0]["examples"] == [
        big
    ]


def test_cli_errors_are_one_line_with_exit_2_and_traceback_only_with_debug(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, "-m", "zooprep", "status", str(missing)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: no run directory at {missing}; start one with "
        f"'zooprep select {missing} ...'"
    ]
    debug = subprocess.run(
        [sys.executable, "-m", "zooprep", "--debug", "status", str(missing)],
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zooprep", "render", str(tmp_path), "--sizes", "thirty"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "give sizes in pixels" in proc.stderr


def test_a_full_state_database_raises_its_own_error_and_keeps_earlier_rows(
    tmp_path: Path,
) -> None:
    # SQLite's page limit makes the database "full" without a small disk.
    with Run.create(tmp_path / "run") as run:
        first = run.add_sources(
            ({"diaSourceId": i, "visit": 1} for i in range(100)), "diaSourceId"
        )
        # The test reaches the (private) connection to set SQLite's page limit.
        pages = run._db.execute("PRAGMA page_count").fetchone()[0]
        run._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            run.add_sources(
                (
                    {"diaSourceId": 1000 + i, "visit": 1, "pad": "x" * 200}
                    for i in range(5000)
                ),
                "diaSourceId",
                batch=1000,
            )
        assert not run._db.in_transaction
        assert first.added == 100
    with Run.open(tmp_path / "run") as run:
        assert len(run) == 100  # the failed batch was rolled back whole


def test_storage_errors_name_the_run_and_what_to_do(tmp_path: Path) -> None:
    import errno

    from zooprep.files import storage_error

    full = storage_error(
        OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a.png")),
        tmp_path,
        "3 sources saved",
    )
    assert full is not None
    assert str(full) == (
        f"no space left on {tmp_path}: 3 sources saved; free space and run the "
        "same command again"
    )
    # An unreadable input file elsewhere is not a problem of the run directory.
    elsewhere = OSError(errno.EACCES, "Permission denied", "/etc/shadow")
    assert storage_error(elsewhere, tmp_path, "") is None
    remote = OSError(errno.EIO, "Input/output error", "/mnt/images/calexp.fits")
    assert storage_error(remote, tmp_path, "") is None
    assert storage_error(ValueError("x"), tmp_path, "") is None


#: The state of a run made before row blocks (format 1), as zooprep wrote it.
FORMAT_1_STATE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (
    seq INTEGER PRIMARY KEY, id INTEGER NOT NULL UNIQUE, status TEXT NOT NULL,
    stage TEXT, reason TEXT, grp TEXT, row TEXT NOT NULL, files TEXT,
    padded INTEGER, subject_id TEXT, upload TEXT
);
CREATE INDEX sources_status ON sources(status);
CREATE INDEX sources_subject ON sources(subject_id);
CREATE INDEX sources_grp ON sources(COALESCE(grp, ''), seq);
CREATE TABLE manifest_rows (id INTEGER PRIMARY KEY, line INTEGER NOT NULL);
INSERT INTO meta VALUES ('format_version', '1'), ('created', '2026-11-01T10:00:00');
"""


def _format_1_run(path: Path) -> Path:
    path.mkdir()
    db = sqlite3.connect(path / "state.sqlite")
    db.executescript(FORMAT_1_STATE)
    db.executemany(
        "INSERT INTO sources (seq, id, status, grp, row, files) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (0, BIG_ID, "rendered", "1/2", json.dumps({"diaSourceId": BIG_ID, "visit": 1,
             "detector": 2, "x": 1.5, "y": 2.5}), '["cutouts/0/a.png"]'),
            (1, BIG_ID + 9, "selected", "1/2", json.dumps({"diaSourceId": BIG_ID + 9,
             "visit": 1, "detector": 2, "x": 3.0, "y": None}), None),
        ],
    )  # fmt: skip
    db.commit()
    db.close()
    return path


def test_a_run_made_before_row_blocks_opens_reads_and_takes_new_sources(
    tmp_path: Path, test_data: Path
) -> None:
    run = _format_1_run(tmp_path / "old")
    with Run.open(run, lock=False) as r:  # status and preview: read-only
        old = [(s.id, s.status, s.row, s.files) for s in r.iter_sources()]
    assert old[0] == (
        BIG_ID,
        "rendered",
        {"diaSourceId": BIG_ID, "visit": 1, "detector": 2, "x": 1.5, "y": 2.5},
        ["cutouts/0/a.png"],
    )
    assert old[1][2]["y"] is None
    with Run.open(run) as r:
        assert [(s.id, s.status, s.row, s.files) for s in r.iter_sources()] == old
    db = sqlite3.connect(f"file:{run / 'state.sqlite'}?mode=ro", uri=True)
    assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0] == "1"  # fmt: skip
    db.close()
    apdb = test_data / "apdb" / "ci_dc2_apdb.sqlite3"
    added = zooprep.select(run, apdb=f"sqlite:///{apdb}", append=True, limit=5)
    assert added.selected == 5
    with Run.open(run, lock=False) as r:
        sources = list(r.iter_sources())
        assert [(s.id, s.status, s.row, s.files) for s in sources[:2]] == old
        assert [s.row["instrument"] for s in sources[2:]] == ["LSSTCam-imSim"] * 5
        assert all(s.row["diaSourceId"] == s.id for s in sources)
        assert r.get(sources[3].id).row == sources[3].row
    db = sqlite3.connect(f"file:{run / 'state.sqlite'}?mode=ro", uri=True)
    assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0] == "2"  # fmt: skip
    db.close()


def test_a_run_whose_row_block_is_gone_says_it_is_damaged(
    tmp_path: Path, test_data: Path
) -> None:
    apdb = test_data / "apdb" / "ci_dc2_apdb.sqlite3"
    zooprep.select(tmp_path / "run", apdb=f"sqlite:///{apdb}", limit=3)
    (tmp_path / "run" / "rows" / "1.sqlite").unlink()
    with Run.open(tmp_path / "run", lock=False) as r:
        assert r.counts()["selected"] == 3  # what needs no row still works
        with pytest.raises(RunError, match=r"rows/1.sqlite, which is missing.*damaged"):
            list(r.iter_sources())


def test_a_source_whose_row_is_replaced_keeps_the_new_row(
    tmp_path: Path, test_data: Path
) -> None:
    apdb = test_data / "apdb" / "ci_dc2_apdb.sqlite3"
    zooprep.select(tmp_path / "run", apdb=f"sqlite:///{apdb}", limit=3)
    with Run.open(tmp_path / "run") as r:
        first = next(r.iter_sources())
        r.update(first.id, row={**first.row, "note": "checked"})
    with Run.open(tmp_path / "run", lock=False) as r:
        again = r.get(first.id)
    assert again is not None
    assert again.row == {**first.row, "note": "checked"}
