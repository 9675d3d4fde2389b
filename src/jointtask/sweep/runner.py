"""Runs a planned sweep through an executor, resumably.

On disk (OUT/):
  experiment.json   the resolved experiment          plan.json   every run: id, label, kind, width, seed
  runs/<run_id>/    one run directory each (train/run_dir.py)
  driver.json       pid of the sweep driver while it runs
  sweep_log.jsonl   one line per invocation: when, wall seconds, runs trained, workers, processor

A run is finished when its result.json is a valid record. Re-running the same sweep skips
finished runs and resumes the others from their checkpoints. Each run is trained under an
exclusive lock on its directory, so two processes never train the same run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..fileio import append_line, atomic_write_bytes, atomic_write_json
from ..train import run_dir
from ..train.run_dir import ERROR, RunResult, locked
from .experiment import Experiment, PlannedRun, plan
from .placement import cohorts, default_cohort_size, in_rounds, one_process_per_device
from .plan_io import load_plan, write_plan

SWEEP_LOG = "sweep_log.jsonl"
__all__ = ["SWEEP_LOG", "load_plan", "processor", "run_sweep", "store_run"]


def processor() -> str:
    """The CPU's marketing name (platform.processor() is often just the architecture)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def store_run(runs_dir: Path, outcome: dict) -> None:
    """Write what a worker shipped, unless the run directory holds it already (a shared disk)."""
    result = RunResult.model_validate(outcome["result"])
    out = runs_dir / result.run_id
    if run_dir.read_result(out) is not None:
        return
    for name, data in outcome["files"].items():
        atomic_write_bytes(out / name, data)
    run_dir.write_result(out, result)


def reuse_runs(runs: list[PlannedRun], runs_dir: Path, reuse: Sequence[str | Path]) -> list[str]:
    """Copy into `runs_dir` every planned run that is not finished there but is in one of the
    `reuse` directories; one note per directory that gave runs."""
    given: dict[Path, int] = {}
    for r in [p for q in runs for p in ([q.pretrain] if q.pretrain else []) + [q]]:  # pretraining runs first
        if run_dir.state(runs_dir / r.run_id, r.run_id) == "done":
            continue
        for d in map(Path, reuse):
            src = d / "runs" / r.run_id
            if run_dir.read_result(src, r.run_id) is not None:
                run_dir.copy_record(src, runs_dir / r.run_id, checkpoint=True)
                given[d] = given.get(d, 0) + 1
                break
    return [f"{n} finished runs taken from {d}" for d, n in given.items()]


def check_plan_fits(runs: list[PlannedRun], workers: int) -> None:
    """Refuse, before any work, a plan whose largest run cannot fit in memory `workers` at a time."""
    from ..train.loop import check_fits, memory_estimate

    if runs:
        biggest = max((r.config for r in runs), key=lambda c: sum(memory_estimate(c).values()))
        check_fits(biggest, min(workers, len(runs)))
        for c in {r.config.data.per_n * r.config.task.family().n_values: r.config for r in runs}.values():
            check_fits(c)


def run_sweep(
    exp: Experiment,
    out: str | Path,
    executor,
    progress=None,
    widths_plan=None,
    replan: bool = False,
    cohort_size: int | None = None,
    reuse: Sequence[str | Path] = (),
    train: bool = True,
    only: Sequence[str] = (),
) -> dict:
    """Run every unfinished run of `exp` (or of `widths_plan`, a list of PlannedRun), in cohorts
    of up to `cohort_size` runs of one shape (None: the device's default). A run finished in one of
    the `reuse` directories (sweeps or records, `runs/<run_id>/`) is copied from there, not
    trained: run ids name everything that shapes a result, so it is the same run. With `train`
    false, only that: the plan is written and the reused runs copied in, nothing trained. With
    `only` (mixture names), the runs of those mixtures alone are trained now; the plan keeps the
    others, left for a later sweep. Returns
    counts: {'done': n, 'failed': n, 'skipped': n, 'left': n (not trained), 'failures':
    [(run_id, message)], 'notes': [line] (records set aside, cohort sizes)}."""
    out = Path(out)
    runs = widths_plan if widths_plan is not None else plan(exp)
    check_plan_fits(runs, getattr(executor, "workers", None) or 1)
    unknown = sorted(set(only) - {r.mixture for r in runs})
    if unknown:
        raise UserError(
            f"--only {', '.join(unknown)}: not a mixture of this experiment "
            f"({', '.join(sorted({r.mixture for r in runs}))})"
        )
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    with locked(out / ".sweep.lock", blocking=False):
        write_plan(out, exp, runs, replan)
        started = time.time()
        atomic_write_json(out / "driver.json", {"pid": os.getpid(), "started": started})
        notes = reuse_runs(runs, runs_dir, reuse)
        states = {r.run_id: run_dir.state(runs_dir / r.run_id, r.run_id) for r in runs}
        pending = in_rounds([r for r in runs if states[r.run_id] != "done"])
        now = [train and (not only or r.mixture in only) for r in pending]
        todo = [r for r, t in zip(pending, now) if t]
        left = [r for r, t in zip(pending, now) if not t]
        for r in todo:  # a new attempt clears the last failure; an untrusted result is set aside
            (runs_dir / r.run_id / ERROR).unlink(missing_ok=True)
            if states[r.run_id] == "corrupt":
                notes.append(f"{r.run_id}: result.json unreadable, out of range or another run's; retrained")
            run_dir.quarantine(runs_dir / r.run_id)
        if cohort_size is None:
            cohort_size = default_cohort_size(runs[0].config.train.device if runs else "cpu")
        groups, shapes = cohorts(todo, cohort_size)
        notes += shapes
        # on one machine, a GPU's cohorts share a process; on a cluster each cohort may take a GPU of its own
        work = one_process_per_device(groups) if getattr(executor, "local", False) else [[g] for g in groups]
        summary = {
            "done": 0,
            "failed": 0,
            "skipped": len(runs) - len(todo) - len(left),
            "left": len(left),
            "failures": [],
            "notes": notes,
            "diverged": [],
        }
        if progress:
            progress.start(runs, runs_dir)
        try:
            for run, outcome, exc in executor.map(work, runs_dir):
                if exc is None:
                    store_run(runs_dir, outcome)
                    summary["done"] += 1
                    if outcome["result"]["stop_reason"] == "diverged":
                        summary["diverged"].append(f"{run.run_id} {run.mixture} width {run.width} seed {run.seed}")
                else:
                    summary["failed"] += 1
                    summary["failures"].append((run.run_id, run_dir.record_failure(runs_dir / run.run_id, exc)))
                if progress:
                    progress.update(run, exc)
        finally:  # also when stopped (Ctrl-C, SIGTERM): the time it ran and what it trained are kept
            if progress:
                progress.stop()
            (out / "driver.json").unlink(missing_ok=True)
            if train:  # the log is what training took
                append_line(
                    out / SWEEP_LOG,
                    json.dumps(
                        {
                            "started": started,
                            "seconds": time.time() - started,
                            "trained": summary["done"],
                            "failed": summary["failed"],
                            "workers": getattr(executor, "workers", None),
                            "cohort_size": cohort_size,
                            "processor": processor(),
                        }
                    ),
                )
    return summary
