"""zooprep select: APDB (SQLite and PostgreSQL), catalog files and alert packets."""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import zooprep
from zooprep.cli import cli
from zooprep.errors import InputError, RunError
from zooprep.readers.alerts import AlertReader
from zooprep.readers.base import failure_id
from zooprep.readers.where import Compare, In, IsNull, Not, Truthy, parse_where
from zooprep.run import Run
from zooprep.stages.select import _even_quotas

WHERE = 'reliability > 0.5 and band == "r" and not pixelFlags_edge'


def apdb_url(path: Path) -> str:
    return f"sqlite:///{path}"


def run_rows(path: Path) -> list[tuple[int, str | None, dict]]:
    with Run.open(path, lock=False) as run:
        return [(s.id, s.grp, s.row) for s in run.iter_sources()]


def run_ids(path: Path) -> list[int]:
    return [i for i, _, _ in run_rows(path)]


def sql(apdb: Path, query: str) -> list[tuple]:
    with sqlite3.connect(f"file:{apdb}?mode=ro", uri=True) as db:
        return db.execute(query).fetchall()


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


# -- APDB (SQLite) --------------------------------------------------------------


def test_select_whole_apdb_keeps_64bit_ids_groups_and_instrument(apdb_sqlite, tmp_path):
    result = zooprep.select(tmp_path / "run", apdb=apdb_url(apdb_sqlite))
    assert result.selected == 290
    assert result.failed == 0
    rows = run_rows(tmp_path / "run")
    expected = [
        r[0] for r in sql(apdb_sqlite, 'SELECT "diaSourceId" FROM DiaSource ORDER BY 1')
    ]
    assert [i for i, _, _ in rows] == expected
    assert all(isinstance(row["diaSourceId"], int) for _, _, row in rows)
    assert all(row["diaSourceId"] == i for i, _, row in rows)
    assert {row["instrument"] for _, _, row in rows} == {"LSSTCam-imSim"}
    groups = pd.Series([g for _, g, _ in rows]).value_counts().to_dict()
    assert groups == {"943296/168": 164, "982985/164": 126}
    with Run.open(tmp_path / "run", lock=False) as run:
        settings = run.settings.select
    assert settings is not None
    assert settings.kind == "apdb"
    assert settings.instrument == "LSSTCam-imSim"
    assert settings.id_column == "diaSourceId"


def test_where_filter_selects_what_sql_selects(apdb_sqlite, tmp_path):
    zooprep.select(tmp_path / "run", apdb=apdb_url(apdb_sqlite), where=WHERE)
    expected = sql(
        apdb_sqlite,
        'SELECT "diaSourceId" FROM DiaSource WHERE reliability > 0.5 AND band = "r" '
        'AND NOT COALESCE("pixelFlags_edge", 0) ORDER BY 1',
    )
    assert run_ids(tmp_path / "run") == [r[0] for r in expected]
    assert 0 < len(expected) < 290


def test_visit_detector_band_and_reliability_flags_filter(apdb_sqlite, tmp_path):
    url = apdb_url(apdb_sqlite)
    assert zooprep.select(tmp_path / "a", apdb=url, visit=(943296,)).selected == 164
    assert zooprep.select(tmp_path / "b", apdb=url, detector=(164,)).selected == 126
    assert zooprep.select(tmp_path / "c", apdb=url, band=("g",)).selected == 0
    r = zooprep.select(
        tmp_path / "d", apdb=url, reliability_min=0.2, reliability_max=0.9
    )
    (n,) = sql(
        apdb_sqlite,
        "SELECT COUNT(*) FROM DiaSource WHERE reliability >= 0.2 AND reliability <= 0.9",
    )[0]
    assert r.selected == n
    rows = run_rows(tmp_path / "d")
    assert all(0.2 <= row["reliability"] <= 0.9 for _, _, row in rows)


def test_literal_sql_in_where_is_only_a_bound_value(apdb_sqlite, tmp_path):
    result = zooprep.select(
        tmp_path / "run",
        apdb=apdb_url(apdb_sqlite),
        where='band == "r\'; DROP TABLE DiaSource; --"',
    )
    assert result.selected == 0
    assert sql(apdb_sqlite, "SELECT COUNT(*) FROM DiaSource")[0][0] == 290


def test_limit_takes_the_smallest_ids(apdb_sqlite, tmp_path):
    zooprep.select(tmp_path / "run", apdb=apdb_url(apdb_sqlite), where=WHERE, limit=7)
    everything = [
        r[0]
        for r in sql(
            apdb_sqlite,
            'SELECT "diaSourceId" FROM DiaSource WHERE reliability > 0.5 AND band = "r" '
            'AND NOT COALESCE("pixelFlags_edge", 0) ORDER BY 1',
        )
    ]
    assert run_ids(tmp_path / "run") == everything[:7]


def test_sample_is_reproducible_and_seed_dependent(apdb_sqlite, tmp_path):
    url = apdb_url(apdb_sqlite)
    zooprep.select(tmp_path / "a", apdb=url, sample=40, seed=11)
    zooprep.select(tmp_path / "b", apdb=url, sample=40, seed=11)
    zooprep.select(tmp_path / "c", apdb=url, sample=40, seed=12)
    a, b, c = (run_ids(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == 40
    assert len(set(a)) == 40
    assert a == sorted(a)
    assert a != c


def test_sample_without_seed_saves_the_seed_it_drew(apdb_sqlite, tmp_path):
    zooprep.select(tmp_path / "a", apdb=apdb_url(apdb_sqlite), sample=25)
    with Run.open(tmp_path / "a", lock=False) as run:
        seed = run.settings.select.seed
    zooprep.select(tmp_path / "b", apdb=apdb_url(apdb_sqlite), sample=25, seed=seed)
    assert run_ids(tmp_path / "a") == run_ids(tmp_path / "b")


def test_stratified_sample_spreads_evenly_over_reliability_bins(apdb_sqlite, tmp_path):
    zooprep.select(
        tmp_path / "run",
        apdb=apdb_url(apdb_sqlite),
        sample=40,
        seed=3,
        stratify="reliability:4",
    )
    values = np.array(
        [r[0] for r in sql(apdb_sqlite, "SELECT reliability FROM DiaSource")]
    )
    lo, hi = values.min(), values.max()
    available = np.bincount(
        np.clip(((values - lo) / (hi - lo) * 4).astype(int), 0, 3), minlength=4
    )
    picked = np.array([row["reliability"] for _, _, row in run_rows(tmp_path / "run")])
    per_bin = np.bincount(
        np.clip(((picked - lo) / (hi - lo) * 4).astype(int), 0, 3), minlength=4
    )
    assert per_bin.sum() == 40
    assert per_bin.tolist() == _even_quotas(available.tolist(), 40)
    # A plain random sample of this skewed column is far from even.
    assert max(per_bin) - min(per_bin) <= max(0, 10 - min(available))


def test_even_quotas_give_small_bins_all_they_have():
    assert _even_quotas([100, 100, 100, 100], 40) == [10, 10, 10, 10]
    assert _even_quotas([2, 100, 0, 100], 40) == [2, 19, 0, 19]
    assert _even_quotas([3, 4], 40) == [3, 4]


def test_stratify_on_a_text_column_uses_its_values(tmp_path, test_data):
    zooprep.select(
        tmp_path / "run",
        alerts=str(test_data / "ztf_alerts" / "**" / "*.avro"),
        sample=6,
        seed=1,
        stratify="band",
    )
    bands = [row["band"] for _, _, row in run_rows(tmp_path / "run")]
    assert sorted(bands) == ["g", "g", "g", "r", "r", "r"]


def test_stratify_needs_sample(apdb_sqlite, tmp_path):
    with pytest.raises(InputError, match="--stratify needs --sample"):
        zooprep.select(tmp_path / "run", apdb=apdb_url(apdb_sqlite), stratify="snr:3")


# -- runs: refuse, resume, append ------------------------------------------------


def test_second_select_on_a_run_is_refused_without_append(apdb_sqlite, tmp_path):
    url = apdb_url(apdb_sqlite)
    zooprep.select(tmp_path / "run", apdb=url, limit=5)
    with pytest.raises(RunError, match="--append"):
        zooprep.select(tmp_path / "run", apdb=url, limit=10)
    assert len(run_ids(tmp_path / "run")) == 5


def test_repeating_the_same_select_continues_without_duplicates(apdb_sqlite, tmp_path):
    url = apdb_url(apdb_sqlite)
    zooprep.select(tmp_path / "run", apdb=url, where=WHERE)
    again = zooprep.select(tmp_path / "run", apdb=url, where=WHERE)
    assert again.selected == 0
    assert again.already_in_run == len(run_ids(tmp_path / "run"))


def test_append_adds_new_ids_only_and_keeps_rendered_state(apdb_sqlite, tmp_path):
    url = apdb_url(apdb_sqlite)
    zooprep.select(tmp_path / "run", apdb=url, limit=10)
    first = run_ids(tmp_path / "run")
    with Run.open(tmp_path / "run") as run:
        run.update(first[0], status="rendered", files=["cutouts/0/x.png"])
        run.update(first[1], status="uploaded", subject_id="123")
    result = zooprep.select(tmp_path / "run", apdb=url, limit=25, append=True)
    assert (result.selected, result.already_in_run) == (15, 10)
    with Run.open(tmp_path / "run", lock=False) as run:
        assert len(run) == 25
        s0, s1 = run.get(first[0]), run.get(first[1])
        assert s0 is not None
        assert s1 is not None
        assert (s0.status, s0.files) == ("rendered", ["cutouts/0/x.png"])
        assert (s1.status, s1.subject_id) == ("uploaded", "123")
        history = run.settings.select.history
    assert len(history) == 1
    assert "apdb" in history[0]
    assert run_ids(tmp_path / "run")[:10] == first


# -- where parser ------------------------------------------------------------------


def test_where_parser_accepts_comparisons_in_lists_and_null_checks():
    assert parse_where("snr >= 5") == Compare("snr", ">=", 5)
    assert parse_where("0.5 < reliability") == Compare("reliability", ">", 0.5)
    assert parse_where("visit in (1, 2)") == In("visit", (1, 2))
    assert parse_where("band not in ['g']") == In("band", ("g",), negate=True)
    assert parse_where("diaObjectId is not None") == IsNull("diaObjectId", negate=True)
    assert parse_where("ssObjectId == None") == IsNull("ssObjectId")
    assert parse_where("not isDipole") == Not(Truthy("isDipole"))
    assert parse_where("x > -3") == Compare("x", ">", -3)
    chained = parse_where("0.2 <= reliability < 0.8")
    assert chained.items == (  # type: ignore[union-attr]
        Compare("reliability", ">=", 0.2),
        Compare("reliability", "<", 0.8),
    )


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('rm -rf /')",
        "band.lower() == 'r'",
        "band == 'r'; DROP TABLE DiaSource",
        "1 == 1",
        "snr > psfFlux",
        "snr + 1 > 5",
        "flags[0]",
        "band = 'r'",
        "lambda: 1",
        "",
    ],
)
def test_where_parser_refuses_anything_but_comparisons(text):
    with pytest.raises(InputError, match="--where"):
        parse_where(text)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("band == r", "r"),
        ("band in (g, r)", "g"),
        ("visit == 943296 and band != i", "i"),
    ],
)
def test_a_text_value_without_quotes_is_answered_with_the_quoted_form(
    tmp_path, text, name
):
    from click.testing import CliRunner

    from zooprep.cli import cli

    catalog = tmp_path / "c.csv"
    catalog.write_text("diaSourceId,visit,detector,x,y,band\n1,943296,1,2,3,r\n")
    result = CliRunner().invoke(
        cli,
        ["select", str(tmp_path / "run"), "--catalog", str(catalog), "--where", text],
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --where {text!r}: {name} is a name, not a value (only one side of a "
        f"comparison may be a column); if you mean the text {name}, quote it: '{name}'"
    ]


def test_unknown_where_column_lists_close_matches(apdb_sqlite, tmp_path):
    with pytest.raises(InputError, match=r"unknown column 'reliabilty'.*'reliability'"):
        zooprep.select(
            tmp_path / "run", apdb=apdb_url(apdb_sqlite), where="reliabilty > 0.5"
        )
    assert not (tmp_path / "run").exists()


def test_where_type_mismatch_is_an_input_error(apdb_sqlite, tmp_path):
    with pytest.raises(InputError, match="band"):
        zooprep.select(tmp_path / "run", apdb=apdb_url(apdb_sqlite), where="band > 3")


def test_missing_values_compare_false_on_every_backend(tmp_path):
    frame = pd.DataFrame(
        {
            "diaSourceId": [1, 2, 3],
            "visit": [1, 1, 1],
            "detector": [1, 1, 1],
            "x": [1.0, 2.0, 3.0],
            "y": [1.0, 2.0, 3.0],
            "reliability": [0.9, None, 0.1],
        }
    )
    path = tmp_path / "cat.csv"
    frame.to_csv(path, index=False)
    zooprep.select(tmp_path / "a", catalog=path, where="not reliability > 0.5")
    assert run_ids(tmp_path / "a") == [2, 3]
    zooprep.select(tmp_path / "b", catalog=path, where="reliability != 0.9")
    assert run_ids(tmp_path / "b") == [3]


# -- APDB errors ---------------------------------------------------------------------


def test_missing_sqlite_file_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="no SQLite file"):
        zooprep.select(tmp_path / "run", apdb=f"sqlite:///{tmp_path}/nope.sqlite3")
    assert not (tmp_path / "nope.sqlite3").exists()
    assert not (tmp_path / "run").exists()


def test_database_without_diasource_table_lists_its_tables(tmp_path):
    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE Visits (id INTEGER)")
    with pytest.raises(InputError, match=r"no table 'DiaSource'.*Visits"):
        zooprep.select(tmp_path / "run", apdb=apdb_url(db))


def test_missing_id_column_names_it(apdb_sqlite, tmp_path):
    with pytest.raises(
        InputError, match=r"unknown column 'diaSourceID'.*'diaSourceId'"
    ):
        zooprep.select(
            tmp_path / "run", apdb=apdb_url(apdb_sqlite), id_column="diaSourceID"
        )


def test_apdb_config_without_the_extra_says_it_is_needed(
    apdb_sqlite, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "lsst.dax.apdb", None)  # import now fails
    config = tmp_path / "apdb.yaml"
    config.write_text(f"db_url: sqlite:///{apdb_sqlite}\nimplementation_type: sql\n")
    with pytest.raises(InputError, match="needs the optional package lsst-dax-apdb"):
        zooprep.select(tmp_path / "run", apdb_config=config)
    assert not (tmp_path / "run").exists()


def test_apdb_config_reads_through_lsst_dax_apdb_or_says_it_is_needed(
    apdb_sqlite, tmp_path
):
    config = tmp_path / "apdb.yaml"
    config.write_text(f"db_url: sqlite:///{apdb_sqlite}\nimplementation_type: sql\n")
    try:
        import lsst.dax.apdb  # noqa: F401
    except ImportError:
        with pytest.raises(
            InputError, match="needs the optional package lsst-dax-apdb"
        ):
            zooprep.select(tmp_path / "run", apdb_config=config)
        return
    result = zooprep.select(tmp_path / "run", apdb_config=config, where=WHERE)
    direct = zooprep.select(
        tmp_path / "direct", apdb=apdb_url(apdb_sqlite), where=WHERE
    )
    assert result.selected == direct.selected > 0
    assert run_rows(tmp_path / "run") == run_rows(tmp_path / "direct")
    with Run.open(tmp_path / "run", lock=False) as run:
        assert run.settings.select.apdb_config == str(config)


# -- PostgreSQL ----------------------------------------------------------------------


SELECTIONS = [
    {},
    {"where": WHERE},
    {"where": "visit == 982985 and snr >= 10 or isDipole"},
    {"where": "diaObjectId is not None and not pixelFlags_saturatedCenter"},
    {"visit": (943296,), "reliability_min": 0.1},
    {"limit": 17, "where": "reliability < 0.3"},
    {"sample": 33, "seed": 5},
    {"sample": 30, "seed": 2, "stratify": "snr:3", "where": "band in ('r', 'g')"},
]


@pytest.mark.postgres
@pytest.mark.parametrize("kwargs", SELECTIONS, ids=lambda k: ",".join(k) or "all")
def test_postgres_and_sqlite_select_identical_rows(
    apdb_postgres, apdb_sqlite, tmp_path, kwargs
):
    zooprep.select(tmp_path / "pg", apdb=apdb_postgres.url, schema="apdb", **kwargs)
    zooprep.select(tmp_path / "lite", apdb=apdb_url(apdb_sqlite), **kwargs)
    pg, lite = run_rows(tmp_path / "pg"), run_rows(tmp_path / "lite")
    assert len(pg) > 0
    assert [i for i, _, _ in pg] == [i for i, _, _ in lite]
    assert pg == lite  # every column of every row, ids and groups included
    assert blocks(tmp_path / "pg") == ["1.sqlite"]  # handed over in column batches


@pytest.mark.postgres
def test_postgres_password_never_saved_or_shown(apdb_postgres, tmp_path):
    import sqlalchemy as sa

    url = sa.engine.make_url(apdb_postgres.url)
    password = url.password
    assert password
    result = zooprep.select(tmp_path / "run", apdb=apdb_postgres.url, schema="apdb")
    assert result.selected == 290
    assert password not in str(result)
    assert password not in (tmp_path / "run" / "zooprep.toml").read_text()
    with Run.open(tmp_path / "run", lock=False) as run:
        assert run.settings.select.schema == "apdb"
        assert run.settings.select.instrument == "LSSTCam-imSim"


@pytest.mark.postgres
def test_postgres_wrong_password_is_one_line_without_it(apdb_postgres, tmp_path):
    import sqlalchemy as sa

    wrong = "not-the-password-42"
    url = sa.engine.make_url(apdb_postgres.url).set(password=wrong)
    with pytest.raises(InputError) as info:
        zooprep.select(
            tmp_path / "run", apdb=url.render_as_string(False), schema="apdb"
        )
    message = str(info.value)
    assert "password authentication failed" in message
    assert wrong not in message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.postgres
def test_postgres_missing_schema_and_unreachable_server(apdb_postgres, tmp_path):
    with pytest.raises(InputError, match="no schema 'nope'"):
        zooprep.select(tmp_path / "a", apdb=apdb_postgres.url, schema="nope")
    with pytest.raises(InputError, match="no table 'DiaSource'"):
        zooprep.select(tmp_path / "b", apdb=apdb_postgres.url)  # public schema
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="cannot read the APDB"):
        zooprep.select(
            tmp_path / "c",
            apdb=f"postgresql://nobody:pw@127.0.0.1:{port}/apdb?connect_timeout=5",
        )


# -- catalogs --------------------------------------------------------------------------

CAT_COLUMNS = [
    "diaSourceId",
    "visit",
    "detector",
    "ra",
    "dec",
    "x",
    "y",
    "band",
    "reliability",
    "snr",
    "isDipole",
    "ssObjectId",
    "pixelFlags_edge",
]


@pytest.fixture
def apdb_frame(apdb_sqlite) -> pd.DataFrame:
    cols = ", ".join(f'"{c}"' for c in CAT_COLUMNS)
    rows = sql(apdb_sqlite, f'SELECT {cols} FROM DiaSource ORDER BY "diaSourceId"')
    frame = pd.DataFrame(rows, columns=CAT_COLUMNS)
    for flag in ("isDipole", "pixelFlags_edge"):
        frame[flag] = frame[flag].astype(bool)
    # Missing values in a 64-bit column: pandas would make it float64.
    objects = pd.array([None] * len(frame), dtype="Int64")
    objects[::3] = frame["diaSourceId"].to_numpy()[::3] + 7
    frame["ssObjectId"] = objects
    return frame


def test_csv_catalog_keeps_64bit_ids_exact(apdb_frame, tmp_path):
    path = tmp_path / "cat.csv"
    apdb_frame.to_csv(path, index=False)
    result = zooprep.select(tmp_path / "run", catalog=path, instrument="LSSTCam-imSim")
    assert result.selected == 290
    rows = run_rows(tmp_path / "run")
    assert [i for i, _, _ in rows] == apdb_frame["diaSourceId"].tolist()
    sso = [row["ssObjectId"] for _, _, row in rows]
    expected = [None if pd.isna(v) else int(v) for v in apdb_frame["ssObjectId"]]
    assert sso == expected
    assert {row["instrument"] for _, _, row in rows} == {"LSSTCam-imSim"}
    assert rows[0][1] == f"{rows[0][2]['visit']}/{rows[0][2]['detector']}"


@pytest.mark.parametrize("suffix", [".parquet", ".fits", ".ecsv"])
def test_parquet_fits_ecsv_catalogs_select_like_the_apdb(
    apdb_frame, apdb_sqlite, tmp_path, suffix
):
    from astropy.table import Table

    path = tmp_path / f"cat{suffix}"
    if suffix == ".parquet":
        apdb_frame.to_parquet(path)
    else:
        table = Table.from_pandas(apdb_frame)
        table.write(path)
    zooprep.select(tmp_path / "cat", catalog=path, where=WHERE, sample=20, seed=4)
    zooprep.select(
        tmp_path / "db", apdb=apdb_url(apdb_sqlite), where=WHERE, sample=20, seed=4
    )
    cat, db = run_rows(tmp_path / "cat"), run_rows(tmp_path / "db")
    assert [i for i, _, _ in cat] == [i for i, _, _ in db]
    for (_, grp_c, row_c), (_, grp_d, row_d) in zip(cat, db, strict=True):
        assert grp_c == grp_d
        assert row_c["band"] == "r"
        assert row_c["reliability"] == row_d["reliability"]
        assert row_c["isDipole"] == row_d["isDipole"]


def test_a_parquet_catalog_is_read_by_arrow_not_through_a_python_file(
    apdb_frame, tmp_path, monkeypatch
):
    # A Python file handed to Arrow leaves Python buffers in Arrow's reader
    # threads; one released at interpreter exit aborted about one
    # `select --learn-from` in a hundred (apache/arrow#34314).
    import pandas.io.parquet

    def no_python_file(*args, **kwargs):
        raise AssertionError("pandas opened the Parquet file as a Python file")

    path = tmp_path / "cat.parquet"
    apdb_frame.to_parquet(path)
    monkeypatch.setattr(pandas.io.parquet, "get_handle", no_python_file)
    done = zooprep.select(tmp_path / "run", catalog=path, where=WHERE, sample=5, seed=4)
    assert done.selected == 5


def test_rename_and_id_column_map_another_pipelines_catalog(apdb_frame, tmp_path):
    other = apdb_frame.rename(
        columns={
            "diaSourceId": "src_id",
            "visit": "expnum",
            "detector": "ccd",
            "x": "xpix",
            "y": "ypix",
        }
    )
    path = tmp_path / "other.csv"
    other.to_csv(path, index=False)
    result = zooprep.select(
        tmp_path / "run",
        catalog=path,
        id_column="src_id",
        rename={"expnum": "visit", "ccd": "detector", "xpix": "x", "ypix": "y"},
        where="visit == 982985",
    )
    assert result.selected == 126
    rows = run_rows(tmp_path / "run")
    assert all(row["src_id"] == i for i, _, row in rows)
    assert {g for _, g, _ in rows} == {"982985/164"}


def test_catalog_with_wrong_columns_says_what_is_missing(apdb_frame, tmp_path):
    path = tmp_path / "bad.csv"
    apdb_frame.drop(columns=["x", "y", "ra", "dec"]).to_csv(path, index=False)
    with pytest.raises(
        InputError, match=r"bad.csv: missing column\(s\) x\+y \(or ra\+dec\)"
    ):
        zooprep.select(tmp_path / "run", catalog=path)
    path2 = tmp_path / "noid.csv"
    apdb_frame.rename(columns={"diaSourceId": "id"}).to_csv(path2, index=False)
    with pytest.raises(InputError, match="unknown column 'diaSourceId'"):
        zooprep.select(tmp_path / "run", catalog=path2)
    with pytest.raises(InputError, match="--rename"):
        zooprep.select(tmp_path / "run", catalog=path2, rename={"ident": "diaSourceId"})


def test_catalog_with_float_ids_is_refused(apdb_frame, tmp_path):
    frame = apdb_frame.copy()
    frame["diaSourceId"] = frame["diaSourceId"].astype(float)
    path = tmp_path / "float.parquet"
    frame.to_parquet(path)
    with pytest.raises(InputError, match=r"row 1: id .* may have lost digits"):
        zooprep.select(tmp_path / "run", catalog=path)


def test_duplicated_catalog_ids_are_reported(apdb_frame, tmp_path):
    frame = pd.concat([apdb_frame.iloc[:5], apdb_frame.iloc[2:4]])
    path = tmp_path / "dup.csv"
    frame.to_csv(path, index=False)
    result = zooprep.select(tmp_path / "run", catalog=path)
    assert result.selected == 5
    assert result.duplicates == 2
    assert sorted(result.duplicate_ids) == sorted(apdb_frame["diaSourceId"].iloc[2:4])
    assert "duplicated" in str(result)


def test_unknown_catalog_format_and_missing_file(tmp_path):
    path = tmp_path / "cat.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(InputError, match="unknown format"):
        zooprep.select(tmp_path / "run", catalog=path)
    with pytest.raises(InputError, match="no file"):
        zooprep.select(tmp_path / "run", catalog=tmp_path / "missing.csv")


# -- alerts --------------------------------------------------------------------------------


def inventory_records(test_data: Path) -> dict[str, int]:
    """Records per .avro file as listed in INVENTORY.md (0 for Confluent payloads)."""
    counts = {}
    for line in (test_data / "INVENTORY.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+\.avro)` \| ([^|]+)\|", line)
        if not m:
            continue
        records = re.search(r"(\d+) record\(s\)", m.group(2))
        counts[m.group(1)] = int(records.group(1)) if records else 0
    return counts


def test_every_shared_alert_file_gives_its_records(test_data, tmp_path):
    expected = inventory_records(test_data)
    assert len(expected) == len(list(test_data.rglob("*.avro"))) == 30
    result = zooprep.select(tmp_path / "run", alerts=str(test_data / "**" / "*.avro"))
    rows = run_rows(tmp_path / "run")
    good = [(i, row) for i, _, row in rows if i > 0]
    per_file: dict[str, int] = {}
    for _, row in good:
        rel = str(Path(row["_alert_path"]).relative_to(test_data))
        per_file[rel] = per_file.get(rel, 0) + 1
    assert per_file == {k: v for k, v in expected.items() if v}
    assert result.selected == sum(expected.values())
    # The Confluent wire-format payload is recorded as a failed row.
    assert result.failed == 1
    confluent = "rubin_alerts/boom/7912941781254298.avro"
    report = zooprep.status(tmp_path / "run")
    (failure,) = report["failures"]["select"]
    assert failure["count"] == 1
    assert failure["examples"] == [failure_id(str(test_data / confluent))]
    with Run.open(tmp_path / "run", lock=False) as run:
        (bad,) = run.failures()
    assert "Confluent wire-format" in (bad.reason or "")
    assert confluent in (bad.reason or "")
    # Rubin ids from the inventory, exact.
    ids = {i for i, _ in good}
    assert {170094456272322680, 169813007334899715, 2695378462115010012} <= ids


def test_ztf_alert_fields_are_mapped_to_diasource_names(test_data):
    reader = AlertReader(test_data / "ztf_alerts" / "ampel" / "516171791415015025.avro")
    (row,) = list(reader.rows(None))
    assert row["diaSourceId"] == row["candid"] == 516171791415015025
    assert row["objectId"] == "ZTF18aaxlzgi"
    assert row["band"] == "r"
    assert row["reliability"] == pytest.approx(0.15)  # rb: this packet has no drb
    assert (row["visit"], row["detector"]) == (51617179, 14)
    assert (row["x"], row["y"]) == (row["xpos"], row["ypos"])
    assert row["psfFlux"] > 0
    assert row["isdiffpos"] == "t"
    assert row["psfFlux"] == pytest.approx(10 ** (-0.4 * (row["magpsf"] - 31.4)))
    assert row["instrument"] == "ZTF"
    assert (row["_alert_index"], row["_alert_format"]) == (0, "ztf")
    multi = AlertReader(
        test_data / "ztf_alerts" / "fink-client" / "avro_multi_alerts_other.avro"
    )
    rows = list(multi.rows(None))
    assert sorted(r["_alert_index"] for r in rows) == [0, 1, 2]
    assert {r["reliability"] for r in rows} == {r["drb"] for r in rows}


def test_rubin_alert_rows_are_the_diasource_record(test_data):
    reader = AlertReader(
        test_data / "rubin_alerts" / "fink-client" / "part-2-918301.avro"
    )
    rows = list(reader.rows(None))
    assert len(rows) == 7
    assert rows == sorted(rows, key=lambda r: r["diaSourceId"])
    first = next(r for r in rows if r["diaSourceId"] == 170094456272322680)
    assert (first["visit"], first["detector"], first["band"]) == (
        2026030500055,
        140,
        "i",
    )
    assert first["instrument"] == "LSSTCam"
    assert first["_alert_format"] == "rubin"


def test_alert_where_filter_and_limit(test_data, tmp_path):
    zooprep.select(
        tmp_path / "run",
        alerts=str(test_data / "ztf_alerts" / "**" / "*.avro"),
        where='reliability < 0.6 and isdiffpos == "t"',
    )
    rows = run_rows(tmp_path / "run")
    assert rows
    assert all(r["reliability"] < 0.6 and r["isdiffpos"] == "t" for _, _, r in rows)
    assert 516171791415015025 in [i for i, _, _ in rows]


def test_corrupt_avro_among_good_ones_is_recorded_and_the_rest_proceed(
    test_data, tmp_path
):
    folder = tmp_path / "alerts"
    folder.mkdir()
    sources = sorted((test_data / "ztf_alerts" / "fink-client").glob("ZTF19*.avro"))
    for path in sources:
        shutil.copy(path, folder)
    data = sources[0].read_bytes()
    (folder / "truncated.avro").write_bytes(data[: len(data) // 2])
    (folder / "notavro.avro").write_bytes(b"this is not an alert\n" * 10)
    result = zooprep.select(tmp_path / "run", alerts=str(folder / "*.avro"))
    assert result.selected == len(sources) == 4
    assert result.failed == 2
    reasons = sorted(f.reason for f in result.failures)
    assert "notavro.avro: not an Avro container file" in reasons[0]
    assert "truncated.avro: damaged Avro file" in reasons[1]
    assert all("\n" not in r for r in reasons)
    assert zooprep.status(tmp_path / "run")["counts"]["failed"] == 2
    # Once the file is fixed, selecting again retires its failure.
    shutil.copy(sources[0], folder / "truncated.avro")
    (folder / "notavro.avro").unlink()
    again = zooprep.select(tmp_path / "run", alerts=str(folder / "*.avro"))
    assert again.failed == 0
    counts = zooprep.status(tmp_path / "run")["counts"]
    assert counts["failed"] == 1  # notavro.avro is gone, its failure stays recorded
    assert counts["removed"] == 1
    assert again.duplicates == 1  # the fixed file repeats an alert


def test_alert_glob_matching_nothing(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        zooprep.select(tmp_path / "run", alerts=str(tmp_path / "*.avro"))


# -- CLI -------------------------------------------------------------------------------------


def test_cli_select_exit_codes_and_one_line_errors(apdb_sqlite, test_data, tmp_path):
    runner = CliRunner()
    url = apdb_url(apdb_sqlite)
    ok = runner.invoke(
        cli,
        [
            "select",
            str(tmp_path / "a"),
            "--apdb",
            url,
            "--where",
            WHERE,
            "--limit",
            "5",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "selected 5 sources" in ok.output
    assert len(run_ids(tmp_path / "a")) == 5

    bad = runner.invoke(
        cli, ["select", str(tmp_path / "b"), "--apdb", url, "--where", "snr >"]
    )
    assert bad.exit_code == 2
    assert one_line(bad.output).startswith("Error: --where")

    unknown = runner.invoke(
        cli,
        [
            "select",
            str(tmp_path / "b"),
            "--apdb",
            url,
            "--visit",
            "1",
            "--where",
            "sn > 1",
        ],
    )
    assert unknown.exit_code == 2
    assert "did you mean 'snr'" in one_line(unknown.output)

    again = runner.invoke(cli, ["select", str(tmp_path / "a"), "--apdb", url])
    assert again.exit_code == 2
    assert "--append" in one_line(again.output)

    more = runner.invoke(
        cli,
        [
            "select",
            str(tmp_path / "a"),
            "--apdb",
            url,
            "--where",
            WHERE,
            "--append",
            "--limit",
            "8",
        ],
    )
    assert more.exit_code == 0, more.output
    assert len(run_ids(tmp_path / "a")) == 8

    none = runner.invoke(cli, ["select", str(tmp_path / "c")])
    assert none.exit_code == 2
    assert "exactly one of --apdb" in one_line(none.output)

    alerts = runner.invoke(
        cli,
        [
            "select",
            str(tmp_path / "d"),
            "--alerts",
            str(test_data / "rubin_alerts" / "**" / "*.avro"),
        ],
    )
    assert alerts.exit_code == 1  # the Confluent payload failed; the rest were selected
    assert "selected 17 sources" in alerts.output


def test_select_help_documents_minimum_catalog_columns():
    out = " ".join(CliRunner().invoke(cli, ["select", "--help"]).output.split())
    assert "visit and detector (or image)" in out
    assert "x and y (or ra and dec)" in out
    assert "--where" in out
    assert "--stratify" in out
    assert "--append" in out


def test_an_apdb_given_as_a_bare_path_is_answered_with_its_url(apdb_sqlite, tmp_path):
    from click.testing import CliRunner

    from zooprep.cli import cli

    result = CliRunner().invoke(
        cli, ["select", str(tmp_path / "run"), "--apdb", str(apdb_sqlite)]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --apdb {str(apdb_sqlite)!r} is a file, not a database URL; for an "
        f"SQLite APDB write sqlite:///{apdb_sqlite}"
    ]
    assert not (tmp_path / "run").exists()


# -- bulk paths: SQLite copies, column batches ---------------------------------------


class RowByRow:
    """A reader that only yields rows one at a time (as a broker or TAP reader does)."""

    store = None
    stopped = None

    def __init__(self, reader):
        self.reader = reader
        self.kind, self.id_column = reader.kind, reader.id_column

    @property
    def instrument(self):
        return self.reader.instrument

    @property
    def paths(self):
        return self.reader.paths

    @property
    def failures(self):
        return self.reader.failures

    def open(self):
        return self.reader.open()

    def close(self):
        self.reader.close()

    def describe(self):
        return self.reader.describe()

    def columns(self):
        return self.reader.columns()

    def check(self, where, column=None):
        self.reader.check(where, column)

    def scan(self, where, column=None):
        return self.reader.scan(where, column)

    def rows(self, where, *, ids=None, limit=None):
        return self.reader.rows(where, ids=ids, limit=limit)

    def group(self, row):
        return self.reader.group(row)


def full_state(path: Path) -> list[tuple]:
    with Run.open(path, lock=False) as run:
        return [(s.seq, s.id, s.status, s.grp, s.row) for s in run.iter_sources()]


def blocks(path: Path) -> list[str]:
    folder = path / "rows"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"where": WHERE},
        {"where": 'band in ("g", "r", None) or isDipole', "limit": 40},
        {"where": "diaSourceId > 506428274000265400 and not pixelFlags_edge"},
        {"limit": 25},
        {"sample": 30, "seed": 2},
        {"sample": 30, "seed": 2, "stratify": "reliability:3"},
    ],
)
def test_an_sqlite_apdb_copied_by_sqlite_gives_the_rows_read_one_by_one(
    apdb_sqlite, tmp_path, kwargs
):
    from zooprep.readers.apdb import ApdbReader

    url = apdb_url(apdb_sqlite)
    zooprep.select(tmp_path / "bulk", apdb=url, **kwargs)
    zooprep.select(tmp_path / "rows", reader=RowByRow(ApdbReader(url)), **kwargs)
    bulk, rows = full_state(tmp_path / "bulk"), full_state(tmp_path / "rows")
    assert len(bulk) > 0
    assert bulk == rows  # order, ids, groups and every column of every row
    assert blocks(tmp_path / "bulk") == ["1.sqlite"]
    assert blocks(tmp_path / "rows") == []
    first = bulk[0][4]
    assert isinstance(first["isDipole"], bool)
    assert isinstance(first["diaSourceId"], int)
    assert "T" in first["time_processed"]  # ISO text, as the JSON form gives


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_a_catalog_handed_over_in_column_batches_gives_the_rows_read_one_by_one(
    apdb_frame, tmp_path, suffix
):
    from astropy.table import Table

    from zooprep.readers.catalog import CatalogReader

    path = tmp_path / f"cat{suffix}"
    if suffix == ".csv":
        apdb_frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        apdb_frame.to_parquet(path)
    else:
        Table.from_pandas(apdb_frame).write(path)
    for kwargs in ({}, {"where": WHERE, "limit": 30}):
        bulk, rows = tmp_path / f"bulk{len(kwargs)}", tmp_path / f"rows{len(kwargs)}"
        zooprep.select(bulk, catalog=path, instrument="LSSTCam-imSim", **kwargs)
        reader = CatalogReader(path, instrument="LSSTCam-imSim")
        zooprep.select(rows, reader=RowByRow(reader), **kwargs)
        assert full_state(bulk) == full_state(rows)
        assert blocks(bulk) == ["1.sqlite"]


def _apdb_copy(source: Path, target: Path, create_edit, *extra_sql: str) -> Path:
    """A copy of the test APDB whose DiaSource table is made by ``create_edit(sql)``."""
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src:
        create = src.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'DiaSource'"
        ).fetchone()[0]
    db = sqlite3.connect(target)
    db.execute(create_edit(create))
    db.execute(f"ATTACH DATABASE 'file:{source}?mode=ro' AS real")
    db.execute("INSERT INTO DiaSource SELECT * FROM real.DiaSource")
    for statement in extra_sql:
        db.execute(statement)
    db.commit()
    db.close()
    return target


def test_an_apdb_with_repeated_ids_is_read_row_by_row_and_reports_them(
    apdb_sqlite, tmp_path
):
    def no_key(sql: str) -> str:
        return re.sub(r',\s*PRIMARY KEY \("diaSourceId"\)', "", sql)

    dup = _apdb_copy(
        apdb_sqlite,
        tmp_path / "dup.sqlite3",
        no_key,
        "INSERT INTO DiaSource SELECT * FROM real.DiaSource "
        'ORDER BY "diaSourceId" LIMIT 3',
    )
    result = zooprep.select(tmp_path / "run", apdb=apdb_url(dup))
    assert (result.selected, result.duplicates) == (290, 3)
    assert blocks(tmp_path / "run") == []  # nothing half-copied is left
    assert run_ids(tmp_path / "run") == sorted(run_ids(tmp_path / "run"))


def test_an_apdb_with_a_text_id_gives_the_row_by_row_error(apdb_sqlite, tmp_path):
    def no_key(sql: str) -> str:
        return re.sub(r',\s*PRIMARY KEY \("diaSourceId"\)', "", sql).replace(
            '"diaSourceId" BIGINT NOT NULL', '"diaSourceId" TEXT NOT NULL'
        )

    bad = _apdb_copy(
        apdb_sqlite,
        tmp_path / "bad.sqlite3",
        no_key,
        "UPDATE DiaSource SET \"diaSourceId\" = 'x17' WHERE rowid = 5",
    )
    with pytest.raises(InputError, match=r"'x17'.*not an integer"):
        zooprep.select(tmp_path / "run", apdb=apdb_url(bad))
    assert blocks(tmp_path / "run") == []


def test_appended_selections_keep_their_rows_in_their_own_blocks(
    apdb_sqlite, apdb_frame, tmp_path
):
    url = apdb_url(apdb_sqlite)
    run = tmp_path / "run"
    zooprep.select(run, apdb=url, where="reliability > 0.5")
    first = full_state(run)
    path = tmp_path / "cat.parquet"
    apdb_frame.to_parquet(path)
    result = zooprep.select(run, catalog=path, append=True, limit=100)
    assert result.selected + result.already_in_run == 100
    both = full_state(run)
    assert both[: len(first)] == first  # earlier rows untouched
    assert blocks(run) == ["1.sqlite", "2.sqlite"]
    later = {s[1]: s[4] for s in both[len(first) :]}
    assert all(set(row) == set(CAT_COLUMNS) for row in later.values())
    again = zooprep.select(run, catalog=path, append=True, limit=100)
    assert again.selected == 0
    assert blocks(run) == ["1.sqlite", "2.sqlite"]  # the empty copy is dropped
