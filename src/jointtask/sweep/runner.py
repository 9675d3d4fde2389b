"""Runs a planned sweep through an executor, resumably.

On disk (OUT/):
  experiment.json   the resolved experiment          plan.json   every run: id, mixture, width, seed
  runs/<run_id>/    one run directory each (config.toml, checkpoint.pt, metrics.jsonl, result.json)
  runs/<run_id>/error.json   the last failure of that run, if any
  results.parquet   one row per finished run and target operation
  driver.json       pid of the sweep driver while it runs

A run is finished when its result.json exists (written last, atomically). Re-running the same
sweep skips finished runs and resumes the others from their checkpoints. Each run is trained
under an exclusive lock on its directory, so two processes never train the same run.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_bytes, atomic_write_json, read_jsonl
from ..train.loop import CHECKPOINT, METRICS, RESULT, train_run
from .experiment import Experiment, PlannedRun, plan

ERROR = "error.json"


@contextmanager
def locked(path: Path, blocking: bool = True):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(f"{path.parent} is in use by another process") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def die_with_parent() -> None:
    """Worker initializer: on Linux, a worker is killed when the driver dies, so a killed
    sweep leaves no orphan training a run that the next start would train again."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    import torch

    torch.set_num_threads(1)


def execute_run(run: dict, runs_dir: str) -> dict:
    """Train one planned run (and its pretraining run first, for transfer). Runs in a worker:
    takes and returns plain data. Returns the result and the run's files, so that a driver on
    another machine (Ray) can store them."""
    planned = PlannedRun.model_validate(run)
    runs_dir = Path(runs_dir)
    init_from = None
    if planned.pretrain is not None:
        pre_dir = runs_dir / planned.pretrain.run_id
        with locked(pre_dir / ".lock"):
            train_run(planned.pretrain.config, pre_dir, resume=True, quiet=True)
        init_from = pre_dir
    out = runs_dir / planned.run_id
    with locked(out / ".lock"):
        result = train_run(planned.config, out, resume=True, quiet=True, init_from=init_from)
    result = {**result, "run_id": planned.run_id, "mixture": planned.mixture}
    files = {name: (out / name).read_bytes() for name in ("config.toml", METRICS, CHECKPOINT) if (out / name).exists()}
    return {"result": result, "files": files}


def store_run(runs_dir: Path, outcome: dict) -> None:
    """Write what a worker returned, unless the run directory already holds it (shared disk)."""
    out = runs_dir / outcome["result"]["run_id"]
    if (out / RESULT).exists():
        return
    for name, data in outcome["files"].items():
        atomic_write_bytes(out / name, data)
    atomic_write_json(out / RESULT, outcome["result"])  # last: marks the run finished


def run_state(run_dir: Path) -> str:
    if (run_dir / RESULT).exists():
        return "done"
    if (run_dir / ERROR).exists():
        return "failed"
    if (run_dir / CHECKPOINT).exists() or (run_dir / METRICS).exists():
        return "started"
    return "pending"


def run_progress(run_dir: Path) -> int:
    rows = read_jsonl(run_dir / METRICS)
    return rows[-1]["step"] if rows else 0


def plan_rows(runs: list[PlannedRun]) -> list[dict]:
    return [{"run_id": r.run_id, "mixture": r.mixture, "width": r.width, "seed": r.seed, "targets": r.targets,
             "steps": r.config.train.steps} for r in runs]


def write_plan(out: Path, exp: Experiment, runs: list[PlannedRun]) -> None:
    """plan.json lists every run ever planned in this directory (an adaptive search adds widths
    as it goes); the newest description of a run wins."""
    rows = plan_rows(runs)
    new = {r["run_id"] for r in rows}
    previous = load_plan(out) if (out / "plan.json").exists() else []
    atomic_write_json(out / "experiment.json", exp.model_dump(mode="json"))
    atomic_write_json(out / "plan.json", [p for p in previous if p["run_id"] not in new] + rows)


def load_plan(out: Path) -> list[dict]:
    p = Path(out) / "plan.json"
    if not p.exists():
        raise UserError(f"{str(out)!r} holds no sweep (no plan.json)")
    return json.loads(p.read_text())


def record_failure(run_dir: Path, exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    atomic_write_json(run_dir / ERROR, {"error": msg, "traceback": "".join(traceback.format_exception(exc))[-4000:],
                                        "time": time.time()})
    return msg


def run_sweep(exp: Experiment, out: str | Path, executor, progress=None, widths_plan=None) -> dict:
    """Run every unfinished run of `exp` (or of `widths_plan`, a list of PlannedRun). Returns
    counts: {'done': n, 'failed': n, 'skipped': n, 'failures': [(run_id, message)]}."""
    out = Path(out)
    runs = widths_plan if widths_plan is not None else plan(exp)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    with locked(out / ".sweep.lock", blocking=False):
        write_plan(out, exp, runs)
        atomic_write_json(out / "driver.json", {"pid": os.getpid(), "started": time.time()})
        todo = [r for r in runs if not (runs_dir / r.run_id / RESULT).exists()]
        for r in todo:  # a new attempt clears the last failure
            (runs_dir / r.run_id / ERROR).unlink(missing_ok=True)
        summary = {"done": 0, "failed": 0, "skipped": len(runs) - len(todo), "failures": []}
        if progress:
            progress.start(runs, runs_dir)
        for run, outcome, exc in executor.map(todo, runs_dir):
            if exc is None:
                store_run(runs_dir, outcome)
                summary["done"] += 1
            else:
                summary["failed"] += 1
                summary["failures"].append((run.run_id, record_failure(runs_dir / run.run_id, exc)))
            if progress:
                progress.update(run, exc)
        if progress:
            progress.stop()
        (out / "driver.json").unlink(missing_ok=True)
    from .results import write_results

    write_results(out)
    return summary
