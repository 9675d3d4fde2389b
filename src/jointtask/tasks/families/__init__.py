"""The task families, by name. A new family is one file beside these and one entry here."""

from __future__ import annotations

from ...errors import UserError
from .base import CLOSE, EOS, EQUALS, OPEN, PAD, SPECIAL_TOKENS, Family, Op, Symmetry, Vocab
from .listops import ListOps
from .permutations import Permutations

FAMILIES: dict[str, type[Family]] = {}
_FAMILY_OF_OP: dict[str, type[Family]] = {}


def register(family: type[Family]) -> type[Family]:
    """Make a family's operations known (operation names are unique across families)."""
    clash = [op for op in family.OPS if _FAMILY_OF_OP.get(op, family) is not family]
    if clash:
        raise ValueError(f"operation {clash[0]} of {family.name} belongs to {_FAMILY_OF_OP[clash[0]].name} already")
    FAMILIES[family.name] = family
    _FAMILY_OF_OP.update(dict.fromkeys(family.OPS, family))
    return family


def unregister(family: type[Family]) -> None:
    FAMILIES.pop(family.name, None)
    for op in family.OPS:
        _FAMILY_OF_OP.pop(op, None)


for _f in (ListOps, Permutations):
    register(_f)


def family_of(ops: list[str]) -> type[Family]:
    """The family whose operations these are; an unknown op or a mix of families is a UserError."""
    if not ops:
        raise UserError("no operations given")
    unknown = [op for op in ops if op not in _FAMILY_OF_OP]
    if unknown:
        raise UserError(f"unknown operation {unknown[0]!r} (known: {', '.join(_FAMILY_OF_OP)})")
    kinds = {_FAMILY_OF_OP[op] for op in ops}
    if len(kinds) > 1:
        raise UserError(f"operations {ops} mix the {' and '.join(sorted(k.name for k in kinds))} families")
    return kinds.pop()


def symmetry_of(op: str) -> Symmetry:
    return _FAMILY_OF_OP[op].OPS[op].symmetry


__all__ = [
    "FAMILIES",
    "Family",
    "register",
    "unregister",
    "Op",
    "Symmetry",
    "Vocab",
    "ListOps",
    "Permutations",
    "family_of",
    "symmetry_of",
    "SPECIAL_TOKENS",
    "PAD",
    "EOS",
    "OPEN",
    "CLOSE",
    "EQUALS",
]
