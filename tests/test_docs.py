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
