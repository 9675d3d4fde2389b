"""Runs per GPU-hour for the C2 grid at mod 20, in cohorts and with one process per run.

    python scripts/gpu_cohort_c2.py --out runs/gpu-c2 [--minutes 2] [--solo-workers 12] [--finish-minutes 6]

The grid: ADD and ADD+MAX+MED, ListOps mod 20, depth 1, widths 8-96 (6, log-spaced), 8 seeds,
5,000 steps. Each way of running it (`jointtask sweep --cohort-size 64`: one process trains the
six cohorts; and `--cohort-size 1` with one process per run) gets the same wall-clock budget,
set-up included (each way builds its data); the work done in it is the finished runs plus the
evaluated fraction of the unfinished ones. Writes OUT/gpu_cohort_c2.json. With --finish-minutes,
the cohort sweep then resumes to the end of the grid (within that budget) and is analysed: the
grid is the C2 design at mod 20 with 8 seeds, so OUT/cohorts/report holds a C2 result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENT = """name = "gpu-c2"
[sweep]
mixtures = ["ADD", "ADD+MAX+MED"]
targets = ["ADD"]
widths = {min = 8, max = 96, num = 6}
seeds = 8
[base]
task = { modulus = 20, max_depth = 1 }
train = { steps = 5000, eval_every = 250, checkpoint_every = 250 }
"""


def progress(out: Path, steps: int) -> float:
    """Finished runs plus the evaluated fraction of unfinished ones."""
    done = 0.0
    for run in (out / "runs").glob("*"):
        if (run / "result.json").exists():
            done += 1
        elif (run / "metrics.jsonl").exists():
            lines = (run / "metrics.jsonl").read_text().splitlines()
            done += json.loads(lines[-1])["step"] / steps if lines else 0
    return done


def timed_sweep(exp: Path, out: Path, minutes: float, device: str, cohort: int, workers: int) -> dict:
    env = dict(os.environ, JOINTTASK_CACHE=str(out / "cache"))  # a cold data cache for each way
    cmd = [
        sys.executable,
        "-m",
        "jointtask.cli",
        "sweep",
        str(exp),
        "--out",
        str(out),
        "--device",
        device,
        "--cohort-size",
        str(cohort),
        "--workers",
        str(workers),
    ]
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.log", "wb") as log:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    hours = (time.time() - t0) / 3600
    runs = progress(out, 5000)
    if proc.returncode not in (0, -signal.SIGKILL):
        print((out / "sweep.log").read_text()[-3000:], file=sys.stderr)
    return {
        "command": " ".join(cmd[2:]),
        "exit": proc.returncode,
        "hours": hours,
        "runs_done": runs,
        "runs_per_gpu_hour": runs / hours,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=2.0, help="wall-clock budget for each way")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--solo-workers", type=int, default=12, help="processes sharing the GPU, one run each")
    ap.add_argument("--finish-minutes", type=float, default=0.0, help="then finish the cohort sweep and analyse it")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    exp = args.out / "gpu-c2.toml"
    exp.write_text(EXPERIMENT)
    import torch

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    res = {"device": name, "grid": EXPERIMENT, "minutes_each": args.minutes}
    res["cohorts"] = timed_sweep(exp, args.out / "cohorts", args.minutes, args.device, 64, 1)
    res["solo"] = timed_sweep(exp, args.out / "solo", args.minutes, args.device, 1, args.solo_workers)
    res["speedup"] = res["cohorts"]["runs_per_gpu_hour"] / max(res["solo"]["runs_per_gpu_hour"], 1e-9)
    (args.out / "gpu_cohort_c2.json").write_text(json.dumps(res, indent=1))
    print(
        json.dumps({k: res[k] for k in ("device", "speedup")}),
        res["cohorts"]["runs_per_gpu_hour"],
        res["solo"]["runs_per_gpu_hour"],
    )
    if args.finish_minutes > 0:
        done = timed_sweep(exp, args.out / "cohorts", args.finish_minutes, args.device, 64, 1)
        print("finishing the grid:", json.dumps(done))
        if done["exit"] == 0:
            subprocess.run([sys.executable, "-m", "jointtask.cli", "analyze", str(args.out / "cohorts")], check=True)


if __name__ == "__main__":
    main()
