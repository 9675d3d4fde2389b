"""Elements of S_k, token p<i> = the i-th permutation in lexicographic one-line order."""

from __future__ import annotations

import itertools
import math
from functools import cached_property

import numpy as np

from ...errors import UserError
from .base import Family, Op


def _product(f: "Permutations", xs: list[int]) -> int:
    out = xs[0]
    for a in xs[1:]:
        out = f.compose(out, a)  # left to right: (a*b)*c
    return out


class Permutations(Family):
    name = "perm"
    parameter = "degree"
    OPS = {
        "PMUL": Op(_product, "ordered"),
        "PMAX": Op(lambda f, xs: max(xs), "multiset"),  # index order is lexicographic order
        "PMIN": Op(lambda f, xs: min(xs), "multiset"),
        # p0 (identity) when the product is even, p1 (a transposition) when odd
        "PPAR": Op(lambda f, xs: f.parity(_product(f, xs)), "multiset"),
        "PSUB": Op(_product, "ordered"),  # operands from the point stabiliser (sample_leaf)
    }

    @classmethod
    def check(cls, size: int) -> None:
        if size < 2:
            raise UserError(f"degree must be >= 2, got {size}")
        if size > 6:
            raise UserError(f"degree {size} gives {math.factorial(size)} tokens; at most 6 is supported")

    @property
    def degree(self) -> int:
        return self.size

    @cached_property
    def elements(self) -> list[tuple[int, ...]]:
        return list(itertools.permutations(range(self.degree)))  # lexicographic order

    @cached_property
    def index(self) -> dict[tuple[int, ...], int]:
        return {p: i for i, p in enumerate(self.elements)}

    @cached_property
    def stabiliser(self) -> list[int]:
        """Indices of the permutations fixing the last point: a subgroup isomorphic to S_{k-1}."""
        last = self.degree - 1
        return [i for i, p in enumerate(self.elements) if p[last] == last]

    @property
    def n_values(self) -> int:
        return len(self.elements)

    def value_token(self, v: int) -> str:
        return f"p{v}"

    def compose(self, a: int, b: int) -> int:
        pa, pb = self.elements[a], self.elements[b]
        return self.index[tuple(pa[pb[i]] for i in range(self.degree))]  # (a*b)[i] = a[b[i]]

    def parity(self, a: int) -> int:
        p = self.elements[a]
        return sum(1 for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] > p[j]) % 2

    def sample_leaf(self, op: str, rng: np.random.Generator) -> int:
        if op == "PSUB":  # sub-block product: operands drawn from the point stabiliser
            return int(self.stabiliser[rng.integers(len(self.stabiliser))])
        return int(rng.integers(self.n_values))

    def labellings(self) -> dict[str, np.ndarray]:
        """Sign, and the coset of the stabiliser of the last point (where g sends that point)."""
        return {
            "sign": np.array([self.parity(i) for i in range(self.n_values)]),
            "coset": np.array([p[self.degree - 1] for p in self.elements]),
        }
