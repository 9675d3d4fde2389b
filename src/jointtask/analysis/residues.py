"""Which residues of the answer a run gets right (docs/definitions.md, Residues).

For each divisor d of the modulus (d = n included), the share of a run's test prompts whose
greedy answer is congruent to the right one modulo d. A run that computes the sum modulo 10 but
not modulo 20 scores 1 at d = 10 and about one half at d = 20: a partial solution, which is how
the seeds of ADD that fail to learn it settle (docs/regimes.md). `known_modulus` is the largest
divisor the run gets right on at least `KNOWN` of its prompts (none: not even parity).

Beside them, where the run's number embeddings put their power (embeddings.frequency_power): the
frequency with the most (`embedding_frequency`) and, for each prime power q of n, the share at the
frequencies that tell a value modulo q (`embedding_mod_<q>`; at n = 20: 4 and 5): a run whose
embeddings keep no power at the frequencies that tell values modulo 4 gives x and x + 10 the same
row, and can compute the sum modulo 10 and no more.
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
from .embeddings import factor_shares, frequency_power, number_embeddings
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
    return _residues(load_run(run_dir), run_dir, ops, split)


def _residues(loaded, run_dir: Path, ops: list[str], split: str) -> dict[str, dict[int, float]]:
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    _, data, model = loaded
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


def _frequencies(loaded) -> dict:
    """The run's number embeddings: the frequency holding most of their power, and the share at
    the frequencies that tell a value modulo each prime power of n."""
    _, data, model = loaded
    power = frequency_power(number_embeddings(model, data.vocab))
    shares = factor_shares(power, data.vocab.family.modulus)
    return {"embedding_frequency": int(np.argmax(power)) + 1, **{f"embedding_mod_{q}": v for q, v in shares.items()}}


def _kept_rows(previous: pd.DataFrame | None, split: str) -> dict[tuple[str, str], dict]:
    """{(run_id, target_op): row} of an earlier residues table, for the runs whose checkpoints
    are no longer on disk; a table read on another split or with a run twice is refused."""
    if previous is None or not len(previous):
        return {}
    need = {"run_id", "target_op", "split", "accuracy", "known_modulus"}
    if not need <= set(previous.columns):
        raise UserError(f"the earlier residues table lacks {', '.join(sorted(need - set(previous.columns)))}")
    if set(previous.split) != {split}:
        raise UserError(f"the earlier residues table reads {', '.join(sorted(set(previous.split)))}, not {split}")
    keys = list(zip(previous.run_id.astype(str), previous.target_op.astype(str)))
    if len(set(keys)) != len(keys):
        raise UserError("the earlier residues table holds a run twice")
    return dict(zip(keys, previous.to_dict("records")))


def residues_table(
    sweep_dir: Path, ops: list[str] | None = None, split: str = "test", previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per finished run and target op (`ops`, default: every target) whose checkpoint is
    on disk: its accuracy on `split` modulo each divisor of n (`mod_<d>`), its `known_modulus`,
    and where its number embeddings put their power (`embedding_frequency`, `embedding_mod_<q>`).
    A run whose checkpoint is gone keeps its row from `previous` (an earlier table of the same
    runs, which may lack the embedding columns) when that row's accuracy is the run's recorded
    one; a row that disagrees with its run's record is refused."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    sweep_dir = Path(sweep_dir)
    df = collect(sweep_dir)
    plan = {p["run_id"]: p for p in load_plan(sweep_dir)}
    kept = _kept_rows(previous, split)
    rows = []
    for r in df.to_dict("records"):
        run_id, op = str(r["run_id"]), str(r["target_op"])
        run_dir = sweep_dir / "runs" / run_id
        if (ops is not None and op not in ops) or op not in plan[run_id]["targets"]:
            continue
        recorded = float(r["accuracy"] if split == "test" else r["accuracy_validation"])
        if not (run_dir / CHECKPOINT).is_file():
            row = kept.get((run_id, op))
            if row is not None:
                if not np.isclose(float(row["accuracy"]), recorded, rtol=0, atol=1e-9):
                    raise UserError(
                        f"the earlier residues row of run {run_id} ({op}) has accuracy {row['accuracy']}, "
                        f"its record {recorded}"
                    )
                rows.append(row)
            continue
        loaded = load_run(run_dir)
        acc = _residues(loaded, run_dir, [op], split)[op]
        rows.append(
            {
                "run_id": run_id,
                "mixture": r["mixture"],
                "target_op": op,
                "width": int(r["width"]),
                "seed": int(r["seed"]),
                "split": split,
                "accuracy": recorded,
                **{f"mod_{d}": a for d, a in acc.items()},
                "known_modulus": known_modulus(acc),
                **_frequencies(loaded),
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


def embedding_summary(table: pd.DataFrame) -> pd.DataFrame:
    """A residues table by curve and what its runs know ('mod n'; 'mod d only', a partial solution;
    'nothing'), as in `residue_summary`: the runs, and the mean share of their embeddings' power
    at the frequencies that tell a value modulo each prime power q of n, over the runs whose
    embeddings were read. Empty for a table without them."""
    factors = [c for c in table.columns if c.startswith("embedding_mod_")]
    table = table.dropna(subset=factors)  # rows kept from a table read before the embeddings were
    if not factors or not len(table):
        return pd.DataFrame()
    n = max(int(c.split("_")[1]) for c in table.columns if c.startswith("mod_"))
    curves = [m if m == op else f"{m} ({op})" for m, op in zip(table.mixture, table.target_op)]
    outcome = [
        "nothing" if pd.isna(k) else f"mod {n}" if int(k) == n else f"mod {int(k)} only" for k in table.known_modulus
    ]
    order = {f"mod {n}": 0, **{f"mod {d} only": n - d for d in moduli_of(n)[:-1]}, "nothing": n}
    g = (
        table.assign(curve=curves, knows=outcome)
        .groupby(["curve", "knows"])
        .agg(runs=("run_id", "size"), **{c: (c, "mean") for c in factors})
        .reset_index()
        .sort_values(["curve", "knows"], key=lambda c: c.map(order) if c.name == "knows" else c)
    )
    names = {c: f"power telling mod {c.rsplit('_', 1)[1]}" for c in factors}
    return g.rename(columns=names).reset_index(drop=True)


__all__ = [
    "embedding_summary",
    "residue_summary",
    "KNOWN",
    "known_modulus",
    "moduli_of",
    "residue_accuracy",
    "residues_table",
    "SPLITS",
    "run_residues",
]
