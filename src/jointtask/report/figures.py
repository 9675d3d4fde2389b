"""Matplotlib figures of the report. Each function draws one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..analysis.tables import trained_ops  # noqa: E402
from ..analysis.transition import FRAC, LEARNED_FLOOR, logistic  # noqa: E402

DEF_NOTE = (
    f"fit: logistic in log P; P* = smallest P where the fit reaches {FRAC:.0%} of its asymptote "
    f"(ours; docs/definitions.md, Transitions); censored if the asymptote < {LEARNED_FLOOR} or the level is not reached in range"
)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_params(df, fits, op: str, path: Path) -> Path:
    g = df[(df.target_op == op) & df.mixture.map(lambda m: op in trained_ops(m))]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
    for i, (mixture, m) in enumerate(sorted(g.groupby("mixture"), key=lambda t: t[0])):
        c = colors[i % 10]
        jitter = np.exp(np.random.default_rng(i).normal(0, 0.02, len(m)))
        ax.scatter(
            m.params * jitter,
            m.accuracy,
            color=c,
            alpha=0.6,
            s=22,
            label=f"{mixture} ({len(m)} runs, {m.seed.nunique()} seeds)",
        )
        t = fits.get((mixture, op))
        if t is not None and t.pstar.params:
            f = t.pstar
            xs = np.geomspace(m.params.min(), m.params.max(), 200)
            ax.plot(xs, logistic(np.log(xs), *f.params), color=c, lw=1.6)
            if f.censored == "none":
                ax.axvline(f.value, color=c, ls="--", lw=1)
                lo, hi = t.pstar_ci
                ax.axvspan(lo or m.params.min(), hi or m.params.max(), color=c, alpha=0.08)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("parameters (all trainable)")
    ax.set_ylabel(f"test {op} accuracy (greedy, exact)")
    ax.set_title(f"{op}: accuracy against size; dashed = P*, band = 95% bootstrap CI")
    ax.legend(fontsize=7, loc="lower right")
    fig.text(0.01, -0.04, DEF_NOTE, fontsize=6.5)
    return _save(fig, path)


def pca_scatter(emb: dict, path: Path) -> Path:
    mixtures = list(emb)
    labels = list(next(iter(emb.values()))["labels"])[:3]
    cols = 1 + len(labels)
    fig, axes = plt.subplots(len(mixtures), cols, figsize=(3.1 * cols, 2.9 * len(mixtures)), squeeze=False)
    for r, mixture in enumerate(mixtures):
        e = emb[mixture]
        xy = e["coords"]
        n = len(xy)
        colourings = [("value", np.arange(n), "viridis")] + [(k, e["labels"][k], "tab10") for k in labels]
        for c, (name, lab, cmap) in enumerate(colourings):
            ax = axes[r, c]
            ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap=cmap, s=28, edgecolors="k", linewidths=0.3)
            if n <= 30:
                for i in range(n):
                    ax.annotate(str(i), xy[i, :2], fontsize=6, alpha=0.7)
            sep = e["separation"].get(name)
            extra = f"\nsep {sep['score']:.2f}, p={sep['p_value']:.3f}" if sep else f"\n|rho(PC1)| {e['ordering']:.2f}"
            ax.set_title(f"{mixture} w{e['width']} s{e['seed']}: {name}{extra}", fontsize=7.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("PCA of the cosine-similarity matrix of number embeddings (PC1 vs PC2)", fontsize=9)
    return _save(fig, path)


def similarity_heatmaps(emb: dict, path: Path) -> Path:
    mixtures = list(emb)
    fig, axes = plt.subplots(1, len(mixtures), figsize=(3.3 * len(mixtures), 3.1), squeeze=False)
    for ax, mixture in zip(axes[0], mixtures):
        im = ax.imshow(emb[mixture]["similarity"], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{mixture} (width {emb[mixture]['width']})", fontsize=8)
        ax.set_xlabel("value")
        ax.set_ylabel("value")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity")
    return _save(fig, path)


def ablation_bars(ab, path: Path) -> Path:
    a = ab[ab["pass"] == "all"]
    keys = sorted({(m, o) for m, o in zip(a.mixture, a.target_op)})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(keys)), 3.6))
    x = np.arange(len(keys))
    width = 0.2
    for i, (sub, mode) in enumerate([("attn", "zero"), ("attn", "mean"), ("mlp", "zero"), ("mlp", "mean")]):
        vals = [
            float(a[(a.mixture == m) & (a.target_op == o) & (a.sublayer == sub) & (a["mode"] == mode)]["drop"].iloc[0])
            for m, o in keys
        ]
        ax.bar(x + (i - 1.5) * width, vals, width, label=f"{sub}, {mode} ablation")
    ax.set_xticks(x, [f"{m}\n→{o}" for m, o in keys], fontsize=7)
    ax.set_ylabel("accuracy drop (all passes ablated)")
    ax.set_title("Sublayer reliance: drop in test accuracy when a sublayer's output is removed")
    ax.legend(fontsize=7)
    return _save(fig, path)


def transfer_plot(tr, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (mixture, op), g in tr.groupby(["mixture", "target_op"]):
        ax.errorbar(
            g.width,
            g.accuracy,
            yerr=g.accuracy_std.fillna(0),
            marker="o",
            capsize=3,
            label=f"{mixture} → {op} accuracy (n={int(g.n.sum())})",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width (n_embed)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Transfer: pretrained (A>B) against B from scratch, same steps on B")
    ax.legend(fontsize=7)
    return _save(fig, path)
