"""The code stays ruff-clean (lint and format) and mypy-clean, as the style guide asks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["zooprep", "tests", "benchmarks", "examples", "tools"]


def test_ruff_check_and_format_are_clean() -> None:
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_is_clean_on_the_package() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "zooprep"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
