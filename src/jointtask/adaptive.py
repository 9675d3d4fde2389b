"""Adaptive width search (a sweep steered by the analysis, so it sits above both): locate each transition with fewer runs than a full log grid.

Round 0 trains three widths per mixture (the smallest, the geometric middle and the largest of
the experiment's width range). Each later round fits the transition of the mixture's first
target op and adds the width whose parameter count is closest to the fitted P*, unless
a run at that width exists already or the curve is censored. A grid of 10 widths costs 3 + rounds
widths instead of 10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .analysis.transition import DesignError, fit_transition
from .model import count_params
from .sweep.experiment import Experiment, plan
from .sweep.results import collect
from .sweep.runner import run_sweep
from .tasks.dataset import context_length
from .tasks.families import Vocab
from .tasks.config import split_ops


def width_for_params(p: float, cfg, heads: int) -> int:
    """The width (a multiple of heads) whose parameter count is closest to p."""
    vocab = len(Vocab(cfg.task.family(cfg.seed)))
    ctx = context_length(cfg.task)
    best, best_err = heads, np.inf
    for w in range(heads, 1025, heads):
        err = abs(np.log(count_params(cfg.model.model_copy(update={"width": w}), vocab, ctx)["params"] / p))
        if err < best_err:
            best, best_err = w, err
    return best


def adaptive_sweep(
    exp: Experiment,
    out: str | Path,
    executor,
    progress=None,
    rounds: int = 1,
    replan: bool = False,
    cohort_size: int | None = None,
) -> dict:
    out = Path(out)
    grid = exp.sweep.width_list()
    coarse = sorted({grid[0], int(round(np.sqrt(grid[0] * grid[-1]))), grid[-1]})
    widths = {m: set(coarse) for m in exp.sweep.mixtures}
    total: dict = {"done": 0, "failed": 0, "skipped": 0, "failures": [], "notes": [], "diverged": []}

    fresh = [replan]  # only the first round may replace an existing plan

    def run(ws):
        runs = [r for r in plan(exp, sorted(set().union(*ws.values()))) if r.width in ws.get(r.mixture, ())]
        s = run_sweep(exp, out, executor, progress, widths_plan=runs, replan=fresh[0], cohort_size=cohort_size)
        fresh[0] = False
        for k in ("done", "failed", "skipped"):
            total[k] += s[k]
        total["notes"] += s["notes"]
        total["diverged"] += s["diverged"]
        total["failures"] += s["failures"]

    run(widths)
    for _ in range(rounds):
        df = collect(out)
        added = {}
        for mixture in exp.sweep.mixtures:
            target = (exp.sweep.targets or split_ops(mixture))[0]
            g = df[(df.mixture == mixture) & (df.target_op == target)]
            if g.width.nunique() < 3:
                continue
            try:
                t = fit_transition(g.params.values, g.accuracy.values, g.seed.values, n_boot=0)
            except DesignError:  # fewer than 3 seeds: the grid stays as it is
                continue
            if t.pstar.censored != "none" or t.pstar.value is None:
                continue
            cfg = plan(exp, [grid[0]])[0].config
            w = width_for_params(t.pstar.value, cfg, cfg.model.heads)
            w = int(np.clip(w, grid[0], grid[-1]))
            if w not in widths[mixture]:
                added[mixture] = {w}
        if not added:
            break
        run(added)
        for m, ws in added.items():
            widths[m] |= ws
    return total
