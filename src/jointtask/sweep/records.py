"""A sweep's records: what a finished run leaves that its numbers are read from (config.toml,
result.json, metrics.jsonl), copied out of a sweep directory into one that can be committed or
moved to another machine. A sweep run over such a directory trains nothing that is finished; the
report is rebuilt from it (`jointtask analyze DIR`), with the checkpoints of the runs it reads.

    DIR/experiment.json, plan.json, sweep_log.jsonl
    DIR/runs/<run_id>/config.toml, result.json, metrics.jsonl   (checkpoint.pt: only where kept)
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_text
from ..train import run_dir
from ..train.run_dir import CHECKPOINT, RECORD_FILES
from .plan_io import load_plan
from .runner import SWEEP_LOG


def export_records(out: str | Path, dest: str | Path, checkpoints: Collection[str] = (), replan: bool = False) -> dict:
    """Copy the records of every finished run of the sweep in `out` into `dest` (and the
    checkpoints of the runs in `checkpoints`). Runs already in `dest` are left as they are; a run
    that is not finished is never copied. `dest` holding another experiment is refused, unless
    `replan` and the sweep's plan keeps every run of the records' plan (an experiment that grew:
    more seeds, more widths); then the records take the sweep's experiment and plan.
    Returns counts: {'copied': n, 'present': n, 'unfinished': n}."""
    out, dest = Path(out), Path(dest)
    plan = load_plan(out)  # refuses a directory that holds no sweep
    if dest.resolve() == out.resolve():
        raise UserError("--out is the sweep directory itself")
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--out {str(dest)!r} is a file")
    if (dest / "experiment.json").exists() and (dest / "experiment.json").read_bytes() != (
        out / "experiment.json"
    ).read_bytes():
        if not replan:
            raise UserError(
                f"{str(dest)!r} holds the records of another experiment (--replan: the sweep's "
                "experiment grew from theirs)"
            )
        held = {p["run_id"] for p in load_plan(dest) if run_dir.read_result(dest / "runs" / p["run_id"], p["run_id"])}
        dropped = held - {p["run_id"] for p in plan}  # a run planned there but never finished may go
        if dropped:
            raise UserError(
                f"{str(dest)!r} holds the records of another experiment: the sweep's plan lacks "
                f"{len(dropped)} of its finished runs"
            )
    dest.mkdir(parents=True, exist_ok=True)
    counts = {"copied": 0, "present": 0, "unfinished": 0}
    for p in plan:
        src, dst = out / "runs" / p["run_id"], dest / "runs" / p["run_id"]
        if run_dir.read_result(src, p["run_id"]) is None:
            counts["unfinished"] += 1
            continue
        keep = p["run_id"] in checkpoints
        names = RECORD_FILES + ((CHECKPOINT,) if keep else ())
        if run_dir.read_result(dst, p["run_id"]) is not None and all((dst / n).exists() for n in names):
            counts["present"] += 1
            continue
        run_dir.copy_record(src, dst, checkpoint=keep)
        counts["copied"] += 1
    if (out / SWEEP_LOG).exists():  # the records' log keeps the sweeps before this one's
        atomic_write_text(dest / SWEEP_LOG, _merged_log(dest / SWEEP_LOG, out / SWEEP_LOG))
    for name in ("experiment.json", "plan.json"):  # the plan last: it names what is there
        if (out / name).exists():
            shutil.copyfile(out / name, dest / f".{name}.tmp")
            (dest / f".{name}.tmp").replace(dest / name)
    return counts


def _merged_log(kept: Path, new: Path) -> str:
    """The lines of the records' sweep log, then those of the sweep's log that it lacks: a sweep
    resumed from records on another machine starts a log of its own, which adds to theirs."""
    old = kept.read_text().splitlines() if kept.exists() else []
    seen = set(old)
    lines = old + [line for line in new.read_text().splitlines() if line.strip() and line not in seen]
    return "".join(line + "\n" for line in lines)
