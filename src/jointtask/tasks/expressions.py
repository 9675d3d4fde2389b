"""Expression trees in prefix notation and their chain of thought.

A tree is `(op, [arg, ...])`; an argument is a value (int) or another tree. The chain of
thought rewrites the expression by replacing its leftmost operation whose arguments are
all values with its result, until one value remains.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from .families import symmetry_of

Tree = Union[int, tuple]


def random_tree(
    family, ops: list[str], rng: np.random.Generator, depth: int, min_args: int, max_args: int, p_nest: float
) -> tuple:
    """Root op uniform over `ops`; each argument is a nested tree with probability `p_nest`
    while `depth` (levels, the root counting as one) allows, else a leaf value."""
    op = ops[int(rng.integers(len(ops)))]
    n_args = int(rng.integers(min_args, max_args + 1))
    args: list[Tree] = []
    for _ in range(n_args):
        if depth > 1 and rng.random() < p_nest:
            args.append(random_tree(family, ops, rng, depth - 1, min_args, max_args, p_nest))
        else:
            args.append(family.sample_leaf(op, rng))
    return (op, args)


def to_tokens(tree: Tree, family) -> list[str]:
    if isinstance(tree, int):
        return [family.value_token(tree)]
    op, args = tree
    out = [op, "("]
    for a in args:
        out += to_tokens(a, family)
    out.append(")")
    return out


def reduce_leftmost(tree: tuple, family) -> Tree:
    """One chain-of-thought step. The first nested argument holds the leftmost reducible
    operation (its tokens come before those of any later argument)."""
    op, args = tree
    for i, a in enumerate(args):
        if not isinstance(a, int):
            return (op, args[:i] + [reduce_leftmost(a, family)] + args[i + 1 :])
    return family.apply(op, args)


def chain_of_thought(tree: Tree, family) -> list[str]:
    """Tokens of the whole sample: expression = step = ... = answer <eos>."""
    tokens = to_tokens(tree, family)
    while not isinstance(tree, int):
        tree = reduce_leftmost(tree, family)
        tokens += ["="] + to_tokens(tree, family)
    return tokens + ["<eos>"]


def canonical(tree: Tree, up_to_symmetry: bool = True) -> str:
    """The expression up to the symmetries of its operations (their `Op.symmetry`), bottom-up:
    two trees have the same canonical form exactly when one is a reordering of the other's
    arguments that no operation can tell apart. With `up_to_symmetry` False: the expression as
    written, in the same notation."""
    if isinstance(tree, int):
        return str(tree)
    op, args = tree
    parts = [canonical(a, up_to_symmetry) for a in args]
    kind = symmetry_of(op) if up_to_symmetry else "ordered"
    if kind == "multiset":
        parts = sorted(parts)
    elif kind == "alternating":
        parts = sorted(parts[0::2]) + ["|"] + sorted(parts[1::2])
    return f"{op}({' '.join(parts)})"


def evaluated(tree: Tree, family) -> set[str]:
    """Canonical forms of every expression a sample of `tree` evaluates: each operation node of
    the prompt and of every chain-of-thought step (the steps are new expressions)."""
    out: set[str] = set()

    def nodes(t):
        if not isinstance(t, int):
            out.add(canonical(t))
            for a in t[1]:
                nodes(a)

    while not isinstance(tree, int):
        nodes(tree)
        tree = reduce_leftmost(tree, family)
    return out
