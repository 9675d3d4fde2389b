"""The config of one training run: TOML file + `--set key=value` overrides, strictly validated."""

from __future__ import annotations

from collections.abc import Sequence

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Optional

import tomli_w
from pydantic import ValidationError, model_validator

from .. import __version__
from ..errors import UserError
from ..fileio import stable_hash
from ..model_config import ModelConfig
from ..schema import Strict, validation_message
from ..tasks.config import DataConfig, TaskConfig, check_protocol


class TrainConfig(Strict):
    steps: int = 5000
    batch_size: int = 256  # whole examples per step, each padded on its own
    lr: float = 2e-3  # peak learning rate
    schedule: Literal["onecycle", "exponential", "constant"] = "onecycle"
    warmup_fraction: float = 0.1  # of `steps`, linear warm-up (onecycle)
    final_lr: float = 2e-5  # reached at the last step (onecycle: cosine; exponential: geometric)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    loss_on: Literal["answer", "all"] = "answer"  # answer: tokens after the first '=' only
    # examples: each example padded on its own; windows: the naive baseline, `batch_size`
    # windows of `window` tokens cut from the concatenated samples (loss_on must be "all")
    packing: Literal["examples", "windows"] = "examples"
    pack: int = 64  # examples: pack them into rows of this many tokens (2x, 4x.. for longer ones) when padding would waste >1/3; 0: never
    window: int = 128
    eval_every: int = 500
    checkpoint_every: int = 500
    early_stop: bool = True  # stop once every target op is at `ceiling` validation accuracy
    ceiling: float = 0.99
    patience: Optional[int] = None  # also stop after this many evals with no held-out gain
    min_delta: float = 0.01
    threads: int = 1  # torch threads; parallelism comes from one process per core
    device: str = "cpu"

    @model_validator(mode="after")
    def _check(self):
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "final_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train.weight_decay and train.grad_clip must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.ceiling <= 1:
            raise ValueError(f"train.ceiling must be in (0, 1], got {self.ceiling}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"train.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.packing == "windows" and self.loss_on != "all":
            raise ValueError("train.packing = 'windows' needs train.loss_on = 'all'")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"train.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        return self


class RunConfig(Strict):
    seed: int = 0  # >= 0
    task: TaskConfig = TaskConfig(ops=["MAX"], modulus=5)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _seed(self):
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        try:
            check_protocol(self.task, self.data)
        except UserError as e:
            raise ValueError(str(e)) from None
        return self

    def run_id(self) -> str:
        """Content hash of everything that determines the run's result (device and threads
        change speed, not the result, so they are left out; so is how often it evaluates, unless
        an evaluation can stop it)."""
        spec = self.model_dump(mode="json")
        t = self.train
        for k in ("threads", "device", "checkpoint_every") + (
            () if t.early_stop or t.patience is not None else ("eval_every",)
        ):
            spec["train"].pop(k)
        return stable_hash({"config": spec, "version": __version__})

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, booleans, lists, quoted strings); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise UserError(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = parse_value(value.strip())


def config_from_dict(tree: dict, overrides: Sequence[str] = ()) -> RunConfig:
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for o in overrides:
        apply_override(tree, o)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise UserError(f"invalid config: {validation_message(e)}") from None


def load_toml(path: str | Path, what: str = "config") -> dict:
    """A TOML file as a dict; a missing, malformed or empty file is a one-line error naming `what`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {str(path)!r} not found")
    try:
        tree = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"malformed {what} {str(path)!r}: {e}") from None
    if not tree:
        raise UserError(f"{what} file {str(path)!r} is empty (an empty file would silently train the defaults)")
    return tree


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    return config_from_dict(load_toml(path), overrides)
