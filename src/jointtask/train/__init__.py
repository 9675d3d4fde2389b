"""Training: one run from a config (SPEC section 3)."""

from .config import RunConfig, TrainConfig, config_from_dict, load_config
from .evaluate import accuracy, greedy_decode
from .loop import build_model, load_checkpoint, train_run

__all__ = [
    "RunConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "accuracy",
    "greedy_decode",
    "build_model",
    "load_checkpoint",
    "train_run",
]
