"""Calibration of the transition estimator by simulation (intervals are
calibrated at the design used).

Planted sweeps look like real ones: log-spaced sizes, several seeds, and each (size, seed) run
either learns (test accuracy near 0.97) or does not (uniform in 0.1-0.3), with a probability
logistic in log P around a planted P50. The mean accuracy is then a logistic in log P with
lo = 0.2, hi = 0.97, so the planted P* (80% of hi) follows from P50 in closed form. The sizes
and seeds are those of an experiment file (`design_of`), so that the intervals are checked at
the design a claim rests on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_config import count_params
from ..sweep.experiment import load_experiment, plan
from ..tasks.dataset import context_length
from ..tasks.families import Vocab
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


def design_of(experiment: str | Path) -> tuple[list[int], int]:
    """The parameter count at each width of an experiment's first mixture, and its seeds."""
    exp = load_experiment(experiment)
    seeds = exp.sweep.seed_list(exp.sweep.mixtures[0])
    first = seeds[0]
    sizes = []
    for r in plan(exp):
        if r.mixture == exp.sweep.mixtures[0] and r.seed == first:
            cfg = r.config
            vocab = len(Vocab(cfg.task.family(cfg.seed)))
            sizes.append(count_params(cfg.model, vocab, context_length(cfg.task))["params"])
    return sizes, len(seeds)


def calibrate(
    reps: int, n_boot: int, sizes=None, seeds: int = 8, ratios=(1.0,), seed: int = 0, spread: float = 3.0
) -> list[dict]:
    """Over `reps` planted curves alone (P50 drawn log-uniformly within a factor `spread` of the
    sizes' geometric middle: 3 for a design that spans the plausible sizes; less for a dense design
    placed around a transition already located), each paired with a joint curve at P50 / ratio for every ratio (the same
    draws for every ratio): one row per ratio with how often the alone curve's 95% intervals
    cover the planted values (the same curves in every row) and how often the ratio verdicts
    say benefit / harm / no benefit."""
    sizes = design_sizes() if sizes is None else np.asarray(sizes, float)
    covered = {"pstar_covered": 0, "p50_covered": 0}
    keys = {"benefit": "benefit", "harm": "harm", "no benefit": "no_benefit"}  # the verdicts counted
    called = {r: {f"{prefix}{k}": 0 for prefix in ("", "p50_") for k in keys.values()} for r in ratios}
    mid = np.sqrt(sizes[0] * sizes[-1])
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        p50 = float(np.exp(rng.uniform(np.log(mid / spread), np.log(mid * spread))))
        alone = fit_transition(*simulate(p50, rng, sizes, seeds), n_boot=n_boot, seed=rep)
        lo, hi = alone.pstar_ci
        covered["pstar_covered"] += (lo or 0) <= planted_pstar(p50) <= (hi or np.inf)
        lo, hi = alone.p50_ci
        covered["p50_covered"] += (lo or 0) <= p50 <= (hi or np.inf)
        for ratio in ratios:
            points = simulate(p50 / ratio, np.random.default_rng([seed, rep, 1]), sizes, seeds)
            r = joint_benefit(alone, fit_transition(*points, n_boot=n_boot, seed=rep + 1), seed=rep)
            for prefix in ("", "p50_"):
                if r[f"{prefix}verdict"] in keys:
                    called[ratio][prefix + keys[r[f"{prefix}verdict"]]] += 1
    design = {"reps": reps, "n_boot": n_boot, "seeds": seeds, "widths": len(sizes), "sizes": [int(p) for p in sizes]}
    design["spread"] = spread
    return [
        {**design, "ratio": ratio, **{k: v / reps for k, v in {**covered, **called[ratio]}.items()}} for ratio in ratios
    ]
