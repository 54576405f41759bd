"""zooprep fakes on the real DECam triplet: fakes drawn where they say, looking like real sources.

The demo APDB's 32 sources (measured on this DECam difference image) get
injected fakes; render draws them into the science and difference cutouts
and never the template; the real sources' cutouts do not change; one seed
gives the same run; a killed stage leaves nothing; bad input is refused in
one line before anything is written.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("photutils")

import zooprep
from tests.killing import kill_at_random, timed_run
from zooprep.errors import InputError, SettingsMismatch
from zooprep.images.cutout import cut_around
from zooprep.images.fits import open_image
from zooprep.images.injected import PLANS, load_injection
from zooprep.options import FakesOptions
from zooprep.run import Run
from zooprep.stages.fakes import fakes

DATA = Path(__file__).resolve().parent.parent / "zooprep" / "data"
APDB = f"sqlite:///{DATA / 'apdb' / 'demo_apdb.sqlite3'}"
IMAGES = {
    "science": str(DATA / "decam" / "science.fits"),
    "template": str(DATA / "decam" / "template.fits"),
    "difference": str(DATA / "decam" / "difference.fits"),
}
#: The demo's assumed zero point for these ADU images (its fluxes use it too).
OPTIONS = FakesOptions(count=8, mag=(19.0, 23.5), seed=3, training=0.4, zeropoint=30.0)


def _made(
    path: Path, options: FakesOptions | None = OPTIONS, render: bool = True
) -> Path:
    zooprep.select(path, apdb=APDB)
    if options is not None:
        fakes(path, options, images=IMAGES)
    if render:
        zooprep.render(
            path,
            images=None if options is not None else IMAGES,
            sizes=(30,),
            numpy=True,
            jobs=1,
        )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fakes")
    return {
        "fakes": _made(base / "with"),
        "again": _made(base / "again"),
        "plain": _made(base / "without", options=None),
    }


def _sources(path: Path) -> tuple[dict, list]:
    with Run.open(path, lock=False) as run:
        return run.known_answers(), list(run.iter_sources())


def test_fakes_are_sources_mixed_in_among_the_real_ones(runs: dict) -> None:
    known, sources = _sources(runs["fakes"])
    assert len(sources) == 40
    assert len(known) == 8
    assert {a.truth for a in known.values()} == {"real"}
    assert {a.stream for a in known.values()} == {"blind", "training"}
    positions = [n for n, s in enumerate(sources) if s.id in known]
    assert positions != list(range(32, 40))  # not all at the end
    real = next(s for s in sources if s.id not in known)
    for s in sources:
        if s.id not in known:
            continue
        a = known[s.id]
        assert 19.0 <= a.mag <= 23.5
        assert a.snr > 0
        # its id continues its image's id sequence, its file is named by it
        assert str(s.id)[-3:] == str(real.id)[-3:]
        assert s.files[0].endswith(f"/{s.id}.png")
        # the image's columns are its own, its measurements are real numbers
        for column in ("visit", "detector", "band", "midpointMjdTai"):
            assert s.row[column] == real.row[column]
        for column in ("ra", "dec", "x", "y", "psfFlux", "psfFluxErr", "snr", "apFlux"):
            assert np.isfinite(s.row[column])
        assert s.row["pixelFlags_edge"] is False


def test_fakes_go_into_science_and_difference_and_never_the_template(
    runs: dict,
) -> None:
    known, sources = _sources(runs["fakes"])
    images = {role: open_image(path) for role, path in IMAGES.items()}
    plan = load_injection(runs["fakes"] / "fakes" / "0.npz")
    added = np.zeros(images["science"].shape, dtype=np.float32)
    for (y0, x0), stamp in zip(plan.corners, plan.stamps, strict=True):
        h, w = stamp.shape
        added[y0 : y0 + h, x0 : x0 + w] += stamp
    for s in sources:
        if s.id not in known:
            continue
        cube = np.load(runs["fakes"] / s.files[-1])
        template, science, difference = cube
        cut = {
            role: cut_around(image.read, image.shape, s.row["x"], s.row["y"], 30)[0]
            for role, image in images.items()
        }
        extra, _ = cut_around(
            lambda ys, xs: added[ys, xs], added.shape, s.row["x"], s.row["y"], 30
        )
        assert template.tobytes() == cut["template"].tobytes()
        assert np.array_equal(science, cut["science"] + extra)
        assert np.array_equal(difference, cut["difference"] + extra)
        # the fake is there: its stamp's counts are in the cutout
        assert extra.sum() > 0.5 * known[s.id].flux * 10 ** (-0.4 * (31.4 - 30.0))


def test_the_real_sources_cutouts_are_what_they_were_without_fakes(
    runs: dict,
) -> None:
    known, sources = _sources(runs["fakes"])
    _, plain = _sources(runs["plain"])
    by_id = {s.id: s for s in plain}
    assert len(by_id) == 32
    for s in sources:
        if s.id in known:
            continue
        assert (runs["fakes"] / s.files[0]).read_bytes() == (
            runs["plain"] / by_id[s.id].files[0]
        ).read_bytes()
        assert (runs["fakes"] / s.files[-1]).read_bytes() == (
            runs["plain"] / by_id[s.id].files[-1]
        ).read_bytes()


def test_two_runs_with_one_seed_are_identical(runs: dict) -> None:
    a_known, a = _sources(runs["fakes"])
    b_known, b = _sources(runs["again"])
    assert a_known == b_known
    assert [(s.id, s.seq, s.row) for s in a] == [(s.id, s.seq, s.row) for s in b]
    for s, t in zip(a, b, strict=True):
        assert (runs["fakes"] / s.files[0]).read_bytes() == (
            runs["again"] / t.files[0]
        ).read_bytes()
    assert (runs["fakes"] / "fakes" / "0.npz").read_bytes() == (
        runs["again"] / "fakes" / "0.npz"
    ).read_bytes()


def test_each_images_psf_zero_point_and_gain_are_recorded(runs: dict) -> None:
    record = json.loads((runs["fakes"] / PLANS).read_text())["images"][0]
    assert record["psf"] == "epsf"
    assert "stars" in record["psf_how"]
    assert record["zeropoint_from"] == "--zeropoint"
    assert record["gain_from"] == "GAIN"
    assert record["saturation_from"] == "SATURATE"
    assert record["fakes"] == 8


def test_running_fakes_again_does_nothing_and_other_settings_are_refused(
    runs: dict, tmp_path: Path
) -> None:
    path = tmp_path / "copy"
    shutil.copytree(runs["fakes"], path)
    again = fakes(path, OPTIONS)
    assert again.already == 8
    assert "nothing to do" in str(again)
    other = FakesOptions(count=5, mag=(19.0, 23.5), seed=4, zeropoint=30.0)
    with pytest.raises(SettingsMismatch, match="--force"):
        fakes(path, other)
    replaced = fakes(path, other.merge(force=True))
    assert replaced.added == 5
    known, sources = _sources(path)
    assert len(known) == 5
    assert len(sources) == 37


def _unchanged(path: Path) -> None:
    known, sources = _sources(path)
    assert not known
    assert len(sources) == 32
    assert not (path / PLANS).exists()


def test_magnitudes_that_saturate_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = _made(tmp_path / "run", options=None, render=False)
    with pytest.raises(InputError, match=r"saturation level .*use --mag") as err:
        fakes(
            path, FakesOptions(count=4, mag=(12.0, 20.0), zeropoint=30.0), images=IMAGES
        )
    assert "\n" not in str(err.value)
    _unchanged(path)


def test_a_count_that_crowds_the_image_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = _made(tmp_path / "run", options=None, render=False)
    with pytest.raises(InputError, match=r"would crowd .* only \d+ fit") as err:
        fakes(path, FakesOptions(count=60, zeropoint=30.0), images=IMAGES)
    assert "\n" not in str(err.value)
    _unchanged(path)


def test_an_image_without_zero_point_needs_one(tmp_path: Path) -> None:
    path = _made(tmp_path / "run", options=None, render=False)
    with pytest.raises(InputError, match="give --zeropoint"):
        fakes(path, FakesOptions(count=4), images=IMAGES)
    _unchanged(path)


def test_fakes_on_an_alert_run_point_to_the_truth_column(
    tmp_path: Path, test_data: Path
) -> None:
    path = tmp_path / "alerts"
    zooprep.select(path, alerts=str(test_data / "ztf_alerts" / "ampel" / "*.avro"))
    with pytest.raises(InputError, match="--truth-column") as err:
        fakes(path, FakesOptions(count=4, zeropoint=30.0))
    assert "alert" in str(err.value)
    with pytest.raises(InputError, match=r"no source .* has a column 'label'"):
        fakes(path, FakesOptions(truth_column="label"))
    # a column does mark known answers on an alert run (here: every positive
    # difference, 't', as real; 'f' leaves a source unknown)
    marked = fakes(path, FakesOptions(truth_column="isdiffpos"))
    with Run.open(path, lock=False) as run:
        positive = sum(1 for s in run.iter_sources() if s.row["isdiffpos"] == "t")
    assert marked.real == positive > 0


def test_a_killed_fakes_adds_nothing_and_running_it_again_adds_the_same_fakes(
    runs: dict, tmp_path: Path
) -> None:
    path = _made(tmp_path / "run", options=None, render=False)
    script = (
        "import sys; from zooprep.stages.fakes import fakes; "
        "from zooprep.options import FakesOptions; "
        f"fakes(sys.argv[1], FakesOptions(count=8, mag=(19.0, 23.5), seed=3, "
        f"training=0.4, zeropoint=30.0), images={IMAGES!r})"
    )
    spare = tmp_path / "timing"
    _made(spare, options=None, render=False)
    duration = timed_run([sys.executable, "-c", script, str(spare)])

    def check() -> None:
        known, sources = _sources(path)
        assert len(known) in (0, 8)  # all or nothing
        assert len(sources) == 32 + len(known)

    kill_at_random(
        [sys.executable, "-c", script, str(path)],
        seed=1,
        rounds=3,
        duration=duration,
        check=check,
    )
    fakes(path, OPTIONS, images=IMAGES)
    a_known, _ = _sources(path)
    b_known, _ = _sources(runs["fakes"])
    assert a_known == b_known


def test_the_command_line_says_each_bad_input_in_one_line(
    tmp_path: Path, test_data: Path
) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    path = _made(tmp_path / "run", options=None, render=False)
    images = [
        "--science",
        IMAGES["science"],
        "--template",
        IMAGES["template"],
        "--difference",
        IMAGES["difference"],
    ]
    alerts = tmp_path / "alerts"
    zooprep.select(alerts, alerts=str(test_data / "ztf_alerts" / "ampel" / "*.avro"))
    cases = [
        ([str(path), *images, "--count", "60", "--zeropoint", "30"], "would crowd"),
        (
            [str(path), *images, "--count", "4", "--mag", "12:20", "--zeropoint", "30"],
            "saturation level",
        ),
        ([str(path), *images, "--count", "4"], "give --zeropoint"),
        ([str(path), *images, "--count", "4", "--mag", "25:20"], "BRIGHT < FAINT"),
        ([str(path), *images], "give --count N"),
        ([str(alerts), "--count", "4"], "--truth-column"),
    ]
    for args, words in cases:
        out = CliRunner().invoke(cli, ["fakes", *args])
        assert out.exit_code == 2, out.output
        # (progress lines may come first; the error is one line, the last)
        errors = [x for x in out.output.splitlines() if x.startswith("Error")]
        assert len(errors) == 1, out.output
        assert out.output.strip().splitlines()[-1] == errors[0]
        assert words in errors[0]
    _unchanged(path)
    done = CliRunner().invoke(
        cli, ["fakes", str(path), *images, "--count", "4", "--zeropoint", "30"]
    )
    assert done.exit_code == 0, done.output
    assert "fakes: 4 injected into 1 images" in done.output


def test_an_lsst_exposure_gives_its_gain_saturation_and_masked_pixels(
    tmp_path: Path,
) -> None:
    """MASK planes are avoided, the VARIANCE plane gives the gain, SAT the level."""
    from astropy.io import fits

    science = fits.getdata(IMAGES["science"]).astype(np.float32)
    header = fits.getheader(IMAGES["science"])
    wcs = {
        k: header[k]
        for k in header
        if k.startswith(
            ("CTYPE", "CRPIX", "CRVAL", "CD", "PV", "CUNIT", "RADESYS", "EQUINOX")
        )
    }
    true_gain = 5.0
    mask = np.zeros(science.shape, dtype=np.int32)
    mask[100:116, :] |= 1  # BAD rows
    mask[science > 5000] |= 2  # SAT (the brightest star cores)
    # the variance of a sky-subtracted image: (counts + the sky taken off) / gain
    sky_level = 320.0
    variance = ((science + sky_level) / true_gain).astype(np.float32)
    image_header = fits.Header(wcs)
    image_header["MAGZERO"] = 30.0
    mask_header = fits.Header({"MP_BAD": 0, "MP_SAT": 1, "MP_EDGE": 4})
    exposure = tmp_path / "calexp.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(header=fits.Header({"INSTRUME": "DECam"})),
            fits.ImageHDU(science, header=image_header, name="IMAGE"),
            fits.ImageHDU(mask, header=mask_header, name="MASK"),
            fits.ImageHDU(variance, name="VARIANCE"),
        ]
    ).writeto(exposure)
    path = tmp_path / "run"
    zooprep.select(path, apdb=APDB)
    images = {**IMAGES, "science": str(exposure)}
    result = fakes(path, FakesOptions(count=6, mag=(19.0, 22.0), seed=2), images=images)
    assert result.added == 6
    record = json.loads((path / PLANS).read_text())["images"][0]
    assert record["gain_from"].startswith("VARIANCE")
    assert record["gain"] == pytest.approx(true_gain, rel=0.1)
    assert record["saturation_from"] == "MASK SAT pixels"
    assert record["zeropoint_from"] == "MAGZERO"
    plan = load_injection(path / "fakes" / "0.npz")
    k = plan.stamps.shape[1]
    for y0, _ in plan.corners:
        assert y0 + k <= 100 or y0 >= 116  # no stamp touches the BAD rows


def test_a_sigterm_while_planning_adds_nothing_and_says_so(tmp_path: Path) -> None:
    import os
    import signal

    from tests.killing import signal_at_random

    path = _made(tmp_path / "run", options=None, render=False)
    zooprep_bin = Path(sys.executable).parent / "zooprep"
    cmd = [
        str(zooprep_bin),
        "fakes",
        str(path),
        "--science",
        IMAGES["science"],
        "--template",
        IMAGES["template"],
        "--difference",
        IMAGES["difference"],
        "--count",
        "6",
        "--zeropoint",
        "30",
    ]
    spare = _made(tmp_path / "spare", options=None, render=False)
    duration = timed_run([*cmd[:2], str(spare), *cmd[3:]], env=dict(os.environ))
    stopped = signal_at_random(
        cmd, signal.SIGTERM, seed=3, duration=duration, lo=0.2, hi=0.5
    )
    known, sources = _sources(path)
    if stopped.returncode == 0:  # the signal came after the commit
        assert len(known) == 6
    else:
        assert stopped.returncode == 128 + signal.SIGTERM
        assert "interrupted" in stopped.stderr
        assert not known
        assert len(sources) == 32
    assert not stopped.survivors


def _one_error(output: str) -> str:
    """The one error line a refused command ends with."""
    errors = [x for x in output.splitlines() if x.startswith("Error")]
    assert len(errors) == 1, output
    assert output.strip().splitlines()[-1] == errors[0]
    return errors[0]


def test_render_refuses_pictures_that_would_give_the_fakes_away(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    # the demo APDB's sources have a reliability score; the fakes have none
    path = _made(tmp_path / "run", render=False)
    with pytest.raises(InputError, match=r"8 fakes .* RB score.*--no-annotate$"):
        zooprep.render(path, annotate=True, jobs=1)
    with pytest.raises(InputError, match=r"8 fakes .* no history"):
        zooprep.render(path, lightcurve="mag", jobs=1)
    for args, words in (
        (["--annotate"], "the fakes lack; render with --no-annotate"),
        (["--lightcurve", "mag"], "render this run without --lightcurve"),
    ):
        out = CliRunner().invoke(cli, ["render", str(path), "--jobs", "1", *args])
        assert out.exit_code == 2, out.output
        assert words in _one_error(out.output)
    # refused before any work: nothing rendered, no setting saved
    with Run.open(path, lock=False) as run:
        assert run.counts()["rendered"] == 0
        assert run.settings.render is not None
        assert not run.settings.render.annotate
    assert not list((path / "cutouts").rglob("*.png"))
    done = CliRunner().invoke(cli, ["render", str(path), "--jobs", "1"])
    assert done.exit_code == 0, done.output
    assert "render: 40 rendered" in done.output


def test_fakes_added_to_an_annotated_run_need_it_redrawn_without_scores(
    tmp_path: Path,
) -> None:
    path = _made(tmp_path / "run", options=None, render=False)
    zooprep.render(path, images=IMAGES, sizes=(30,), annotate=True, jobs=1)
    fakes(path, OPTIONS, images=IMAGES)
    # the real sources were drawn with their score: they must be drawn again
    with pytest.raises(InputError, match=r"render with --no-annotate --force$"):
        zooprep.render(path, jobs=1)
    result = zooprep.render(path, annotate=False, force=True, jobs=1)
    assert result.rendered == 40
    with Run.open(path, lock=False) as run:
        assert run.settings.render is not None
        assert not run.settings.render.annotate


def test_render_help_says_what_it_refuses_on_a_run_with_fakes() -> None:
    from click.testing import CliRunner

    from zooprep.cli import cli

    out = CliRunner().invoke(cli, ["render", "--help"])
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    assert "Injected fakes (zooprep fakes --count) must look like the real" in text
    assert "--lightcurve a fake has no history" in text
    assert "the fakes have none; use --no-annotate" in text
    assert "--annotate / --no-annotate" in text


class _Stamps:
    """An image source that cuts the same files but cannot say which they are."""

    def __init__(self) -> None:
        from zooprep.images.fits import FitsImages

        self.inner = FitsImages(
            IMAGES["science"], IMAGES["template"], IMAGES["difference"]
        )

    def check(self, columns):
        self.inner.check(columns)

    def group_key(self, row):
        return self.inner.group_key(row)

    def cutouts(self, rows, sizes, use_footprint=False):
        return self.inner.cutouts(rows, sizes, use_footprint)


def test_a_run_with_fakes_is_rendered_only_from_the_images_they_were_planned_on(
    tmp_path: Path,
) -> None:
    # Cut by another source the fakes would be missing: empty sky where the
    # truth says a source of known magnitude is.
    path = _made(tmp_path / "run", render=False)
    with pytest.raises(InputError, match=r"_Stamps cannot add to the cutouts") as err:
        zooprep.render(path, images=_Stamps(), sizes=(30,), jobs=1)
    assert "\n" not in str(err.value)
    with Run.open(path, lock=False) as run:
        assert run.counts()["rendered"] == 0
    zooprep.select(tmp_path / "other", apdb=APDB)
    with pytest.raises(InputError, match=r"fakes need FITS path templates"):
        fakes(tmp_path / "other", OPTIONS, images=_Stamps())
