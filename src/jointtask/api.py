"""The Python API, for notebooks: the same numbers as the command line, as data.

    import jointtask as jt
    df = jt.results("runs/smoke")              # one row per run and target op (results.csv)
    trans = jt.transition(df)                  # P* and P50 with intervals, one row per curve
    rat = jt.ratios(df)                        # joint-benefit ratios with verdicts
    result = jt.train("configs/max-mod10.toml", out="runs/one", overrides={"model.width": 16})
    model = jt.load_model("runs/smoke/runs/<run_id>")
    logits, cache = model.run_with_cache(model.encode("MAX ( 3 1 ) ="))

Bad arguments raise `jt.UserError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from .model import LoopedTransformer
    from .tasks.families import Vocab
    from .train.config import RunConfig


def results(sweep_dir: str | Path) -> "pd.DataFrame":
    """One row per finished run and target op of a sweep (or records) directory: the columns of
    results.csv."""
    from .sweep.results import collect

    return collect(sweep_dir)


def _table(df: "pd.DataFrame | str | Path") -> "pd.DataFrame":
    import pandas as pd

    if isinstance(df, (str, Path)):
        p = Path(df)
        if p.is_dir():
            return results(p) if (p / "plan.json").exists() else pd.read_csv(p / "results.csv")
        if not p.is_file():
            raise UserError(f"{str(p)!r} is neither a results table nor a sweep directory")
        return pd.read_csv(p)
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"expected a results DataFrame or a path, got {type(df).__name__}")
    return df


def transition(
    df: "pd.DataFrame | str | Path", mixture: str | None = None, target: str | None = None, n_boot: int | None = None
) -> "pd.DataFrame":
    """The transitions of a results table (P*, P50, intervals, censoring; `jointtask ratios`'s
    transitions.csv), one row per (mixture, target op), optionally only one mixture or target."""
    from .analysis.tables import transitions
    from .analysis.transition import N_BOOT

    trans, _ = transitions(_table(df), _n_boot(n_boot, N_BOOT))
    for col, want in (("mixture", mixture), ("target_op", target)):
        if want is not None:
            if want not in set(trans[col]):
                raise UserError(f"no curve with {col} {want!r}; have {sorted(set(trans[col]))}")
            trans = trans[trans[col] == want]
    return trans.reset_index(drop=True)


def ratios(df: "pd.DataFrame | str | Path", n_boot: int | None = None) -> "pd.DataFrame":
    """Joint-benefit ratios with their verdicts (`jointtask ratios`'s ratios.csv)."""
    from .analysis.tables import budgets_of, transitions
    from .analysis.tables import ratios as ratio_table
    from .analysis.transition import N_BOOT

    table = _table(df)
    _, fits = transitions(table, _n_boot(n_boot, N_BOOT))
    return ratio_table(fits, budgets_of(table))


def claims(dirs: Sequence[str | Path], n_boot: int | None = None) -> "pd.DataFrame":
    """The claims table (`jointtask claims DIR...`) for result directories named as claims' sources."""
    import io

    import pandas as pd

    from .analysis.claims import claims_table
    from .analysis.transition import N_BOOT

    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    return pd.read_csv(io.StringIO(claims_table([Path(d) for d in dirs], "csv", _n_boot(n_boot, N_BOOT))))


def _n_boot(n_boot: int | None, default: int) -> int:
    if n_boot is None:
        return default
    if not isinstance(n_boot, int) or n_boot < 1:
        raise UserError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    return n_boot


@dataclass
class Model:
    """A trained run's model with its vocabulary (`load_model`)."""

    model: "LoopedTransformer"
    vocab: "Vocab"
    config: "RunConfig"

    def encode(self, text: str | Sequence[str]) -> "torch.Tensor":
        """'MAX ( 3 1 ) =' (tokens separated by spaces, or a list of tokens) -> ids [1, T]."""
        import torch

        tokens = text.split() if isinstance(text, str) else list(text)
        return torch.tensor([self.vocab.encode(tokens)])

    def decode(self, ids) -> list[str]:
        """ids [T] (or [1, T]) -> tokens."""
        import torch

        t = torch.as_tensor(ids)
        return self.vocab.decode(t.reshape(-1).tolist())

    def __call__(self, ids: "torch.Tensor") -> "torch.Tensor":
        import torch

        with torch.no_grad():
            return self.model(ids)

    def run_with_cache(self, ids: "torch.Tensor", names: list[str] | None = None):
        """(logits [B, T, vocab], {hook name: activation}), every hook point or `names`."""
        return self.model.run_with_cache(ids, names)

    def hook_names(self) -> list[str]:
        return sorted(self.model.hook_points())


def load_model(run_dir: str | Path) -> Model:
    """The trained model of a run directory (its config.toml and checkpoint.pt), in eval mode."""
    from .train.config import load_config
    from .train.loop import build_model, load_checkpoint
    from .train.run_dir import CHECKPOINT, CONFIG
    from .tasks.families import Vocab

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file() or not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"{str(run_dir)!r} is not a trained run directory (needs {CONFIG} and {CHECKPOINT})")
    cfg = load_config(run_dir / CONFIG)
    vocab = Vocab(cfg.task.family(cfg.seed))
    model = build_model(cfg, len(vocab))
    model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)["model"])
    return Model(model.eval(), vocab, cfg)


__all__ = ["Model", "UserError", "claims", "load_model", "ratios", "results", "transition"]
