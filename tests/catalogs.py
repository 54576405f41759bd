"""A synthetic DiaSource catalog big enough for kill, signal and disk-full tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_big_catalog(path: Path, n: int, seed: int) -> Path:
    """Write ``n`` DiaSource-like rows (64-bit ids, 40 visits, 189 detectors) as CSV.

    The values are random but fixed by ``seed``; positions fall on a 4k x 4k
    detector, so the catalog selects but is not meant to be rendered.
    """
    rng = np.random.default_rng(seed)
    pd.DataFrame(
        {
            "diaSourceId": 506428274000265570 + np.arange(n, dtype=np.int64) * 3,
            "visit": rng.integers(900000, 900040, n),
            "detector": rng.integers(0, 189, n),
            "band": rng.choice(list("ugrizy"), n),
            "x": rng.uniform(0, 4000, n),
            "y": rng.uniform(0, 4000, n),
            "reliability": rng.uniform(0, 1, n),
            "snr": rng.uniform(5, 100, n),
        }
    ).to_csv(path, index=False)
    return path
