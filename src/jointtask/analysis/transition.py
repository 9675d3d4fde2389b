"""Learning-transition fits (SPEC section 4).

a(P) = lo + (hi - lo) / (1 + exp(-(log P - log P0) / w)), fitted by least squares (scipy's
curve_fit) with starting values and bounds taken from the data.

Definitions (ours where the paper is silent; each is a documented argument):
- P* is the smallest P at which the fitted curve reaches `frac` (default 0.8) of its asymptote hi.
- Censoring: the curve is "above" (no transition up to the largest size swept) when its
  asymptote hi is below `learned_floor` (default 0.8: it is never reliably learned) or it has not reached
  frac*hi at the largest size; "below" when it is already there at the smallest size. A censored
  P* is reported as a bound (the largest or smallest size), never as a value.
- Confidence interval: percentile bootstrap. With 3 or more seeds the seeds are resampled
  (all widths of a seed together); with fewer, individual points are. Censored replicates count
  as +inf ("above") or -inf ("below"), so an interval may be open on one side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

FRAC = 0.8
LEARNED_FLOOR = 0.8


def logistic(logp, lo, hi, logp0, w):
    return lo + (hi - lo) / (1.0 + np.exp(-(logp - logp0) / w))


@dataclass
class Fit:
    lo: float
    hi: float
    p0: float
    w: float
    p_star: float | None  # None when censored
    censored: str  # "none", "above", "below"
    p_min: float
    p_max: float

    @property
    def log_p_star(self) -> float:
        if self.censored == "above":
            return np.inf
        if self.censored == "below":
            return -np.inf
        return float(np.log(self.p_star))


def fit_curve(params, acc, frac: float = FRAC, learned_floor: float = LEARNED_FLOOR) -> Fit:
    x = np.log(np.asarray(params, dtype=float))
    y = np.asarray(acc, dtype=float)
    lo_x, hi_x = float(x.min()), float(x.max())
    span = max(hi_x - lo_x, 1e-6)
    # start: floor and ceiling from the data, midpoint where the data cross halfway
    y_lo, y_hi = float(np.percentile(y, 10)), float(np.percentile(y, 90))
    mid = (y_lo + y_hi) / 2
    order = np.argsort(x)
    above = x[order][y[order] >= mid]
    x0 = float(above[0]) if len(above) else hi_x
    p0 = [y_lo, max(y_hi, y_lo + 1e-3), x0, span / 8]
    bounds = ([0.0, 0.0, lo_x - span, span / 200], [1.0, 1.0, hi_x + span, span * 2])
    p0 = np.clip(p0, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
    best = None
    for start_w in (p0[3], span / 3, span / 30):  # a few starts: the least-squares surface is not convex
        start = np.array([p0[0], p0[1], p0[2], np.clip(start_w, bounds[0][3] + 1e-9, bounds[1][3] - 1e-9)])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, _ = curve_fit(logistic, x, y, p0=start, bounds=bounds, maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        sse = float(((logistic(x, *popt) - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, popt)
    if best is None:
        popt = np.array([y.mean(), y.mean(), hi_x, span])
    else:
        popt = best[1]
    lo, hi, logp0, w = map(float, popt)
    if hi < lo:  # a falling curve: describe it by its asymptote at large P
        lo, hi, w = hi, lo, -w
    p_min, p_max = float(np.exp(lo_x)), float(np.exp(hi_x))
    level = frac * hi
    curve = lambda lx: logistic(lx, *popt)
    if hi < learned_floor or curve(hi_x) < level:
        return Fit(lo, hi, float(np.exp(logp0)), w, None, "above", p_min, p_max)
    if curve(lo_x) >= level:
        return Fit(lo, hi, float(np.exp(logp0)), w, None, "below", p_min, p_max)
    # smallest P in the swept range where the curve reaches the level (bisection on a grid)
    grid = np.linspace(lo_x, hi_x, 2001)
    first = grid[np.argmax(curve(grid) >= level)]
    return Fit(lo, hi, float(np.exp(logp0)), w, float(np.exp(first)), "none", p_min, p_max)


@dataclass
class Transition:
    fit: Fit
    ci_low: float | None
    ci_high: float | None
    n_points: int
    n_seeds: int
    boot_log_p_star: np.ndarray = field(repr=False, default=None)

    def to_dict(self) -> dict:
        f = self.fit
        return {"p_star": f.p_star, "ci_low": self.ci_low, "ci_high": self.ci_high, "censored": f.censored,
                "bound": f.p_max if f.censored == "above" else f.p_min if f.censored == "below" else None,
                "lo": f.lo, "hi": f.hi, "p0": f.p0, "w": f.w, "p_min": f.p_min, "p_max": f.p_max,
                "n_points": self.n_points, "n_seeds": self.n_seeds}


def _interval(samples: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of log values that may hold +-inf; None marks an open side."""
    if len(samples) == 0:
        return None, None
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a], method="inverted_cdf")
    conv = lambda v: None if not np.isfinite(v) else float(np.exp(v))
    return conv(lo), conv(hi)


def fit_transition(params, acc, seeds=None, n_boot: int = 500, seed: int = 0, frac: float = FRAC,
                   learned_floor: float = LEARNED_FLOOR) -> Transition:
    params, acc = np.asarray(params, float), np.asarray(acc, float)
    seeds = np.zeros(len(params), int) if seeds is None else np.asarray(seeds)
    fit = fit_curve(params, acc, frac, learned_floor)
    rng = np.random.default_rng(seed)
    uniq = np.unique(seeds)
    boots = []
    for _ in range(n_boot):
        if len(uniq) >= 3:
            pick = rng.choice(uniq, size=len(uniq), replace=True)
            idx = np.concatenate([np.flatnonzero(seeds == s) for s in pick])
        else:
            idx = rng.integers(len(params), size=len(params))
        if len(np.unique(params[idx])) < 2:
            continue
        boots.append(fit_curve(params[idx], acc[idx], frac, learned_floor).log_p_star)
    boots = np.array(boots)
    lo, hi = _interval(boots)
    return Transition(fit, lo, hi, len(params), len(uniq), boots)


def joint_benefit(alone: Transition, joint: Transition, level: float = 0.95, seed: int = 0) -> dict:
    """ratio = P*(target alone) / P*(target within the mixture), with a bootstrap interval.
    When one side is censored the ratio is a bound ("kind": "lower" means "> ratio")."""
    a, j = alone.fit, joint.fit
    kind, ratio = "value", None
    if a.censored == "none" and j.censored == "none":
        ratio = a.p_star / j.p_star
    elif a.censored == "above" and j.censored in ("none", "below"):
        kind, ratio = "lower", a.p_max / (j.p_star or j.p_min)
    elif a.censored in ("none", "below") and j.censored == "above":
        kind, ratio = "upper", (a.p_star or a.p_min) / j.p_max
    elif a.censored == "none" and j.censored == "below":
        kind, ratio = "lower", a.p_star / j.p_min
    elif a.censored == "below" and j.censored == "none":
        kind, ratio = "upper", a.p_min / j.p_star
    else:
        kind = "undetermined"  # both censored on the same side: the sweep says nothing
    # Unpaired: seed s of one mixture is no natural partner of seed s of another, so each
    # replicate of the ratio draws one bootstrap replicate of each side independently.
    a_boot, j_boot = alone.boot_log_p_star, joint.boot_log_p_star
    lo = hi = None
    if len(a_boot) and len(j_boot):
        rng = np.random.default_rng(seed)
        n = max(len(a_boot), len(j_boot))
        with np.errstate(invalid="ignore"):
            diff = rng.choice(a_boot, n) - rng.choice(j_boot, n)
        diff = diff[~np.isnan(diff)]  # both censored on the same side: no information
        lo, hi = _interval(diff, level)
    verdict = "undetermined"
    if lo is not None and hi is not None:
        verdict = "no benefit" if lo <= 1 <= hi else ("benefit" if lo > 1 else "harm")
    elif lo is not None and lo > 1:
        verdict = "benefit"
    elif hi is not None and hi < 1:
        verdict = "harm"
    return {"ratio": ratio, "kind": kind, "ci_low": lo, "ci_high": hi, "verdict": verdict}


__all__ = ["logistic", "fit_curve", "fit_transition", "joint_benefit", "Fit", "Transition"]
