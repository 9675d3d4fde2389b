"""Numbers 0..n-1 with MAX, MIN, MED, ADD, PROD, NADD and shuffled ADD, all mod n."""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from ...errors import UserError
from .base import Family, Op


def _sadd(f: "ListOps", xs: list[int]) -> int:
    # A fixed relabelling pi of 0..n-1; SADD(x) = pi(sum(pi^-1(x_i)) mod n) is a group isomorphic
    # to ADD whose labels no longer follow the numeric order.
    return int(f.sadd_perm[sum(int(f.sadd_inverse[x]) for x in xs) % f.modulus])


class ListOps(Family):
    name = "listops"
    parameter = "modulus"
    OPS = {
        "MAX": Op(lambda f, xs: max(xs), "multiset"),
        "MIN": Op(lambda f, xs: min(xs), "multiset"),
        "MED": Op(lambda f, xs: sorted(xs)[len(xs) // 2], "multiset"),
        "ADD": Op(lambda f, xs: sum(xs) % f.modulus, "multiset"),
        "PROD": Op(lambda f, xs: math.prod(xs) % f.modulus, "multiset"),
        "NADD": Op(lambda f, xs: sum(x if i % 2 == 0 else -x for i, x in enumerate(xs)) % f.modulus, "alternating"),
        "SADD": Op(_sadd, "multiset"),
    }

    @classmethod
    def check(cls, size: int) -> None:
        if size < 2:
            raise UserError(f"modulus must be >= 2, got {size}")

    @property
    def modulus(self) -> int:
        return self.size

    @property
    def n_values(self) -> int:
        return self.size

    def value_token(self, v: int) -> str:
        return str(v)

    @cached_property
    def sadd_perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 0x5ADD]).permutation(self.modulus)

    @cached_property
    def sadd_inverse(self) -> np.ndarray:
        return np.argsort(self.sadd_perm)

    def divisors(self) -> list[int]:
        return [k for k in range(2, self.modulus) if self.modulus % k == 0 and k <= 10]

    def labellings(self) -> dict[str, np.ndarray]:
        """Parity and residues mod each small divisor of n above 2."""
        values = np.arange(self.modulus)
        return {"parity": values % 2, **{f"mod {k}": values % k for k in self.divisors() if k > 2}}
