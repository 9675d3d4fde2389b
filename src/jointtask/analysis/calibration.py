"""Calibration of the transition estimator by simulation (SPEC section 4: intervals are
calibrated at the design used).

Planted sweeps look like real ones: log-spaced sizes, several seeds, and each (size, seed) run
either learns (test accuracy near 0.97) or does not (uniform in 0.1-0.3), with a probability
logistic in log P around a planted P50. The mean accuracy is then a logistic in log P with
lo = 0.2, hi = 0.97, so the planted P* (80% of hi) follows from P50 in closed form.
"""

from __future__ import annotations

import numpy as np

from .transition import fit_transition, joint_benefit

LEARNED, NOT_LEARNED = 0.97, (0.1, 0.3)
STEEPNESS = 0.5  # w of the success probability, in log P (P50 to P90 is a factor 3)


def simulate(p50: float, rng: np.random.Generator, sizes, seeds: int = 8, w: float = STEEPNESS):
    """Points (params, accuracy, seed) of one planted sweep."""
    P, A, S = [], [], []
    for s in range(seeds):
        for p in sizes:
            learned = rng.random() < 1 / (1 + np.exp(-(np.log(p) - np.log(p50)) / w))
            A.append(min(1.0, rng.normal(LEARNED, 0.02)) if learned else rng.uniform(*NOT_LEARNED))
            P.append(p)
            S.append(s)
    return np.array(P), np.array(A), np.array(S)


def planted_pstar(p50: float, w: float = STEEPNESS, frac: float = 0.8) -> float:
    lo, hi = sum(NOT_LEARNED) / 2, LEARNED
    q = (frac * hi - lo) / (hi - lo)
    return float(p50 * np.exp(w * np.log(q / (1 - q))))


def design_sizes(n_widths: int = 6, low: float = 1e3, high: float = 1e5) -> np.ndarray:
    return np.geomspace(low, high, n_widths)


def calibrate(reps: int, n_boot: int, sizes=None, seeds: int = 8, ratio: float = 1.0, seed: int = 0) -> dict:
    """Over `reps` planted pairs (alone: P50 drawn log-uniformly inside the sizes' middle decade;
    joint: P50 / ratio): how often each 95% interval covers the planted value, and how often the
    ratio verdict says benefit / harm."""
    sizes = design_sizes() if sizes is None else np.asarray(sizes, float)
    out = {"pstar_covered": 0, "p50_covered": 0, "benefit": 0, "harm": 0, "p50_benefit": 0, "p50_harm": 0}
    mid = np.sqrt(sizes[0] * sizes[-1])
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        p50 = float(np.exp(rng.uniform(np.log(mid / 3), np.log(mid * 3))))
        alone = fit_transition(*simulate(p50, rng, sizes, seeds), n_boot=n_boot, seed=rep)
        joint = fit_transition(*simulate(p50 / ratio, rng, sizes, seeds), n_boot=n_boot, seed=rep + 1)
        lo, hi = alone.pstar_ci
        out["pstar_covered"] += (lo or 0) <= planted_pstar(p50) <= (hi or np.inf)
        lo, hi = alone.p50_ci
        out["p50_covered"] += (lo or 0) <= p50 <= (hi or np.inf)
        r = joint_benefit(alone, joint, seed=rep)
        for prefix in ("", "p50_"):
            if r[f"{prefix}verdict"] in ("benefit", "harm"):
                out[f"{prefix}{r[prefix + 'verdict']}"] += 1
    return {
        "reps": reps,
        "n_boot": n_boot,
        "seeds": seeds,
        "widths": len(sizes),
        "ratio": ratio,
        **{k: v / reps for k, v in out.items()},
    }
