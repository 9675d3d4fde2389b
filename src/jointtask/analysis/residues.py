"""Which residues of the answer a run gets right (docs/definitions.md, Residues).

For each divisor d of the modulus (d = n included), the share of a run's test prompts whose
greedy answer is congruent to the right one modulo d. A run that computes the sum modulo 10 but
not modulo 20 scores 1 at d = 10 and about one half at d = 20: a partial solution, which is how
the seeds of ADD that fail to learn it settle (docs/regimes.md). `known_modulus` is the largest
divisor the run gets right on at least `KNOWN` of its prompts (none: not even parity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..sweep.results import collect, load_plan
from ..tasks.families.listops import ListOps
from ..train.evaluate import final_answer, greedy_decode, max_new_tokens, next_logits_of, prompts_of
from ..train.run_dir import CHECKPOINT
from .sweep_analysis import load_run

KNOWN = 0.9  # share of prompts right modulo d for a run to "know" the answer modulo d


def moduli_of(n: int) -> list[int]:
    """Every divisor of n above 1, n itself last."""
    return [d for d in range(2, n + 1) if n % d == 0]


def residue_accuracy(predicted, truth, n: int) -> dict[int, float]:
    """predicted, truth: answers in 0..n-1 (predicted -1 where the run gave none) ->
    {d: share of prompts whose answer is right modulo d} for every divisor d > 1 of n."""
    p, t = np.asarray(predicted), np.asarray(truth)
    if len(p) != len(t) or len(t) == 0:
        raise UserError("residue accuracy needs as many answers as truths, and at least one")
    answered = p >= 0
    return {d: float(np.mean(answered & (p % d == t % d))) for d in moduli_of(n)}


def known_modulus(acc: dict[int, float], known: float = KNOWN) -> int | None:
    got = [d for d, a in acc.items() if a >= known]
    return max(got) if got else None


SPLITS = ("test", "validation")


def run_residues(run_dir: Path, ops: list[str], split: str = "test") -> dict[str, dict[int, float]]:
    """{op: residue accuracy on the run's `split` prompts of that op} for one trained run."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    cfg, data, model = load_run(run_dir)
    family = data.vocab.family
    if not isinstance(family, ListOps):
        raise UserError(f"residues need a ListOps task, {str(run_dir)!r} trains {family.name}")
    out = {}
    for op in ops:
        es = (data.test_sets if split == "test" else data.validation_sets)[op]
        gen = greedy_decode(next_logits_of(model), prompts_of(es), max_new_tokens(es), model.max_len)
        pred = [final_answer(g, data.vocab) for g in gen]
        predicted = [-1 if v is None else v - data.vocab.value_offset for v in pred]
        truth = es.answers - data.vocab.value_offset
        out[op] = residue_accuracy(predicted, truth, family.modulus)
    return out


def residues_table(sweep_dir: Path, ops: list[str] | None = None, split: str = "test") -> pd.DataFrame:
    """One row per finished run whose checkpoint is on disk and target op (`ops`, default: every
    target): its accuracy on `split` modulo each divisor of n (`mod_<d>`) and its `known_modulus`."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    sweep_dir = Path(sweep_dir)
    df = collect(sweep_dir)
    plan = {p["run_id"]: p for p in load_plan(sweep_dir)}
    rows = []
    for r in df.to_dict("records"):
        run_id, op = str(r["run_id"]), str(r["target_op"])
        run_dir = sweep_dir / "runs" / run_id
        if (ops is not None and op not in ops) or not (run_dir / CHECKPOINT).is_file():
            continue
        if op not in plan[run_id]["targets"]:
            continue
        acc = run_residues(run_dir, [op], split)[op]
        rows.append(
            {
                "run_id": run_id,
                "mixture": r["mixture"],
                "target_op": op,
                "width": int(r["width"]),
                "seed": int(r["seed"]),
                "split": split,
                "accuracy": float(r["accuracy"] if split == "test" else r["accuracy_validation"]),
                **{f"mod_{d}": a for d, a in acc.items()},
                "known_modulus": known_modulus(acc),
            }
        )
    if not rows:
        raise UserError(f"no finished run of {str(sweep_dir)!r} has its checkpoint on disk for these ops")
    df = pd.DataFrame(rows).astype({"known_modulus": "Int64"})
    return df.sort_values(["mixture", "target_op", "width", "seed"]).reset_index(drop=True)


def residue_summary(table: pd.DataFrame) -> pd.DataFrame:
    """A residues table counted: per curve ('ADD', 'ADD+MAX (ADD)') and width, the runs that know
    the answer modulo n, those that know it only modulo each proper divisor (partial solutions),
    and those that know nothing of it."""
    moduli = sorted((int(c.split("_")[1]) for c in table.columns if c.startswith("mod_")), reverse=True)
    n, proper = moduli[0], moduli[1:]
    curves = [m if m == op else f"{m} ({op})" for m, op in zip(table.mixture, table.target_op)]
    known = [None if pd.isna(k) else int(k) for k in table.known_modulus]
    groups: dict[tuple[str, int], list[int | None]] = {}
    for c, w, k in zip(curves, table.width, known):
        groups.setdefault((c, int(w)), []).append(k)
    rows = []
    for (c, w), ks in sorted(groups.items()):
        row = {"curve": c, "width": w, "runs": len(ks), f"mod {n}": ks.count(n)}
        row |= {f"mod {d} only": ks.count(d) for d in proper}
        rows.append(row | {"nothing": ks.count(None)})
    return pd.DataFrame(rows)


__all__ = [
    "residue_summary",
    "KNOWN",
    "known_modulus",
    "moduli_of",
    "residue_accuracy",
    "residues_table",
    "SPLITS",
    "run_residues",
]
