"""`jointtask reproduce PRESET --out DIR`: run a packaged experiment, then write its report with a
verdict per claim it speaks to (analysis/claims.py, the same rows `jointtask claims` prints)."""

from __future__ import annotations

from collections.abc import Sequence

import time
from importlib import resources
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write_json, read_jsonl
from .report import write_report
from .sweep.executors import make_executor
from .sweep.experiment import load_experiment
from .sweep.progress import SweepProgress
from .sweep.runner import SWEEP_LOG, run_sweep


def preset_path(name: str) -> Path:
    p = resources.files("jointtask") / "presets" / f"{name}.toml"
    if not p.is_file():
        known = sorted(
            f.name.removesuffix(".toml")
            for f in (resources.files("jointtask") / "presets").iterdir()
            if f.name.endswith(".toml")
        )
        raise UserError(f"unknown preset {name!r} (known: {', '.join(known)})")
    return Path(str(p))


def reproduce(
    name: str,
    out: str | Path,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    out = Path(out)
    exp = load_experiment(preset_path(name), overrides)
    t0 = time.time()
    executor = make_executor(backend, workers, address)
    summary = run_sweep(exp, out, executor, SweepProgress(getattr(executor, "workers", 1) or 1))
    page, analysis = write_report(out, claims_source=name)
    # what the reproduction took on this machine: every sweep invocation into OUT, and this analysis
    log = read_jsonl(out / SWEEP_LOG)
    sweep_seconds = sum(r["seconds"] for r in log)
    took = {
        "preset": name,
        "sweep_seconds": sweep_seconds,
        "analysis_seconds": time.time() - t0 - log[-1]["seconds"],
        "sweep_invocations": len(log),
        "workers": log[-1]["workers"],
        "processor": log[-1]["processor"],
    }
    took["total_seconds"] = took["sweep_seconds"] + took["analysis_seconds"]
    atomic_write_json(out / "report" / "reproduce.json", took)
    return {
        "summary": summary,
        "claims": analysis.claims.to_dict("records"),
        "seconds": took["total_seconds"],
        "report": str(page),
    }
