"""Transition and ratio tables from a results table (one row per run and target op): what
`jointtask ratios`, the claims and the sweep analysis all compute the same way."""

from __future__ import annotations

import pandas as pd

from ..sweep.experiment import Label
from .transition import N_BOOT, DesignError, fit_transition, joint_benefit


TRANSITION_COLUMNS = [
    "mixture",
    "target_op",
    "p_star",
    "ci_low",
    "ci_high",
    "censored",
    "bound",
    "p50",
    "p50_ci_low",
    "p50_ci_high",
    "p50_censored",
    "lo",
    "hi",
    "p0",
    "w",
    "p_min",
    "p_max",
    "n_points",
    "n_seeds",
    "n_runs",
    "widths",
    "test_scored",
    "test_exist",
    "note",
]
RATIO_COLUMNS = [
    "target_op",
    "comparison",
    "baseline_mixture",
    "mixture",
    "ratio",
    "kind",
    "ci_low",
    "ci_high",
    "verdict",
    "p50_ratio",
    "p50_kind",
    "p50_ci_low",
    "p50_ci_high",
    "p50_verdict",
]


def transitions(df: pd.DataFrame, n_boot: int = N_BOOT) -> tuple[pd.DataFrame, dict]:
    """One row per (mixture, target op) trained on it; a curve whose design is too small for a
    fit gets a row with the reason in `note` and no estimate."""
    rows, fits = [], {}
    for key, g in df.groupby(["mixture", "target_op"], sort=True):
        mixture, op = str(key[0]), str(key[1])
        if op not in trained_ops(mixture):
            continue
        row = {
            "mixture": mixture,
            "target_op": op,
            "n_runs": len(g),
            "n_seeds": g.seed.nunique(),
            "widths": ",".join(map(str, sorted(g.width.unique()))),
        }
        if "test_scored" in g:
            row["test_scored"], row["test_exist"] = int(g.test_scored.min()), g.test_exist.min()
        try:
            t = fit_transition(g.params.values, g.accuracy.values, g.seed.values, n_boot=n_boot)
        except DesignError as e:
            rows.append({**row, "note": str(e)})
            continue
        fits[(mixture, op)] = t
        rows.append({**t.to_dict(), **row, "note": ""})
    return pd.DataFrame(rows, columns=TRANSITION_COLUMNS), fits


def trained_ops(mixture: str) -> list[str]:
    """The ops a run label's runs finish training on ('A>B': pretrained on A, then B; 'B@n':
    B from scratch for n steps)."""
    return list(Label.parse(mixture).ops)


ISOMORPHIC = [("ADD", "SADD")]  # alone, the two are the same group with relabelled values: an A/A pair


def comparisons(mixtures: list[str], budgets: dict[str, int]) -> list[tuple[str, str, str, str]]:
    """(comparison, target op, baseline mixture, mixture) for every ratio a sweep can give: each
    mixture against its target alone; against its target alone trained for the mixture's own
    step budget when the sweep has that control ('ADD@9000', planned with budget = 'exposure');
    each transfer 'A>B' against B from scratch for the same steps and against B from scratch for
    the pretraining steps added ('B@n', the sweep's control); and isomorphic single ops against
    each other (A/A checks)."""
    out = []
    for m in mixtures:
        label = Label.parse(m)
        ops = list(label.ops)
        if label.kind == "transfer":
            scratch = "+".join(ops)
            controls = [c for c in mixtures if Label.parse(c).kind == "control" and Label.parse(c).ops == label.ops]
            for op in ops:
                if scratch in mixtures:
                    out.append(("transfer", op, scratch, m))
                out += [("transfer, equal steps", op, c, m) for c in controls]
            continue
        if len(ops) < 2 or label.kind != "mixture":
            continue
        for op in ops:
            if op in mixtures:
                out.append(("joint", op, op, m))
            same = f"{op}@{budgets.get(m)}"
            if same in mixtures:
                out.append(("joint, equal steps", op, same, m))
    for a, b in ISOMORPHIC:
        if a in mixtures and b in mixtures:
            out.append(("A/A (isomorphic)", a, a, b))
    return out


def ratios(fits: dict, budgets: dict[str, int] | None = None) -> pd.DataFrame:
    rows = []
    mixtures = sorted({m for m, _ in fits})
    for comparison, op, base, mixture in comparisons(mixtures, budgets or {}):
        target = trained_ops(mixture)[0] if comparison.startswith("A/A") else op
        if (base, op) not in fits or (mixture, target) not in fits:
            continue
        r = joint_benefit(fits[(base, op)], fits[(mixture, target)])
        rows.append({"target_op": op, "comparison": comparison, "baseline_mixture": base, "mixture": mixture, **r})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


def budgets_of(df: pd.DataFrame) -> dict[str, int]:
    """Each mixture's planned step budget (tables without that column: the most steps a run took)."""
    col = "budget_steps" if "budget_steps" in df else "steps" if "steps" in df else None
    return {str(m): int(g[col].max()) for m, g in df.groupby("mixture")} if col else {}
