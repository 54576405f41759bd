"""The Python API refuses what the command line refuses, with the same one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import zooprep
from zooprep.errors import InputError
from zooprep.options import RenderOptions, SelectOptions, UploadOptions


def _catalog(tmp_path: Path) -> Path:
    path = tmp_path / "cat.csv"
    pd.DataFrame(
        {
            "diaSourceId": [506428274000265570, 506428274000265571],
            "visit": 1,
            "detector": 37,
            "x": [40.0, 60.0],
            "y": [40.0, 60.0],
        }
    ).to_csv(path, index=False)
    return path


def _zooprep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zooprep", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize("sizes", [(2,), (30, 1025), (0,)])
def test_render_options_refuse_sizes_out_of_range_in_python(sizes) -> None:
    with pytest.raises(InputError, match="between 3 and 1024 pixels"):
        RenderOptions(sizes=sizes)


def test_render_refuses_out_of_range_sizes_given_as_a_dict(tmp_path: Path) -> None:
    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    with pytest.raises(InputError, match="between 3 and 1024"):
        zooprep.render(run, options={"sizes": (2000,)})


def test_upload_options_need_exactly_one_subject_set_in_python() -> None:
    with pytest.raises(InputError, match="exactly one of subject_set_id"):
        UploadOptions(project="1")
    with pytest.raises(InputError, match="exactly one of subject_set_id"):
        UploadOptions(project="1", subject_set_id="2", subject_set="b1")
    assert UploadOptions(project="1", subject_set="b1").subject_set == "b1"


def test_select_takes_an_options_object_or_keywords_alike(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    by_object = zooprep.select(
        tmp_path / "a", zooprep.SelectOptions(catalog=catalog, limit=1)
    )
    by_keywords = zooprep.select(tmp_path / "b", catalog=catalog, limit=1)
    assert by_object.selected == by_keywords.selected == 1
    with pytest.raises(TypeError, match="not both"):
        zooprep.select(tmp_path / "c", SelectOptions(catalog=catalog), limit=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --apdb"),
        ({"catalog": "c.csv", "alerts": "a/*.avro"}, "got --catalog, --alerts"),
        ({"alerts": "a/*.avro", "rename": {"a": "b"}}, "--rename applies"),
        ({"catalog": "c.csv", "schema": "s"}, "--schema applies"),
        ({"catalog": "c.csv", "stratify": "reliability:3"}, "needs --sample"),
        ({"catalog": "c.csv", "sample": 5, "stratify": "r:x"}, "whole number"),
        ({"catalog": "c.csv", "limit": 0}, "--limit must be at least 1"),
    ],
)
def test_select_options_refuse_bad_combinations_before_reading(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        SelectOptions(**kwargs)


def test_a_bad_colour_map_exits_2_with_one_line_naming_the_choices(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    proc = _zooprep("render", str(run), "--cmap", "notamap")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'notamap'" in lines[0]
    assert "valid choices:" in lines[0]
    assert "gray" in lines[0]
    assert "viridis" in lines[0]
    assert "Traceback" not in proc.stderr


def test_a_bad_nan_colour_exits_2_with_one_line_naming_the_choices(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    proc = _zooprep("render", str(run), "--nan-color", "notacolour")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'notacolour'" in lines[0]
    assert "#rrggbb" in lines[0]


def test_out_of_range_sizes_exit_2_from_the_command_line_too(tmp_path: Path) -> None:
    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    proc = _zooprep("render", str(run), "--sizes", "30,2000")
    assert proc.returncode == 2
    assert "between 3 and 1024 pixels" in proc.stderr


def test_upload_options_bound_the_worker_threads_in_python() -> None:
    with pytest.raises(InputError, match="workers must be from 1 to 64"):
        UploadOptions(project="1", subject_set="b1", workers=65)
    with pytest.raises(InputError, match="workers must be from 1 to 64"):
        UploadOptions(project="1", subject_set="b1", workers=0)


def test_render_refuses_zero_jobs_in_python(tmp_path: Path) -> None:
    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    with pytest.raises(InputError, match="jobs must be at least 1"):
        zooprep.render(run, jobs=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["select", "{run}", "--catalog", "{catalog}", "--limit", "0"], "--limit"),
        (["select", "{run}", "--catalog", "{catalog}", "--sample", "0"], "--sample"),
        (["render", "{run}", "--scale", "0"], "scale must be at least 1"),
        (["render", "{run}", "--chunk-size", "0"], "chunk_size must be at least 1"),
        (["render", "{run}", "--jobs", "0"], "jobs must be at least 1"),
        (
            [
                "upload",
                "{run}",
                "--project",
                "1",
                "--subject-set",
                "b",
                "--workers",
                "65",
            ],
            "workers must be from 1 to 64",
        ),
        (["upload", "{run}", "--project", "1"], "exactly one of subject_set_id"),
    ],
)
def test_the_command_line_refuses_what_the_api_refuses_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    catalog = _catalog(tmp_path)
    run = tmp_path / "run"
    zooprep.select(run, catalog=catalog)
    argv = [
        a.format(run=tmp_path / "new" if "select" in args else run, catalog=catalog)
        for a in args
    ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0]
