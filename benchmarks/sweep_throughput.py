"""Sweep throughput: runs per minute of experiments/smoke.toml (8 short runs) with 1 and 2
workers, on the local process pool and on a local Ray instance bound to 127.0.0.1.

    python benchmarks/sweep_throughput.py --out docs/bench/sweep_throughput.json

Wall time covers the whole `run_sweep` call; for Ray that includes starting and stopping the
local instance (about 10 s here), which a long sweep on a running cluster would not pay.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from jointtask.fileio import atomic_write_json
from jointtask.sweep.executors import LocalExecutor, RayExecutor
from jointtask.sweep.experiment import load_experiment, plan
from jointtask.sweep.runner import run_sweep

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.toml"


def measure(executor, label: str) -> dict:
    exp = load_experiment(SMOKE)
    n = len(plan(exp))
    out = Path(tempfile.mkdtemp(prefix="jt-sweep-bench-")) / "sweep"
    t0 = time.perf_counter()
    s = run_sweep(exp, out, executor)
    dt = time.perf_counter() - t0
    assert s["failed"] == 0 and s["done"] == n
    return {"backend": label, "runs": n, "seconds": dt, "runs_per_minute": 60 * n / dt}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    rows = [measure(LocalExecutor(w), f"local, {w} worker(s)") for w in (1, 2)]
    rows += [
        {**measure(RayExecutor(None, w), f"ray (local instance), {w} worker(s)"), "includes_ray_start": True}
        for w in (1, 2)
    ]
    atomic_write_json(args.out, {"experiment": "experiments/smoke.toml", "rows": rows})
    for r in rows:
        print(f"{r['backend']:<40} {r['runs']} runs in {r['seconds']:.1f} s: {r['runs_per_minute']:.1f} runs/min")


if __name__ == "__main__":
    main()
