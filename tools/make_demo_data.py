"""Build the demo sample bundled in ``zooprep/data/`` from ``tests/data``.

Run from the repository root::

    python tools/make_demo_data.py [--data tests/data] [--out zooprep/data]

What it writes (see ``zooprep/data/README.md`` for provenance and licences):

- ``decam/{science,template,difference}.fits``: the real DECam i-band triplet of
  ``decam_sfft`` (MIT), as float32 FITS with their original headers (full TPV
  WCS; the three share one pixel grid);
- ``alerts/ztf/*.avro``, ``alerts/rubin/*.avro``: unmodified copies of a few
  real alert packets from MIT / Apache-2.0 sources;
- ``apdb/demo_apdb.sqlite3``: a small SQLite APDB made here: a ``DiaSource``
  table with the Rubin APDB column names and types, and a ``metadata`` table.
  Its rows are **synthetic catalogue values on real pixels**: sources found by
  simple peak finding on the real DECam difference image, positions from its
  pixels and WCS, crude fluxes and shapes measured on the pixels, and a made-up
  but plausible ``reliability``.  No row comes from a real APDB.

The script is deterministic (fixed seed, fixed ``time_processed``), so running
it again gives the same sample.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

ROOT = Path(__file__).resolve().parent.parent

#: The DECam triplet: our role name -> file in ``decam_sfft``.
DECAM = {
    "science": "Stack-DEC-OBS04.fits",
    "template": "Stack-DEC-OBS18.fits",
    "difference": "FinalDifference.fits",
}

#: Alert packets copied unchanged: shared-data path -> bundled name.
ALERTS = {
    # ZTF, MIT (boom-astro/boom)
    "ztf_alerts/boom/2695378462115010012.avro": "ztf/2695378462115010012.avro",
    # ZTF, Apache-2.0 (astrolabsoftware/fink-client)
    "ztf_alerts/fink-client/ZTF19acihgng.avro": "ztf/ZTF19acihgng.avro",
    "ztf_alerts/fink-client/ZTF19acxxwrs.avro": "ztf/ZTF19acxxwrs.avro",
    "ztf_alerts/fink-client/avro_multi_alerts_other.avro": "ztf/avro_multi_alerts_other.avro",
    # Rubin, Apache-2.0 (fink-filters rows in fink-client's schema); the second
    # is a solar-system (moving) object.
    "rubin_alerts/fink-filters-repacked/169813006111211559.avro": "rubin/169813006111211559.avro",
    "rubin_alerts/fink-filters-repacked/169813007083241522.avro": "rubin/169813007083241522.avro",
}

#: The DiaSource columns of a Rubin APDB (schema 1.0.0): name, SQL type, NOT NULL.
#: Column names and types are facts of the APDB format; the list is written here.
DIASOURCE_COLUMNS = """
diaSourceId:BIGINT! visit:BIGINT! detector:INTEGER! diaObjectId:BIGINT
ssObjectId:BIGINT parentDiaSourceId:BIGINT ssObjectReassocTime:TIMESTAMP
midpointMjdTai:DOUBLE! ra:DOUBLE! raErr:FLOAT dec:DOUBLE! decErr:FLOAT
ra_dec_Cov:FLOAT x:FLOAT! xErr:FLOAT y:FLOAT! yErr:FLOAT x_y_Cov:FLOAT
centroid_flag:BOOLEAN apFlux:FLOAT apFluxErr:FLOAT apFlux_flag:BOOLEAN
apFlux_flag_apertureTruncated:BOOLEAN snr:FLOAT psfFlux:FLOAT psfFluxErr:FLOAT
psfRa:DOUBLE psfRaErr:FLOAT psfDec:DOUBLE psfDecErr:FLOAT
psfFlux_psfRa_Cov:FLOAT psfFlux_psfDec_Cov:FLOAT psfRa_psfDec_Cov:FLOAT
psfLnL:FLOAT psfChi2:FLOAT psfNdata:INTEGER psfFlux_flag:BOOLEAN
psfFlux_flag_edge:BOOLEAN psfFlux_flag_noGoodPixels:BOOLEAN trailFlux:FLOAT
trailFluxErr:FLOAT trailRa:DOUBLE trailRaErr:FLOAT trailDec:DOUBLE
trailDecErr:FLOAT trailLength:FLOAT trailLengthErr:FLOAT trailAngle:FLOAT
trailAngleErr:FLOAT trailFlux_trailRa_Cov:FLOAT trailFlux_trailDec_Cov:FLOAT
trailFlux_trailLength_Cov:FLOAT trailFlux_trailAngle_Cov:FLOAT
trailRa_trailDec_Cov:FLOAT trailRa_trailLength_Cov:FLOAT
trailRa_trailAngle_Cov:FLOAT trailDec_trailLength_Cov:FLOAT
trailDec_trailAngle_Cov:FLOAT trailLength_trailAngle_Cov:FLOAT trailLnL:FLOAT
trailChi2:FLOAT trailNdata:INTEGER trail_flag_edge:BOOLEAN dipoleMeanFlux:FLOAT
dipoleMeanFluxErr:FLOAT dipoleFluxDiff:FLOAT dipoleFluxDiffErr:FLOAT
dipoleRa:DOUBLE dipoleRaErr:FLOAT dipoleDec:DOUBLE dipoleDecErr:FLOAT
dipoleLength:FLOAT dipoleLengthErr:FLOAT dipoleAngle:FLOAT dipoleAngleErr:FLOAT
dipoleMeanFlux_dipoleFluxDiff_Cov:FLOAT dipoleMeanFlux_dipoleRa_Cov:FLOAT
dipoleMeanFlux_dipoleDec_Cov:FLOAT dipoleMeanFlux_dipoleLength_Cov:FLOAT
dipoleMeanFlux_dipoleAngle_Cov:FLOAT dipoleFluxDiff_dipoleRa_Cov:FLOAT
dipoleFluxDiff_dipoleDec_Cov:FLOAT dipoleFluxDiff_dipoleLength_Cov:FLOAT
dipoleFluxDiff_dipoleAngle_Cov:FLOAT dipoleRa_dipoleDec_Cov:FLOAT
dipoleRa_dipoleLength_Cov:FLOAT dipoleRa_dipoleAngle_Cov:FLOAT
dipoleDec_dipoleLength_Cov:FLOAT dipoleDec_dipoleAngle_Cov:FLOAT
dipoleLength_dipoleAngle_Cov:FLOAT dipoleLnL:FLOAT dipoleChi2:FLOAT
dipoleNdata:INTEGER scienceFlux:FLOAT scienceFluxErr:FLOAT
forced_PsfFlux_flag:BOOLEAN forced_PsfFlux_flag_edge:BOOLEAN
forced_PsfFlux_flag_noGoodPixels:BOOLEAN snapDiffFlux:FLOAT
snapDiffFluxErr:FLOAT fpBkgd:FLOAT fpBkgdErr:FLOAT ixx:FLOAT ixxErr:FLOAT
iyy:FLOAT iyyErr:FLOAT ixy:FLOAT ixyErr:FLOAT ixx_iyy_Cov:FLOAT
ixx_ixy_Cov:FLOAT iyy_ixy_Cov:FLOAT ixxPSF:FLOAT iyyPSF:FLOAT ixyPSF:FLOAT
shape_flag:BOOLEAN shape_flag_no_pixels:BOOLEAN shape_flag_not_contained:BOOLEAN
shape_flag_parent_source:BOOLEAN extendedness:FLOAT reliability:FLOAT
band:CHAR(1) isDipole:BOOLEAN time_processed:TIMESTAMP! time_withdrawn:TIMESTAMP
bboxSize:BIGINT pixelFlags:BOOLEAN pixelFlags_bad:BOOLEAN pixelFlags_cr:BOOLEAN
pixelFlags_crCenter:BOOLEAN pixelFlags_edge:BOOLEAN
pixelFlags_interpolated:BOOLEAN pixelFlags_interpolatedCenter:BOOLEAN
pixelFlags_offimage:BOOLEAN pixelFlags_saturated:BOOLEAN
pixelFlags_saturatedCenter:BOOLEAN pixelFlags_suspect:BOOLEAN
pixelFlags_suspectCenter:BOOLEAN pixelFlags_streak:BOOLEAN
pixelFlags_streakCenter:BOOLEAN pixelFlags_injected:BOOLEAN
pixelFlags_injectedCenter:BOOLEAN pixelFlags_injected_template:BOOLEAN
pixelFlags_injected_templateCenter:BOOLEAN pixelId:BIGINT!
"""

#: Synthetic identifiers: 64-bit ids in the range of real Rubin ids (> 2**53,
#: so they do not survive a float64 or a spreadsheet), clearly our own.
ID_BASE = 506_990_000_000_000_000
OBJECT_BASE = 506_990_100_000_000_000
#: No exposure number survives in the stack header; the visit is the night
#: of observation written as an integer (synthetic).
VISIT = 20180804
#: Assumed photometric zero point (AB mag of 1 ADU) to express fluxes in nJy.
ZERO_POINT = 30.0
TIME_PROCESSED = "2026-01-15 12:00:00.000000"
SEED = 20180804
EDGE = 10  # pixels: sources closer than this to an edge get the edge flags
MAX_SOURCES = 32


def columns() -> list[tuple[str, str, bool]]:
    """``(name, type, not_null)`` of every DiaSource column."""
    out = []
    for item in DIASOURCE_COLUMNS.split():
        name, kind = item.split(":")
        out.append((name, kind.rstrip("!"), kind.endswith("!")))
    return out


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian."""
    half = int(np.ceil(3 * sigma))
    x = np.arange(-half, half + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian smoothing (edges padded by reflection)."""
    k = gaussian_kernel(sigma)
    half = len(k) // 2
    padded = np.pad(image, half, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def local_peaks(
    snr_map: np.ndarray, threshold: float, half: int = 4
) -> list[tuple[int, int]]:
    """``(y, x)`` of pixels that are the maximum of |snr| in their window and above threshold."""
    mag = np.abs(snr_map)
    padded = np.pad(mag, half, mode="constant", constant_values=0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * half + 1,) * 2)
    is_peak = (mag == windows.max(axis=(2, 3))) & (mag > threshold)
    ys, xs = np.nonzero(is_peak)
    order = np.argsort(-mag[ys, xs])
    return [(int(ys[i]), int(xs[i])) for i in order]


def measure(
    diff: np.ndarray,
    sci: np.ndarray,
    smoothed_snr: np.ndarray,
    sigma_diff: float,
    psf_sigma: float,
    y: int,
    x: int,
) -> dict[str, Any]:
    """Crude pixel measurements of one source on the difference (and science) image."""
    ny, nx = diff.shape
    sign = 1.0 if smoothed_snr[y, x] > 0 else -1.0
    r = 6
    y0, y1, x0, x1 = (
        max(0, y - r),
        min(ny, y + r + 1),
        max(0, x - r),
        min(nx, x + r + 1),
    )
    yy, xx = np.mgrid[y0:y1, x0:x1]
    stamp = diff[y0:y1, x0:x1]
    weight = np.clip(sign * stamp, 0, None)
    if weight.sum() > 0:
        cy = float((weight * yy).sum() / weight.sum())
        cx = float((weight * xx).sum() / weight.sum())
    else:
        cy, cx = float(y), float(x)
    shift = np.hypot(cy - y, cx - x)
    # PSF photometry with a Gaussian PSF at the centroid.
    psf = np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / psf_sigma**2)
    psf /= 2 * np.pi * psf_sigma**2
    flux = float((psf * stamp).sum() / (psf**2).sum())
    flux_err = float(sigma_diff / np.sqrt((psf**2).sum()))
    model = flux * psf
    chi2 = float((((stamp - model) / sigma_diff) ** 2).sum())
    ndata = int(stamp.size)
    # Aperture photometry.
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    full_area = np.pi * r**2
    ap_flux = float(stamp[inside].sum())
    ap_err = float(sigma_diff * np.sqrt(inside.sum()))
    truncated = inside.sum() < 0.9 * full_area
    # Science-image flux above a local background (annulus 9-13 px).
    R = 13
    sy0, sy1, sx0, sx1 = (
        max(0, y - R),
        min(ny, y + R + 1),
        max(0, x - R),
        min(nx, x + R + 1),
    )
    syy, sxx = np.mgrid[sy0:sy1, sx0:sx1]
    sstamp = sci[sy0:sy1, sx0:sx1]
    rr = np.hypot(syy - cy, sxx - cx)
    annulus = (rr >= 9) & (rr <= 13)
    background = float(np.median(sstamp[annulus]))
    noise_sci = float(1.4826 * np.median(np.abs(sstamp[annulus] - background)))
    spsf = np.exp(-0.5 * rr**2 / psf_sigma**2) / (2 * np.pi * psf_sigma**2)
    sci_flux = float((spsf * (sstamp - background)).sum() / (spsf**2).sum())
    sci_err = float(max(noise_sci, 1e-3) / np.sqrt((spsf**2).sum()))
    # Second moments of the signal.
    w = np.clip(sign * stamp, 0, None)
    if w.sum() > 0:
        ixx = float((w * (xx - cx) ** 2).sum() / w.sum())
        iyy = float((w * (yy - cy) ** 2).sum() / w.sum())
        ixy = float((w * (xx - cx) * (yy - cy)).sum() / w.sum())
    else:
        ixx = iyy = ixy = float("nan")
    # A dipole: a strong lobe of the other sign right beside the peak.
    near = smoothed_snr[max(0, y - 5) : y + 6, max(0, x - 5) : x + 6]
    dipole = bool((sign * near).min() < -0.5 * abs(smoothed_snr[y, x])) and bool(
        abs((sign * near).min()) > 4
    )
    # Footprint: extent of the >3 sigma (smoothed) region around the peak.
    big = np.abs(smoothed_snr[max(0, y - 20) : y + 21, max(0, x - 20) : x + 21]) > 3
    ys_, xs_ = np.nonzero(big)
    bbox = int(max(np.ptp(ys_) + 1, np.ptp(xs_) + 1)) if len(ys_) else 10
    peak_sci = float(sci[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].max())
    return {
        "x": cx,
        "y": cy,
        "shift": shift,
        "flux": flux,
        "flux_err": flux_err,
        "chi2": chi2,
        "ndata": ndata,
        "ap_flux": ap_flux,
        "ap_err": ap_err,
        "truncated": bool(truncated),
        "sci_flux": sci_flux,
        "sci_err": sci_err,
        "ixx": ixx,
        "iyy": iyy,
        "ixy": ixy,
        "dipole": dipole,
        "bbox": max(bbox, 10),
        "peak_sci": peak_sci,
    }


def detect(shared: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Find sources on the real difference image and build DiaSource rows."""
    folder = shared / "decam_sfft"
    diff = fits.getdata(folder / DECAM["difference"]).astype(np.float64)
    sci = fits.getdata(folder / DECAM["science"]).astype(np.float64)
    header = fits.getheader(folder / DECAM["science"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    fwhm = float(header.get("FWHM", 5.0))
    psf_sigma = fwhm / 2.3548
    mjd = float(header["MJD-OBS"])
    band = str(header["FILTER"]).split()[0]
    detector = int(header["CCDNUM"])
    saturate = float(header.get("SATURATE", 4e4))

    med = float(np.median(diff))
    sigma = float(1.4826 * np.median(np.abs(diff - med)))
    k = gaussian_kernel(psf_sigma)
    norm = float(np.sqrt((np.outer(k, k) ** 2).sum()))
    snr_map = smooth(diff - med, psf_sigma) / (sigma * norm)

    peaks = local_peaks(snr_map, 5.0)
    ny, nx = diff.shape

    def near_edge(p: tuple[int, int]) -> bool:
        return min(p[0], p[1], ny - 1 - p[0], nx - 1 - p[1]) < EDGE

    inner = [p for p in peaks if not near_edge(p)]
    edge = [p for p in local_peaks(snr_map, 3.5) if near_edge(p)]
    chosen = inner[: MAX_SOURCES - min(3, len(edge))] + edge[:3]

    rng = np.random.default_rng(SEED)
    to_njy = 10 ** (-0.4 * (ZERO_POINT - 31.4))
    pixscale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600
    rows = []
    for n, (y, x) in enumerate(sorted(chosen, key=lambda p: (p[0], p[1]))):
        m = measure(diff - med, sci, snr_map, sigma, psf_sigma, y, x)
        sky = wcs.pixel_to_world(m["x"], m["y"])
        snr = abs(m["flux"] / m["flux_err"])
        at_edge = near_edge((y, x))
        saturated = m["peak_sci"] > 0.2 * saturate
        centroid_bad = m["shift"] > 1.5
        shape_bad = not (m["ixx"] > 0 and m["iyy"] > 0)
        chi2_red = m["chi2"] / max(m["ndata"] - 3, 1)
        # Made-up but plausible real/bogus score: high for clean point-like
        # detections at high S/N, low for dipoles, edges and poor PSF fits.
        logit = 1.1 * (snr - 7.0) / 3.0 - 1.2 * np.log(max(chi2_red, 0.3))
        logit -= 3.0 * m["dipole"] + 2.0 * at_edge + 1.0 * saturated
        logit += rng.normal(0, 0.8)
        reliability = float(np.clip(1 / (1 + np.exp(-logit)), 1e-4, 0.9999))
        pos_err_pix = fwhm / 2.3548 / max(snr, 1)
        row: dict[str, Any] = {
            "diaSourceId": ID_BASE + 1000 * (n + 1) + 37,
            "visit": VISIT,
            "detector": detector,
            "diaObjectId": OBJECT_BASE + n + 1,
            "ssObjectId": 0,
            "parentDiaSourceId": 0,
            "midpointMjdTai": mjd,
            "ra": float(sky.ra.deg),
            "raErr": pos_err_pix * pixscale / 3600,
            "dec": float(sky.dec.deg),
            "decErr": pos_err_pix * pixscale / 3600,
            "x": m["x"],
            "xErr": pos_err_pix,
            "y": m["y"],
            "yErr": pos_err_pix,
            "centroid_flag": centroid_bad,
            "apFlux": m["ap_flux"] * to_njy,
            "apFluxErr": m["ap_err"] * to_njy,
            "apFlux_flag": m["truncated"],
            "apFlux_flag_apertureTruncated": m["truncated"],
            "snr": snr,
            "psfFlux": m["flux"] * to_njy,
            "psfFluxErr": m["flux_err"] * to_njy,
            "psfRa": float(sky.ra.deg),
            "psfDec": float(sky.dec.deg),
            "psfChi2": m["chi2"],
            "psfNdata": m["ndata"],
            "psfFlux_flag": at_edge,
            "psfFlux_flag_edge": at_edge,
            "psfFlux_flag_noGoodPixels": False,
            "trailNdata": 0,
            "scienceFlux": m["sci_flux"] * to_njy,
            "scienceFluxErr": m["sci_err"] * to_njy,
            "forced_PsfFlux_flag": at_edge,
            "forced_PsfFlux_flag_edge": at_edge,
            "forced_PsfFlux_flag_noGoodPixels": False,
            "ixx": m["ixx"],
            "iyy": m["iyy"],
            "ixy": m["ixy"],
            "ixxPSF": psf_sigma**2,
            "iyyPSF": psf_sigma**2,
            "ixyPSF": 0.0,
            "shape_flag": shape_bad,
            "shape_flag_no_pixels": shape_bad,
            "shape_flag_not_contained": False,
            "shape_flag_parent_source": False,
            "reliability": reliability,
            "band": band,
            "isDipole": m["dipole"],
            "time_processed": TIME_PROCESSED,
            "bboxSize": m["bbox"],
            "pixelFlags": at_edge or saturated,
            "pixelFlags_bad": False,
            "pixelFlags_cr": False,
            "pixelFlags_crCenter": False,
            "pixelFlags_edge": at_edge,
            "pixelFlags_interpolated": False,
            "pixelFlags_interpolatedCenter": False,
            "pixelFlags_offimage": False,
            "pixelFlags_saturated": saturated,
            "pixelFlags_saturatedCenter": False,
            "pixelFlags_suspect": False,
            "pixelFlags_suspectCenter": False,
            "pixelFlags_streak": False,
            "pixelFlags_streakCenter": False,
            "pixelFlags_injected": False,
            "pixelFlags_injectedCenter": False,
            "pixelFlags_injected_template": False,
            "pixelFlags_injected_templateCenter": False,
            "pixelId": 0,
        }
        rows.append(row)
    info = {"sigma": sigma, "fwhm": fwhm, "band": band, "detector": detector}
    return rows, info


def write_apdb(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the DiaSource rows and the metadata table to a new SQLite file."""
    if path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = columns()
    ddl = ",\n\t".join(
        f'"{name}" {kind}' + (" NOT NULL" if not_null else "")
        for name, kind, not_null in cols
    )
    db = sqlite3.connect(path)
    try:
        db.execute(
            f'CREATE TABLE "DiaSource" (\n\t{ddl}, \n\tPRIMARY KEY ("diaSourceId")\n)'
        )
        db.execute(
            'CREATE INDEX "IDX_DiaSource_visitDetector" ON "DiaSource" (visit, detector)'
        )
        db.execute(
            "CREATE TABLE metadata (\n\tname TEXT NOT NULL, \n\tvalue TEXT NOT NULL, "
            "\n\tPRIMARY KEY (name)\n)"
        )
        db.executemany(
            "INSERT INTO metadata VALUES (?, ?)",
            [
                ("version:schema", "1.0.0"),
                ("instrument", "DECam"),
                ("zooprep:demo", "synthetic DiaSource values on real DECam pixels"),
            ],
        )
        names = [c[0] for c in cols]
        placeholders = ", ".join("?" * len(names))
        quoted = ", ".join(f'"{n}"' for n in names)
        for row in rows:
            values = []
            for name in names:
                value = row.get(name)
                if isinstance(value, bool | np.bool_):
                    value = int(value)
                elif isinstance(value, float) and not np.isfinite(value):
                    value = None
                values.append(value)
            db.execute(
                f'INSERT INTO "DiaSource" ({quoted}) VALUES ({placeholders})', values
            )
        db.commit()
        db.execute("VACUUM")
    finally:
        db.close()


def write_decam(shared: Path, out: Path) -> None:
    """The triplet as float32 FITS, headers kept.

    Plain (uncompressed) FITS: lossless tile compression barely shrinks these
    noisy float images and its gzip stream carries a time stamp, which would
    make the sample differ on every rebuild.
    """
    out.mkdir(parents=True, exist_ok=True)
    for role, name in DECAM.items():
        with fits.open(shared / "decam_sfft" / name) as hdul:
            data = hdul[0].data.astype(np.float32)
            header = hdul[0].header.copy()
        for key in ("FZQVALUE", "FZQMETHD", "CHECKSUM", "DATASUM"):
            header.remove(key, ignore_missing=True)
        header["ZPSOURCE"] = (f"decam_sfft/{name}", "zooprep demo: origin (sfft, MIT)")
        target = out / f"{role}.fits"
        fits.PrimaryHDU(data, header=header).writeto(target, overwrite=True)


def copy_alerts(shared: Path, out: Path) -> None:
    """Copy the chosen alert packets unchanged."""
    for src, dest in ALERTS.items():
        target = out / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / src, target)


def main() -> None:
    """Build the sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "zooprep" / "data")
    args = parser.parse_args()
    write_decam(args.data, args.out / "decam")
    copy_alerts(args.data, args.out / "alerts")
    rows, info = detect(args.data)
    write_apdb(args.out / "apdb" / "demo_apdb.sqlite3", rows)
    flagged = sum(bool(r["pixelFlags_edge"]) for r in rows)
    dipoles = sum(bool(r["isDipole"]) for r in rows)
    print(
        f"{len(rows)} sources ({flagged} at an edge, {dipoles} dipoles); "
        f"difference noise {info['sigma']:.2f} ADU, FWHM {info['fwhm']:.2f} px"
    )


if __name__ == "__main__":
    main()
