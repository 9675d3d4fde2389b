"""Experiment files: mixtures x widths x seeds over one base run config.

```toml
name = "smoke"
[sweep]
mixtures = ["MAX", "MAX+MIN"]     # each mixture is trained; "+" joins operations
targets = ["MAX"]                 # ops whose test accuracy is tabulated (default: each mixture's ops)
widths = [8, 16]                  # or {min = 8, max = 256, num = 6} for a log range, or a grid per
                                  # mixture: widths = { "MAX" = [4, 8], "MAX+MIN" = [8, 16] }
seeds = [0, 1]                    # or an integer n for 0..n-1, or per mixture: seeds = { "MAX" = 16, "MAX+MIN" = 8 }
more_seeds = { "MAX" = { widths = [8], seeds = 4 } }  # optional: more seeds at some widths of a curve
budget = "steps"                  # "steps": every run trains base.train.steps; "exposure": a mixture
                                  # of k ops trains k x steps, so it sees each op about as often as alone
[base]                            # a run config (see configs/); task.ops, model.width and seed are set per run
task = { modulus = 5, max_depth = 1 }
train = { steps = 200 }
```
"""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ValidationError, field_validator, model_serializer, model_validator

from ..errors import UserError
from ..schema import Strict, validation_message
from ..tasks.families import family_of
from ..tasks.config import split_ops
from ..train.config import RunConfig, apply_override, config_from_dict, load_toml
from ..train.run_dir import transfer_run_id

Kind = Literal["mixture", "control", "transfer"]


@dataclass(frozen=True)
class Label:
    """How a planned run is named in plan.json and in the `mixture` column of results tables:
    'ADD+MAX' a mixture of the sweep; 'ADD@9000' trained for another step budget (a control);
    'MAX>ADD' pretrained on MAX, then trained on ADD (transfer). The one parser of these names."""

    ops: tuple[str, ...]
    steps: Optional[int] = None
    pretrain: Optional[tuple[str, ...]] = None

    @classmethod
    def parse(cls, text: str) -> "Label":
        pre, _, rest = text.rpartition(">")
        mixture, _, steps = rest.partition("@")
        try:
            return cls(tuple(split_ops(mixture)), int(steps) if steps else None, tuple(split_ops(pre)) if pre else None)
        except ValueError:
            raise UserError(f"malformed run label {text!r} (e.g. 'ADD+MAX', 'ADD@9000', 'MAX>ADD')") from None

    def __str__(self) -> str:
        s = "+".join(self.ops) + (f"@{self.steps}" if self.steps is not None else "")
        return f"{'+'.join(self.pretrain)}>{s}" if self.pretrain else s

    @property
    def kind(self) -> Kind:
        return "transfer" if self.pretrain else "control" if self.steps is not None else "mixture"


def _no_duplicates(name: str, values: list) -> list:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{name} lists {v!r} twice")
        seen.add(v)
    return values


def seed_range(seeds: Union[list[int], int]) -> list[int]:
    """Seeds given as a number n (0..n-1) or a list, as a sorted list."""
    return list(range(seeds)) if isinstance(seeds, int) else sorted(seeds)


class LogRange(Strict):
    min: int
    max: int
    num: int


class MoreSeeds(Strict):
    """More seeds at some widths of one curve: `seeds` (n for 0..n-1, or a list) replace the
    mixture's seeds at `widths`, and hold all of them, so that the curve's other runs stay."""

    widths: list[int]
    seeds: Union[list[int], int]

    def seed_list(self) -> list[int]:
        return seed_range(self.seeds)


class TransferSpec(Strict):
    """Pretrain on `pretrain` for `pretrain_steps`, then train on the sweep's mixtures. Planned
    beside each transferred run ('A>B'): B from scratch for the same steps ('B') and for the
    pretraining steps added ('B@total')."""

    pretrain: str
    pretrain_steps: int
    # where the pretrained runs and their controls go (default: every width and seed of the
    # mixture): a grid placed around the transfer's own transition, while the scratch curve keeps
    # its grid (one shared with other experiments)
    widths: Optional[list[int]] = None
    seeds: Optional[Union[list[int], int]] = None

    @model_validator(mode="after")
    def _check(self):
        if self.widths is not None and (not self.widths or min(self.widths) < 1):
            raise ValueError("sweep.transfer.widths must hold positive widths")
        _no_duplicates("sweep.transfer.widths", self.widths or [])
        if isinstance(self.seeds, list):
            _no_duplicates("sweep.transfer.seeds", self.seeds)
        if self.seeds is not None and (not self.seed_list() or min(self.seed_list()) < 0):
            raise ValueError("sweep.transfer.seeds must hold seeds >= 0")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        for k in ("widths", "seeds"):  # absent when unused: experiments written without them read the same
            if out.get(k) is None:
                out.pop(k, None)
        return out

    def seed_list(self) -> list[int]:
        return seed_range(self.seeds or [])


class SweepSpec(Strict):
    mixtures: list[str]
    targets: Optional[list[str]] = None
    # one grid for every mixture, or a grid per mixture (a table keyed by the mixtures), so that
    # each curve has widths close together around its own transition
    widths: Union[list[int], LogRange, dict[str, Union[list[int], LogRange]]]
    # one set for every mixture, or a set per mixture (a noisy curve may need more seeds)
    seeds: Union[list[int], int, dict[str, Union[list[int], int]]] = 1
    # more seeds at some widths of a curve (a table keyed by mixtures): where its mean accuracy is
    # to be told from the learned level, without paying for them at every width
    more_seeds: dict[str, MoreSeeds] = {}
    # "steps": equal compute for every mixture (a k-op mixture sees its target in ~1/k of its
    # examples); "exposure": k x the steps, so the target is seen about as often as alone
    budget: Literal["steps", "exposure"] = "steps"
    transfer: Optional[TransferSpec] = None

    @field_validator("mixtures")
    @classmethod
    def _mixtures(cls, v):
        if not v:
            raise ValueError("sweep.mixtures is empty")
        out = []
        for m in v:
            ops = split_ops(m)
            family_of(ops)
            out.append("+".join(ops))
        _no_duplicates("sweep.mixtures", out)
        return out

    @field_validator("widths")
    @classmethod
    def _widths(cls, v):
        return {"+".join(split_ops(k)): g for k, g in v.items()} if isinstance(v, dict) else v

    @field_validator("seeds", "more_seeds")
    @classmethod
    def _seeds(cls, v):
        return {"+".join(split_ops(k)): g for k, g in v.items()} if isinstance(v, dict) else v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v):
        if v is None:
            return None
        return _no_duplicates("sweep.targets", [t.strip().upper() for t in v])

    @model_validator(mode="after")
    def _check(self):
        if self.targets is not None:
            family_of(self.targets + self.mixtures[0].split("+"))
        if isinstance(self.widths, dict):
            if set(self.widths) != set(self.mixtures):
                raise ValueError(
                    f"sweep.widths per mixture must name exactly the mixtures {self.mixtures}, got {sorted(self.widths)}"
                )
        for m in self.mixtures:
            if not self.width_list(m) or min(self.width_list(m)) < 1:
                raise ValueError("sweep.widths must hold positive widths")
        if isinstance(self.seeds, dict) and set(self.seeds) != set(self.mixtures):
            raise ValueError(
                f"sweep.seeds per mixture must name exactly the mixtures {self.mixtures}, got {sorted(self.seeds)}"
            )
        for m in self.mixtures:
            if not self.seed_list(m):
                raise ValueError("sweep.seeds is empty")
            if min(self.seed_list(m)) < 0:
                raise ValueError(f"sweep.seeds must be >= 0, got {min(self.seed_list(m))}")
        for given in self.seeds.values() if isinstance(self.seeds, dict) else [self.seeds]:
            if isinstance(given, list):
                _no_duplicates("sweep.seeds", given)
        for grid in self.widths.values() if isinstance(self.widths, dict) else [self.widths]:
            if isinstance(grid, list):
                _no_duplicates("sweep.widths", grid)
        for m, more in self.more_seeds.items():
            if m not in self.mixtures:
                raise ValueError(f"sweep.more_seeds names {m!r}, not one of the mixtures {self.mixtures}")
            _no_duplicates(f"sweep.more_seeds.{m}.widths", more.widths)
            if isinstance(more.seeds, list):
                _no_duplicates(f"sweep.more_seeds.{m}.seeds", more.seeds)
            if not set(more.widths) <= set(self.width_list(m)):
                raise ValueError(
                    f"sweep.more_seeds.{m}.widths {more.widths} are not all among its widths {self.width_list(m)}"
                )
            if not set(self.seed_list(m)) <= set(more.seed_list()):
                raise ValueError(
                    f"sweep.more_seeds.{m}.seeds must hold the mixture's seeds {self.seed_list(m)}, got {more.seed_list()}"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        if not self.more_seeds:  # absent when unused: experiments written without it read the same
            out.pop("more_seeds", None)
        return out

    def width_list(self, mixture: str | None = None) -> list[int]:
        """The widths of one mixture, or (None) of all of them together."""
        out: set[int] = set()
        for g in _given(self.widths, mixture):
            if isinstance(g, LogRange):
                if g.num < 1 or g.min < 1 or g.max < g.min:
                    raise ValueError("sweep.widths range needs 1 <= min <= max and num >= 1")
                out |= {int(round(x)) for x in np.geomspace(g.min, g.max, g.num)}
            else:
                out |= set(g)
        return sorted(out)

    def seed_list(self, mixture: str | None = None) -> list[int]:
        """The seeds of one mixture at every width, or (None) of all of them together."""
        out: set[int] = set()
        for g in _given(self.seeds, mixture):
            out |= set(seed_range(g))
        return sorted(out)

    def seeds_at(self, mixture: str, width: int) -> list[int]:
        """The seeds of one mixture at one width (more of them where `more_seeds` says so)."""
        more = self.more_seeds.get(mixture)
        return more.seed_list() if more and width in more.widths else self.seed_list(mixture)


def _given(value, mixture: str | None) -> list:
    """A sweep field given once or per mixture (a table keyed by the mixtures): what it gives one
    mixture, or (None) every mixture, as a list of the values given."""
    if not isinstance(value, dict):
        return [value]
    return [value[mixture]] if mixture is not None else list(value.values())


class Experiment(BaseModel):
    name: str
    sweep: SweepSpec
    base: dict = {}

    model_config = {"extra": "forbid"}


class PlannedRun(BaseModel):
    run_id: str
    mixture: str  # its Label
    kind: Kind
    width: int
    seed: int
    targets: list[str]
    config: RunConfig
    pretrain: Optional["PlannedRun"] = None  # for transfer: the run whose weights start this one


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    tree = load_toml(path, "experiment")
    tree.setdefault("name", Path(path).stem)
    for o in overrides:  # --set base.train.steps=100 or sweep.seeds=3
        apply_override(tree, o)
        key = o.split("=", 1)[0].strip()
        transfer = tree.get("sweep", {}).get("transfer")
        if key in ("sweep.widths", "sweep.seeds") and isinstance(transfer, dict):
            transfer.pop(key.split(".")[1], None)  # one grid given for every curve: the transfer's too
    return experiment_from_dict(tree)


def experiment_from_dict(tree: dict) -> Experiment:
    try:
        exp = Experiment.model_validate(tree)
    except ValidationError as e:
        raise UserError(f"invalid experiment: {validation_message(e)}") from None
    plan(exp)  # validates every run's config up front
    return exp


def _run_config(
    exp: Experiment,
    ops: list[str],
    width: int,
    seed: int,
    targets: list[str],
    steps: int | None = None,
    early_stop: bool | None = None,
) -> RunConfig:
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in exp.base.items()}
    tree["seed"] = seed
    tree["task"] = {**tree.get("task", {}), "ops": ops}
    tree["model"] = {**tree.get("model", {}), "width": width}
    tree["data"] = {**tree.get("data", {}), "eval_ops": list(dict.fromkeys(targets + ops))}
    if steps is not None:
        tree["train"] = {**tree.get("train", {}), "steps": steps}
    if early_stop is not None:
        tree["train"] = {**tree.get("train", {}), "early_stop": early_stop}
    try:
        return config_from_dict(tree)
    except UserError as e:
        raise UserError(f"{'+'.join(ops)} width {width} seed {seed}: {e}") from None


def planned_run(
    exp: Experiment,
    label: Label,
    width: int,
    seed: int,
    targets: list[str],
    steps: int | None = None,
    pretrain: PlannedRun | None = None,
    early_stop: bool | None = None,
) -> PlannedRun:
    """One run of the experiment: its label's ops trained at `width` with `seed` (for `steps`, when
    given), named by the hash of its config (and of its pretraining run's, for a transfer)."""
    cfg = _run_config(exp, list(label.ops), width, seed, targets, steps=steps, early_stop=early_stop)
    run_id = transfer_run_id(cfg.run_id(), pretrain.run_id) if pretrain else cfg.run_id()
    return PlannedRun(
        run_id=run_id,
        mixture=str(label),
        kind=label.kind,
        width=width,
        seed=seed,
        targets=targets,
        config=cfg,
        pretrain=pretrain,
    )


def _transfer_seeds(s: SweepSpec, mixture: str, width: int, scratch: list[int], widths: list[int]) -> list[int]:
    """The seeds of the transferred runs at one width: none off the transfer's own `widths` (where
    it has them); its own seeds, or else the scratch curve's (the mixture's where that has no run)."""
    t = s.transfer
    assert t is not None
    if widths and width not in widths:
        return []
    return t.seed_list() if t.seeds is not None else scratch or s.seed_list(mixture)


def plan(exp: Experiment, widths: list[int] | None = None) -> list[PlannedRun]:
    """Every run of the experiment, each named by the hash of its full config: each mixture; with
    budget "exposure", each target alone for the mixture's steps ('ADD@9000'); with a transfer,
    the pretraining run, the run started from it ('MAX>ADD') and B from scratch for the steps of
    both ('ADD@4500')."""
    runs = []
    s = exp.sweep
    for mixture in s.mixtures:
        ops = tuple(split_ops(mixture))
        targets = s.targets or list(ops)
        own = widths or s.width_list(mixture)  # `widths`: the adaptive search's, for every curve
        moved = s.transfer.widths if s.transfer and s.transfer.widths and not widths else []
        for width in sorted(set(own) | set(moved)):
            scratch = s.seeds_at(mixture, width) if width in own else []
            transferred = _transfer_seeds(s, mixture, width, scratch, moved) if s.transfer else []
            for seed in sorted(set(scratch) | set(transferred)):
                base_steps = _run_config(exp, list(ops), width, seed, targets).train.steps
                steps = len(ops) * base_steps if s.budget == "exposure" else None
                if seed in scratch:
                    runs.append(planned_run(exp, Label(ops), width, seed, targets, steps))
                if seed in scratch and steps is not None and len(ops) > 1:  # each target alone for the same steps
                    runs += [planned_run(exp, Label((t,), steps), width, seed, [t], steps) for t in targets if t in ops]
                if s.transfer and seed in transferred:  # the run started from a model pretrained on another mixture
                    pops = tuple(split_ops(s.transfer.pretrain))
                    pre = planned_run(
                        exp, Label(pops), width, seed, targets, s.transfer.pretrain_steps, early_stop=False
                    )
                    runs.append(planned_run(exp, Label(ops, pretrain=pops), width, seed, targets, steps, pre))
                    # and from scratch with the pretraining steps added: the same total compute
                    total = s.transfer.pretrain_steps + (steps or base_steps)
                    runs.append(planned_run(exp, Label(ops, total), width, seed, targets, total))
    unique = {}  # a control shared by mixtures of the same size is planned once
    for r in runs:
        unique.setdefault(r.run_id, r)
    return list(unique.values())
