"""A sweep directory's plan on disk: experiment.json (the resolved experiment) and plan.json
(every planned run: id, label, kind, width, seed, targets, steps)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_json
from .experiment import Experiment, Label, PlannedRun


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
