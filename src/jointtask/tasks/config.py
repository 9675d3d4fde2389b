"""Validated descriptions of a task and of the data drawn from it."""

from __future__ import annotations

import functools
from typing import Literal, Optional, Union

from pydantic import field_validator, model_validator

from ..errors import UserError
from ..schema import Strict, validation_message
from .families import Family, family_of


class TaskConfig(Strict):
    ops: list[str] = ["MAX"]
    modulus: Optional[int] = None  # listops family
    degree: Optional[int] = None  # permutation family (S_degree)
    max_depth: int = 2  # levels of nesting, the root counting as one
    min_args: int = 2
    max_args: int = 3
    p_nest: float = 0.25
    sadd_seed: Optional[int] = None  # the SADD relabelling; None: the run's seed

    @field_validator("ops", mode="before")
    @classmethod
    def _split_ops(cls, v):
        return split_ops(v) if isinstance(v, str) else [str(s).strip().upper() for s in v]

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"operation listed twice in {self.ops}")
        fam = family_of(self.ops)
        size = getattr(self, fam.parameter)
        if size is None:
            raise ValueError(f"task.{fam.parameter} is required for {fam.name} operations")
        try:
            fam.check(size)
        except UserError as e:
            raise ValueError(str(e)) from None
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")
        if not 1 <= self.min_args <= self.max_args:
            raise ValueError(f"need 1 <= min_args <= max_args, got {self.min_args}, {self.max_args}")
        if not 0.0 <= self.p_nest <= 1.0:
            raise ValueError(f"p_nest must be in [0, 1], got {self.p_nest}")
        return self

    @property
    def mixture(self) -> str:
        return "+".join(self.ops)

    def family(self, seed: int = 0) -> Family:
        """The task's family; `seed` draws any random labelling (SADD's) unless sadd_seed fixes it.
        Built once per (ops, size, labelling) and shared: a family is read-only."""
        fam = family_of(self.ops)
        return _family(fam, getattr(self, fam.parameter), self.sadd_seed if self.sadd_seed is not None else seed)

    def with_ops(self, ops: list[str]) -> "TaskConfig":
        return self.model_copy(update={"ops": list(ops)})


@functools.lru_cache(maxsize=64)
def _family(fam: type, size: int, seed: int) -> Family:
    return fam(size, seed)


class DataConfig(Strict):
    per_n: int = 2000  # training samples per value of n (n = modulus, or |S_k|)
    # How held-out samples are chosen (docs/definitions.md, "Splits"). "paper": the paper group's
    # rule, held-out ordered tuples of max_args distinct values; "strict": held-out expressions
    # up to the symmetries of their operations.
    protocol: Literal["paper", "strict"] = "paper"
    test_fraction: float = 0.2  # strict: share of expressions (by hash) in test; paper: test's share of held-out tuples, against validation's
    validation_fraction: float = 0.1  # strict: and in validation (early stopping, model selection)
    heldout_rate: float = 0.05  # paper: tuples drawn, as a share of n ** max_args
    heldout_seed: Union[int, Literal["run"]] = 0  # paper: seed of the held-out draw; "run": each run's seed
    eval_count: int = 400  # distinct expressions per validation and per test set (fewer if the split holds fewer)
    eval_train_count: int = 200  # distinct training expressions per op, to see memorisation
    eval_ops: Optional[list[str]] = None  # ops with their own eval sets; None: every op of the family

    @model_validator(mode="after")
    def _check(self):
        for name in ("per_n", "eval_count", "eval_train_count"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_count < 1:
            raise ValueError(f"data.eval_count must be >= 1, got {self.eval_count}")
        if not 0.0 < self.heldout_rate < 1.0:
            raise ValueError(f"data.heldout_rate must be in (0, 1), got {self.heldout_rate}")
        if self.heldout_seed != "run" and self.heldout_seed < 0:
            raise ValueError(f"data.heldout_seed must be >= 0, got {self.heldout_seed}")
        if not (
            0.0 < self.test_fraction < 1.0
            and 0.0 < self.validation_fraction < 1.0
            and self.test_fraction + self.validation_fraction < 1.0
        ):
            raise ValueError(
                f"data.test_fraction and data.validation_fraction must be in (0, 1) and sum below 1, "
                f"got {self.test_fraction}, {self.validation_fraction}"
            )
        return self


def check_protocol(task: TaskConfig, data: DataConfig) -> None:
    """Raise UserError when the data's split protocol cannot apply to the task: the paper
    protocol holds out tuples of max_args distinct values, so the family needs that many."""
    if data.protocol == "paper":
        n = task.family().n_values
        if not 2 <= task.max_args <= n:
            raise UserError(
                f"data.protocol 'paper' holds out tuples of max_args distinct values: needs 2 <= max_args <= "
                f"{n} (the values of the task), got max_args {task.max_args}; use data.protocol = 'strict'"
            )


def split_ops(text: str) -> list[str]:
    """'add+max', 'ADD,MAX' -> ['ADD', 'MAX']: the one spelling rule for a list of operations. An
    empty name ('ADD++MAX', 'ADD+') is refused."""
    parts = [s.strip().upper() for s in text.replace(",", "+").split("+")]
    if any(not p for p in parts):
        raise UserError(f"malformed list of operations {text!r}: an empty name between separators")
    return parts


def parse_ops(text: str) -> list[str]:
    """split_ops, refusing unknown operations and mixed families."""
    ops = split_ops(text)
    family_of(ops)
    return ops


__all__ = [
    "TaskConfig",
    "DataConfig",
    "check_protocol",
    "Strict",
    "UserError",
    "validation_message",
    "parse_ops",
    "split_ops",
]
