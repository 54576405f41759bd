"""Time zooprep's light curves against one-matplotlib-figure-per-source.

Light curves are built from the real alert packets in ``tests/data`` (ZTF
``prv_candidates`` with upper limits, Rubin ``prvDiaSources`` and
``prvDiaForcedSources``).  Both implementations draw the same curves, the same
size (600x360 pixels), with the same content: one colour and marker per band,
error bars, limits as downward triangles, a legend and the classified source
ringed.  One process, one core; the two are timed in alternating rounds so
machine load hits both alike, and the ratio of curves per second is printed.

    python benchmarks/bench_lightcurve.py [--n 300] [--n-mpl 30] [--mode flux]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import fastavro
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zooprep.lightcurves import LightCurve, light_curve_plot  # noqa: E402
from zooprep.readers.history import record_light_curve  # noqa: E402
from zooprep.renderers.lightcurve import LightCurveRenderer  # noqa: E402


def load_curves(data: Path) -> list[LightCurve]:
    """Every light curve of the ZTF and Rubin test packets."""
    curves = []
    for folder in ("ztf_alerts", "rubin_alerts"):
        for path in sorted((data / folder).rglob("*.avro")):
            if "schema" in path.name:
                continue
            try:
                with open(path, "rb") as fh:
                    records = list(fastavro.reader(fh))
            except Exception:  # damaged packets kept for the error tests
                continue
            curves += [record_light_curve(n, r) for n, r in enumerate(records)]
    return curves


#: matplotlib markers of the classifier's glyphs (d3: circle, plus, Y, star).
_MPL_MARKERS = {"circle": "o", "cross": "P", "wye": "1", "star": "*"}


def render_mpl(curve: LightCurve, mode: str) -> bytes:
    """The same light curve with one matplotlib Figure (Agg), as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.14, 0.68, 0.78))
    shown = light_curve_plot(curve, mode)
    for series in shown.series:
        ax.errorbar(
            series.x,
            series.y,
            yerr=np.where(np.isfinite(series.err), series.err, 0),
            fmt=_MPL_MARKERS[series.glyph],
            color=series.colour,
            markersize=12 if series.current else 6,
            label=series.label,
        )
    if mode == "mag":
        ax.invert_yaxis()
    ax.set_xlabel("Days since first detection")
    ax.set_ylabel(shown.y_label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="zooprep curves per round")
    parser.add_argument("--n-mpl", type=int, default=30, help="matplotlib per round")
    parser.add_argument("--mode", choices=["flux", "mag"], default="flux")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    args = parser.parse_args()
    curves = load_curves(args.data)
    points = [len(c.mjd) for c in curves]
    print(
        f"{len(curves)} light curves from the test packets, "
        f"{min(points)}-{max(points)} points (median {int(np.median(points))})"
    )
    renderer = LightCurveRenderer(args.mode)
    renderer.render(curves[0])  # fonts loaded
    render_mpl(curves[0], args.mode)  # matplotlib imported
    zoo_t = mpl_t = 0.0
    zoo_n = mpl_n = 0
    zoo_bytes = mpl_bytes = 0
    for _ in range(args.rounds):
        t = time.perf_counter()
        for i in range(args.n):
            zoo_bytes += len(renderer.render(curves[i % len(curves)]))
        zoo_t += time.perf_counter() - t
        zoo_n += args.n
        t = time.perf_counter()
        for i in range(args.n_mpl):
            mpl_bytes += len(render_mpl(curves[i % len(curves)], args.mode))
        mpl_t += time.perf_counter() - t
        mpl_n += args.n_mpl
    zoo_rate, mpl_rate = zoo_n / zoo_t, mpl_n / mpl_t
    print(
        f"zooprep: {zoo_rate:.0f} curves/s ({zoo_bytes / zoo_n / 1000:.1f} kB), "
        f"matplotlib: {mpl_rate:.1f} curves/s ({mpl_bytes / mpl_n / 1000:.1f} kB), "
        f"ratio {zoo_rate / mpl_rate:.0f}x"
    )


if __name__ == "__main__":
    main()
