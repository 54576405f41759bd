"""Fakes drawn into the real DECam triplet are what they claim to be, measured.

The injection science (`zooprep.injection`) on ``tests/data/decam_sfft``:
photutils' own PSF photometry recovers each fake's flux with unit pulls, the
added noise has the photon-noise variance, fakes stay off edges, masked
pixels and sources, and one seed gives the same fakes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

pytest.importorskip("photutils")

from zooprep import injection as inj
from zooprep.errors import InputError

ZEROPOINT = 30.0  # the demo's assumed zero point for these ADU images


@pytest.fixture(scope="module")
def decam(test_data: Path) -> dict[str, object]:
    """The DECam science and difference images, their PSF and where fakes may go."""
    base = test_data / "decam_sfft"
    science = fits.getdata(base / "Stack-DEC-OBS04.fits").astype(float)
    header = fits.getheader(base / "Stack-DEC-OBS04.fits")
    difference = fits.getdata(base / "FinalDifference.fits").astype(float)
    saturation, _ = inj.header_saturation(header) or (None, "")
    psf = inj.measure_psf(science, header, saturation=saturation)
    allowed = inj.allowed_map(science, difference, psf=psf, margin=16)
    noise = inj.flux_noise(difference, psf, allowed, np.random.default_rng(0))
    gain, _ = inj.header_gain(header) or (None, "")
    return {
        "science": science,
        "header": header,
        "difference": difference,
        "psf": psf,
        "allowed": allowed,
        "flux_noise": noise,
        "gain": gain,
    }


def _inject(decam: dict, seed: int, count: int, mags: tuple[float, float]) -> dict:
    """Put ``count`` fakes into a copy of the difference image; return the truth."""
    psf: inj.PSFModel = decam["psf"]  # type: ignore[assignment]
    rng = np.random.default_rng(seed)
    # stamps (and photometry boxes) of two fakes never overlap
    apart = 2 * psf.half * np.sqrt(2) + 1
    positions = inj.place(rng, decam["allowed"], count, apart)  # type: ignore[arg-type]
    mag = rng.uniform(*mags, size=len(positions))
    flux = inj.mag_to_counts(mag, ZEROPOINT)
    image = np.array(decam["difference"], dtype=float)
    expected = np.zeros_like(image)
    for k, (x, y) in enumerate(positions):
        model, added, y0, x0 = inj.draw_fake(
            psf,
            x,
            y,
            float(flux[k]),
            decam["gain"],
            np.random.default_rng([seed, k]),  # type: ignore[arg-type]
        )
        h, w = added.shape
        image[y0 : y0 + h, x0 : x0 + w] += added
        expected[y0 : y0 + h, x0 : x0 + w] += model
    return {
        "positions": positions,
        "flux": flux,
        "image": image,
        "expected": expected,
        "mag": mag,
    }


def _photutils_forced_fluxes(
    psf: inj.PSFModel, image: np.ndarray, positions: list
) -> np.ndarray:
    """photutils PSFPhotometry at known positions (held fixed).

    The initial fluxes are photutils' own aperture estimates, as a pipeline
    would start.
    """
    from astropy.table import Table
    from photutils.psf import CircularGaussianPRF, ImagePSF, PSFPhotometry

    if psf.kind == "gaussian":
        model = CircularGaussianPRF(fwhm=psf.fwhm)
    else:
        model = ImagePSF(psf.image, oversampling=psf.oversampling)
    model.x_0.fixed = True
    model.y_0.fixed = True
    init = Table({"x": [p[0] for p in positions], "y": [p[1] for p in positions]})
    phot = PSFPhotometry(
        model, fit_shape=(2 * psf.half + 1,) * 2, aperture_radius=1.5 * psf.fwhm
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils' own deprecations and fit notes
        table = phot(image, init_params=init)
    column = "flux_fit" if "flux_fit" in table.colnames else "flux"
    return np.asarray(table[column], dtype=float)


def test_photutils_psf_photometry_recovers_the_injected_fluxes_with_unit_pulls(
    decam: dict,
) -> None:
    """Each fake's flux, measured by photutils where it was put, over >= 200 fakes.

    Two measures.  *Added flux*: photometry of the injected image less the
    image before injection (the pixels the fakes added), so the sky cancels:
    its pull against the photon noise alone tests the flux scale, the PSF and
    the added noise exactly.  *As a pipeline sees it*: the
    injected image's photometry against the fake's flux with the sky's noise
    added, the sky's zero level and noise measured by photutils at 1000 blank
    places of the image before injection.
    """
    psf: inj.PSFModel = decam["psf"]
    assert psf.kind == "epsf"  # the real image has enough stars for an ePSF
    allowed = decam["allowed"]
    picks = np.random.default_rng(99).choice(np.flatnonzero(allowed), 1000)
    blank_xy = [
        (float(k % allowed.shape[1]), float(k // allowed.shape[1])) for k in picks
    ]
    blank = _photutils_forced_fluxes(psf, decam["difference"], blank_xy)
    zero = float(np.median(blank))
    sky_sigma = 1.4826 * float(np.median(np.abs(blank - zero)))
    # The source's own photons add F / gain * sum(P^3) / sum(P^2)^2 to the
    # variance of a PSF flux (not F / gain: the fit weighs pixels by P).
    stamp, _, _ = psf.draw(0.0, 0.0)
    kappa = float((stamp**3).sum() / (stamp**2).sum() ** 2)
    assert kappa == pytest.approx(psf.poisson_factor)
    added_pulls, pipeline_pulls, poisson_share = [], [], []
    for seed in range(12):
        truth = _inject(decam, seed, 20, (16.5, 23.0))
        flux = truth["flux"]
        after = _photutils_forced_fluxes(psf, truth["image"], truth["positions"])
        added = _photutils_forced_fluxes(
            psf, truth["image"] - decam["difference"], truth["positions"]
        )
        photons = kappa * flux / decam["gain"]
        added_pulls.extend((added - flux) / np.sqrt(photons))
        sigma = np.sqrt(sky_sigma**2 + photons)
        pipeline_pulls.extend((after - zero - flux) / sigma)
        poisson_share.extend(photons / sigma**2)
    pulls = np.asarray(added_pulls)
    n = len(pulls)
    assert n >= 200
    # mean 0 and spread 1, each within 3 standard errors
    assert abs(pulls.mean()) < 3 / np.sqrt(n)
    assert abs(pulls.std() - 1.0) < 3 / np.sqrt(2 * n)
    seen = np.asarray(pipeline_pulls)
    assert abs(seen.std() - 1.0) < 3 / np.sqrt(2 * n)
    # The seeds put fakes on much the same few blank patches of this small
    # image, so their sky is far from 240 independent draws: the mean is held
    # to what about 40 independent places allow.
    assert abs(seen.mean()) < 3 / np.sqrt(40)
    # the bright fakes are photon-noise dominated, so the spread tests the
    # noise that was added, not only the image's own
    assert max(poisson_share) > 0.5
    # zooprep's own estimate of the sky's flux noise (at other blank places)
    # agrees with photutils'
    assert decam["flux_noise"] == pytest.approx(sky_sigma, rel=0.15)


def test_the_added_noise_has_the_photon_noise_variance(decam: dict) -> None:
    chi2, pixels = 0.0, 0
    for seed in range(3):
        truth = _inject(decam, seed, 20, (17.0, 19.0))
        added = truth["image"] - np.asarray(decam["difference"], dtype=float)
        model = truth["expected"]
        bright = model * decam["gain"] > 20  # Poisson close to Gaussian there
        chi2 += float(
            (((added - model)[bright]) ** 2 / (model[bright] / decam["gain"])).sum()
        )
        pixels += int(bright.sum())
    assert pixels > 5000
    # chi2 per pixel is 1 within 3 standard errors (sqrt(2 / N))
    assert abs(chi2 / pixels - 1.0) < 3 * np.sqrt(2.0 / pixels)


def test_the_drawn_psf_holds_the_flux_and_sits_at_the_position(decam: dict) -> None:
    """A stamp placed by its corner is found by photutils where it was drawn."""
    from astropy.table import Table
    from photutils.psf import CircularGaussianPRF, ImagePSF, PSFPhotometry

    for psf in (decam["psf"], inj.PSFModel("gaussian", "test", decam["psf"].fwhm)):
        for x, y in [(100.0, 100.0), (100.4, 99.7), (57.25, 180.5)]:
            stamp, y0, x0 = psf.draw(x, y)
            # photutils' spline interpolation of the ePSF keeps its sum to 1 %
            assert stamp.sum() == pytest.approx(1.0, abs=0.01)
            image = np.zeros((256, 256))
            h, w = stamp.shape
            image[y0 : y0 + h, x0 : x0 + w] = 1000.0 * stamp
            if psf.kind == "gaussian":
                model = CircularGaussianPRF(fwhm=psf.fwhm)
            else:
                model = ImagePSF(psf.image, oversampling=psf.oversampling)
            init = Table({"x": [round(x)], "y": [round(y)], "flux": [900.0]})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = PSFPhotometry(model, fit_shape=(h, w))(image, init_params=init)
            assert float(found["x_fit"][0]) == pytest.approx(x, abs=0.02)
            assert float(found["y_fit"][0]) == pytest.approx(y, abs=0.02)
            assert float(found["flux_fit"][0]) == pytest.approx(1000.0, rel=0.01)


def test_fakes_stay_off_edges_masked_pixels_and_sources(decam: dict) -> None:
    psf: inj.PSFModel = decam["psf"]
    science = np.array(decam["science"])
    difference = np.array(decam["difference"])
    science[100:110, :] = np.nan  # a bad column band
    bad = np.zeros(science.shape, dtype=bool)
    bad[:, 150:160] = True  # flagged in a mask plane
    sources = [(60.0, 60.0), (200.0, 200.0)]
    allowed = inj.allowed_map(
        science, difference, psf=psf, margin=25, bad=bad, sources=sources, separation=30
    )
    positions = inj.place(np.random.default_rng(7), allowed, 25, 20.0)
    half = psf.half
    ny, nx = science.shape
    masked = ~np.isfinite(science) | bad
    for x, y in positions:
        # centre pixels 25 px from the edges, the position anywhere in them
        assert 24.5 <= x <= nx - 25.5
        assert 24.5 <= y <= ny - 25.5
        cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        assert not masked[cy - half : cy + half + 1, cx - half : cx + half + 1].any()
        for sx, sy in sources:
            assert np.hypot(x - sx, y - sy) >= 30
    from scipy.spatial.distance import pdist

    assert pdist(np.array(positions)).min() >= 20


def test_too_many_fakes_for_an_image_is_refused_saying_how_many_fit(
    decam: dict,
) -> None:
    with pytest.raises(inj.Crowded, match=r"only \d+ of 500 fakes fit") as err:
        inj.place(np.random.default_rng(0), decam["allowed"], 500, 25.0)
    assert 0 < err.value.placed < 500


def test_one_seed_gives_the_same_fakes_and_another_does_not(decam: dict) -> None:
    a = _inject(decam, 11, 15, (19.0, 23.0))
    b = _inject(decam, 11, 15, (19.0, 23.0))
    c = _inject(decam, 12, 15, (19.0, 23.0))
    assert a["positions"] == b["positions"]
    assert a["image"].tobytes() == b["image"].tobytes()
    assert a["positions"] != c["positions"]


def test_a_gaussian_psf_is_the_measured_seeing_when_asked(decam: dict) -> None:
    saturation, _ = inj.header_saturation(decam["header"]) or (None, "")
    psf = inj.measure_psf(
        decam["science"], decam["header"], choice="gaussian", saturation=saturation
    )
    assert psf.kind == "gaussian"
    assert "measured on" in psf.how
    assert psf.fwhm == pytest.approx(decam["psf"].fwhm, rel=0.05)


def test_the_pipelines_psf_image_is_preferred_when_the_file_carries_one(
    decam: dict,
) -> None:
    yy, xx = np.mgrid[:25, :25]
    image = np.exp(-0.5 * ((xx - 12) ** 2 + (yy - 12) ** 2) / 2.0**2)
    psf = inj.measure_psf(decam["science"], decam["header"], psf_image=image)
    assert psf.kind == "psfimage"
    assert psf.fwhm == pytest.approx(2.3548 * 2.0, rel=0.05)


def test_a_starless_image_falls_back_to_the_headers_seeing() -> None:
    noise = np.random.default_rng(1).normal(0, 5, (128, 128))
    header = fits.Header({"FWHM": 4.2})
    psf = inj.measure_psf(noise, header)
    assert psf.kind == "gaussian"
    assert "FWHM" in psf.how
    assert psf.fwhm == pytest.approx(4.2)
    with pytest.raises(InputError, match="no PSF"):
        inj.measure_psf(noise, fits.Header())
    with pytest.raises(InputError, match="an effective PSF needs at least"):
        inj.measure_psf(noise, header, choice="epsf")


def test_zero_point_gain_and_saturation_come_from_the_header() -> None:
    header = fits.Header(
        {
            "MAGZERO": 28.5,
            "GAINA": 4.0,
            "GAINB": 4.2,
            "SATURATA": 46000.0,
            "SATURATB": 42000.0,
        }
    )
    assert inj.header_zeropoint(header) == (28.5, "MAGZERO")
    assert inj.header_gain(header) == (pytest.approx(4.1), "GAINA/GAINB")
    assert inj.header_saturation(header) == (42000.0, "SATURATA/SATURATB")
    assert inj.header_zeropoint(fits.Header({"BUNIT": "nJy"})) == (31.4, "BUNIT nJy")
    flux0 = inj.header_zeropoint(fits.Header({"FLUXMAG0": 10.0**12}))
    assert flux0 is not None
    assert flux0[0] == pytest.approx(30.0)
    # 1 count at zero point 31.4 is 1 nJy
    assert inj.counts_to_njy(1.0, 31.4) == pytest.approx(1.0)
