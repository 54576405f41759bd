"""A full disk (or a read-only one) under the run directory, at every stage.

The run directory lives on a real small file system: a tmpfs mounted for the
test (the tests run as root here and in CI).  Where mounting is impossible,
the select test falls back to a child process whose files may not grow past
RLIMIT_FSIZE; the others need the mount and say so when they skip.

What users rely on: the command ends with one line that names the run
directory and says what to do, exit status 2, no traceback; no temporary
file is left behind; and once space is freed the same command finishes the
run exactly as an uninterrupted one would.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.catalogs import write_big_catalog
from tests.plugins.panoptes import upload_command
from tests.test_render_stage import _catalog, _pngs
from tests.test_render_stage import _state as _render_state
from tests.test_resume import _rendered_run
from tests.test_resume import _state as _select_state

ZOOPREP = (sys.executable, "-m", "zooprep", "-q")
ADVICE = "free space and run the same command again"


class SmallDisk:
    """A small file system at ``path``: a tmpfs, or else a file-size limit.

    Parameters
    ----------
    path : Path
        Mount point (created).
    size : str
        tmpfs size, e.g. ``"8m"``.
    mount : bool
        False uses the file-size limit even where a tmpfs could be mounted.
    """

    def __init__(self, path: Path, size: str, *, mount: bool = True) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.mounted, self.why_not = False, "no mount asked for"
        if mount:
            done = subprocess.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={size}",
                    "zooprep-test",
                    str(path),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            self.mounted = done.returncode == 0
            self.why_not = done.stderr.strip()
        self.limit: int | None = None  # RLIMIT_FSIZE of children (fallback)
        self._filler = path / f"filler-{uuid.uuid4().hex}"

    def fill(self, leave: int) -> None:
        """Take all free space but ``leave`` bytes (tmpfs only)."""
        stat = os.statvfs(self.path)
        free = stat.f_bavail * stat.f_frsize
        with open(self._filler, "wb") as fh:
            fh.truncate(0)
            fh.write(b"\0" * max(0, free - leave))

    def free(self) -> None:
        """Give the space back (or lift the file-size limit)."""
        self._filler.unlink(missing_ok=True)
        self.limit = None

    def run(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a command in a child process (under the file-size limit, if any)."""
        limit = self.limit

        def limited() -> None:
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            preexec_fn=limited if limit is not None else None,
            check=False,
        )

    def remount(self, options: str) -> None:
        """``mount -o remount,OPTIONS`` (tmpfs only)."""
        subprocess.run(
            ["mount", "-o", f"remount,{options}", str(self.path)], check=True
        )

    def close(self) -> None:
        """Unmount (lazily, if something still holds it)."""
        if self.mounted:
            done = subprocess.run(["umount", str(self.path)], check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture(params=["tmpfs"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk", "16m", mount=request.param == "tmpfs")
    try:
        yield disk
    finally:
        disk.close()


def _needs_mount(disk: SmallDisk) -> None:
    if not disk.mounted:
        pytest.skip(
            "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN: "
            f"{disk.why_not}); a file-size limit cannot fill a directory"
        )


def _one_line(
    done: subprocess.CompletedProcess[str],
    run: Path,
    what: str,
    start: str = "no space left on {run}: ",
    advice: str = ADVICE,
) -> None:
    """Exit 2 with one line naming the run directory, what is kept and what to do."""
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("Error: " + start.format(run=run)), lines[0]
    assert what in lines[0], lines[0]
    assert lines[0].endswith(advice), lines[0]


def _no_temporary_files(run: Path) -> None:
    assert list(run.rglob(".*.tmp")) == []


# -- select -------------------------------------------------------------------------


@pytest.mark.parametrize("small_disk", ["tmpfs", "file-size-limit"], indirect=True)
def test_select_on_a_full_disk_stops_with_one_line_and_resumes_once_freed(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    n = 20_000
    catalog = write_big_catalog(tmp_path / "diasources.csv", n, seed=5)

    def cmd(run: Path) -> list[str]:
        return [*ZOOPREP, "select", str(run), "--catalog", str(catalog)]

    reference = tmp_path / "reference"
    assert subprocess.run(cmd(reference), check=False).returncode == 0
    run = small_disk.path / "run"
    if small_disk.mounted:
        # the catalog's rows block (1.5 MB) and the state (2.3 MB) with its log
        small_disk.fill(leave=2_000_000)
    else:
        small_disk.limit = 1_000_000  # no file of the run may grow past 1 MB
    done = small_disk.run(cmd(run))
    if small_disk.mounted:
        _one_line(done, run, "sources saved")
    else:
        _one_line(
            done,
            run,
            "sources saved",
            "file size limit reached on {run}/state.sqlite: ",
            "raise the limit and run the same command again",
        )
    saved = int(done.stderr.split(": ")[2].split()[0])
    # the rows are copied into a block whole or not at all: none may be saved
    assert 0 <= saved < n
    _no_temporary_files(run)
    small_disk.free()
    again = small_disk.run(cmd(run))
    assert again.returncode == 0, again.stderr
    assert _select_state(run) == _select_state(reference)


# -- render --------------------------------------------------------------------------


def _images(test_data: Path) -> list[str]:
    base = test_data / "decam_sfft"
    return [
        *("--science", str(base / "Stack-DEC-OBS04.fits")),
        *("--template", str(base / "Stack-DEC-OBS18.fits")),
        *("--difference", str(base / "FinalDifference.fits")),
    ]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_render_on_a_full_disk_stops_with_one_line_cleans_up_and_resumes(
    tmp_path: Path, small_disk: SmallDisk, test_data: Path, jobs: str
) -> None:
    _needs_mount(small_disk)
    catalog = _catalog(tmp_path / "sources.csv", 200)

    def render(run: Path) -> list[str]:
        return [*ZOOPREP, "render", str(run), "--jobs", jobs, *_images(test_data)]

    reference, run = tmp_path / "reference", small_disk.path / "run"
    for path in (reference, run):
        selected = small_disk.run(
            [*ZOOPREP, "select", str(path), "--catalog", str(catalog)]
        )
        assert selected.returncode == 0, selected.stderr
    assert small_disk.run(render(reference)).returncode == 1  # one off-image source
    # A temporary file left by an earlier killed render is cleaned up too.
    stale = run / "cutouts" / "0" / ".506428274000265570.png.4242.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a png")
    small_disk.fill(leave=600_000)  # the 200 PNGs need about 2 MB
    done = small_disk.run(render(run))
    _one_line(done, run, "sources rendered and saved")
    _no_temporary_files(run)
    small_disk.free()
    again = small_disk.run(render(run))
    assert again.returncode == 1, again.stderr
    assert _render_state(run) == _render_state(reference)
    assert _pngs(run) == _pngs(reference)
    _no_temporary_files(run)


def test_render_on_a_read_only_run_directory_says_so_in_one_line(
    tmp_path: Path, small_disk: SmallDisk, test_data: Path
) -> None:
    _needs_mount(small_disk)
    run = small_disk.path / "run"
    catalog = _catalog(tmp_path / "sources.csv", 5)
    small_disk.run([*ZOOPREP, "select", str(run), "--catalog", str(catalog)])
    small_disk.remount("ro")
    try:
        done = small_disk.run([*ZOOPREP, "render", str(run), *_images(test_data)])
    finally:
        small_disk.remount("rw")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert str(run) in lines[0]
    assert "Read-only file system" in lines[0]


# -- manifest and upload ---------------------------------------------------------------


def test_manifest_on_a_full_disk_keeps_the_old_one_and_leaves_no_temporary_file(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    _needs_mount(small_disk)
    reference = _rendered_run(tmp_path / "reference", 2000)
    run = _rendered_run(small_disk.path / "run", 2000)
    manifest = [*ZOOPREP, "manifest"]
    assert small_disk.run([*manifest, str(reference)]).returncode == 0
    (run / ".manifest.csv.4242.tmp").write_text("left by a killed manifest")
    small_disk.fill(leave=40_000)  # the manifest needs about 160 kB
    done = small_disk.run([*manifest, str(run)])
    _one_line(done, run, "manifest not written")
    assert not (run / "manifest.csv").exists()
    _no_temporary_files(run)
    small_disk.free()
    again = small_disk.run([*manifest, str(run)])
    assert again.returncode == 0, again.stderr
    assert (run / "manifest.csv").read_bytes() == (
        reference / "manifest.csv"
    ).read_bytes()


def test_upload_on_a_full_disk_stops_with_one_line_and_resumes_exactly_once(
    tmp_path: Path, small_disk: SmallDisk, panoptes_subprocess
) -> None:
    _needs_mount(small_disk)
    from tests.test_upload import assert_exactly_once, make_run

    standin = panoptes_subprocess.standin
    run = make_run(small_disk.path / "run", 300)
    args = upload_command(standin, run, quiet=True)
    small_disk.fill(leave=1_000_000)  # recording 300 subjects takes more (log)
    done = panoptes_subprocess.run(args)
    _one_line(done, run, "sources uploaded")
    _no_temporary_files(run)
    small_disk.free()
    again = panoptes_subprocess.run(args)
    assert again.returncode == 0, again.stderr
    assert_exactly_once(standin, run)
