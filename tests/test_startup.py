"""The command starts fast: it imports what a command needs only when it runs.

Checked through ``sys.modules`` in a fresh interpreter, not by timing
(``benchmarks/bench_startup.py`` measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Packages no command needs before it runs (each costs tens of milliseconds
#: or more to import).
HEAVY = [
    "astropy",
    "astropy.coordinates",
    "dask",
    "distributed",
    "fastavro",
    "fsspec",
    "lsst",
    "matplotlib",
    "numpy",
    "pandas",
    "panoptes_client",
    "PIL",
    "psycopg",
    "pyarrow",
    "requests",
    "sqlalchemy",
    "tenacity",
]


def _imported_after(code: str) -> list[str]:
    """The HEAVY modules present in ``sys.modules`` after running ``code``."""
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_command_line_loads_no_stage_dependencies() -> None:
    assert _imported_after("import zooprep.cli") == []


def test_help_loads_no_stage_dependencies() -> None:
    code = (
        "from zooprep.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='zooprep')\n"
        "except SystemExit:\n    pass\n"
        "try:\n    cli(['render', '--help'], prog_name='zooprep')\n"
        "except SystemExit:\n    pass"
    )
    assert _imported_after(code) == []


def test_status_loads_no_stage_dependencies(tmp_path: Path) -> None:
    from zooprep.run import Run

    with Run.create(tmp_path / "run") as run:
        run.add_sources([{"id": 506428274000265570}], "id")
        run.mark_failed(506428274000265570, "render", "source is off the image: x")
    code = (
        "from zooprep.cli import cli\n"
        f"try:\n    cli(['status', {str(tmp_path / 'run')!r}], prog_name='zooprep')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code"
    )
    assert _imported_after(code) == []


@pytest.mark.parametrize("name", ["select", "render", "upload", "status", "demo"])
def test_the_stage_functions_are_there_when_used(name: str) -> None:
    code = f"import zooprep\nassert callable(zooprep.{name}), zooprep.{name}"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_a_stage_module_keeps_the_function_of_the_same_name() -> None:
    code = (
        "import zooprep.status, zooprep.preview, zooprep.demo\n"
        "import zooprep\n"
        "from zooprep.status import status\n"
        "assert zooprep.status is status\n"
        "assert callable(zooprep.preview) and callable(zooprep.demo)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_library_does_not_need_rich() -> None:
    code = (
        "import zooprep, zooprep.status, zooprep.progress\n"
        "assert 'rich' not in sys.modules, 'rich imported'"
    )
    subprocess.run([sys.executable, "-c", f"import sys\n{code}"], check=True)
    blocked = "import sys\nsys.modules['rich'] = None\nimport zooprep, zooprep.status\n"
    subprocess.run([sys.executable, "-c", blocked], check=True)
