"""The looped transformer's configuration and its parameter count, apart from model.py so that
configs validate without importing torch (a bad config fails in a fraction of a second)."""

from __future__ import annotations

from pydantic import model_validator

from .schema import Strict


class ModelConfig(Strict):
    width: int = 32  # n_embed
    heads: int = 1
    recurrence: int = 4  # times the block stack is applied, with shared weights
    blocks: int = 1  # distinct blocks in the stack
    mlp_ratio: int = 4

    @model_validator(mode="after")
    def _check(self):
        for name in ("width", "heads", "recurrence", "blocks", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"model.width {self.width} is not divisible by model.heads {self.heads}")
        return self


def count_params(cfg: ModelConfig, vocab_size: int, max_len: int) -> dict[str, int]:
    """Closed form of the parameter count (checked against numel in the tests).

    d = width, m = mlp_ratio, V = vocab, T = context, L = distinct blocks:
      token embedding V*d, positions T*d, output head d*V (no bias), final LayerNorm 2d,
      per block: two LayerNorms 4d, attention 4d^2 + 4d (qkv and projection, with biases),
      MLP 2*m*d^2 + m*d + d.
    Non-embedding: everything except the token embedding, the positions and the output head
    (the parts that scale with the vocabulary or the context, not with the block).
    """
    d, m, V, T, L = cfg.width, cfg.mlp_ratio, vocab_size, max_len, cfg.blocks
    block = 4 * d + (4 * d * d + 4 * d) + (2 * m * d * d + m * d + d)
    total = V * d + T * d + L * block + 2 * d + d * V
    return {"params": total, "params_non_embedding": total - V * d - T * d - d * V}
