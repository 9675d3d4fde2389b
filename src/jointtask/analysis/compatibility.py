"""A-priori compatibility of a target op with its companions, computed from the tasks alone.
Ours, as a first candidate to test against measured joint-benefit ratios.

Over the inputs a single-op expression draws (2..3 uniform arguments), for each companion c:
  output NMI   normalised mutual information between target(x) and c(x): how much one
               operation's answer tells about the other's on the same arguments;
  residue NMI  the same between target(x) mod k and c(x) mod k for each small divisor k of n
               (a shared homomorphism such as parity shows up here).
The score of a mixture is the largest of these over its companions and divisors.
"""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from ..tasks.config import TaskConfig


def _inputs(n_values: int, min_args: int, max_args: int, limit: int, rng) -> list[list[int]]:
    out = []
    for k in range(min_args, max_args + 1):
        if n_values**k <= limit:
            out += [list(t) for t in itertools.product(range(n_values), repeat=k)]
        else:
            out += rng.integers(n_values, size=(limit, k)).tolist()
    return out


def compatibility(
    target: str,
    companions: list[str],
    modulus: int | None = None,
    degree: int | None = None,
    min_args: int = 2,
    max_args: int = 3,
    seed: int = 0,
    limit: int = 20000,
) -> dict:
    task = TaskConfig(ops=[target, *companions], modulus=modulus, degree=degree, sadd_seed=seed)
    fam = task.family(seed)
    xs = _inputs(fam.n_values, min_args, max_args, limit, np.random.default_rng(seed))
    t = np.array([fam.apply(target, x) for x in xs])
    rows = {}
    for c in companions:
        y = np.array([fam.apply(c, x) for x in xs])
        res = {"output_nmi": float(normalized_mutual_info_score(t, y))}
        for k in fam.divisors():
            res[f"mod{k}_nmi"] = float(normalized_mutual_info_score(t % k, y % k))
        rows[c] = res
    score = max((max(r.values()) for r in rows.values()), default=0.0)
    return {"target": target, "companions": rows, "score": score}
