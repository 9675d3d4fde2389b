"""What every task family provides, and the vocabulary built from it.

A family is a set of values (numbers mod n, permutations of k points) with operations on lists
of them. It is one file: a subclass of `Family` whose `OPS` table gives, per operation, how to
apply it and which reorderings of its arguments leave its value unchanged. Expression trees,
chains of thought, splits and the vocabulary are built on top, the same way for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import numpy as np

from ...errors import UserError

SPECIAL_TOKENS = ["<pad>", "<eos>", "(", ")", "="]
PAD, EOS, OPEN, CLOSE, EQUALS = range(5)

# Which reorderings of its arguments leave an operation's value unchanged, for every input (the
# held-out unit of the split is an expression up to these): "multiset" any order; "alternating"
# any order within the odd-position arguments and within the even-position ones (x1 - x2 + x3);
# "ordered" none (group products).
Symmetry = Literal["multiset", "alternating", "ordered"]


@dataclass(frozen=True)
class Op:
    apply: Callable[..., int]  # (family, args: list[int]) -> value
    symmetry: Symmetry


class Family:
    """A task family. Subclasses set the class attributes and implement `n_values`,
    `value_token` and `labellings`; `size` is the one number that sizes the family (the modulus,
    the degree), named by `parameter` as in the task config."""

    name: ClassVar[str]  # "listops"
    parameter: ClassVar[str]  # the TaskConfig field holding `size`: "modulus"
    OPS: ClassVar[dict[str, Op]]  # in vocabulary order

    def __init__(self, size: int, seed: int = 0):
        self.check(size)
        self.size, self.seed = int(size), seed

    @classmethod
    def check(cls, size: int) -> None:
        """Raise UserError when `size` is not a valid size of this family."""

    @property
    def n_values(self) -> int:
        raise NotImplementedError

    def value_token(self, v: int) -> str:
        raise NotImplementedError

    def apply(self, op: str, args: list[int]) -> int:
        if op not in self.OPS:
            raise UserError(f"operation {op!r} is not a {self.name} operation")
        return int(self.OPS[op].apply(self, args))

    def sample_leaf(self, op: str, rng: np.random.Generator) -> int:
        """An argument drawn for `op` (uniform over the values unless a family says otherwise)."""
        return int(rng.integers(self.n_values))

    def labellings(self) -> dict[str, np.ndarray]:
        """Named partitions of the values that embeddings may reveal (docs/definitions.md, Embeddings)."""
        raise NotImplementedError

    def divisors(self) -> list[int]:
        """Moduli k at which residues of the values are compared (the compatibility score)."""
        return []


class Vocab:
    """Token strings <-> ids. Depends on the family only, never on the mixture, so that a
    model pretrained on one mixture can be trained on another (transfer)."""

    def __init__(self, family: Family):
        self.family = family
        self.tokens = SPECIAL_TOKENS + list(family.OPS) + [family.value_token(v) for v in range(family.n_values)]
        self.stoi = {t: i for i, t in enumerate(self.tokens)}
        self.value_offset = len(SPECIAL_TOKENS) + len(family.OPS)

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
