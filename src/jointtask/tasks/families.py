"""Task families: the vocabulary of values and the operations on them (SPEC section 1).

A family knows how many values it has, how to spell a value as a token, and how to apply
each of its operations to a list of values. Expression trees and chains of thought are
built on top of this in `expressions.py`, the same way for every family.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import UserError

SPECIAL_TOKENS = ["<pad>", "<eos>", "(", ")", "="]
PAD, EOS, OPEN, CLOSE, EQUALS = range(5)

LISTOPS_OPS = ["MAX", "MIN", "MED", "ADD", "PROD", "NADD", "SADD"]
PERM_OPS = ["PMUL", "PMAX", "PMIN", "PPAR", "PSUB"]

# Which reorderings of its arguments leave an operation's value unchanged, for every input (SPEC
# 1.1, splits): "multiset" any order; "alternating" any order within the odd-position arguments
# and within the even-position ones (NADD: x1 - x2 + x3); "ordered" none (group products).
SYMMETRY = {"MAX": "multiset", "MIN": "multiset", "MED": "multiset", "ADD": "multiset", "PROD": "multiset",
            "SADD": "multiset", "NADD": "alternating", "PMAX": "multiset", "PMIN": "multiset", "PPAR": "multiset",
            "PMUL": "ordered", "PSUB": "ordered"}


def family_of(ops: list[str]) -> str:
    """'listops' or 'perm'; an unknown op or a mix of families is a UserError."""
    if not ops:
        raise UserError("no operations given")
    kinds = set()
    for op in ops:
        if op in LISTOPS_OPS:
            kinds.add("listops")
        elif op in PERM_OPS:
            kinds.add("perm")
        else:
            known = ", ".join(LISTOPS_OPS + PERM_OPS)
            raise UserError(f"unknown operation {op!r} (known: {known})")
    if len(kinds) > 1:
        raise UserError(f"operations {ops} mix the listops and permutation families")
    return kinds.pop()


@dataclass(frozen=True)
class ListOps:
    """Numbers 0..n-1 with MAX, MIN, MED, ADD, PROD, NADD and shuffled ADD, all mod n."""

    modulus: int
    sadd_seed: int = 0
    name: str = field(default="listops", init=False)

    def __post_init__(self):
        if self.modulus < 2:
            raise UserError(f"modulus must be >= 2, got {self.modulus}")

    ops = LISTOPS_OPS

    @property
    def n_values(self) -> int:
        return self.modulus

    def value_token(self, v: int) -> str:
        return str(v)

    @cached_property
    def sadd_perm(self) -> np.ndarray:
        # A fixed relabelling pi of 0..n-1; SADD(x) = pi(sum(pi^-1(x_i)) mod n) is a group
        # isomorphic to ADD whose labels no longer follow the numeric order.
        return np.random.default_rng([self.sadd_seed, 0x5ADD]).permutation(self.modulus)

    @cached_property
    def sadd_inverse(self) -> np.ndarray:
        return np.argsort(self.sadd_perm)

    def apply(self, op: str, args: list[int]) -> int:
        n = self.modulus
        if op == "MAX":
            return max(args)
        if op == "MIN":
            return min(args)
        if op == "MED":
            return sorted(args)[len(args) // 2]
        if op == "ADD":
            return sum(args) % n
        if op == "PROD":
            return math.prod(args) % n
        if op == "NADD":
            return sum(a if i % 2 == 0 else -a for i, a in enumerate(args)) % n
        if op == "SADD":
            inner = sum(int(self.sadd_inverse[a]) for a in args) % n
            return int(self.sadd_perm[inner])
        raise UserError(f"operation {op!r} is not a listops operation")

    def sample_leaf(self, op: str, rng: np.random.Generator) -> int:
        return int(rng.integers(self.modulus))


@dataclass(frozen=True)
class Permutations:
    """Elements of S_k, token p<i> = i-th permutation in lexicographic one-line order."""

    degree: int
    name: str = field(default="perm", init=False)

    def __post_init__(self):
        if self.degree < 2:
            raise UserError(f"degree must be >= 2, got {self.degree}")
        if self.degree > 6:
            raise UserError(f"degree {self.degree} gives {math.factorial(self.degree)} tokens; at most 6 is supported")

    ops = PERM_OPS

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
        inversions = sum(1 for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] > p[j])
        return inversions % 2

    def apply(self, op: str, args: list[int]) -> int:
        if op in ("PMUL", "PSUB"):
            out = args[0]
            for a in args[1:]:
                out = self.compose(out, a)  # left to right: (a*b)*c
            return out
        if op == "PMAX":
            return max(args)  # index order is lexicographic order
        if op == "PMIN":
            return min(args)
        if op == "PPAR":
            out = args[0]
            for a in args[1:]:
                out = self.compose(out, a)
            return self.parity(out)  # p0 (identity) when even, p1 (a transposition) when odd
        raise UserError(f"operation {op!r} is not a permutation operation")

    def sample_leaf(self, op: str, rng: np.random.Generator) -> int:
        if op == "PSUB":  # sub-block product: operands drawn from the point stabiliser
            return int(self.stabiliser[rng.integers(len(self.stabiliser))])
        return int(rng.integers(self.n_values))


def make_family(ops: list[str], modulus: int | None = None, degree: int | None = None, sadd_seed: int = 0):
    kind = family_of(ops)
    if kind == "listops":
        if modulus is None:
            raise UserError("listops operations need a modulus")
        return ListOps(modulus=int(modulus), sadd_seed=sadd_seed)
    if degree is None:
        raise UserError("permutation operations need a degree")
    return Permutations(degree=int(degree))


class Vocab:
    """Token strings <-> ids. Depends on the family only, never on the mixture, so that a
    model pretrained on one mixture can be trained on another (transfer, SPEC section 6)."""

    def __init__(self, family):
        self.family = family
        self.tokens = SPECIAL_TOKENS + list(family.ops) + [family.value_token(v) for v in range(family.n_values)]
        self.stoi = {t: i for i, t in enumerate(self.tokens)}
        self.value_offset = len(SPECIAL_TOKENS) + len(family.ops)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str]) -> list[int]:
        try:
            return [self.stoi[t] for t in tokens]
        except KeyError as e:
            raise UserError(f"unknown token {e.args[0]!r}") from None

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def is_value_id(self, i: int) -> bool:
        return self.value_offset <= i < self.value_offset + self.family.n_values
