"""Images in object stores and on HTTP servers, read by byte ranges.

Every server here is started by the test on 127.0.0.1 (tests/objectstores.py):
a threaded HTTP server that honours Range, and moto's S3 in server mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import zooprep
from tests.imagegen import tan_wcs, write_exposure
from tests.objectstores import RangeServer, S3Server
from zooprep.errors import InputError
from zooprep.images import Cutouts, Failed, FitsImages
from zooprep.images import remote as remote_module
from zooprep.images.remote import redact
from zooprep.run import Run

SHAPE = (300, 400)
VISITS = (101, 102)


def _triplets(root: Path, compress: bool) -> Path:
    """LSST-style MEF science/template/difference for two visits under ``root``."""
    rng = np.random.default_rng(5)
    for visit in VISITS:
        for k, role in enumerate(("sci", "tmpl", "diff")):
            image = rng.normal(100 * k, 5, size=SHAPE).astype(np.float32)
            image[10:14, 20:24] = np.nan
            path = root / str(visit) / f"{role}.fits"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_exposure(path, image, tan_wcs(*SHAPE), compress=compress)
    return root


def _rows(n: int = 24) -> list[tuple[int, dict[str, float]]]:
    rng = np.random.default_rng(9)
    rows = []
    for i in range(n):
        x, y = rng.uniform(-5, SHAPE[1] + 5), rng.uniform(-5, SHAPE[0] + 5)
        rows.append((i, {"visit": VISITS[i % 2], "x": float(x), "y": float(y)}))
    rows.append((n, {"visit": VISITS[0], "x": 21.0, "y": 11.0}))  # on the NaN hole
    rows.append((n + 1, {"visit": VISITS[1], "x": 5000.0, "y": 11.0}))  # off image
    return sorted(rows, key=lambda r: r[1]["visit"])


def _source(base: str) -> FitsImages:
    return FitsImages(
        f"{base}/{{visit}}/sci.fits",
        f"{base}/{{visit}}/tmpl.fits",
        f"{base}/{{visit}}/diff.fits",
    )


def _same(remote: list[Cutouts | Failed], local: list[Cutouts | Failed], base: str):
    assert len(remote) == len(local)
    for r, loc in zip(remote, local, strict=True):
        assert type(r) is type(loc)
        if isinstance(r, Failed):
            assert isinstance(loc, Failed)
            assert r.reason.split(" ")[:4] == loc.reason.split(" ")[:4]
            continue
        assert isinstance(loc, Cutouts)
        assert r.padded == loc.padded
        assert r.pixel_scale == loc.pixel_scale
        for a, b in zip(r.rows, loc.rows, strict=True):
            for name in ("template", "science", "difference"):
                got, want = getattr(a, name), getattr(b, name)
                assert got.dtype == want.dtype
                assert got.tobytes() == want.tobytes()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    with S3Server() as server:
        for k, v in server.environ().items():
            monkeypatch.setenv(k, v)
        yield server


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "rice"])
def test_cutouts_over_http_are_byte_identical_to_local_files(
    tmp_path: Path, compress: bool
):
    pytest.importorskip("fsspec")  # the cloud extra
    root = _triplets(tmp_path / "img", compress)
    rows = _rows()
    local = list(_source(str(root)).cutouts(rows, (11, 30)))
    with RangeServer(root) as server:
        remote = list(_source(server.url).cutouts(rows, (11, 30)))
    assert sum(isinstance(r, Cutouts) for r in remote) >= 20
    _same(remote, local, server.url)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "rice"])
def test_cutouts_from_s3_are_byte_identical_to_local_files(
    tmp_path: Path, s3: S3Server, compress: bool
):
    pytest.importorskip("fsspec")  # the cloud extra
    root = _triplets(tmp_path / "img", compress)
    s3.upload_tree("survey", root)
    rows = _rows()
    local = list(_source(str(root)).cutouts(rows, (11, 30)))
    source = _source("s3://survey")
    remote = list(source.cutouts(rows, (11, 30)))
    _same(remote, local, "s3://survey")
    # each object's headers were read once for all its sources
    assert sorted(source.cache.opens.values()) == [1] * 6


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "rice"])
def test_a_turned_template_over_http_is_resampled_as_the_local_file_is(
    tmp_path: Path, compress: bool
):
    pytest.importorskip("fsspec")  # the cloud extra
    rng = np.random.default_rng(8)
    root = tmp_path / "img"
    root.mkdir()
    for role, turn in (("sci", 0.0), ("tmpl", 30.0), ("diff", 0.0)):
        image = rng.normal(100, 5, size=SHAPE).astype(np.float32)
        wcs = tan_wcs(*SHAPE, rotation_deg=turn)
        write_exposure(root / f"{role}.fits", image, wcs, compress=compress)
    rows = [
        (i, {"ra": 150.0 + dx / 3600, "dec": 2.0 + dy / 3600})
        for i, (dx, dy) in enumerate([(0, 0), (20, -10), (0, 28), (39, 29)])
    ]

    def source(base: str) -> FitsImages:
        return FitsImages(f"{base}/sci.fits", f"{base}/tmpl.fits", f"{base}/diff.fits")

    local = list(source(str(root)).cutouts(rows, (11, 30)))
    with RangeServer(root) as server:
        remote = list(source(server.url).cutouts(rows, (11, 30)))
    *cut, corner = local
    assert all(isinstance(r, Cutouts) for r in cut), cut
    assert all(r.notes["resampled"] == "template" for r in cut)  # type: ignore[union-attr]
    assert any(r.padded for r in cut)  # type: ignore[union-attr]
    # the science image's corner is beyond the turned template's edge
    assert isinstance(corner, Failed)
    assert "off the template image" in corner.reason
    _same(remote, local, server.url)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4k x 4k float32 LSST exposure, plain and RICE-compressed."""
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(3)
    image = rng.normal(1000, 10, size=(4096, 4096)).astype(np.float32)
    write_exposure(root / "plain.fits", image, tan_wcs(4096, 4096))
    write_exposure(root / "rice.fits", image, tan_wcs(4096, 4096), compress=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain.fits", "rice.fits"])
@pytest.mark.parametrize("store", ["http", "s3"])
def test_a_30px_cutout_of_a_4k_image_reads_under_1_percent_of_the_file(
    big: Path, name: str, store: str, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fsspec")  # the cloud extra
    size = (big / name).stat().st_size
    rows = [(1, {"x": 2047.0, "y": 3001.0})]
    local = list(FitsImages(*[str(big / name)] * 3).cutouts(rows, (30,)))
    if store == "http":
        with RangeServer(big) as server:
            server.stats.reset()
            url = f"{server.url}/{name}"
            remote = list(FitsImages(url, url, url).cutouts(rows, (30,)))
            served = server.stats.bytes
    else:
        with S3Server() as server:
            for k, v in server.environ().items():
                monkeypatch.setenv(k, v)
            client = server.client()
            client.create_bucket(Bucket="big")
            client.upload_file(str(big / name), "big", name)
            server.stats.reset()
            url = f"s3://big/{name}"
            remote = list(FitsImages(url, url, url).cutouts(rows, (30,)))
            served = server.stats.bytes
    _same(remote, local, url)
    assert 0 < served < 0.01 * size, (served, size)


def test_missing_forbidden_dropped_and_expired_objects_fail_their_rows_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fsspec")  # the cloud extra
    monkeypatch.setattr(remote_module, "BACKOFF", 0.01)
    root = _triplets(tmp_path / "img", compress=True)
    for visit in (103, 104, 105):
        (root / str(visit)).mkdir()
        for role in ("sci", "tmpl", "diff"):
            (root / str(visit) / f"{role}.fits").write_bytes(
                (root / "101" / f"{role}.fits").read_bytes()
            )
    # 105's difference is cut short after its headers; so is 106's plain science
    diff = root / "105" / "diff.fits"
    diff.write_bytes(diff.read_bytes()[: 5 * 2880 + 100])
    (root / "106").mkdir()
    for role in ("sci", "tmpl", "diff"):
        image = np.ones(SHAPE, dtype=np.float32)
        write_exposure(root / "106" / f"{role}.fits", image, tan_wcs(*SHAPE))
    sci = root / "106" / "sci.fits"
    sci.write_bytes(sci.read_bytes()[:200_000])  # inside the IMAGE pixels
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="zooprep")  # CLI tests may have raised it
    with RangeServer(root) as server:
        server.forbidden.add("/103/tmpl.fits")
        server.drop.add("/104/sci.fits")
        base = server.url
        rows = [
            (1, {"visit": 101, "x": 50.0, "y": 60.0}),
            (2, {"visit": 109, "x": 50.0, "y": 60.0}),  # no such objects
            (3, {"visit": 103, "x": 50.0, "y": 60.0}),
            (4, {"visit": 104, "x": 50.0, "y": 60.0}),
            (5, {"visit": 105, "x": 50.0, "y": 60.0}),
            (6, {"visit": 102, "x": 70.0, "y": 80.0}),
            (9, {"visit": 106, "x": 70.0, "y": 80.0}),
        ]
        got = {r.source_id: r for r in _source(base).cutouts(rows, (30,))}
        expired = server.signed("/101/sci.fits", expires_in=-10)
        valid = server.signed("/102/sci.fits", expires_in=600)
        signed = FitsImages(expired, valid, valid)
        got[7] = next(iter(signed.cutouts([(7, {"x": 5.0, "y": 5.0})], (9,))))
        ok = FitsImages(valid, valid, valid)
        got[8] = next(iter(ok.cutouts([(8, {"x": 5.0, "y": 5.0})], (9,))))
    assert isinstance(got[1], Cutouts)
    assert isinstance(got[6], Cutouts)
    assert isinstance(got[8], Cutouts)
    reasons = {k: v.reason for k, v in got.items() if isinstance(v, Failed)}
    assert reasons[2] == f"{base}/109/sci.fits: no such object"
    assert reasons[3].startswith(f"{base}/103/tmpl.fits: access denied (HTTP 403)")
    assert reasons[4].startswith(f"{base}/104/sci.fits: read failed after 4 attempts")
    assert reasons[5].startswith(f"{base}/105/diff.fits: truncated")
    assert reasons[7].startswith(f"{base}/101/sci.fits: access denied (HTTP 403)")
    assert "signed URL has expired" in reasons[7]
    assert reasons[9].startswith(f"{base}/106/sci.fits: truncated FITS file")
    assert set(reasons) == {2, 3, 4, 5, 7, 9}
    assert all("\n" not in r for r in reasons.values())
    assert "s3cr3t" not in " ".join(reasons.values())
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("zooprep")]
    assert ours  # the failures were logged (at debug level)
    assert "s3cr3t" not in " ".join(ours)


def test_transient_errors_are_retried_and_a_non_fits_object_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fsspec")  # the cloud extra
    monkeypatch.setattr(remote_module, "BACKOFF", 0.01)
    root = _triplets(tmp_path / "img", compress=True)
    rows = [(1, {"visit": 101, "x": 50.0, "y": 60.0})]
    local = list(_source(str(root)).cutouts(rows, (30,)))
    (root / "103").mkdir()
    for role in ("sci", "tmpl", "diff"):
        (root / "103" / f"{role}.fits").write_bytes(b"not a FITS file\n" * 400)
    with RangeServer(root) as server:
        server.flaky = {"/101/sci.fits": 2, "/101/diff.fits": 3}
        remote = list(_source(server.url).cutouts(rows, (30,)))
        assert server.flaky == {"/101/sci.fits": 0, "/101/diff.fits": 0}
        server.stats.reset()
        (bad,) = _source(server.url).cutouts(
            [(2, {"visit": 103, "x": 1.0, "y": 1.0})], (5,)
        )
        requests = server.stats.requests
    _same(remote, local, server.url)
    assert isinstance(bad, Failed)
    assert bad.reason.startswith(f"{server.url}/103/sci.fits: unreadable FITS file")
    assert requests <= 6  # three objects opened once each: no retries


def test_a_hung_range_read_is_given_up_after_its_deadline_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fsspec")  # the cloud extra
    monkeypatch.setattr(remote_module, "BACKOFF", 0.01)
    root = _triplets(tmp_path / "img", compress=False)
    with RangeServer(root) as server:
        url = f"{server.url}/101/sci.fits"
        image = remote_module.open_remote(url)
        local = remote_module.fits.getdata(root / "101" / "sci.fits", ext=image.hdu)
        first = image.pixels[0:10, 0:10]  # a first range read: its time is learned
        seen = remote_module.deadline(url).observed
        # The next read hangs for 60 s: it is given up after its deadline
        # (seconds, learned from the first read; at most TIMEOUT) and retried.
        server.hang["/101/sci.fits"] = 1
        second = image.pixels[250:260, 300:310]
        assert server.hang == {"/101/sci.fits": 0}
    assert seen >= 1
    assert remote_module.deadline(url).timeout() <= remote_module.TIMEOUT
    np.testing.assert_array_equal(first, local[0:10, 0:10])
    np.testing.assert_array_equal(second, local[250:260, 300:310])


def test_render_stage_with_url_templates_records_per_row_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fsspec")  # the cloud extra
    monkeypatch.setattr(remote_module, "BACKOFF", 0.01)
    root = _triplets(tmp_path / "img", compress=False)
    catalog = tmp_path / "sources.csv"
    lines = ["diaSourceId,visit,detector,x,y"]
    for i in range(12):
        visit = (101, 102, 107)[i % 3]  # 107 is not on the server
        lines.append(f"{1000 + i},{visit},1,{30 + 10 * i},{40 + 5 * i}")
    catalog.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    zooprep.select(run, catalog=catalog)
    with RangeServer(root) as server:
        images = {
            "science": f"{server.url}/{{visit}}/sci.fits",
            "template": f"{server.url}/{{visit}}/tmpl.fits",
            "difference": f"{server.url}/{{visit}}/diff.fits",
        }
        zooprep.render(run, images=images, jobs=2)
    with Run.open(run, lock=False) as r:
        sources = list(r.iter_sources())
    done = [s for s in sources if s.status == "rendered"]
    failed = [s for s in sources if s.status == "failed"]
    assert len(done) == 8
    assert len(failed) == 4
    assert {s.reason for s in failed} == {f"{server.url}/107/sci.fits: no such object"}
    assert all((run / s.files[0]).stat().st_size > 0 for s in done)


def test_redact_drops_query_user_and_fragment():
    url = "https://me:pw@bucket.example/a/b.fits?X-Amz-Signature=abc&X-Amz-Expires=1#f"
    assert redact(url) == "https://bucket.example/a/b.fits"
    assert "abc" not in remote_module.redact_text(f"failed: {url!r} (403)")


def test_urls_without_the_cloud_extra_fail_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
):
    import builtins

    real_import = builtins.__import__

    def no_fsspec(name: str, *args, **kwargs):
        if name == "fsspec" or name.startswith("fsspec."):
            raise ImportError("No module named 'fsspec'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    source = _source("s3://survey")
    # before any work, as for a missing column
    with pytest.raises(InputError, match=r"pip install 'zooprep\[cloud\]'"):
        source.check(["visit", "x", "y"])
    # and per row, should the rows come anyway
    got = next(iter(source.cutouts([(1, {"visit": 1, "x": 1.0, "y": 1.0})], (5,))))
    assert isinstance(got, Failed)
    assert "pip install 'zooprep[cloud]'" in got.reason


def test_an_unknown_protocol_fails_before_any_work():
    pytest.importorskip("fsspec")  # the cloud extra
    source = _source("nosuchproto://survey")
    with pytest.raises(InputError, match="unknown protocol 'nosuchproto'"):
        source.check(["visit", "x", "y"])


def test_credentials_come_from_the_environment_not_the_run(
    tmp_path: Path, s3: S3Server
):
    pytest.importorskip("fsspec")  # the cloud extra
    root = _triplets(tmp_path / "img", compress=False)
    s3.upload_tree("survey", root)
    source = _source("s3://survey")
    got = next(iter(source.cutouts([(1, {"visit": 101, "x": 9.0, "y": 9.0})], (5,))))
    assert isinstance(got, Cutouts)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in repr(source.__getstate__())


@pytest.mark.slow
def test_butler_with_an_s3_datastore_reads_ranges_and_matches_a_local_repository(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("lsst.daf.butler")
    from tests.butlerrepo import RUN, make_repo
    from zooprep.images import ButlerImages

    monkeypatch.setenv("S3_ENDPOINT_URL", s3.url)  # what lsst.resources reads
    s3.client().create_bucket(Bucket="repo")
    types = ("preliminary_visit_image", "template_matched", "difference_image")
    rng = np.random.default_rng(2)
    files = {}
    for visit in (11, 12):
        for k, name in enumerate(types):
            image = rng.normal(k * 50, 4, size=(1024, 1024)).astype(np.float32)
            path = tmp_path / "in" / f"{name}_{visit}.fits"
            path.parent.mkdir(exist_ok=True)
            write_exposure(
                path, image, tan_wcs(1024, 1024), compress=(name == types[0])
            )
            files[(name, visit, 3)] = path
    local_repo = make_repo(tmp_path / "local", files, types)
    s3_repo = make_repo(
        tmp_path / "s3repo", files, types, datastore_root="s3://repo/butler/"
    )
    stored = sum(
        o["Size"] for o in s3.client().list_objects_v2(Bucket="repo")["Contents"]
    )
    rows = [
        (i, {"visit": (11, 12)[i % 2], "detector": 3, "x": 40.0 * i, "y": 30.0 * i})
        for i in range(10)
    ]
    rows.sort(key=lambda r: r[1]["visit"])
    local = list(ButlerImages(local_repo, [RUN]).cutouts(rows, (30,)))
    s3.stats.reset()
    source = ButlerImages(s3_repo, [RUN])
    remote = list(source.cutouts(rows, (30,)))
    _same(remote, local, "s3://repo")
    assert all(isinstance(r, Cutouts) for r in remote)
    # ranges only: far less than the six objects, each read once
    assert s3.stats.bytes < 0.1 * stored, (s3.stats.bytes, stored)
    assert sorted(source.cache.opens.values()) == [1] * 6
    assert all(url.startswith("s3://repo/butler/") for url in source.cache.opens)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "rice"])
def test_remote_images_keep_only_a_bounded_set_of_blocks(
    tmp_path: Path, compress: bool, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fsspec")  # the cloud extra
    bound = 256 << 10
    monkeypatch.setattr(remote_module, "BLOCK_CACHE_BYTES", bound)
    root = _triplets(tmp_path / "img", compress)
    rows = _rows(60)
    local = list(_source(str(root)).cutouts(rows, (30,)))
    with RangeServer(root) as server:
        source = _source(server.url)
        remote = list(source.cutouts(rows, (30,)))
    _same(remote, local, server.url)
    for url in source.cache.opens:
        image = source.cache.get(url)
        assert image.nbytes == bound  # the cache's cost: the bound, not the file
        assert 0 < image.pixels._blocks._bytes <= bound


def test_butler_signed_urls_are_read_by_range_and_never_reach_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    pytest.importorskip("lsst.daf.butler")
    from lsst.resources import ResourcePath

    from tests.butlerrepo import RUN, make_repo
    from zooprep.images.butler import ButlerImages

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="zooprep")  # CLI tests may have raised it
    root = _triplets(tmp_path / "img", compress=True)
    types = ("preliminary_visit_image", "template_matched", "difference_image")
    roles = dict(zip(types, ("sci", "tmpl", "diff"), strict=True))
    files = {
        (name, visit, 1): root / str(visit) / f"{roles[name]}.fits"
        for name in types
        for visit in VISITS
    }
    repo = make_repo(tmp_path / "repo", files, types)
    catalog = tmp_path / "sources.csv"
    lines = ["diaSourceId,visit,detector,x,y"]
    lines += [
        f"{500 + i},{VISITS[i % 2]},1,{40 + 9 * i},{50 + 7 * i}" for i in range(8)
    ]
    catalog.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    zooprep.select(run, catalog=catalog)
    with RangeServer(root) as server:
        # a Butler server hands out signed URLs; visit 102's have expired
        def signed(self, dataset_type, data_id):
            visit = data_id["visit"]
            ttl = 600 if visit == VISITS[0] else -10
            path = f"/{visit}/{roles[dataset_type]}.fits"
            return ResourcePath(server.signed(path, expires_in=ttl))

        monkeypatch.setattr(ButlerImages, "_uri", signed)
        zooprep.render(run, images={"butler": str(repo), "collections": [RUN]}, jobs=1)
    with Run.open(run, lock=False) as r:
        sources = list(r.iter_sources())
    assert sorted(s.status for s in sources) == ["failed"] * 4 + ["rendered"] * 4
    for s in sources:
        if s.status == "failed":
            assert s.reason.startswith(
                f"{server.url}/{VISITS[1]}/sci.fits: access denied (HTTP 403)"
            )
    for path in run.rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes(), path
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("zooprep")]
    assert "s3cr3t" not in " ".join(ours)
