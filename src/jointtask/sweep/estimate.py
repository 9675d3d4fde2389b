"""How long a plan's runs will take on this machine, before any of them trains: each distinct run
shape is trained for a few steps in a scratch directory (its real data, model, optimiser and
evaluation), and every run is charged its full step budget at that speed. Early stopping only
shortens runs, so the estimate is an upper bound for the runs it counts."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from ..train.config import RunConfig
from ..train.loop import train_run
from .experiment import PlannedRun

PROBE_STEPS = 50


def _shape(cfg: RunConfig) -> tuple:
    """What sets a run's seconds per step and per evaluation (not its seed, nor its budget)."""
    t = cfg.train
    return (
        cfg.model.model_dump_json(),
        cfg.task.model_copy(update={"ops": sorted(cfg.task.ops)}).model_dump_json(),
        cfg.data.model_copy(update={"eval_ops": sorted(cfg.data.eval_ops or [])}).model_dump_json(),
        t.batch_size,
        t.packing,
        t.device,
    )


def probe(cfg: RunConfig, steps: int = PROBE_STEPS) -> tuple[float, float]:
    """Seconds per training step and per evaluation of a run of this shape on this machine."""
    t = cfg.train.model_copy(
        update={"steps": steps, "eval_every": steps, "checkpoint_every": steps, "early_stop": False, "threads": 1}
    )
    probe_cfg = cfg.model_copy(update={"train": t})
    with tempfile.TemporaryDirectory(prefix="jointtask-probe-") as d:
        t0 = time.perf_counter()
        result = train_run(probe_cfg, Path(d) / "run", quiet=True)
        wall = time.perf_counter() - t0
    assert result is not None
    return result.train_seconds / steps, max(0.0, wall - result.train_seconds)


def planned_runs(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs a plan trains, pretraining runs included, each once."""
    out: dict[str, PlannedRun] = {}
    for r in runs:
        if r.pretrain is not None:
            out.setdefault(r.pretrain.run_id, r.pretrain)
        out.setdefault(r.run_id, r)
    return list(out.values())


def estimate_seconds(runs: list[PlannedRun], workers: int = 1) -> float:
    """Wall seconds for `runs` (each trained for its whole budget) on `workers` processes of this
    machine; 0 for no runs."""
    costs: dict[tuple, tuple[float, float]] = {}
    total = 0.0
    for r in planned_runs(runs):
        cfg = r.config
        key = _shape(cfg)
        if key not in costs:
            costs[key] = probe(cfg)
        step_s, eval_s = costs[key]
        total += cfg.train.steps * step_s + math.ceil(cfg.train.steps / cfg.train.eval_every) * eval_s
    return total / max(1, workers)
