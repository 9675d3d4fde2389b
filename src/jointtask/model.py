"""The looped transformer of SPEC section 2, in one file.

Decoder-only, causal, learned absolute positions. `blocks` distinct pre-LayerNorm blocks
(attention + MLP), the whole stack applied `recurrence` times with shared weights; the
paper's model is blocks=1, recurrence=4. blocks=L, recurrence=1 is the ordinary deep model.

Hook points (identity modules, TransformerLens style) let analyses read or replace
activations without model surgery:
    hook_embed, hook_pos_embed                    token and position embeddings
    passes.{p}.hook_attn_out, passes.{p}.hook_mlp_out   sublayer outputs, before the residual add
    passes.{p}.hook_resid_post                    the residual stream after the pass
where p counts block applications (0 .. blocks*recurrence-1).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

from . import cpu_kernels, segment_attention
from .fused_trunk import embedding_sum, fused_trunk
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


class HookPoint(nn.Identity):
    """An identity whose name marks a place to read or patch activations."""


@dataclass
class Packing:
    """Whole examples packed into rows, for training without padding.

    Tokens are laid out flat ([N] ids, [N, width] activations), group after group; group g holds
    `rows[g]` rows of `widths[g]` tokens. Rows come in a few widths so that a few long examples
    get wide rows without widening every row of the batch. `segment` ([N]) numbers the example
    each token belongs to (-1 for padding); `start` ([N]) is the flat index of the first token of
    its example (a padding token's own index). Attention stays inside an example: on the CPU a
    kernel reads `start` (segment_attention.py, fused_trunk.py); elsewhere SDPA takes `masks()`.
    """

    rows: list[int]
    widths: list[int]
    start: torch.Tensor
    segment: torch.Tensor
    _masks: list[torch.Tensor] | None = None
    _compact: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def compact(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The examples without the padding between them: the flat indices of the non-padding
        tokens ([M]); for each, the index among them of its example's first token (a `start` for
        the M tokens); and for every flat index its index among them ([N], -1 for padding). The
        CPU kernels need no rows, so they skip the padding altogether."""
        if self._compact is None:
            keep = (self.segment >= 0).nonzero().squeeze(1)
            rank = torch.full_like(self.start, -1)
            rank[keep] = torch.arange(len(keep), device=keep.device)
            self._compact = (keep, rank[self.start[keep]], rank)
        return self._compact

    def masks(self) -> list[torch.Tensor]:
        """Per group, [rows, 1, w, w] additive masks (0 or -inf), block-diagonal and causal: no
        example sees another; padding shares segment -1, so it attends to itself, never to an
        example. Built on first use (the CPU kernel needs none)."""
        if self._masks is None:
            self._masks, begin = [], 0
            for n_rows, w in zip(self.rows, self.widths):
                s = self.segment[begin: begin + n_rows * w].view(n_rows, w)
                begin += n_rows * w
                causal = torch.ones(w, w, dtype=torch.bool, device=s.device).tril()
                allowed = (s[:, :, None] == s[:, None, :]) & causal
                self._masks.append(torch.where(allowed, 0.0, float("-inf")).unsqueeze(1))
        return self._masks


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def _attend(self, qkv, rows, T, mask=None):
        C = qkv.shape[-1] // 3
        # strided views, no copies (measured: about 9% off the attention sublayer at one head)
        q, k, v = (t.view(rows, T, self.heads, C // self.heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        # Right padding needs no extra mask: causal attention never looks at later positions.
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(rows, T, C)

    def forward(self, x, packing: Packing | None = None):
        qkv = self.qkv(x)
        if packing is None:  # [B, T, C]
            return self.proj(self._attend(qkv, x.shape[0], x.shape[1]))
        if cpu_kernels.usable(qkv):  # flat [N, C], each token sees its own example only
            return self.proj(segment_attention.segment_attention(qkv, packing.start, self.heads))
        out, start = [], 0  # each group of rows attends on its own, masked
        for rows, T, mask in zip(packing.rows, packing.widths, packing.masks()):
            out.append(self._attend(qkv[start: start + rows * T], rows, T, mask).view(rows * T, -1))
            start += rows * T
        return self.proj(out[0] if len(out) == 1 else torch.cat(out))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width)
        self.out = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width)

    def forward(self, x):
        return self.out(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.width)
        self.attn = Attention(cfg)
        self.ln_mlp = nn.LayerNorm(cfg.width)
        self.mlp = MLP(cfg)


class PassHooks(nn.Module):
    """Hook points of one application of a block (weights are shared, hooks are not)."""

    def __init__(self):
        super().__init__()
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()


class LoopedTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.cfg, self.vocab_size, self.max_len = cfg, vocab_size, max_len
        self.tok_embed = nn.Embedding(vocab_size, cfg.width)
        self.pos_embed = nn.Embedding(max_len, cfg.width)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.passes = nn.ModuleList(PassHooks() for _ in range(cfg.blocks * cfg.recurrence))
        self.ln_final = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith(("attn.proj.weight", "mlp.out.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * len(self.passes)))

    @staticmethod
    def _init(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def residual(self, idx: torch.Tensor, pos: torch.Tensor | None = None, packing: Packing | None = None,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
        """The final residual stream after LayerNorm: [B, T, width] for [B, T] ids, or [N, width]
        for packed examples (flat [N] ids, `pos` the position of each token in its example).
        With `rows` (flat indices into B * T or N), only those tokens' rows: [len(rows), width]."""
        T = idx.shape[-1]
        if pos is None:
            if T > self.max_len:
                raise ValueError(f"sequence of {T} tokens exceeds the model's context of {self.max_len}")
            pos = torch.arange(T, device=idx.device)
        if packing is not None and cpu_kernels.usable(self.tok_embed.weight) and not self._hooks_attached():
            # the same computation with fewer sweeps over memory (fused_trunk.py; measured in
            # docs/performance.md); the hook points are not called there, hence the condition.
            # Padding tokens are left out (the kernels attend by segment, not by row) and their
            # rows of the result are zeros.
            keep, start, rank = packing.compact()
            x = embedding_sum(idx[keep], pos[keep], self.tok_embed.weight, self.pos_embed.weight)
            h = fused_trunk(x, start, self.cfg.heads, self.cfg.recurrence, self.ln_final.eps, self.blocks,
                            self.ln_final)
            if rows is not None:
                return h.index_select(0, rank[rows])
            return h if len(keep) == len(idx) else h.new_zeros(len(idx), h.shape[1]).index_copy(0, keep, h)
        x = self.hook_embed(self.tok_embed(idx)) + self.hook_pos_embed(self.pos_embed(pos))
        p = 0
        for _ in range(self.cfg.recurrence):
            for block in self.blocks:
                hooks = self.passes[p]
                x = x + hooks.hook_attn_out(block.attn(block.ln_attn(x), packing))
                x = x + hooks.hook_mlp_out(block.mlp(block.ln_mlp(x)))
                x = hooks.hook_resid_post(x)
                p += 1
        x = self.ln_final(x)
        return x if rows is None else x.reshape(-1, x.shape[-1]).index_select(0, rows)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.residual(idx))

    def _hooks_attached(self) -> bool:
        from torch.nn.modules import module as m

        if m._global_forward_hooks or m._global_forward_pre_hooks:
            return True
        return any(h._forward_hooks or h._forward_pre_hooks for h in self.hook_points().values())

    def hook_points(self) -> dict[str, HookPoint]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, callable]]):
        """Temporarily attach `fn(activation) -> activation or None` at named hook points."""
        points = self.hook_points()
        handles = []
        try:
            for name, fn in fwd_hooks:
                if name not in points:
                    raise KeyError(f"no hook point {name!r}; have {sorted(points)}")
                handles.append(points[name].register_forward_hook(lambda _m, _i, out, fn=fn: fn(out)))
            yield self
        finally:
            for h in handles:
                h.remove()

    def number_of_parameters(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        emb = self.tok_embed.weight.numel() + self.pos_embed.weight.numel() + self.head.weight.numel()
        return {"params": total, "params_non_embedding": total - emb}
