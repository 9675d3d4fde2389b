"""Runs a planned sweep through an executor, resumably.

On disk (OUT/):
  experiment.json   the resolved experiment          plan.json   every run: id, mixture, width, seed
  runs/<run_id>/    one run directory each (config.toml, checkpoint.pt, metrics.jsonl, result.json)
  runs/<run_id>/error.json   the last failure of that run, if any
  results.parquet   one row per finished run and target operation
  driver.json       pid of the sweep driver while it runs
  sweep_log.jsonl   one line per invocation: when, wall seconds, runs trained, workers, processor

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
from ..fileio import append_line, atomic_write_bytes, atomic_write_json, read_jsonl
from ..train.loop import CHECKPOINT, METRICS, RESULT, train_run
from .experiment import Experiment, PlannedRun, plan

ERROR = "error.json"
SWEEP_LOG = "sweep_log.jsonl"


def processor() -> str:
    """The CPU's marketing name (platform.processor() is often just the architecture)."""
    import platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    if read_result(out) is not None:
        return
    for name, data in outcome["files"].items():
        atomic_write_bytes(out / name, data)
    atomic_write_json(out / RESULT, outcome["result"])  # last: marks the run finished


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json when it is a valid record, else None."""
    try:
        r = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(r, dict) or not isinstance(r.get("accuracy"), dict) or not isinstance(r.get("params"), int):
        return None
    return r


def quarantine(run_dir: Path, name: str) -> None:
    """Move an unreadable record aside (kept for inspection), so that the run is recomputed."""
    f = run_dir / name
    if f.exists():
        os.replace(f, run_dir / f"{name}.corrupt-{int(time.time())}")


def run_state(run_dir: Path) -> str:
    if (run_dir / RESULT).exists():
        return "done" if read_result(run_dir) is not None else "corrupt"
    if (run_dir / ERROR).exists():
        return "failed"
    if (run_dir / CHECKPOINT).exists() or (run_dir / METRICS).exists():
        return "started"
    return "pending"


def run_progress(run_dir: Path) -> int:
    rows = read_jsonl(run_dir / METRICS)
    return rows[-1].get("step", 0) if rows else 0


def plan_rows(runs: list[PlannedRun]) -> list[dict]:
    return [{"run_id": r.run_id, "mixture": r.mixture, "width": r.width, "seed": r.seed, "targets": r.targets,
             "steps": r.config.train.steps} for r in runs]


def write_plan(out: Path, exp: Experiment, runs: list[PlannedRun], replan: bool = False) -> None:
    """An output directory belongs to one experiment. plan.json lists every run planned for it (an
    adaptive search adds widths as it goes). Rerunning with a changed experiment is refused, naming
    what changed, unless `replan`: then the plan is replaced and results collect only its runs."""
    new_exp = exp.model_dump(mode="json")
    previous = []
    if (out / "experiment.json").exists() and not replan:
        old_exp = read_json(out / "experiment.json", "experiment.json")
        if old_exp != new_exp:
            raise UserError(f"{str(out)!r} holds another experiment ({_difference(old_exp, new_exp)}); "
                            "use another --out, or pass --replan to start a new plan there")
        previous = load_plan(out)
    rows = plan_rows(runs)
    new = {r["run_id"] for r in rows}
    atomic_write_json(out / "experiment.json", new_exp)
    atomic_write_json(out / "plan.json", [p for p in previous if p["run_id"] not in new] + rows)


def _difference(old, new, path: str = "") -> str:
    """The first setting that differs between two experiment trees, as 'key: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return _difference(old.get(k), new.get(k), f"{path}.{k}" if path else k)
    return f"{path}: {json.dumps(old)} -> {json.dumps(new)}"


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"unreadable {what} in {str(path.parent)!r} ({type(e).__name__}); "
                        "move it aside or use another --out") from None


def load_plan(out: Path) -> list[dict]:
    p = Path(out) / "plan.json"
    if not p.exists():
        raise UserError(f"{str(out)!r} holds no sweep (no plan.json)")
    rows = read_json(p, "plan.json")
    keys = {"run_id", "mixture", "width", "seed", "targets", "steps"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and keys <= r.keys() for r in rows):
        raise UserError(f"plan.json in {str(out)!r} is not a list of planned runs; move it aside or use another --out")
    return rows


def record_failure(run_dir: Path, exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    atomic_write_json(run_dir / ERROR, {"error": msg, "traceback": "".join(traceback.format_exception(exc))[-4000:],
                                        "time": time.time()})
    return msg


def run_sweep(exp: Experiment, out: str | Path, executor, progress=None, widths_plan=None, replan: bool = False) -> dict:
    """Run every unfinished run of `exp` (or of `widths_plan`, a list of PlannedRun). Returns
    counts: {'done': n, 'failed': n, 'skipped': n, 'failures': [(run_id, message)]}."""
    out = Path(out)
    runs = widths_plan if widths_plan is not None else plan(exp)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    with locked(out / ".sweep.lock", blocking=False):
        write_plan(out, exp, runs, replan)
        started = time.time()
        atomic_write_json(out / "driver.json", {"pid": os.getpid(), "started": started})
        todo = [r for r in runs if run_state(runs_dir / r.run_id) != "done"]
        for r in todo:  # a new attempt clears the last failure; an unreadable result is set aside
            (runs_dir / r.run_id / ERROR).unlink(missing_ok=True)
            quarantine(runs_dir / r.run_id, RESULT)
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
        append_line(out / SWEEP_LOG, json.dumps({"started": started, "seconds": time.time() - started,
                                                 "trained": summary["done"], "failed": summary["failed"],
                                                 "workers": getattr(executor, "workers", None),
                                                 "processor": processor()}))
    from .results import write_results

    write_results(out)
    return summary
