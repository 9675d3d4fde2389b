"""`jointtask reproduce PRESET --out DIR`: run a packaged experiment, or a packaged suite of them,
then write the report with a verdict per claim it speaks to (analysis/claims.py, the same rows
`jointtask claims` prints).

A preset is `presets/<name>.toml` (or any file of that form): an experiment (swept into DIR, report in DIR/report/), or a
suite, `suite = ["cpu/c2.toml", ...]`, whose experiments are swept in order into DIR/<experiment
name>/ (each reported there). A run finished by one experiment of a suite is copied into the next
that plans it (run ids name everything that shapes a result), never trained twice. A suite's claims
table over all its experiments is DIR/report/claims.csv and claims.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write_json, atomic_write_text, read_jsonl
from .sweep.executors import make_executor
from .sweep.experiment import Experiment, load_experiment, plan
from .sweep.progress import SweepProgress
from .sweep.runner import SWEEP_LOG, check_plan_fits, run_sweep
from .train import run_dir
from .train.config import load_toml


def _presets() -> Path:
    return Path(str(resources.files("jointtask") / "presets"))


def preset_path(name: str) -> Path:
    """A packaged preset by name, or a preset file by path (a name ending in .toml)."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise UserError(f"preset file {name!r} not found")
        return Path(name)
    p = _presets() / f"{name}.toml"
    if not p.is_file():
        known = sorted(f.name.removesuffix(".toml") for f in _presets().iterdir() if f.name.endswith(".toml"))
        known.remove("claims")
        raise UserError(f"unknown preset {name!r} (known: {', '.join(known)})")
    return p


def load_preset(name: str, overrides: Sequence[str] = ()) -> tuple[list[Experiment], bool]:
    """The preset's experiments (every one validated before any work) and whether it is a suite."""
    path = preset_path(name)
    tree = load_toml(path, "preset")
    if "suite" not in tree:
        return [load_experiment(path, overrides)], False
    if set(tree) != {"suite"} or not isinstance(tree["suite"], list) or not tree["suite"]:
        raise UserError(f"preset {name!r}: a suite holds one key, suite = [experiment files]")
    exps = [load_experiment(path.parent / f, overrides) for f in tree["suite"]]
    names = [e.name for e in exps]
    if len(set(names)) != len(names):
        raise UserError(f"preset {name!r} names an experiment twice ({', '.join(names)})")
    return exps, True


def to_train(exps: list[Experiment], dirs: list[Path], reuse: Sequence[Path]) -> list:
    """The distinct runs of the experiments that are finished in none of `dirs` or `reuse`."""
    from .sweep.estimate import planned_runs

    wanted = {r.run_id: r for e in exps for r in planned_runs(plan(e))}
    roots = [*dirs, *reuse]
    return [r for rid, r in wanted.items() if not any(run_dir.read_result(d / "runs" / rid, rid) for d in roots)]


def reproduce(
    name: str,
    out: str | Path,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    overrides: Sequence[str] = (),
    reuse: Sequence[str | Path] = (),
    estimate: bool = True,
    say: Callable[[str], None] = print,
    replan: bool = False,
) -> dict:
    out = Path(out)
    exps, suite = load_preset(name, overrides)
    reuse = [Path(d) for d in reuse]
    executor = make_executor(backend, workers, address)
    n_workers = getattr(executor, "workers", None) or 1
    dirs = [out / e.name for e in exps] if suite else [out]
    for e in exps:  # before any work: a plan whose largest run cannot fit is refused
        check_plan_fits(plan(e), n_workers)
    todo = to_train(exps, dirs, reuse)
    t_estimate = time.time()
    if estimate and todo:
        from .sweep.estimate import estimate_seconds

        secs = estimate_seconds(todo, n_workers)
        took = f"{secs / 60:.0f} min" if secs < 7200 else f"{secs / 3600:.1f} h"
        say(
            f"{name}: {len(todo)} runs to train on {n_workers} worker(s); at most about {took} "
            "on this machine (every run at its full budget; early stopping shortens it)"
        )
    probe_seconds = time.time() - t_estimate
    t0 = time.time()
    summaries = []
    for i, (e, d) in enumerate(zip(exps, dirs)):
        if suite:
            say(f"[{i + 1}/{len(exps)}] {e.name} -> {d}")
        others = [o for o in dirs if o != d and o.exists()]
        s = run_sweep(e, d, executor, SweepProgress(n_workers), replan=replan, reuse=[*others, *reuse])
        for line in s["notes"]:
            say(line)
        for line in s["diverged"]:
            say(f"diverged (recorded, never a point of a transition): {line}")
        for rid, msg in s["failures"]:
            say(f"failed: {rid}: {msg}")
        say(f"{e.name}: {s['done']} trained, {s['skipped']} already done, {s['failed']} failed")
        summaries.append(s)
    from .analysis.claims import claims_table, source_names
    from .report import write_report

    known = source_names()
    t_analysis = time.time()
    claims, pages = [], []
    for e, d in zip(exps, dirs):
        page, analysis = write_report(d, claims_source=e.name if e.name in known else None)
        pages.append(page)
        claims += analysis.claims.to_dict("records")
    report = out / "report"
    if suite:
        sources = [d for e, d in zip(exps, dirs) if e.name in known]
        if sources:
            atomic_write_text(report / "claims.csv", claims_table(sources, "csv"))
            atomic_write_text(report / "claims.md", claims_table(sources, "md"))
    # what the reproduction took on this machine: every sweep invocation into its directories
    logs = [row for d in dirs for row in read_jsonl(d / SWEEP_LOG)]
    this = time.time() - t0
    took = {
        "preset": name,
        "sweep_seconds": sum(r["seconds"] for r in logs),
        "analysis_seconds": time.time() - t_analysis,
        "estimate_seconds": probe_seconds,
        "sweep_invocations": len(logs),
        "runs_trained": sum(r["trained"] for r in logs),
        "workers": logs[-1]["workers"] if logs else n_workers,
        "processor": logs[-1]["processor"] if logs else None,
    }
    took["total_seconds"] = took["sweep_seconds"] + took["analysis_seconds"] + probe_seconds
    atomic_write_json(report / "reproduce.json", took)
    return {
        "summary": {k: sum(s[k] for s in summaries) for k in ("done", "failed", "skipped")},
        "claims": claims,
        "seconds": this,
        "report": str(pages[0] if not suite else report / "claims.md"),
    }
