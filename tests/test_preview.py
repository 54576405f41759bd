"""``zooprep preview``: the HTML gallery, checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

import zooprep
from zooprep.errors import RunError
from zooprep.preview import flag_columns
from zooprep.run import Run

CARD = re.compile(r'<figure class="card" data-id="(\d+)" data-status="(\w+)"([^>]*)>')


def _count(dom: str) -> dict[str, int]:
    """The numbers the page shows in its count line (data-* attributes)."""
    tag = re.search(r'<span id="zp-count"([^>]*)>', dom)
    assert tag, "the page drew no count line"
    return {k: int(v) for k, v in re.findall(r'data-(\w+)="(\d+)"', tag.group(1))}


def _data(page: Path) -> dict[str, Any]:
    """The JSON the page embeds."""
    text = page.read_text(encoding="utf-8")
    found = re.search(
        r'<script type="application/json" id="zp-data">(.*?)</script>', text, re.S
    )
    assert found
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def _apdb_rows(apdb: Path) -> list[dict[str, Any]]:
    """Every DiaSource of the real ci_dc2 APDB, as dicts."""
    db = sqlite3.connect(f"file:{apdb}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute('SELECT * FROM "DiaSource"')]
    finally:
        db.close()


def _triplet_png(path: Path, decam: Path, x: int, y: int, size: int = 24) -> None:
    """A small real PNG: template | science | difference cut from the DECam triplet."""
    panels = []
    for name in (
        "Stack-DEC-OBS18.fits",
        "Stack-DEC-OBS04.fits",
        "FinalDifference.fits",
    ):
        data = fits.getdata(decam / name).astype(np.float32)
        cut = data[y : y + size, x : x + size]
        lo, hi = np.percentile(cut, [1, 99])
        panels.append(np.clip((cut - lo) / (hi - lo + 1e-9) * 255, 0, 255))
    picture = np.hstack(panels).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).resize((picture.shape[1] * 4, size * 4)).save(path)


@pytest.fixture(scope="module")
def gallery_run(
    tmp_path_factory: pytest.TempPathFactory, apdb_sqlite: Path, test_data: Path
) -> Path:
    """A run of the 290 real APDB sources: some rendered (real PNGs), some failed."""
    path = tmp_path_factory.mktemp("preview") / "run"
    decam = test_data / "decam_sfft"
    with Run.create(path) as run:
        run.add_sources(_apdb_rows(apdb_sqlite), "diaSourceId")
        with run.transaction():
            for src in run.iter_sources():
                if src.seq % 3 == 0:
                    rel = run.cutout_path(src)
                    _triplet_png(
                        path / rel, decam, 10 + src.seq % 200, 20 + src.seq % 180
                    )
                    run.update(
                        src.id, status="rendered", files=[rel], padded=src.seq % 9 == 0
                    )
                elif src.seq % 7 == 0:
                    run.mark_failed(
                        src.id,
                        "render",
                        f"x={src.row['x']:.0f} is off the image </script>",
                    )
    return path


def test_preview_writes_one_self_contained_page(gallery_run: Path) -> None:
    page = zooprep.preview(gallery_run)
    assert page == gallery_run / "preview.html"
    text = page.read_text(encoding="utf-8")
    # No network: no external scripts, styles, fonts or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text
    assert "@import" not in text
    assert "url(" not in text
    assert 'src="data:image/png;base64,' in text  # the summary plots, embedded
    data = _data(page)
    assert data["n"] == 290
    # 64-bit ids travel as strings, exactly.
    rows = {int(i) for i in data["id"]}
    with Run.open(gallery_run, lock=False) as run:
        assert rows == {s.id for s in run.iter_sources()}


def test_gallery_filters_by_status_band_and_reliability_in_chromium(
    gallery_run: Path, chromium: Any
) -> None:
    page = zooprep.preview(gallery_run)
    with Run.open(gallery_run, lock=False) as run:
        sources = list(run.iter_sources())
    expected = [
        s
        for s in sources
        if s.status == "rendered"
        and s.row["band"] == "r"
        and 0.5 <= s.row["reliability"] <= 1
    ]
    assert 0 < len(expected) < 290

    dom = chromium.dump_dom(page, "status=rendered&band=r&rel=0.5:1")
    count = _count(dom)
    assert count["count"] == len(expected)
    assert count["total"] == 290
    cards = CARD.findall(dom)
    assert len(cards) == count["shown"] == min(len(expected), 60)
    assert {int(c[0]) for c in cards} <= {s.id for s in expected}
    assert {c[1] for c in cards} == {"rendered"}
    # The thumbnails load from their relative paths; none is broken.
    assert 'data-img="loaded"' in dom
    assert 'data-img="broken"' not in dom


def test_gallery_filters_by_flags_and_sorts_by_reliability(
    gallery_run: Path, chromium: Any
) -> None:
    page = zooprep.preview(gallery_run)
    with Run.open(gallery_run, lock=False) as run:
        sources = list(run.iter_sources())
    saturated_not_dipole = [
        s
        for s in sources
        if "pixelFlags_saturated" in flag_columns(s.row)
        and "isDipole" not in flag_columns(s.row)
    ]
    dom = chromium.dump_dom(page, "flag=pixelFlags_saturated&noflag=isDipole")
    assert _count(dom)["count"] == len(saturated_not_dipole) > 0

    padded = [s for s in sources if s.padded]
    dom = chromium.dump_dom(page, "flag=padded")
    assert _count(dom)["count"] == len(padded) > 0

    failed = sorted(
        (s for s in sources if s.status == "failed"),
        key=lambda s: (-s.row["reliability"], s.seq),
    )
    dom = chromium.dump_dom(page, "status=failed&sort=-reliability&per=10")
    count = _count(dom)
    assert count["count"] == len(failed)
    assert count["pages"] == -(-len(failed) // 10) > 1
    cards = CARD.findall(dom)
    assert [int(c[0]) for c in cards] == [s.id for s in failed[:10]]
    # The reason is shown as text, its markup escaped.
    assert "is off the image &lt;/script&gt;" in dom

    dom = chromium.dump_dom(page, "status=failed&sort=-reliability&per=10&page=2")
    assert [int(c[0]) for c in CARD.findall(dom)] == [s.id for s in failed[10:20]]


def test_gallery_screenshot_shows_plots_and_cutouts(
    gallery_run: Path, chromium: Any, tmp_path: Path
) -> None:
    page = zooprep.preview(gallery_run)
    shot = chromium.screenshot(
        page, tmp_path / "preview.png", fragment="status=rendered", size=(1280, 1100)
    )
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape == (1100, 1280, 3)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 100, "the screenshot is (nearly) blank"

    def pixels_near(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(image - np.array(rgb)).sum(axis=2) < 12).sum())

    # The summary plots: reliability (blue), S/N (green), per visit (purple) bars.
    assert pixels_near((0x4C, 0x72, 0xB0)) > 500
    assert pixels_near((0x55, 0xA8, 0x68)) > 500
    assert pixels_near((0x81, 0x72, 0xB2)) > 500
    # Grey cutout pixels of many levels (the real DECam thumbnails).
    grey = image[(image.max(axis=2) - image.min(axis=2)) < 3][:, 0]
    assert len(np.unique(grey)) > 100


def test_preview_elsewhere_links_back_to_the_run(
    gallery_run: Path, chromium: Any, tmp_path: Path
) -> None:
    out = tmp_path / "pages" / "gallery.html"
    assert zooprep.preview(gallery_run, output=out) == out
    assert not (tmp_path / "pages" / "cutouts").exists()
    dom = chromium.dump_dom(out, "status=rendered")
    assert 'data-img="loaded"' in dom
    assert 'data-img="broken"' not in dom


def test_preview_of_a_missing_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no run directory"):
        zooprep.preview(tmp_path / "nowhere")


def test_preview_of_100000_sources_stays_compact_and_pages(
    tmp_path: Path, chromium: Any
) -> None:
    n = 100_000
    rng = np.random.default_rng(42)
    rel = rng.random(n)
    snr = rng.lognormal(2.0, 0.7, n)
    visit = rng.integers(2026030500000, 2026030500040, n)
    edge = rng.random(n) < 0.05
    band = rng.choice(list("ugrizy"), n)
    first_id = 170094456272322680

    def rows() -> Any:
        for i in range(n):
            yield {
                "diaSourceId": first_id + i,
                "visit": int(visit[i]),
                "detector": i % 189,
                "band": str(band[i]),
                "reliability": float(rel[i]),
                "snr": float(snr[i]),
                "pixelFlags_edge": bool(edge[i]),
                "isDipole": i % 11 == 0,
            }

    path = tmp_path / "big"
    with Run.create(path) as run:
        run.add_sources(rows(), "diaSourceId")
        with run.transaction():
            for src in run.iter_sources():
                if src.seq % 4 == 3:
                    run.mark_failed(src.id, "render", "all-NaN cutout")
                elif src.seq % 2 == 0:
                    png = f"cutouts/{src.seq // 10_000 * 10_000}/{src.id}.png"
                    run.update(src.id, status="rendered", files=[png])
    page = zooprep.preview(path)
    size = page.stat().st_size
    # Compact: one row of metadata costs well under 100 bytes of HTML.
    assert size / n < 100, f"{size / n:.0f} bytes per row"

    expected = int(((band == "r") & (rel >= 0.9) & ~edge).sum())
    dom = chromium.dump_dom(page, "band=r&rel=0.9:&noflag=pixelFlags_edge&per=120")
    count = _count(dom)
    assert count["count"] == expected
    assert count["total"] == n
    assert len(CARD.findall(dom)) == count["shown"] == 120
