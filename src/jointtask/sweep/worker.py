"""What a worker process does: train one planned run, or cohorts of runs, and return their
records as plain data (and their files, for a driver on another machine)."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from ..train.run_dir import CHECKPOINT, CONFIG, LOCK, METRICS, RunResult, locked
from .experiment import PlannedRun


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
