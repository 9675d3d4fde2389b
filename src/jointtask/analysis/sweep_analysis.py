"""A finished sweep directory analysed: transitions, ratios, claims, embeddings, ablations,
transfer curves, as tables (`Analysis`, written as CSV by `Analysis.write_tables`). The report
only renders them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..fileio import atomic_write_text
from ..sweep.experiment import Label
from ..sweep.results import collect, load_plan
from ..tasks.dataset import build_task_data
from ..train.config import load_config
from ..train.loop import build_model, load_checkpoint
from ..train.run_dir import CHECKPOINT, CONFIG
from .ablation import ablation_table
from .claims import claim_rows
from .embeddings import embedding_structure, number_embeddings
from .tables import budgets_of, ratios, transitions
from .transition import N_BOOT


def load_run(run_dir: Path):
    cfg = load_config(run_dir / CONFIG)
    data = build_task_data(cfg.task, cfg.data, cfg.seed)
    model = build_model(cfg, len(data.vocab))
    try:
        model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)["model"])
    except UserError as e:
        raise UserError(f"{e}: remove {str(run_dir)!r} and run its sweep again to retrain it") from None
    return cfg, data, model.eval()


def representative_runs(out: Path, df: pd.DataFrame, width: int | None = None) -> dict[str, dict]:
    """One run per mixture for embedding and ablation analyses: the given width (default: the
    largest width swept by every mixture), lowest seed, among the finished runs whose checkpoint
    is on disk (a directory of run records keeps checkpoints for these runs only)."""
    plan = pd.DataFrame(load_plan(out))
    done = plan[plan.run_id.isin(df.run_id)]
    done = done[[(out / "runs" / rid / CHECKPOINT).is_file() for rid in done.run_id]]
    if done.empty:
        return {}
    if width is None:
        common = set.intersection(*(set(g.width) for _, g in done.groupby("mixture")))
        width = max(common) if common else int(done.width.max())
    out_runs = {}
    for mixture, g in done.groupby("mixture"):
        g = g[g.width == width] if (g.width == width).any() else g[g.width == g.width.max()]
        row = g.sort_values("seed").iloc[0]
        out_runs[mixture] = {
            "run_id": row.run_id,
            "width": int(row.width),
            "seed": int(row.seed),
            "targets": list(row.targets),
        }
    return out_runs


def embeddings_for(out: Path, reps: dict, n_perm: int = 999) -> dict:
    res = {}
    for mixture, r in reps.items():
        cfg, data, model = load_run(out / "runs" / r["run_id"])
        res[mixture] = {
            **r,
            **embedding_structure(number_embeddings(model, data.vocab), data.vocab.family, n_perm=n_perm),
        }
    return res


def embedding_table(emb: dict) -> pd.DataFrame:
    rows = []
    for mixture, e in emb.items():
        for label, s in e["separation"].items():
            rows.append(
                {
                    "mixture": mixture,
                    "width": e["width"],
                    "seed": e["seed"],
                    "labelling": label,
                    "separation": s["score"],
                    "p_value": s["p_value"],
                    "ordering_pc1": e["ordering"],
                    "pc_variance": ",".join(f"{v:.2f}" for v in e["explained_variance"]),
                }
            )
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
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), n=("accuracy", "size")
    )


@dataclass
class Analysis:
    results: pd.DataFrame  # one row per finished run and target op
    transitions: pd.DataFrame  # tables.TRANSITION_COLUMNS
    fits: dict  # (mixture, target op) -> transition.Transition
    ratios: pd.DataFrame  # tables.RATIO_COLUMNS
    claims: pd.DataFrame  # claims.claim_row per claim whose source this sweep is
    embeddings: dict  # mixture -> embedding_structure of one representative run
    embedding_table: pd.DataFrame
    ablations: pd.DataFrame
    transfer: pd.DataFrame
    experiment: dict

    TABLES = ("results", "transitions", "ratios", "claims", "embedding_table", "ablations")

    def write_tables(self, directory: Path) -> None:
        """DIR/results.csv, transitions.csv, ratios.csv, claims.csv (when there are claims),
        embeddings.csv, ablations.csv."""
        for name in self.TABLES:
            df = getattr(self, name)
            if name == "claims" and df.empty:
                continue
            atomic_write_text(
                Path(directory) / f"{name.replace('embedding_table', 'embeddings')}.csv", df.to_csv(index=False)
            )


def analyze_sweep(
    out: str | Path,
    n_boot: int = N_BOOT,
    n_perm: int = 999,
    width: int | None = None,
    ablate: bool = True,
    claims_source: str | None = None,
) -> Analysis:
    """Everything the report shows; `claims_source` names the claims' source this sweep is (a
    preset's name), for its rows of the claims table."""
    out = Path(out)
    df = collect(out)
    trans, fits = transitions(df, n_boot)
    reps = representative_runs(out, df, width)
    emb = embeddings_for(out, reps, n_perm) if reps else {}
    return Analysis(
        results=df,
        transitions=trans,
        fits=fits,
        ratios=ratios(fits, budgets_of(df)),
        claims=pd.DataFrame(claim_rows({claims_source: df}, n_boot, {claims_source: fits}) if claims_source else []),
        embeddings=emb,
        embedding_table=embedding_table(emb),
        ablations=ablations_for(out, reps) if (ablate and reps) else pd.DataFrame(),
        transfer=transfer_curves(df),
        experiment=json.loads((out / "experiment.json").read_text()) if (out / "experiment.json").exists() else {},
    )
