"""Attention versus feed-forward reliance (claim C10).

At evaluation, replace a sublayer's output (before it is added to the residual stream) with
zeros or with its mean over the evaluation set, at one pass or at all passes, and measure the
drop in greedy accuracy. Also the mean L2 norm of each sublayer's residual update.
"""

from __future__ import annotations

import numpy as np
import torch

from ..tasks.dataset import EncodedSet
from ..train.evaluate import accuracy


@torch.no_grad()
def sublayer_means_and_norms(model, es: EncodedSet) -> tuple[dict, dict]:
    """Mean output vector and mean L2 norm of every attention / MLP hook, over real tokens."""
    names = [n for n in model.hook_points() if n.endswith(("hook_attn_out", "hook_mlp_out"))]
    ids = torch.from_numpy(es.ids)
    mask = ids != 0
    mask[:, 0] = True
    store = {}
    hooks = [(n, lambda a, hook: store.__setitem__(hook.name, a)) for n in names]
    model.eval()
    with model.hooks(hooks):
        model.residual(ids)
    means = {n: store[n][mask].mean(0) for n in names}
    norms = {n: float(store[n][mask].norm(dim=-1).mean()) for n in names}
    return means, norms


def ablation_table(model, es: EncodedSet, vocab) -> list[dict]:
    """Rows: sublayer (attn/mlp), pass ('all' or an index), mode (zero/mean), accuracy, drop."""
    base = accuracy(model, es, vocab)
    means, norms = sublayer_means_and_norms(model, es)
    rows = []
    n_passes = len(model.passes)
    for kind in ("attn", "mlp"):
        for where in ["all", *range(n_passes)]:
            passes = range(n_passes) if where == "all" else [where]
            names = [f"passes.{p}.hook_{kind}_out" for p in passes]
            for mode in ("zero", "mean"):
                fn = (
                    (lambda n: lambda a, hook: torch.zeros_like(a))
                    if mode == "zero"
                    else (lambda n: lambda a, hook, m=means[n]: m.expand_as(a).clone())
                )
                with model.hooks([(n, fn(n)) for n in names]):
                    acc = accuracy(model, es, vocab)
                rows.append(
                    {
                        "sublayer": kind,
                        "pass": str(where),
                        "mode": mode,
                        "accuracy": acc,
                        "drop": base - acc,
                        "baseline": base,
                        "update_norm": float(np.mean([norms[n] for n in names])),
                    }
                )
    return rows
