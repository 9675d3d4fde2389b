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

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from ..errors import UserError
from ..fileio import append_line, atomic_write_bytes, atomic_write_json
from ..train import run_dir
from ..train.run_dir import CHECKPOINT, CONFIG, ERROR, LOCK, METRICS, RunResult, locked
from .experiment import Experiment, Label, PlannedRun, plan

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


def execute_run(run: dict, runs_dir: str, ship_files: bool = False) -> dict:
    """Train one planned run (and its pretraining run first, for transfer). Runs in a worker:
    takes and returns plain data, the RunResult's fields; with `ship_files` also the run's files,
    for a driver that does not share this machine's disk (Ray)."""
    from ..train.loop import train_run  # here, in the worker: reading a sweep never imports torch

    planned = PlannedRun.model_validate(run)
    runs = Path(runs_dir)
    init_from = None
    if planned.pretrain is not None:
        init_from = runs / planned.pretrain.run_id
        with locked(init_from / LOCK):
            train_run(planned.pretrain.config, init_from, resume=True, quiet=True)
    out = runs / planned.run_id
    with locked(out / LOCK):
        result = train_run(planned.config, out, resume=True, quiet=True, init_from=init_from)
    assert result is not None
    return _outcome(planned, result, out, ship_files)


def _outcome(planned: PlannedRun, result: RunResult, out: Path, ship_files: bool) -> dict:
    """What a worker returns for a run: its record, and its files when the driver needs them."""
    assert result.run_id == planned.run_id, "the planner and the trainer name runs alike"
    names = (CONFIG, METRICS, CHECKPOINT) if ship_files else ()
    files = {n: (out / n).read_bytes() for n in names if (out / n).exists()}
    return {"result": result.model_dump(mode="json"), "files": files}


def execute_groups(groups: list[list[dict]], runs_dir: str, ship_files: bool = False) -> list[dict]:
    """Train, in this process, one run alone (`execute_run`) or cohorts (lists of runs of one
    shape, train/cohort.py) taking steps in turn, pretraining runs first as cohorts of their own.
    Returns one outcome per run, in order."""
    if len(groups) == 1 and len(groups[0]) == 1:
        return [execute_run(groups[0][0], runs_dir, ship_files)]
    from ..train.cohort import train_cohort

    planned = [[PlannedRun.model_validate(r) for r in g] for g in groups]
    root = Path(runs_dir)
    pre, seen = [], set()  # each pretraining run once, in the cohort of its first fine-tuning run
    for g in planned:
        firsts = {p.pretrain.run_id: p.pretrain for p in g if p.pretrain and p.pretrain.run_id not in seen}
        seen |= set(firsts)
        pre.append(list(firsts.values()))
    for stage in (pre, planned):
        todo = [g for g in stage if g]
        flat = [p for g in todo for p in g]
        if not flat:
            continue
        starts = [sum(len(g) for g in todo[:i]) for i in range(len(todo))]
        with contextlib.ExitStack() as held:  # every run, in one order (no deadlock)
            for rid in sorted({p.run_id for p in flat}):
                held.enter_context(locked(root / rid / LOCK))
            inits: list[str | Path | None] = [root / p.pretrain.run_id if p.pretrain else None for p in flat]
            results = train_cohort(
                [p.config for p in flat],
                [root / p.run_id for p in flat],
                init_froms=inits,
                groups=[list(range(s, s + len(g))) for s, g in zip(starts, todo)],
            )
    flat = [p for g in planned for p in g]
    return [_outcome(p, result, root / p.run_id, ship_files) for p, result in zip(flat, results)]


def cohorts(runs: list[PlannedRun], size: int) -> tuple[list[list[PlannedRun]], list[str]]:
    """Runs grouped into cohorts of at most `size` runs of one shape (size 1: each run alone),
    each cohort shrunk to what fits the device; and a line per shape saying the size chosen."""
    if size <= 1:
        return [[r] for r in runs], []
    from ..train.cohort import fit_cohort_size, shape_of

    by_shape: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        by_shape.setdefault(shape_of(r.config), []).append(r)
    groups, notes = [], []
    for group in by_shape.values():
        k, why = fit_cohort_size(group[0].config, size)
        notes.append(f"width {group[0].width}: {why}")
        groups += [group[i : i + k] for i in range(0, len(group), k)]
    return groups, notes


def one_process_per_device(
    groups: list[list[PlannedRun]], free_bytes: int | None = None
) -> list[list[list[PlannedRun]]]:
    """What each worker process trains: the cohorts on one CUDA device together in one process
    (taking steps in turn on their own streams, the GPU overlaps them; processes would share it
    by time slices), as many at a time as fit half the device's free memory; every other group
    in a process of its own."""
    from ..train.cohort import free_memory, run_memory

    per_device: dict[str, list[list[list[PlannedRun]]]] = {}
    alone, used, budget = [], {}, {}
    for g in groups:
        device = g[0].config.train.device
        if len(g) > 1 and device.startswith("cuda"):
            units = per_device.setdefault(device, [])
            if device not in budget:
                budget[device] = (free_memory(device) if free_bytes is None else free_bytes) // 2
            need = sum(run_memory(r.config) for r in g)
            if not units or used[device] + need > budget[device]:
                units.append([])
                used[device] = 0
            units[-1].append(g)
            used[device] += need
        else:
            alone.append([g])
    return [u for units in per_device.values() for u in units] + alone


def default_cohort_size(device: str) -> int:
    """Cohorts pay where one model leaves the device idle (a GPU); on a CPU they do not
    (docs/performance.md), so each run trains alone there."""
    return 64 if device.startswith("cuda") else 1


def store_run(runs_dir: Path, outcome: dict) -> None:
    """Write what a worker shipped, unless the run directory holds it already (a shared disk)."""
    result = RunResult.model_validate(outcome["result"])
    out = runs_dir / result.run_id
    if run_dir.read_result(out) is not None:
        return
    for name, data in outcome["files"].items():
        atomic_write_bytes(out / name, data)
    run_dir.write_result(out, result)


def plan_rows(runs: list[PlannedRun]) -> list[dict]:
    return [
        {
            "run_id": r.run_id,
            "mixture": r.mixture,
            "kind": r.kind,
            "width": r.width,
            "seed": r.seed,
            "targets": r.targets,
            "steps": r.config.train.steps,
        }
        for r in runs
    ]


def write_plan(out: Path, exp: Experiment, runs: list[PlannedRun], replan: bool = False) -> None:
    """An output directory belongs to one experiment. plan.json lists every run planned for it (an
    adaptive search adds widths as it goes). Rerunning with a changed experiment is refused, naming
    what changed, unless `replan`: then the plan is replaced and results collect only its runs."""
    new_exp = exp.model_dump(mode="json")
    previous = []
    if (out / "experiment.json").exists() and not replan:
        old_exp = read_json(out / "experiment.json", "experiment.json")
        if old_exp != new_exp:
            raise UserError(
                f"{str(out)!r} holds another experiment ({_difference(old_exp, new_exp)}); "
                "use another --out, or pass --replan to start a new plan there"
            )
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
        raise UserError(
            f"unreadable {what} in {str(path.parent)!r} ({type(e).__name__}); move it aside or use another --out"
        ) from None


def load_plan(out: Path) -> list[dict]:
    p = Path(out) / "plan.json"
    if not p.exists():
        raise UserError(f"{str(out)!r} holds no sweep (no plan.json)")
    rows = read_json(p, "plan.json")
    keys = {"run_id", "mixture", "width", "seed", "targets", "steps"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and keys <= r.keys() for r in rows):
        raise UserError(f"plan.json in {str(out)!r} is not a list of planned runs; move it aside or use another --out")
    for r in rows:  # plans written before runs carried their kind
        r.setdefault("kind", Label.parse(r["mixture"]).kind)
    return rows


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
) -> dict:
    """Run every unfinished run of `exp` (or of `widths_plan`, a list of PlannedRun), in cohorts
    of up to `cohort_size` runs of one shape (None: the device's default). Returns counts:
    {'done': n, 'failed': n, 'skipped': n, 'failures': [(run_id, message)], 'notes': [line] (records set aside, cohort sizes)}."""
    out = Path(out)
    runs = widths_plan if widths_plan is not None else plan(exp)
    check_plan_fits(runs, getattr(executor, "workers", None) or 1)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    with locked(out / ".sweep.lock", blocking=False):
        write_plan(out, exp, runs, replan)
        started = time.time()
        atomic_write_json(out / "driver.json", {"pid": os.getpid(), "started": started})
        states = {r.run_id: run_dir.state(runs_dir / r.run_id, r.run_id) for r in runs}
        todo = [r for r in runs if states[r.run_id] != "done"]
        notes = []
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
            "skipped": len(runs) - len(todo),
            "failures": [],
            "notes": notes,
            "diverged": [],
        }
        if progress:
            progress.start(runs, runs_dir)
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
        if progress:
            progress.stop()
        (out / "driver.json").unlink(missing_ok=True)
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
