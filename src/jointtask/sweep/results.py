"""The results table, one row per finished run and target operation, read from the run
directories of the current plan; and the state of a sweep."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..fileio import read_jsonl
from ..train import run_dir
from .plan_io import load_plan

COLUMNS = [
    "run_id",
    "mixture",
    "target_op",
    "width",
    "seed",
    "params",
    "params_non_embedding",
    "accuracy",
    "accuracy_validation",
    "accuracy_train",
    "test_scored",
    "test_exist",
    "test_steps_seen",
    "budget_steps",
    "steps",
    "tokens_seen",
    "train_seconds",
    "stop_reason",
    "still_improving",
    "protocol",
]


def collect(out: str | Path) -> pd.DataFrame:
    out = Path(out)
    rows = []
    for p in load_plan(out):
        r = run_dir.read_result(out / "runs" / p["run_id"], p["run_id"])
        if r is None:  # not finished, or an unreadable record (the next sweep recomputes it)
            continue
        improving = r.still_improving or run_dir.still_improving(
            read_jsonl(out / "runs" / p["run_id"] / run_dir.METRICS), p["steps"], r.stop_reason
        )
        for op in p["targets"]:
            if op not in r.accuracy and not (r.stop_reason == "diverged" and op in r.test_expressions):
                continue
            rows.append(
                {
                    "run_id": p["run_id"],
                    "mixture": p["mixture"],
                    "target_op": op,
                    "width": p["width"],
                    "seed": p["seed"],
                    "params": r.params,
                    "params_non_embedding": r.params_non_embedding,
                    "accuracy": r.accuracy.get(op, float("nan")),  # a diverged run: no accuracy
                    "accuracy_validation": r.accuracy_validation.get(op),
                    "accuracy_train": r.accuracy_train.get(op, float("nan")),
                    "test_scored": r.test_expressions[op].scored,
                    "test_exist": r.test_expressions[op].exist,
                    "test_steps_seen": r.test_expressions[op].steps_seen,
                    "budget_steps": p["steps"],
                    "steps": r.steps,
                    "tokens_seen": r.tokens_seen,
                    "train_seconds": r.train_seconds,
                    "stop_reason": r.stop_reason,
                    "still_improving": improving.get(op, False),
                    "protocol": r.protocol,
                }
            )
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["mixture", "target_op", "width", "seed"], kind="stable").reset_index(drop=True)


def status(out: str | Path) -> dict:
    """done / running / failed / pending counts, plus the runs in progress."""
    out = Path(out)
    plan = load_plan(out)
    driver_alive = False
    d = out / "driver.json"
    if d.exists():
        try:
            pid = json.loads(d.read_text())["pid"]
            os.kill(pid, 0)
            driver_alive = True
        except (OSError, ValueError, KeyError):
            pass
    counts = {"done": 0, "running": 0, "failed": 0, "pending": 0, "interrupted": 0, "corrupt": 0}
    active, failures = [], []
    for p in plan:
        rd = out / "runs" / p["run_id"]
        s = run_dir.state(rd, p["run_id"])
        if s == "started":
            s = "running" if driver_alive else "interrupted"
            active.append({**p, "step": run_dir.progress(rd), "state": s})
        if s == "failed":
            failures.append({"run_id": p["run_id"], "error": run_dir.read_failure(rd)})
        counts[s] += 1
    return {"total": len(plan), **counts, "driver_running": driver_alive, "active": active, "failures": failures}
