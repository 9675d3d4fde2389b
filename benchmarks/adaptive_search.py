"""Adaptive width search against the full grid: runs needed and the P* each finds.

    python benchmarks/adaptive_search.py --out docs/bench/adaptive_search.json

Task: MED mod 10 without nesting over a 10-width grid of tiny widths (2..14), 3 seeds, where its
transition lies; the full grid and the adaptive search run in separate directories.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from jointtask.analysis.transition import fit_transition
from jointtask.fileio import atomic_write_json
from jointtask.adaptive import adaptive_sweep
from jointtask.sweep.executors import LocalExecutor
from jointtask.sweep.experiment import experiment_from_dict
from jointtask.sweep.results import collect
from jointtask.sweep.runner import run_sweep

EXPERIMENT = {
    "name": "adaptive-bench",
    "sweep": {"mixtures": ["MED"], "widths": [2, 3, 4, 5, 6, 7, 8, 10, 12, 14], "seeds": [0, 1, 2]},
    "base": {
        "task": {"modulus": 10, "max_depth": 1},
        "data": {"per_n": 1000, "eval_count": 300, "eval_train_count": 50},
        "train": {"steps": 1500, "batch_size": 256, "lr": 3e-3, "eval_every": 250, "checkpoint_every": 1500},
    },
}


def p_star(out: Path) -> dict:
    df = collect(out)
    t = fit_transition(df.params.values, df.accuracy.values, df.seed.values, n_boot=300)
    return {**t.to_dict(), "runs": len(df), "widths": sorted(map(int, df.width.unique()))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jt-adaptive-"))
    exp = experiment_from_dict(EXPERIMENT)
    run_sweep(exp, work / "grid", LocalExecutor(args.workers))
    adaptive_sweep(exp, work / "adaptive", LocalExecutor(args.workers))
    grid, adaptive = p_star(work / "grid"), p_star(work / "adaptive")
    res = {
        "experiment": EXPERIMENT,
        "grid": grid,
        "adaptive": adaptive,
        "run_fraction": adaptive["runs"] / grid["runs"],
        "p_star_ratio": (adaptive["p_star"] / grid["p_star"]) if grid["p_star"] and adaptive["p_star"] else None,
    }
    atomic_write_json(args.out, res)
    print(json.dumps({k: res[k] for k in ("run_fraction", "p_star_ratio")}), grid["p_star"], adaptive["p_star"])


if __name__ == "__main__":
    main()
