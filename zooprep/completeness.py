"""Completeness and purity from known answers: binned curves and the 50 % point.

A *completeness curve* is the fraction of known-real subjects (injected fakes,
or the pipeline's own injections) that a classifier calls real, in bins of
the injected magnitude or S/N.  Each bin is a binomial experiment: ``k`` of
``n`` found, with a 68.3 % Wilson score interval (`astropy.stats.binom_conf_interval`),
which stays inside [0, 1] and is honest at 0 and ``n`` (a bin of 100 fakes at
50 % has an interval of about +-0.05).

The *50 % point* comes from a maximum-likelihood fit to the unbinned
outcomes of

    C(x) = c_max / (1 + exp((x - x0) / w))

(a logistic step falling from ``c_max`` at bright magnitudes; for S/N the fit
is in ``log10(S/N)`` and rising), and ``x50`` is where ``C`` is one half.
Its error is from the inverse Hessian of the log-likelihood, propagated to
``x50`` (delta method); when every bright subject was found, ``c_max`` sits
at its bound of 1, where ``x50`` does not depend on it, and the error is that
of ``x0`` and ``w`` with ``c_max`` held there.

`purity` counts, on the known-answer subjects, how many called real are
real, and the false-positive rate on the known bogus ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Curve", "Logistic", "Purity", "curve", "fit_logistic", "purity"]

#: The confidence level of the bins' intervals (one sigma).
CONFIDENCE = 0.6827


@dataclass(frozen=True)
class Curve:
    """A binned completeness curve.

    Attributes
    ----------
    quantity : str
        What is binned (``"mag"``, ``"snr"``).
    edges : numpy.ndarray
        Bin edges (``len(n) + 1``).
    n : numpy.ndarray
        Known-real subjects in each bin.
    k : numpy.ndarray
        Of those, how many were called real.
    """

    quantity: str
    edges: np.ndarray
    n: np.ndarray
    k: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """Bin centres (geometric for S/N, which is binned in log)."""
        if self.quantity == "snr":
            return np.sqrt(self.edges[:-1] * self.edges[1:])
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def fraction(self) -> np.ndarray:
        """``k / n`` (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.k / np.maximum(self.n, 1), np.nan)

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """The 68.3 % Wilson interval ``(low, high)`` of each bin (NaN when empty)."""
        from astropy.stats import binom_conf_interval

        low = np.full(len(self.n), np.nan)
        high = np.full(len(self.n), np.nan)
        full = self.n > 0
        if full.any():
            bounds = binom_conf_interval(
                self.k[full],
                self.n[full],
                confidence_level=CONFIDENCE,
                interval="wilson",
            )
            low[full], high[full] = bounds[0], bounds[1]
        return low, high

    def rows(self) -> list[dict[str, Any]]:
        """One plain record per bin (for CSV and the report)."""
        low, high = self.interval()
        out = []
        for i in range(len(self.n)):
            out.append(
                {
                    "quantity": self.quantity,
                    "low_edge": float(self.edges[i]),
                    "high_edge": float(self.edges[i + 1]),
                    "n": int(self.n[i]),
                    "found": int(self.k[i]),
                    "completeness": _float(self.fraction[i]),
                    "lower": _float(low[i]),
                    "upper": _float(high[i]),
                }
            )
        return out


def _float(value: Any) -> float | None:
    """A finite float, or None."""
    v = float(value)
    return v if math.isfinite(v) else None


def curve(
    values: Sequence[float] | np.ndarray,
    found: Sequence[bool] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    quantity: str = "mag",
) -> Curve:
    """Completeness in bins: how many of the known-real subjects in each bin were found.

    Parameters
    ----------
    values : array-like of float
        The injected magnitude (or S/N) of each known-real subject.
    found : array-like of bool
        Whether it was called real.
    edges : array-like of float
        Bin edges, increasing.  Values outside are left out.
    quantity : str
        What ``values`` are.

    Returns
    -------
    Curve

    Examples
    --------
    >>> c = curve([20.1, 20.2, 24.5, 24.6], [True, True, True, False], [20, 22, 25])
    >>> c.n.tolist(), c.k.tolist()
    ([2, 2], [2, 1])
    """
    v = np.asarray(values, dtype=float)
    f = np.asarray(found, dtype=bool)
    e = np.asarray(edges, dtype=float)
    ok = np.isfinite(v)
    n, _ = np.histogram(v[ok], bins=e)
    k, _ = np.histogram(v[ok & f], bins=e)
    return Curve(quantity, e, n.astype(int), k.astype(int))


@dataclass(frozen=True)
class Logistic:
    """A maximum-likelihood logistic completeness curve.

    Attributes
    ----------
    quantity : str
        ``"mag"`` or ``"snr"``.
    x50 : float
        Where completeness is 50 % (magnitude, or S/N).
    x50_err : float
        Its one-sigma error (for S/N: of ``log10`` S/N, times ``x50 * ln 10``).
    x0, width, c_max : float
        The parameters of ``c_max / (1 + exp((x - x0) / width))`` (for S/N,
        ``x`` is ``log10`` S/N and ``width`` negative: rising).
    n : int
        Known-real subjects fitted.
    """

    quantity: str
    x50: float
    x50_err: float
    x0: float
    width: float
    c_max: float
    n: int

    def __call__(self, x: float | np.ndarray) -> Any:
        """Completeness at ``x`` (magnitude, or S/N)."""
        t = np.log10(np.asarray(x, dtype=float)) if self.quantity == "snr" else x
        return self.c_max / (1.0 + np.exp((np.asarray(t) - self.x0) / self.width))


def _nll(params: np.ndarray, t: np.ndarray, y: np.ndarray) -> float:
    """Negative log-likelihood of Bernoulli outcomes ``y`` under the logistic."""
    x0, log_w, logit_c = params
    w = math.exp(log_w)
    c = 1.0 / (1.0 + math.exp(-logit_c))
    z = np.clip((t - x0) / w, -50, 50)
    p = np.clip(c / (1.0 + np.exp(z)), 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).sum())


def fit_logistic(
    values: Sequence[float] | np.ndarray,
    found: Sequence[bool] | np.ndarray,
    quantity: str = "mag",
) -> Logistic | None:
    """Fit the logistic completeness curve and return its 50 % point.

    Parameters
    ----------
    values : array-like of float
        Injected magnitude (falling curve) or S/N (rising; fitted in log).
    found : array-like of bool
        Whether each was called real.
    quantity : {'mag', 'snr'}
        What ``values`` are.

    Returns
    -------
    Logistic or None
        None when there are fewer than 10 subjects, when all or none were
        found, or when the curve never reaches 50 % (``c_max <= 0.5``).
    """
    from scipy.optimize import minimize

    v = np.asarray(values, dtype=float)
    y = np.asarray(found, dtype=bool).astype(float)
    ok = np.isfinite(v) & ((v > 0) if quantity == "snr" else True)
    v, y = v[ok], y[ok]
    if len(v) < 10 or y.sum() == 0 or y.sum() == len(y):
        return None
    t = np.log10(v) if quantity == "snr" else v
    sign = -1.0 if quantity == "snr" else 1.0  # S/N: completeness rises with it
    spread = float(np.std(t)) or 1.0
    # start: the median, a tenth of the spread, c_max = 0.95
    start = np.array([float(np.median(t)), math.log(0.1 * spread), 3.0])

    def nll(p: np.ndarray) -> float:
        return _nll(np.array([p[0], p[1], p[2]]), sign * t, y)

    start[0] *= sign
    best = minimize(
        nll,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000},
    )
    best = minimize(nll, best.x, method="BFGS")
    x0s, log_w, logit_c = (float(a) for a in best.x)
    w = math.exp(log_w)
    c = 1.0 / (1.0 + math.exp(-logit_c))
    if c <= 0.5:
        return None
    # C = 1/2 at (sign*t - x0s) / w = ln(2c - 1)
    t50 = sign * (x0s + w * math.log(2.0 * c - 1.0))
    # gradient of t50 with respect to (x0s, log_w, logit_c)
    dc = c * (1.0 - c)
    grad = sign * np.array(
        [1.0, w * math.log(2.0 * c - 1.0), w * 2.0 * dc / (2.0 * c - 1.0)]
    )
    if dc < _AT_BOUND:
        # Every bright one found: c_max sits at 1, where the likelihood is flat
        # in logit_c and its Hessian singular; t50 does not depend on it there,
        # so the error is that of x0 and width with c_max held at its bound.
        cov = _inverse_hessian(lambda p: nll(np.append(p, logit_c)), best.x[:2])
        grad = grad[:2]
    else:
        cov = _inverse_hessian(nll, best.x)
    var = float(grad @ cov @ grad) if cov is not None else float("nan")
    err = math.sqrt(var) if var >= 0 else float("nan")
    if quantity == "snr":
        x50 = 10.0**t50
        return Logistic(
            "snr", x50, x50 * math.log(10.0) * err, sign * x0s, sign * w, c, len(v)
        )
    return Logistic("mag", t50, err, x0s, w, c, len(v))


#: ``c_max (1 - c_max)`` below which c_max counts as at its bound of 1.
_AT_BOUND = 1e-6


def _inverse_hessian(func: Any, at: np.ndarray) -> np.ndarray | None:
    """The inverse of a finite-difference Hessian of ``func`` at ``at`` (or None)."""
    n = len(at)
    h = 1e-4 * np.maximum(1.0, np.abs(at))
    hess = np.zeros((n, n))
    f0 = func(at)
    for i in range(n):
        for j in range(i, n):
            ei = np.zeros(n)
            ej = np.zeros(n)
            ei[i], ej[j] = h[i], h[j]
            if i == j:
                value = (func(at + ei) - 2 * f0 + func(at - ei)) / h[i] ** 2
            else:
                value = (
                    func(at + ei + ej)
                    - func(at + ei - ej)
                    - func(at - ei + ej)
                    + func(at - ei - ej)
                ) / (4 * h[i] * h[j])
            hess[i, j] = hess[j, i] = value
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return None
    return cov if np.all(np.isfinite(cov)) else None


@dataclass(frozen=True)
class Purity:
    """How clean the subjects called real are, on the known-answer subjects.

    Attributes
    ----------
    called_real : int
        Known-answer subjects called real.
    true_real : int
        Of those, known real.
    bogus : int
        Known bogus subjects.
    bogus_called_real : int
        Of those, called real.
    """

    called_real: int
    true_real: int
    bogus: int
    bogus_called_real: int

    @property
    def purity(self) -> float:
        """Known real among the known-answer subjects called real (NaN if none)."""
        return self.true_real / self.called_real if self.called_real else float("nan")

    @property
    def false_positive_rate(self) -> float:
        """Known bogus subjects called real, as a fraction of the known bogus."""
        return self.bogus_called_real / self.bogus if self.bogus else float("nan")

    def interval(self) -> tuple[float, float]:
        """68.3 % Wilson interval of the false-positive rate."""
        from astropy.stats import binom_conf_interval

        if not self.bogus:
            return float("nan"), float("nan")
        low, high = binom_conf_interval(
            self.bogus_called_real,
            self.bogus,
            confidence_level=CONFIDENCE,
            interval="wilson",
        )
        return float(low), float(high)


def purity(truth: Sequence[bool], called_real: Sequence[bool]) -> Purity:
    """Purity and false-positive rate of a classifier on known-answer subjects.

    Parameters
    ----------
    truth : sequence of bool
        True for a known-real subject, False for a known-bogus one.
    called_real : sequence of bool
        Whether the classifier called it real.
    """
    t = np.asarray(truth, dtype=bool)
    c = np.asarray(called_real, dtype=bool)
    return Purity(
        called_real=int(c.sum()),
        true_real=int((c & t).sum()),
        bogus=int((~t).sum()),
        bogus_called_real=int((c & ~t).sum()),
    )
