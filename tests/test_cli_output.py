"""What the command line shows: a progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import zooprep

ANSI = re.compile(r"\x1b\[")


@pytest.fixture
def selected_run(tmp_path: Path, test_data: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(3)
    n = 30
    pd.DataFrame(
        {
            "diaSourceId": 506428274000265570 + np.arange(n, dtype=np.int64),
            "visit": 1,
            "detector": 37,
            "x": rng.uniform(20, 235, n),
            "y": rng.uniform(20, 235, n),
        }
    ).assign(x=lambda t: t.x.where(t.index != 0, 5000.0)).to_csv(
        tmp_path / "cat.csv", index=False
    )
    run = tmp_path / "run"
    zooprep.select(run, catalog=tmp_path / "cat.csv")
    base = test_data / "decam_sfft"
    flags = [
        "--science",
        str(base / "Stack-DEC-OBS04.fits"),
        "--template",
        str(base / "Stack-DEC-OBS18.fits"),
        "--difference",
        str(base / "FinalDifference.fits"),
        "--jobs",
        "1",
    ]
    return run, flags


def _zooprep(*args: str) -> list[str]:
    return [sys.executable, "-m", "zooprep", *args]


def test_render_on_a_terminal_shows_a_progress_bar_with_counts_and_failures(
    selected_run: tuple[Path, list[str]],
) -> None:
    run, flags = selected_run
    command = shlex.join(_zooprep("render", str(run), *flags))
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    proc = subprocess.run(
        ["script", "-qefc", command, "/dev/null"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1  # one source is off the image
    screen = proc.stdout
    assert ANSI.search(screen), "a terminal gets a live (coloured) progress bar"
    assert "━" in screen
    assert "30/30" in screen
    assert "1 failed" in screen
    assert "render: 29 rendered" in screen


def test_render_in_a_pipe_prints_plain_progress_lines(
    selected_run: tuple[Path, list[str]],
) -> None:
    run, flags = selected_run
    proc = subprocess.run(
        _zooprep("render", str(run), *flags), capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert not ANSI.search(proc.stderr)
    lines = proc.stderr.splitlines()
    assert "zooprep: render: 30 to do" in lines
    assert any(
        re.fullmatch(
            r"zooprep: render: 30/30 done \(100%\), 1 failed, "
            r"[\d.]+/s",
            line,
        )
        for line in lines
    ), lines
    assert proc.stdout == ""  # stdout is kept for machine output


def test_quiet_prints_nothing_but_verbose_logs_each_row(
    selected_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, flags = selected_run
    quiet = subprocess.run(
        _zooprep("-q", "render", str(run), *flags), capture_output=True, text=True
    )
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [
        "Some rows failed; see 'zooprep status RUN'. Run the same command again to "
        "retry them."
    ]
    again = subprocess.run(
        _zooprep("-v", "render", str(run), *flags, "--force"),
        capture_output=True,
        text=True,
    )
    rendered = [
        line for line in again.stderr.splitlines() if " rendered: cutouts/" in line
    ]
    assert len(rendered) == 29
    assert any(
        "506428274000265570 failed:" in line for line in again.stderr.splitlines()
    )
