"""The Python API refuses what the command line refuses, with the same one line."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from PIL import Image

import zooprep
from zooprep.errors import InputError
from zooprep.options import (
    ImageOptions,
    ManifestOptions,
    RenderOptions,
    ResultsOptions,
    SelectOptions,
    UploadOptions,
)
from zooprep.run import Run


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


# -- one owner per stage's settings ---------------------------------------------

STAGE_OPTIONS = {
    "select": (SelectOptions,),
    "render": (RenderOptions, ImageOptions),
    "manifest": (ManifestOptions,),
    "upload": (UploadOptions,),
    "results": (ResultsOptions,),
}


@pytest.mark.parametrize("command", sorted(STAGE_OPTIONS))
def test_every_flag_of_a_stage_is_a_field_of_its_options_and_back(
    command: str,
) -> None:
    import click

    from zooprep.cli import cli

    params = {
        p.name: p
        for p in cli.commands[command].params
        if isinstance(p, click.Option) and p.name != "help"
    }
    fields = {
        name: (cls, spelled)
        for cls in STAGE_OPTIONS[command]
        for name, spelled in cls.flags().items()
    }
    assert sorted(params) == sorted(fields)
    for name, param in params.items():
        cls, spelled = fields[name]
        assert param.opts[0] == spelled, name
        assert param.help == cls.help(name), name  # the help line is the field's
        if cls.choices(name):
            assert isinstance(param.type, click.Choice)
            assert tuple(param.type.choices) == cls.choices(name), name
        # An absent flag passes nothing: the saved settings then apply.
        assert param.default in (None, ()), name


def test_help_shows_the_defaults_of_the_option_fields() -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    for command, classes in STAGE_OPTIONS.items():
        out = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        for cls in classes:
            for name in cls.flags():
                default = cls.default(name)
                if isinstance(default, int | float | str) and not isinstance(
                    default, bool
                ):
                    assert f"[default: {default}]" in out, (command, name)
    render = " ".join(CliRunner().invoke(cli, ["render", "--help"]).output.split())
    assert f"[default: {RenderOptions.default('chunk_size')}]" in render
    assert "[default: 30; alert stamps: their native size]" in render


def test_options_say_only_what_was_given_and_merge_over_saved_settings() -> None:
    saved = RenderOptions(sizes=(), numpy=True, cmap="bone")
    given = RenderOptions(numpy=False)
    assert repr(given) == "RenderOptions(numpy=False)"
    merged = saved.merge(given)
    assert (merged.sizes, merged.numpy, merged.cmap) == ((), False, "bone")
    assert saved.merge({"numpy": False}) == merged
    assert RenderOptions(numpy=False) == RenderOptions(**dict(numpy=False))
    resolved = given.resolved()
    assert resolved.sizes == (30,)
    assert resolved.chunk_size == RenderOptions.default("chunk_size")


def test_each_section_round_trips_through_zooprep_toml() -> None:
    examples = [
        SelectOptions.record(kind="apdb", source="sqlite:///a", visit=[1, 2], seed=4),
        RenderOptions(sizes=(32, 64), images={"science": "s/{visit}.fits"}),
        ManifestOptions(metadata=["id", "band"], hidden=[], split=10),
        UploadOptions.record(project="1", subject_set_id="2", subject_set="b"),
        ResultsOptions(classifications="export.csv", task="T1"),
    ]
    for options in examples:
        text = tomli_w.dumps(options.to_toml())
        back = type(options).from_toml(tomllib.loads(text))
        assert back == options, type(options).__name__


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _render_run(tmp_path: Path, name: str, test_data: Path, options) -> tuple:
    run = tmp_path / name
    zooprep.select(run, alerts=str(test_data / "ztf_alerts" / "ampel" / "5*.avro"))
    zooprep.render(run, options)
    with Run.open(run, lock=False) as r:
        saved = r.settings.render
        shapes = {s.id: _png_size(run / s.files[0]) for s in r.iter_sources()}
    return saved.sizes, shapes


def test_an_options_object_and_a_dict_with_the_same_content_render_alike(
    tmp_path: Path, test_data: Path
) -> None:
    by_object = _render_run(
        tmp_path, "a", test_data, RenderOptions(numpy=False, jobs=1)
    )
    by_dict = _render_run(tmp_path, "b", test_data, {"numpy": False, "jobs": 1})
    by_nothing = _render_run(tmp_path, "c", test_data, {"jobs": 1})
    assert by_object == by_dict == by_nothing
    sizes, shapes = by_object
    assert sizes == ()  # alert stamps stay at their native size
    assert set(shapes.values()) == {(615, 229)}  # 63x63 ZTF stamps, whole


def _offset_catalog(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Images with a WCS and a source whose x/y are off them but ra/dec on them."""
    from tests.imagegen import tan_wcs, write_simple

    rng = np.random.default_rng(3)
    images = {}
    for role in ("science", "template", "difference"):
        path = tmp_path / f"{role}.fits"
        write_simple(path, rng.normal(10, 1, (80, 80)), tan_wcs(80, 80))
        images[role] = str(path)
    catalog = tmp_path / "cat.csv"
    pd.DataFrame(
        {
            "diaSourceId": [506428274000265570],
            "visit": 1,
            "detector": 37,
            "x": [5000.0],
            "y": [5000.0],
            "ra": [150.0],
            "dec": [2.0],
        }
    ).to_csv(catalog, index=False)
    return catalog, images


def test_render_places_sources_by_the_position_its_options_give(
    tmp_path: Path,
) -> None:
    catalog, images = _offset_catalog(tmp_path)
    by_xy, by_sky = tmp_path / "xy", tmp_path / "sky"
    for run in (by_xy, by_sky):
        zooprep.select(run, catalog=catalog)
    auto = zooprep.render(by_xy, images=images, jobs=1)
    assert (auto.rendered, auto.failed) == (0, 1)  # x/y first: off the image
    sky = zooprep.render(by_sky, RenderOptions(position="radec", images=images, jobs=1))
    assert (sky.rendered, sky.failed) == (1, 0)
    with Run.open(by_sky, lock=False) as r:
        assert r.settings.render.position == "radec"
    # Resumed without options, the saved position still places it.
    again = zooprep.render(by_sky, force=True, jobs=1)
    assert (again.rendered, again.failed) == (1, 0)


def test_select_takes_a_reader_object_like_render_takes_components(
    tmp_path: Path,
) -> None:
    from zooprep.readers.catalog import CatalogReader

    catalog = _catalog(tmp_path)
    reader = CatalogReader(catalog)
    result = zooprep.select(tmp_path / "run", reader=reader, limit=1)
    assert result.selected == 1
    with Run.open(tmp_path / "run", lock=False) as r:
        assert r.settings.select.kind == "catalog"
        assert r.settings.select.source == str(catalog)
        assert r.settings.select.limit == 1
    with pytest.raises(InputError, match="reader object and catalog"):
        zooprep.select(tmp_path / "other", reader=reader, catalog=catalog)


def test_a_template_with_a_signature_in_its_query_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    secret = "sv=2024&sig=c2VjcmV0"
    argv = ["render", str(run)]
    for role in ("science", "template", "difference"):
        argv += [
            f"--{role}",
            f"https://acct.blob.core.windows.net/c/{{visit}}.fits?{secret}",
        ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "{env:NAME}" in lines[0]
    assert "c2VjcmV0" not in lines[0]
    for query in ("X-Amz-Signature=abc", "X-Goog-Signature=abc", "token=abc"):
        with pytest.raises(InputError, match="holds a secret"):
            ImageOptions(science=f"https://x.org/{{visit}}.fits?{query}")
    assert not (run / "zooprep.toml").read_text().count("c2VjcmV0")


def test_a_token_named_by_env_is_read_with_the_images_and_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.imagegen import tan_wcs, write_exposure
    from tests.objectstores import SIGNATURE, RangeServer

    root = tmp_path / "img"
    rng = np.random.default_rng(5)
    for role in ("sci", "tmpl", "diff"):
        path = root / "1" / f"{role}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_exposure(path, rng.normal(10, 1, (100, 100)), tan_wcs(100, 100))
    run = tmp_path / "run"
    zooprep.select(run, catalog=_catalog(tmp_path))
    with RangeServer(root) as server:
        expires = int(time.time() + 600)
        images = {
            role: f"{server.url}/{{visit}}/{name}.fits?{{env:ZOOPREP_TEST_SAS}}"
            for role, name in (
                ("science", "sci"),
                ("template", "tmpl"),
                ("difference", "diff"),
            )
        }
        with pytest.raises(InputError, match="ZOOPREP_TEST_SAS is not set"):
            zooprep.render(run, images=images, jobs=1)
        monkeypatch.setenv(
            "ZOOPREP_TEST_SAS", f"expires={expires}&signature={SIGNATURE}"
        )
        result = zooprep.render(run, images=images, jobs=1)
    assert (result.rendered, result.failed) == (2, 0)  # the server checked it
    settings = (run / "zooprep.toml").read_text()
    assert "{env:ZOOPREP_TEST_SAS}" in settings
    assert SIGNATURE not in settings
    assert SIGNATURE.encode() not in (run / "state.sqlite").read_bytes()
