"""Turn a finished sweep directory into tables: transitions, ratios, embeddings, ablations."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..sweep.experiment import Label
from ..sweep.results import collect, load_plan
from ..tasks.dataset import build_task_data
from ..train.config import load_config
from ..train.loop import build_model, load_checkpoint
from ..train.run_dir import CHECKPOINT, CONFIG
from .ablation import ablation_table
from .embeddings import embedding_structure, number_embeddings
from .transition import DesignError, fit_transition, joint_benefit


TRANSITION_COLUMNS = ["mixture", "target_op", "p_star", "ci_low", "ci_high", "censored", "bound", "p50", "p50_ci_low",
                      "p50_ci_high", "p50_censored", "lo", "hi", "p0", "w", "p_min", "p_max", "n_points", "n_seeds",
                      "n_runs", "widths", "test_scored", "test_exist", "note"]
RATIO_COLUMNS = ["target_op", "comparison", "baseline_mixture", "mixture", "ratio", "kind", "ci_low", "ci_high", "verdict",
                 "p50_ratio", "p50_kind", "p50_ci_low", "p50_ci_high", "p50_verdict"]


def transitions(df: pd.DataFrame, n_boot: int = 1000) -> tuple[pd.DataFrame, dict]:
    """One row per (mixture, target op) trained on it; a curve whose design is too small for a
    fit gets a row with the reason in `note` and no estimate."""
    rows, fits = [], {}
    for (mixture, op), g in df.groupby(["mixture", "target_op"], sort=True):
        if op not in trained_ops(mixture):
            continue
        row = {"mixture": mixture, "target_op": op, "n_runs": len(g), "n_seeds": g.seed.nunique(),
               "widths": ",".join(map(str, sorted(g.width.unique())))}
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
    and isomorphic single ops against each other (A/A checks)."""
    out = []
    for m in mixtures:
        label = Label.parse(m)
        ops = list(label.ops)
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
    return {m: int(g[col].max()) for m, g in df.groupby("mixture")} if col else {}


def load_run(run_dir: Path):
    cfg = load_config(run_dir / CONFIG)
    data = build_task_data(cfg.task, cfg.data, cfg.seed)
    model = build_model(cfg, len(data.vocab))
    model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)["model"])
    return cfg, data, model.eval()


def representative_runs(out: Path, df: pd.DataFrame, width: int | None = None) -> dict[str, dict]:
    """One run per mixture for embedding and ablation analyses: the given width (default: the
    largest width swept by every mixture), lowest seed."""
    plan = pd.DataFrame(load_plan(out))
    done = plan[plan.run_id.isin(df.run_id)]
    if done.empty:
        return {}
    if width is None:
        common = set.intersection(*(set(g.width) for _, g in done.groupby("mixture")))
        width = max(common) if common else int(done.width.max())
    out_runs = {}
    for mixture, g in done.groupby("mixture"):
        g = g[g.width == width] if (g.width == width).any() else g[g.width == g.width.max()]
        row = g.sort_values("seed").iloc[0]
        out_runs[mixture] = {"run_id": row.run_id, "width": int(row.width), "seed": int(row.seed),
                             "targets": list(row.targets)}
    return out_runs


def embeddings_for(out: Path, reps: dict, n_perm: int = 999) -> dict:
    res = {}
    for mixture, r in reps.items():
        cfg, data, model = load_run(out / "runs" / r["run_id"])
        res[mixture] = {**r, **embedding_structure(number_embeddings(model, data.vocab), data.vocab.family,
                                                   n_perm=n_perm)}
    return res


def embedding_table(emb: dict) -> pd.DataFrame:
    rows = []
    for mixture, e in emb.items():
        for label, s in e["separation"].items():
            rows.append({"mixture": mixture, "width": e["width"], "seed": e["seed"], "labelling": label,
                         "separation": s["score"], "p_value": s["p_value"], "ordering_pc1": e["ordering"],
                         "pc_variance": ",".join(f"{v:.2f}" for v in e["explained_variance"])})
    return pd.DataFrame(rows)


def ablations_for(out: Path, reps: dict) -> pd.DataFrame:
    rows = []
    for mixture, r in reps.items():
        cfg, data, model = load_run(out / "runs" / r["run_id"])
        for op in r["targets"]:
            if op in data.test_sets:
                for row in ablation_table(model, data.test_sets[op], data.vocab):
                    rows.append({"mixture": mixture, "target_op": op, "width": r["width"], **row})
    return pd.DataFrame(rows)


def transfer_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against width for transferred runs ('A>B') beside B from scratch."""
    labels = {m: Label.parse(m) for m in df.mixture.unique()}
    transferred = {m for m, lab in labels.items() if lab.kind == "transfer"}
    if not transferred:
        return df.iloc[:0]
    scratch = {labels[m].ops for m in transferred}
    both = df[df.mixture.map(lambda m: m in transferred or labels[m].pretrain is None and labels[m].ops in scratch)]
    return both.groupby(["mixture", "target_op", "width"], as_index=False).agg(
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), n=("accuracy", "size"))


def analyze_sweep(out: str | Path, n_boot: int = 1000, n_perm: int = 999, width: int | None = None,
                  ablate: bool = True) -> dict:
    out = Path(out)
    df = collect(out)
    trans, fits = transitions(df, n_boot)
    reps = representative_runs(out, df, width)
    emb = embeddings_for(out, reps, n_perm) if reps else {}
    return {"results": df, "transitions": trans, "fits": fits, "ratios": ratios(fits, budgets_of(df)),
            "embeddings": emb, "embedding_table": embedding_table(emb),
            "ablations": ablations_for(out, reps) if (ablate and reps) else pd.DataFrame(),
            "transfer": transfer_curves(df),
            "experiment": json.loads((out / "experiment.json").read_text()) if (out / "experiment.json").exists() else {}}
