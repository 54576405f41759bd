"""The manifest: written from a real run, reviewed in spreadsheets, read back safely."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import zooprep
from zooprep.cli import cli
from zooprep.errors import InputError, ManifestEditError
from zooprep.options import RenderOptions, UploadOptions
from zooprep.panoptes import RetryPolicy
from zooprep.run import Run
from zooprep.stages.manifest import DEFAULT_METADATA
from zooprep.stages.review import mark_removed, read_reviewed
from zooprep.vocabulary import ID_TEXT_KEY

N_SOURCES = 25


def _apdb_rows(apdb: Path, limit: int) -> list[dict]:
    """Real DiaSource rows, ids as exact int64."""
    with sqlite3.connect(apdb) as db:
        table = pd.read_sql_query(
            f'SELECT * FROM "DiaSource" ORDER BY visit, diaSourceId LIMIT {limit}', db
        )
    assert table["diaSourceId"].dtype == "int64"
    rows = table.to_dict("records")
    for row in rows:
        row["instrument"] = "LSSTCam-imSim"
    return rows


def _make_run(path: Path, apdb: Path, n: int = N_SOURCES, chunk: int = 10) -> Path:
    """A run whose first ``n - 2`` sources are rendered to small real PNGs (+ .npy)."""
    with Run.create(path) as run:
        run.save(RenderOptions(chunk_size=chunk))
        run.add_sources(_apdb_rows(apdb, n), "diaSourceId")
        for src in run.iter_sources():
            if src.seq >= n - 2:
                continue  # left selected: not rendered, not in the manifest
            rel = run.cutout_path(src)
            png = run.path / rel
            png.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (90, 30), (src.seq * 9 % 256, 80, 160)).save(png)
            npy = rel[: -len(".png")] + ".npy"
            (run.path / npy).write_bytes(b"\x93NUMPY")
            run.update(src.id, status="rendered", files=[rel, npy])
    return path


@pytest.fixture
def run_dir(tmp_path: Path, apdb_sqlite: Path) -> Path:
    return _make_run(tmp_path / "run", apdb_sqlite)


def _read(path: Path, **kwargs) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, **kwargs))


def _rendered(run_dir: Path) -> list:
    with Run.open(run_dir, lock=False) as run:
        return list(run.iter_sources(["rendered"]))


def _review(run_dir: Path, path: Path | None = None):
    with Run.open(run_dir) as run:
        return read_reviewed(run, path)


# -- writing ----------------------------------------------------------------------


def test_manifest_lists_rendered_sources_with_exact_ids_and_safe_prefixes(run_dir):
    result = zooprep.manifest(run_dir)
    assert result.failed == 0
    rendered = _rendered(run_dir)
    assert result.rows == len(rendered) == N_SOURCES - 2
    text = (run_dir / "manifest.csv").read_text(encoding="utf-8")
    assert not text.startswith("\ufeff")
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == result.rows + 1  # one line per row
    assert lines[0].split(",") == [
        "external_id",
        "location:1",
        "metadata:#diaSourceId",
        "metadata:!visit",
        "metadata:!detector",
        "metadata:band",
        "metadata:!ra",
        "metadata:!dec",
        "metadata:#reliability",
        "metadata:#snr",
        "metadata:#diaObjectId",
        ID_TEXT_KEY,
    ]
    rows = _read(run_dir / "manifest.csv")
    for src, row in zip(rendered, rows, strict=True):  # selection order
        assert int(row["external_id"]) == src.id  # exact 64-bit id
        assert row["location:1"] == src.files[0]  # the PNG, never the .npy
        assert row[ID_TEXT_KEY] == f"id:{src.id}"
        assert row["metadata:#diaSourceId"] == str(src.id)
        assert row["metadata:band"] == src.row["band"]
        assert float(row["metadata:!ra"]) == src.row["ra"]  # full precision
        assert float(row["metadata:#reliability"]) == src.row["reliability"]
    settings = Run.open(run_dir, lock=False).settings.manifest
    assert settings is not None
    assert settings.hidden == ("diaSourceId", "reliability", "snr", "diaObjectId")
    assert settings.talk_only == ("visit", "detector", "ra", "dec")
    assert settings.rows == result.rows


def test_metadata_choices_are_saved_and_reused(run_dir):
    zooprep.manifest(
        run_dir,
        metadata=["id", "band", "snr", "instrument", "psfFlux"],
        hidden=["psfFlux"],
        talk_only=["snr"],
        index=["band"],
    )
    header = _read(run_dir / "manifest.csv")[0].keys()
    assert list(header)[2:-1] == [
        "metadata:#diaSourceId",
        "metadata:%band",
        "metadata:!snr",  # explicit choice beats the default '#'
        "metadata:instrument",
        "metadata:#psfFlux",
    ]
    # A second call without flags reuses what zooprep.toml saved.
    with Run.open(run_dir) as run:
        saved = run.settings.manifest
        assert saved is not None
        assert saved.index == ("band",)
        zooprep.manifest(run)
    assert list(_read(run_dir / "manifest.csv")[0].keys()) == list(header)


def test_bad_metadata_choices_are_refused(run_dir):
    with pytest.raises(InputError, match="nosuchcolumn"):
        zooprep.manifest(run_dir, metadata=["id", "nosuchcolumn"])
    with pytest.raises(InputError, match="add them to --metadata"):
        zooprep.manifest(run_dir, hidden=["psfFlux"])
    with pytest.raises(InputError, match="both"):
        zooprep.manifest(run_dir, hidden=["band"], index=["band"])
    assert not (run_dir / "manifest.csv").exists()


def test_formula_values_are_escaped_on_write_and_restored_on_read(run_dir):
    nasty = ['=HYPERLINK("http://x","y")', "+cmd", "-2+3", "@SUM(A1)", "'quoted"]
    with Run.open(run_dir) as run:
        srcs = list(run.iter_sources(["rendered"]))[: len(nasty) + 1]
        for src, value in zip(srcs, [*nasty, "-1.5e3"], strict=True):
            run.update(src.id, row={**src.row, "instrument": value})
        zooprep.manifest(run, metadata=["id", "instrument"])
    rows = _read(run_dir / "manifest.csv")
    written = [r["metadata:instrument"] for r in rows[: len(nasty) + 1]]
    assert written == [
        '\'=HYPERLINK("http://x","y")',
        "'+cmd",
        "'-2+3",
        "'@SUM(A1)",
        "''quoted",
        "-1.5e3",  # a number is not a formula: left alone
    ]
    back = _review(run_dir).rows
    assert [r.metadata["instrument"] for r in back[: len(nasty) + 1]] == [
        *nasty,
        "-1.5e3",
    ]


def test_url_root_gives_full_urls_through_chunk_directories(run_dir):
    zooprep.manifest(run_dir, url_root="https://bucket.example.org/zoo/batch1//")
    rows = _read(run_dir / "manifest.csv")
    rendered = _rendered(run_dir)
    chunks = {src.files[0].split("/")[1] for src in rendered}
    assert chunks == {"0", "10", "20"}  # chunk_size 10
    for src, row in zip(rendered, rows, strict=True):
        assert row["location:1"] == (
            f"https://bucket.example.org/zoo/batch1/{src.files[0]}"
        )
    # A signed-URL token stays at the end.
    zooprep.manifest(run_dir, url_root="https://acct.blob.example.net/c?sv=1&sig=a%2Fb")
    row = _read(run_dir / "manifest.csv")[12]
    assert row["location:1"] == (
        f"https://acct.blob.example.net/c/{rendered[12].files[0]}?sv=1&sig=a%2Fb"
    )
    reviewed = _review(run_dir)
    assert reviewed.rows[12].urls == [row["location:1"]]
    assert reviewed.rows[12].files == [run_dir / rendered[12].files[0]]


def test_split_writes_numbered_parts_for_the_server_side_import(run_dir):
    result = zooprep.manifest(run_dir, split=10)
    names = [p.name for p in result.parts]
    assert names == ["manifest-001.csv", "manifest-002.csv", "manifest-003.csv"]
    whole = (run_dir / "manifest.csv").read_text().splitlines()
    parts = [p.read_text().splitlines() for p in result.parts]
    assert [len(p) - 1 for p in parts] == [10, 10, 3]
    assert all(p[0] == whole[0] for p in parts)  # each part has the header
    assert [line for p in parts for line in p[1:]] == whole[1:]
    # Fewer parts next time: the stale third part goes.
    result = zooprep.manifest(run_dir, split=20)
    assert [p.name for p in result.parts] == ["manifest-001.csv", "manifest-002.csv"]
    assert not (run_dir / "manifest-003.csv").exists()


def test_missing_png_is_left_out_and_sent_back_to_render(run_dir):
    victim = _rendered(run_dir)[3]
    (run_dir / victim.files[0]).unlink()
    result = zooprep.manifest(run_dir)
    assert result.failed == 1
    assert result.rows == N_SOURCES - 3
    with Run.open(run_dir, lock=False) as run:
        src = run.get(victim.id)
    assert (src.status, src.stage) == ("failed", "render")
    assert "missing" in src.reason
    assert str(victim.id) not in (run_dir / "manifest.csv").read_text()


def test_reviewed_manifest_is_never_overwritten(run_dir):
    zooprep.manifest(run_dir)
    path = run_dir / "manifest.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # a reviewer deleted a row
    with pytest.raises(InputError, match="edited after zooprep wrote it"):
        zooprep.manifest(run_dir)
    assert path.read_text().splitlines() == lines[:-1]


def test_cli_writes_the_manifest(run_dir):
    out = run_dir.parent / "elsewhere" / "review.csv"
    done = CliRunner().invoke(
        cli,
        [
            "manifest",
            str(run_dir),
            "--output",
            str(out),
            "--metadata",
            "id,band,snr",
            "--talk-only",
            "band",
            "--split",
            "20",
        ],
    )
    assert done.exit_code == 0, done.output
    rows = _read(out)
    assert list(rows[0]) == [
        "external_id",
        "location:1",
        "metadata:#diaSourceId",
        "metadata:!band",
        "metadata:#snr",
        ID_TEXT_KEY,
    ]
    # Locations are relative to the manifest's own folder.
    assert rows[0]["location:1"].startswith("../run/cutouts/0/")
    assert (out.parent / rows[0]["location:1"]).is_file()
    assert (out.parent / "review-002.csv").is_file()
    assert len(_review(run_dir).rows) == N_SOURCES - 2  # read from where it was written


CLI_KEYS = [
    "#diaSourceId",
    "!visit",
    "!detector",
    "%band",
    "!ra",
    "!dec",
    "#reliability",
    "#snr",
    "#diaObjectId",
]


def test_panoptes_cli_layout_writes_the_metadata_keys_as_headers(run_dir):
    result = zooprep.manifest(run_dir, layout="panoptes-cli", index=["band"], split=10)
    assert result.layout == "panoptes-cli"
    header = [ID_TEXT_KEY, "#location:1", *CLI_KEYS]
    assert result.columns == header
    lines = (run_dir / "manifest.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(header)
    rows = _read(run_dir / "manifest.csv")
    rendered = _rendered(run_dir)
    for src, row in zip(rendered, rows, strict=True):
        assert row[ID_TEXT_KEY] == f"id:{src.id}"
        assert row["#location:1"] == src.files[0]
        assert row["#diaSourceId"] == str(src.id)
        assert row["%band"] == src.row["band"]
        assert float(row["#reliability"]) == src.row["reliability"]
    # --split keeps working: each part has the same header, rows in order.
    parts = [p.read_text().splitlines() for p in result.parts]
    assert [len(p) - 1 for p in parts] == [10, 10, 3]
    assert all(p[0] == lines[0] for p in parts)
    assert [line for p in parts for line in p[1:]] == lines[1:]
    with Run.open(run_dir, lock=False) as run:
        assert run.settings.manifest.layout == "panoptes-cli"
    assert _review(run_dir).layout == "panoptes-cli"

    # Saved and reused; the import layout is one flag away.
    assert zooprep.manifest(run_dir).columns == header
    again = zooprep.manifest(run_dir, layout="import")
    assert again.columns[:2] == ["external_id", "location:1"]
    assert _review(run_dir).layout == "import"
    with pytest.raises(InputError, match="--layout must be one of"):
        zooprep.manifest(run_dir, layout="panoptes")


def test_panoptes_cli_layout_refuses_a_column_that_would_clash_with_the_id_key(
    run_dir,
):
    with Run.open(run_dir) as run:
        src = next(run.iter_sources(["rendered"]))
        run.update(src.id, row={**src.row, "zooprep_id": 7})
    with pytest.raises(InputError, match="#zooprep_id"):
        zooprep.manifest(run_dir, layout="panoptes-cli", metadata=["id", "zooprep_id"])
    assert not (run_dir / "manifest.csv").exists()


def test_cli_writes_the_panoptes_cli_layout(run_dir):
    done = CliRunner().invoke(
        cli, ["manifest", str(run_dir), "--layout", "panoptes-cli", "--split", "20"]
    )
    assert done.exit_code == 0, done.output
    assert list(_read(run_dir / "manifest.csv")[0])[:3] == [
        ID_TEXT_KEY,
        "#location:1",
        "#diaSourceId",
    ]
    part_header = (run_dir / "manifest-002.csv").read_text().splitlines()[0]
    assert part_header.startswith(f"{ID_TEXT_KEY},#location:1,")
    bad = CliRunner().invoke(cli, ["manifest", str(run_dir), "--layout", "x"])
    assert bad.exit_code == 2
    assert "panoptes-cli" in CliRunner().invoke(cli, ["manifest", "--help"]).output


# -- reading back -----------------------------------------------------------------


def _rewrite(src: Path, dst: Path, *, encoding="utf-8", **fmt) -> None:
    """Rewrite a CSV as a spreadsheet would (all cells as text)."""
    table = pd.read_csv(src, dtype=str, keep_default_na=False)
    table.to_csv(dst, index=False, encoding=encoding, **fmt)


@pytest.mark.parametrize(
    "fmt",
    [
        {"quoting": csv.QUOTE_ALL},
        {"lineterminator": "\r\n"},
        {"encoding": "utf-8-sig", "lineterminator": "\r\n"},
        {"sep": ";", "quoting": csv.QUOTE_NONNUMERIC},
        {"sep": "\t"},
        {"encoding": "cp1252", "sep": ";", "lineterminator": "\r\n"},
    ],
    ids=["quote-all", "crlf", "bom-crlf", "semicolons", "tabs", "excel-ansi"],
)
@pytest.mark.parametrize("layout", ["import", "panoptes-cli"])
def test_spreadsheet_rewrites_that_keep_ids_are_accepted(run_dir, fmt, layout):
    zooprep.manifest(run_dir, layout=layout)
    original = _review(run_dir).rows
    edited = run_dir / "edited.csv"
    _rewrite(run_dir / "manifest.csv", edited, **fmt)
    assert edited.read_bytes() != (run_dir / "manifest.csv").read_bytes()
    back = _review(run_dir, edited)
    assert back.layout == layout
    assert [(r.source_id, r.files, r.metadata) for r in back.rows] == [
        (r.source_id, r.files, r.metadata) for r in original
    ]
    assert back.removed == []


def test_deleted_reordered_and_edited_rows_drive_what_is_uploaded(run_dir):
    zooprep.manifest(run_dir)
    rendered = _rendered(run_dir)
    table = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False)
    deleted = [rendered[2].id, rendered[7].id, rendered[20].id]
    table = table[~table["external_id"].isin([str(i) for i in deleted])]
    table = table.iloc[::-1]  # sorted the other way in the spreadsheet
    first = table.index[0]
    table.loc[first, "metadata:band"] = "g, said the reviewer"
    table.loc[first, "metadata:!ra"] = "12.5"
    table.to_csv(run_dir / "manifest.csv", index=False)

    with Run.open(run_dir) as run:
        reviewed = read_reviewed(run)
        assert [r.source_id for r in reviewed.rows] == [
            s.id for s in reversed(rendered) if s.id not in deleted
        ]
        assert reviewed.removed == deleted  # in selection order
        top = reviewed.rows[0]
        assert top.line == 2
        assert top.metadata["band"] == "g, said the reviewer"
        assert top.metadata["!ra"] == "12.5"
        assert top.files == [(run_dir / rendered[-1].files[0]).resolve()]
        sync = mark_removed(run, reviewed)
        assert (sync.removed, sync.restored) == (3, 0)
    assert zooprep.status(run_dir)["counts"]["removed"] == 3

    # A reviewer pastes one deleted row back: it comes back to 'rendered'.
    back = rendered[7]
    with open(run_dir / "manifest.csv", "a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerow([str(back.id), back.files[0], str(back.id)])
    with Run.open(run_dir) as run:
        reviewed = read_reviewed(run)
        assert reviewed.rows[-1].source_id == back.id
        assert reviewed.removed == [rendered[2].id, rendered[20].id]
        assert mark_removed(run, reviewed).restored == 1
        assert run.get(back.id).status == "rendered"
    assert zooprep.status(run_dir)["counts"]["removed"] == 2


def _edit_cell(path: Path, line: int, column: str, value: str) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[line - 1][rows[0].index(column)] = value
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)


def test_damaged_rows_of_the_panoptes_cli_layout_are_refused_naming_rows(run_dir):
    zooprep.manifest(run_dir, layout="panoptes-cli")
    path = run_dir / "manifest.csv"
    rendered = _rendered(run_dir)
    _edit_cell(path, 3, ID_TEXT_KEY, str(rendered[1].id))  # lost its 'id:'
    _edit_cell(path, 5, ID_TEXT_KEY, "")
    _edit_cell(path, 7, "#location:1", "cutouts/0/renamed.png")
    _edit_cell(path, 9, ID_TEXT_KEY, "id:123456789")
    _edit_cell(path, 11, "#diaObjectId", "5.06428274000266E+17")
    with pytest.raises(ManifestEditError) as info:
        _review(run_dir)
    assert info.value.rows == [3, 5, 7, 9, 11]
    message = str(info.value)
    assert f"line 3: #zooprep_id '{rendered[1].id}' is not id:<digits>" in message
    assert "line 5: #zooprep_id is empty" in message
    assert (
        f"line 7: id {rendered[5].id}: location 'cutouts/0/renamed.png' was changed"
    ) in message
    assert "line 9: id 123456789 matches no source of this run" in message
    assert (
        f"line 11: id {rendered[9].id}: #diaObjectId 5.06428274000266E+17 is in "
        "scientific notation"
    ) in message


def test_panoptes_cli_layout_without_its_file_column_is_refused(run_dir):
    zooprep.manifest(run_dir, layout="panoptes-cli")
    table = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["#location:1"]).to_csv(run_dir / "manifest.csv", index=False)
    with pytest.raises(ManifestEditError, match="no #location:1 column") as info:
        _review(run_dir)
    assert info.value.rows == [1]


def _login(monkeypatch, standin) -> UploadOptions:
    """Credentials in the environment, and upload options for the stand-in's set."""
    for key, value in standin.client_env("password").items():
        monkeypatch.setenv(key, value)
    return UploadOptions(
        project=standin.project_id,
        endpoint=standin.url,
        subject_set_id=standin.subject_set_id,
        workers=4,
        timeout=2.0,
    )


def test_reviewed_panoptes_cli_layout_manifest_drives_zooprep_upload(
    run_dir, panoptes_standin, monkeypatch
):
    zooprep.manifest(run_dir, layout="panoptes-cli", index=["band"])
    rendered = _rendered(run_dir)
    # Reviewed with pandas: rows deleted, sorted the other way, metadata edited.
    table = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False)
    deleted = [rendered[2].id, rendered[7].id, rendered[20].id]
    table = table[~table[ID_TEXT_KEY].isin([f"id:{i}" for i in deleted])]
    table = table.iloc[::-1]
    first = table.index[0]
    table.loc[first, "%band"] = "g, said the reviewer"
    table.loc[first, "#reliability"] = "0.5"
    table.to_csv(run_dir / "manifest.csv", index=False)

    result = zooprep.upload(
        run_dir,
        _login(monkeypatch, panoptes_standin),
        retry=RetryPolicy(attempts=4, initial=0.05, maximum=0.3),
    )
    kept = [s for s in rendered if s.id not in deleted]
    assert (result.created, result.linked, result.failed) == (len(kept), len(kept), 0)
    assert result.removed == 3
    assert zooprep.status(run_dir)["counts"]["removed"] == 3
    subjects = panoptes_standin.set_subjects(panoptes_standin.subject_set_id)
    by_id = {s.metadata["#zooprep_id"]: s for s in subjects}
    assert sorted(by_id) == sorted(str(s.id) for s in kept)
    keys = {k.lstrip("%") for k in CLI_KEYS} | {"#zooprep_id"}
    for src in kept:
        subject = by_id[str(src.id)]
        assert set(subject.metadata) == keys
        assert subject.blobs == ((run_dir / src.files[0]).read_bytes(),)
        assert subject.metadata["#diaSourceId"] == str(src.id)
    edited = by_id[str(rendered[-1].id)].metadata  # the last source: now row 1
    assert (edited["band"], edited["#reliability"]) == ("g, said the reviewer", "0.5")
    assert by_id[str(kept[0].id)].metadata["band"] == kept[0].row["band"]
    subject_set = panoptes_standin.subject_set(panoptes_standin.subject_set_id)
    assert subject_set.metadata["indexFields"] == "band"
    assert panoptes_standin.broken() == []


def test_damaged_ids_unknown_ids_and_duplicates_are_refused_naming_rows(run_dir):
    zooprep.manifest(run_dir)
    path = run_dir / "manifest.csv"
    rendered = _rendered(run_dir)
    lines_before = path.read_text(encoding="utf-8").splitlines(keepends=True)
    exact = rendered[4].id
    rounded = round(exact, -3)  # what Excel keeps of an 18-digit id
    assert rounded != exact
    _edit_cell(path, 3, "external_id", "5.06428E+17")
    _edit_cell(path, 6, "external_id", str(rounded))
    _edit_cell(path, 8, "external_id", "123456789")
    _edit_cell(path, 8, ID_TEXT_KEY, "id:123456789")
    with path.open(encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    lines[9] = lines[3]  # a row pasted twice
    path.write_text("".join(lines), encoding="utf-8")
    _edit_cell(path, 12, "metadata:#diaObjectId", "5.06428274000266E+17")
    with pytest.raises(ManifestEditError) as info:
        _review(run_dir)
    assert info.value.rows == [3, 6, 8, 10, 12]
    message = str(info.value)
    assert "\n" not in message
    assert "line 3: external_id 5.06428E+17 is in scientific notation" in message
    assert f"(it was {rendered[1].id}, as #zooprep_id still says)" in message
    assert f"line 6: external_id {rounded} was rounded by a spreadsheet" in message
    assert "line 8: id 123456789 matches no source of this run" in message
    assert f"line 10: id {rendered[2].id} appears twice (also on line 4)" in message

    # Put the ids back: the damaged metadata id on line 12 is still refused.
    with path.open(encoding="utf-8", newline="") as fh:
        damaged = fh.read().splitlines(keepends=True)
    for n in (2, 5, 7, 9):  # 0-based: lines 3, 6, 8, 10
        damaged[n] = lines_before[n]
    path.write_text("".join(damaged), encoding="utf-8")
    with pytest.raises(ManifestEditError) as info:
        _review(run_dir)
    assert info.value.rows == [12]
    assert (
        f"line 12: id {rendered[10].id}: metadata:#diaObjectId 5.06428274000266E+17 "
        f"is in scientific notation (it was {rendered[10].row['diaObjectId']})"
    ) in str(info.value)


def test_rounded_id_is_refused_even_without_the_text_column(run_dir):
    zooprep.manifest(run_dir)
    table = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False)
    table = table.drop(columns=[ID_TEXT_KEY])
    exact = int(table.loc[5, "external_id"])
    table.loc[5, "external_id"] = f"{exact / 1.0:.0f}"  # float64 rounding
    table.to_csv(run_dir / "manifest.csv", index=False)
    with pytest.raises(ManifestEditError, match="looks rounded") as info:
        _review(run_dir)
    assert info.value.rows == [7]


def test_changed_or_missing_files_are_refused(run_dir):
    zooprep.manifest(run_dir)
    path = run_dir / "manifest.csv"
    rendered = _rendered(run_dir)
    _edit_cell(path, 2, "location:1", "cutouts/0/renamed.png")
    (run_dir / rendered[5].files[0]).unlink()
    with pytest.raises(ManifestEditError) as info:
        _review(run_dir)
    assert info.value.rows == [2, 7]
    assert "location 'cutouts/0/renamed.png' was changed" in str(info.value)
    assert "does not exist" in str(info.value)


def test_header_without_locations_is_refused(run_dir):
    zooprep.manifest(run_dir)
    table = pd.read_csv(run_dir / "manifest.csv", dtype=str)
    table.drop(columns=["location:1"]).to_csv(run_dir / "manifest.csv", index=False)
    with pytest.raises(ManifestEditError, match="no location:1 column") as info:
        _review(run_dir)
    assert info.value.rows == [1]


def test_spreadsheet_reformatted_numbers_keep_their_original_values(run_dir):
    zooprep.manifest(run_dir)
    table = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False)
    # Excel's General format keeps ~10 digits; semicolon locales use decimal commas.
    table["metadata:!ra"] = [f"{float(v):.10g}" for v in table["metadata:!ra"]]
    table["metadata:#snr"] = [
        f"{float(v):.9g}".replace(".", ",") for v in table["metadata:#snr"]
    ]
    table.to_csv(run_dir / "manifest.csv", index=False, sep=";")
    rows = _review(run_dir).rows
    for src, row in zip(_rendered(run_dir), rows, strict=True):
        assert row.metadata["!ra"] == repr(src.row["ra"])
        assert row.metadata["#snr"] == repr(src.row["snr"])


# -- real tools -------------------------------------------------------------------


def _soffice(tmp_path: Path, src: Path, outdir: Path, infilter: str | None = None):
    """Open ``src`` in LibreOffice headless and save it as CSV (comma, UTF-8)."""
    profile = tmp_path / "lo-profile"
    cmd = [
        "soffice",
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--norestore",
    ]
    if infilter:
        cmd.append(f"--infilter={infilter}")
    cmd += [
        "--convert-to",
        "csv:Text - txt - csv (StarCalc):44,34,76",
        "--outdir",
        str(outdir),
        str(src),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    out = outdir / src.name
    assert done.returncode == 0, done.stderr
    assert out.is_file(), done.stderr
    return out


@pytest.mark.libreoffice
@pytest.mark.parametrize("layout", ["import", "panoptes-cli"])
def test_libreoffice_round_trip(run_dir, tmp_path, layout):
    with Run.open(run_dir) as run:
        src = next(run.iter_sources(["rendered"]))
        run.update(src.id, row={**src.row, "instrument": "=1+1"})
        zooprep.manifest(
            run, metadata=[*DEFAULT_METADATA[:8], "instrument"], layout=layout
        )
    original = _review(run_dir).rows
    header = list(_read(run_dir / "manifest.csv")[0])

    # Opened and saved as it comes: LibreOffice turns the ids into 5.06428274000265E+017.
    plain = _soffice(tmp_path, run_dir / "manifest.csv", tmp_path / "plain")
    assert "E+017" in plain.read_text()
    assert ",'=1+1" in plain.read_text()  # the escaped formula stayed text
    with pytest.raises(ManifestEditError) as info:
        _review(run_dir, plain)
    assert info.value.rows == [r.line for r in original]
    assert "scientific notation" in str(info.value)
    first = original[0].source_id
    if layout == "import":
        assert f"(it was {first}, as #zooprep_id still says)" in str(info.value)
    else:  # the row is known by its #zooprep_id; the damaged id column is named
        assert f"line 2: id {first}: #diaSourceId 5.06" in str(info.value)
        assert f"is in scientific notation (it was {first})" in str(info.value)

    # Opened with the id columns set to Text (as manifests/README.md says): accepted,
    # and numbers LibreOffice shortened to 15 digits come back exact.
    text = {"external_id", "metadata:#diaSourceId", "#diaSourceId", ID_TEXT_KEY}
    columns = "/".join(
        f"{i}/{2 if name in text else 1}" for i, name in enumerate(header, 1)
    )
    careful = _soffice(
        tmp_path,
        run_dir / "manifest.csv",
        tmp_path / "careful",
        infilter=f"CSV:44,34,76,1,{columns}",
    )
    back = _review(run_dir, careful)
    assert [(r.source_id, r.files, r.metadata) for r in back.rows] == [
        (r.source_id, r.files, r.metadata) for r in original
    ]
    assert back.rows[0].metadata["instrument"] == "=1+1"


def test_panoptes_cli_parses_the_manifest(run_dir):
    """panoptes-cli's own CSV reading finds the PNG column and all rows."""
    zooprep.manifest(run_dir, metadata=["id", "band", "reliability"])
    manifest = run_dir / "manifest.csv"
    # The loop of `panoptes subject-set upload-subjects`, run on our file: same
    # reader options, same file-column detection against the manifest's folder.
    code = (
        "import csv, os, sys\n"
        "path = sys.argv[1]\n"
        "root = os.path.dirname(path)\n"
        "with open(path) as fh:\n"
        "    r = csv.reader(fh, skipinitialspace=True)\n"
        "    headers = [h.lstrip('%') for h in next(r)]\n"
        "    cols = []\n"
        "    out = []\n"
        "    for row in r:\n"
        "        if not cols:\n"
        "            cols = [n for n, c in enumerate(row, 1)\n"
        "                    if os.path.exists(os.path.join(root, c))]\n"
        "        files = [os.path.join(root, row[n - 1]) for n in cols]\n"
        "        assert all(os.path.isfile(f) for f in files), files\n"
        "        out.append([files, dict(zip(headers, row))])\n"
        "print(__import__('json').dumps([cols, out]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(manifest)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    cols, out = json.loads(done.stdout)
    assert cols == [2]  # only location:1 is taken for a file column
    assert len(out) == N_SOURCES - 2
    assert all(len(files) == 1 and files[0].endswith(".png") for files, _ in out)


def test_panoptes_cli_uploads_the_manifest(run_dir, panoptes_subprocess):
    standin = panoptes_subprocess.standin
    panoptes_subprocess.write_cli_config()
    zooprep.manifest(run_dir, metadata=["id", "band"], index=["band"])
    rendered = _rendered(run_dir)
    done = panoptes_subprocess.run(
        [
            "panoptes",
            "subject-set",
            "upload-subjects",
            standin.subject_set_id,
            str(run_dir / "manifest.csv"),
        ],
        credentials="none",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    linked = standin.set_subjects(standin.subject_set_id)
    assert len(linked) == len(rendered)
    by_id = {s.metadata["external_id"]: s for s in linked}
    for src in rendered:
        subject = by_id[str(src.id)]
        assert subject.blobs == ((run_dir / src.files[0]).read_bytes(),)
        assert subject.mimes == ("image/png",)
        assert subject.metadata["#zooprep_id"] == f"id:{src.id}"
        # panoptes-cli keeps every header verbatim as a metadata key (the
        # documented caveat of route (b): prefixes inside 'metadata:' do not act).
        assert subject.metadata["metadata:%band"] == "r"
        assert subject.metadata["metadata:#diaSourceId"] == str(src.id)
    assert standin.broken() == []


def test_panoptes_cli_uploads_the_panoptes_cli_layout_with_the_intended_keys(
    run_dir, panoptes_subprocess
):
    standin = panoptes_subprocess.standin
    panoptes_subprocess.write_cli_config()
    result = zooprep.manifest(run_dir, layout="panoptes-cli", index=["band"], split=10)
    rendered = _rendered(run_dir)
    done = panoptes_subprocess.run(
        [
            "panoptes",
            "subject-set",
            "upload-subjects",
            standin.subject_set_id,
            *(str(p) for p in result.parts),  # the split parts, in one call
        ],
        credentials="none",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    linked = standin.set_subjects(standin.subject_set_id)
    assert len(linked) == len(rendered)
    # The keys Zooniverse gets are the intended ones: prefixes act ('#' hides,
    # '!' is Talk-only, '%' made an index field and was stripped).
    keys = {"#zooprep_id", "#location:1", *(k.lstrip("%") for k in CLI_KEYS)}
    by_id = {s.metadata["#zooprep_id"]: s for s in linked}
    for src in rendered:
        subject = by_id[f"id:{src.id}"]
        assert set(subject.metadata) == keys
        assert subject.blobs == ((run_dir / src.files[0]).read_bytes(),)
        assert subject.mimes == ("image/png",)
        assert subject.metadata["#location:1"] == src.files[0]
        assert subject.metadata["#diaSourceId"] == str(src.id)
        assert subject.metadata["band"] == src.row["band"]
        assert float(subject.metadata["#reliability"]) == src.row["reliability"]
        assert subject.metadata["!visit"] == str(src.row["visit"])
    assert not any(k.startswith("metadata:") for s in linked for k in s.metadata)
    subject_set = standin.subject_set(standin.subject_set_id)
    assert subject_set.metadata["indexFields"] == "band"
    assert standin.broken() == []


def test_server_side_import_reads_a_manifest_part(run_dir, panoptes_standin):
    from panoptes_client import Panoptes

    standin = panoptes_standin
    result = zooprep.manifest(run_dir, url_root=f"{standin.url}/files/run", split=10)
    part = result.parts[0]
    url = standin.register_file("manifest-001.csv", part.read_bytes())
    with Panoptes(
        endpoint=standin.url, username=standin.username, password=standin.password
    ) as client:
        client.post(
            "/subject_set_imports",
            json={
                "subject_set_imports": {
                    "source_url": url,
                    "links": {"subject_set": standin.subject_set_id},
                }
            },
        )
    import time

    deadline = time.time() + 30
    while time.time() < deadline and standin.imports()[0].imported_count < 10:
        time.sleep(0.05)
    imp = standin.imports()[0]
    assert (imp.manifest_count, imp.imported_count, imp.failed_count) == (10, 10, 0)
    subjects = standin.set_subjects(standin.subject_set_id)
    first = _rendered(run_dir)[0]
    subject = next(s for s in subjects if s.external_id == str(first.id))
    assert subject.metadata["#diaSourceId"] == str(first.id)
    assert subject.metadata["#reliability"] == repr(first.row["reliability"])
    assert subject.external_urls == (f"{standin.url}/files/run/{first.files[0]}",)
