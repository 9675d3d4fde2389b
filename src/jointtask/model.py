"""The looped transformer, in one file, in plain PyTorch.

Decoder-only, causal, learned absolute positions. `blocks` distinct pre-LayerNorm blocks
(attention + MLP), the whole stack applied `recurrence` times with shared weights; the
paper's model is blocks=1, recurrence=4. blocks=L, recurrence=1 is the ordinary deep model.

Hook points (TransformerLens names and signature: `fn(activation, hook)` returns a replacement
or None) let analyses read or patch activations without model surgery. p counts block
applications (0 .. blocks*recurrence-1); weights are shared between passes, hooks are not:
    hook_embed, hook_pos_embed          token and position embeddings       [B, T, d]
    passes.{p}.hook_resid_pre           the residual stream entering pass p [B, T, d]
    passes.{p}.attn.hook_pattern        attention probabilities             [B, heads, T, T]
    passes.{p}.hook_attn_out            attention output, before the add   [B, T, d]
    passes.{p}.hook_mlp_out             MLP output, before the add          [B, T, d]
    passes.{p}.hook_resid_post          the residual stream after pass p    [B, T, d]
(Packed batches have [N, d] in place of [B, T, d]. When only some tokens' outputs are asked for,
as in training and decoding, the last pass's three hooks after attention see only those.)
Attention runs through `F.scaled_dot_product_attention`, which never forms the pattern; it is
formed (and hook_pattern called) only inside a `hooks(...)` block that names a pattern hook.

Stacked models: the same code runs K models of one shape at once (train/cohort.py) when every
weight carries a leading model dimension, [K, ...] in place of [...] (`stacked(models)` builds them;
`torch.func.functional_call` swaps them in). Ids are then [K, B, T], activations [K, B, T, d] (hooks
see those), and `at` is [K, A], flat indices into each model's B * T.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from .model_config import ModelConfig, count_params  # noqa: F401  (the model's config, kept torch-free)


class Linear(nn.Module):
    """x W^T + b: weight [out, in] and bias [out] (as nn.Linear), or stacked, [K, out, in] and
    [K, out] with inputs [K, ..., in]."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None

    def forward(self, x):
        if self.weight.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        K, lead = x.shape[0], x.shape[1:-1]
        return _StackedLinear.apply(x.reshape(K, -1, x.shape[-1]), self.weight, self.bias).view(K, *lead, -1)


class _StackedLinear(torch.autograd.Function):
    """x w^T + b for K models: x [K, N, i], w [K, o, i], b [K, o] or None -> [K, N, o].

    The weight's gradient is a sum over N, thousands of tokens, into a tiny [o, i] matrix: as one
    matrix product per model it is K long serial reductions, which left most of a GPU idle
    (profiled on an H200: the largest share of a cohort step at width 8). On CUDA the tokens are
    cut into pieces reduced in parallel, then summed."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.bias = b is not None
        wt = w.transpose(1, 2)
        return torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)

    @staticmethod
    def backward(ctx, *grads):
        (gy,) = grads  # [K, N, o]
        x, w = ctx.saved_tensors
        (K, N, i), o = x.shape, gy.shape[2]
        c = token_pieces(N) if gy.is_cuda else 1  # one CPU core reduces serially anyway (pieces: 10% slower)
        gw = torch.bmm(gy.reshape(K * c, N // c, o).transpose(1, 2), x.reshape(K * c, N // c, i))
        return torch.bmm(gy, w), gw.view(K, c, o, i).sum(1), gy.sum(1) if ctx.bias else None


def token_pieces(n: int, tokens: int = 64) -> int:
    """The most pieces of at least `tokens` tokens, a power of two dividing `n`, at most 64."""
    c = 1
    while c < 64 and n % (2 * c) == 0 and n // (2 * c) >= tokens:
        c *= 2
    return c


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with a gain and a bias [d] (as nn.LayerNorm), or stacked,
    [K, d] with inputs [K, ..., d]."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        if self.weight.dim() == 1:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return torch.addcmul(self.bias.view(shape), F.layer_norm(x, x.shape[-1:]), self.weight.view(shape))


class Embedding(nn.Module):
    """Rows of a table [n, d] (as nn.Embedding), or stacked, [K, n, d]: ids [K, ...] pick from their
    model's table; ids without the model dimension (positions) pick the same rows of every table."""

    def __init__(self, n: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d))

    def forward(self, idx):
        w = self.weight
        if w.dim() == 2:
            return F.embedding(idx, w)
        if idx.dim() == 1:  # positions [T] -> [K, T, d]
            return w[:, idx]
        ks = torch.arange(w.shape[0], device=idx.device).view(-1, *([1] * (idx.dim() - 1)))
        return w[ks, idx]


def select(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """The tokens at flat indices `at`: x [B, T, d] or [N, d] with at [A] -> [A, d]; stacked,
    x [K, B, T, d] with at [K, A] (into each model's B * T) -> [K, A, d]."""
    d = x.shape[-1]
    if at.dim() == 1:
        return x.reshape(-1, d).index_select(0, at)
    return torch.gather(x.reshape(at.shape[0], -1, d), 1, at.unsqueeze(-1).expand(-1, -1, d))


def stacked(models: list[nn.Module]) -> dict[str, torch.Tensor]:
    """The weights of models of one shape, stacked on a new first dimension, by name."""
    named = [dict(m.named_parameters()) for m in models]
    return {n: torch.stack([ps[n].detach() for ps in named]) for n in named[0]}


class HookPoint(nn.Module):
    """An identity that marks a place to read or patch an activation (TransformerLens style):
    each attached `fn(activation, hook)` may return a replacement."""

    def __init__(self):
        super().__init__()
        self.name = ""  # set by the model: its dotted path, e.g. passes.2.hook_attn_out
        self.fns: list[Callable] = []

    def forward(self, x):
        for fn in self.fns:
            out = fn(x, hook=self)
            x = x if out is None else out
        return x


@dataclass
class Packing:
    """Whole examples packed into rows, for training without most of the padding.

    Tokens are laid out flat ([N] ids, [N, d] activations), group after group; group g holds
    `row_counts[g]` rows of `row_lengths[g]` tokens. `masks` holds, per group, an additive
    [rows, 1, L, L] mask (0: may attend, -inf: may not), block-diagonal and causal: no example
    sees another.
    """

    row_counts: list[int]
    row_lengths: list[int]
    masks: list[torch.Tensor]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = Linear(cfg.width, 3 * cfg.width)
        self.proj = Linear(cfg.width, cfg.width)

    def attend(self, qkv, mask=None, pattern: HookPoint | None = None):  # qkv [..., T, 3d] -> [..., T, d]
        *lead, T, C3 = qkv.shape
        hs = C3 // 3 // self.heads
        # strided views, no copies (measured: about 9% off the attention sublayer at one head)
        q, k, v = (t.reshape(-1, T, self.heads, hs).transpose(1, 2) for t in qkv.chunk(3, dim=-1))  # [B, h, T, hs]
        if pattern is not None:  # written out, so that the pattern exists to be read or patched
            if mask is None:
                mask = torch.full((T, T), float("-inf"), device=qkv.device).triu(1)
            probs = ((q @ k.transpose(-1, -2)) / math.sqrt(hs) + mask).softmax(-1)  # [B, h, T, T]
            y = pattern(probs.view(*lead, self.heads, T, T)).reshape(probs.shape) @ v  # stacked: [K, B, h, T, T]
        elif mask is None:  # right padding needs no mask: causal attention never looks ahead
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(*lead, T, C3 // 3)

    def forward(
        self, x, packing: Packing | None = None, pattern: HookPoint | None = None, at: torch.Tensor | None = None
    ):  # x [..., T, d] or packed [N, d] -> the same; with `at`, [len(at), d] (stacked: [K, A, d])
        qkv = self.qkv(x)
        if packing is None:
            y = self.attend(qkv, pattern=pattern)
        else:  # each group of rows attends on its own, masked
            out, start = [], 0
            for rows, T, mask in zip(packing.row_counts, packing.row_lengths, packing.masks):
                out.append(
                    self.attend(qkv[start : start + rows * T].view(rows, T, -1), mask, pattern).view(rows * T, -1)
                )
                start += rows * T
            y = out[0] if len(out) == 1 else torch.cat(out)
        if at is not None:
            y = select(y, at)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = Linear(cfg.width, cfg.mlp_ratio * cfg.width)
        self.out = Linear(cfg.mlp_ratio * cfg.width, cfg.width)

    def forward(self, x):
        return self.out(F.gelu(self.fc(x)))


class PassHooks(nn.Module):
    """Hook points of one application of a block (weights are shared between passes, hooks are not)."""

    def __init__(self):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.attn = nn.Module()
        self.attn.hook_pattern = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = LayerNorm(cfg.width)
        self.attn = Attention(cfg)
        self.ln_mlp = LayerNorm(cfg.width)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x,
        hooks: PassHooks,
        packing: Packing | None = None,
        pattern: bool = False,
        at: torch.Tensor | None = None,
    ):  # x [B, T, d] or packed [N, d] -> the same; with `at` (flat token indices), [len(at), d]
        x = hooks.hook_resid_pre(x)
        a = self.attn(self.ln_attn(x), packing, hooks.attn.hook_pattern if pattern else None, at)
        if at is not None:  # every token's keys were needed above; from here on only these tokens
            x = select(x, at)
        x = x + hooks.hook_attn_out(a)
        x = x + hooks.hook_mlp_out(self.mlp(self.ln_mlp(x)))
        return hooks.hook_resid_post(x)


class LoopedTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.cfg, self.vocab_size, self.max_len = cfg, vocab_size, max_len
        self.tok_embed = Embedding(vocab_size, cfg.width)
        self.pos_embed = Embedding(max_len, cfg.width)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.passes = nn.ModuleList(PassHooks() for _ in range(cfg.blocks * cfg.recurrence))
        self.ln_final = LayerNorm(cfg.width)
        self.head = Linear(cfg.width, vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith(("attn.proj.weight", "mlp.out.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * len(self.passes)))
        self._pattern = False  # write attention out: set by `hooks` while a pattern hook is attached
        for name, m in self.named_modules():
            if isinstance(m, HookPoint):
                m.name = name

    @staticmethod
    def _init(module):
        if isinstance(module, Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def residual(
        self,
        idx: torch.Tensor,
        pos: torch.Tensor | None = None,
        packing: Packing | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final residual stream after LayerNorm: [B, T, d] for [B, T] ids, or [N, d] for
        packed examples (flat [N] ids, `pos` the position of each token in its example).
        With `at` (flat token indices into B * T or N), only those tokens: [len(at), d]. Then
        the last pass computes only them after its attention (no later pass needs the others),
        so that pass's hook_attn_out, hook_mlp_out and hook_resid_post see [len(at), d]."""
        T = idx.shape[-1]
        if pos is None:
            if T > self.max_len:
                raise ValueError(f"sequence of {T} tokens exceeds the model's context of {self.max_len}")
            pos = torch.arange(T, device=idx.device)
        pos_embed = self.pos_embed(pos)  # [T, d]; stacked [K, T, d], for every batch row: [K, 1, T, d]
        if self.tok_embed.weight.dim() == 3:
            pos_embed = pos_embed.unsqueeze(1)
        x = self.hook_embed(self.tok_embed(idx)) + self.hook_pos_embed(pos_embed)
        last = len(self.passes) - 1
        for p, hooks in enumerate(self.passes):
            x = self.blocks[p % len(self.blocks)](x, hooks, packing, self._pattern, at if p == last else None)
        return self.ln_final(x)

    def forward(self, idx: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] ids -> [B, T, vocab] logits; with `at` (flat token indices), [len(at), vocab]."""
        return self.head(self.residual(idx, at=at))

    def hook_points(self) -> dict[str, HookPoint]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, Callable]]):
        """Attach `fn(activation, hook)` at named hook points for the duration of the block."""
        points = self.hook_points()
        for name, _ in fwd_hooks:
            if name not in points:
                raise KeyError(f"no hook point {name!r}; have {sorted(points)}")
        pattern = self._pattern
        self._pattern = pattern or any(name.endswith("hook_pattern") for name, _ in fwd_hooks)
        for name, fn in fwd_hooks:
            points[name].fns.append(fn)
        try:
            yield self
        finally:
            self._pattern = pattern
            for name, fn in fwd_hooks:
                points[name].fns.remove(fn)

    def run_with_hooks(self, idx: torch.Tensor, fwd_hooks: list[tuple[str, Callable]]) -> torch.Tensor:
        with self.hooks(fwd_hooks):
            return self(idx)

    @torch.no_grad()
    def run_with_cache(
        self, idx: torch.Tensor, names: list[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [B, T, vocab] for ids [B, T], and the activation at every hook point (or at
        `names`), by name (TransformerLens's `run_with_cache`)."""
        cache: dict[str, torch.Tensor] = {}

        def keep(x, hook):
            cache[hook.name] = x.detach()

        logits = self.run_with_hooks(idx, [(n, keep) for n in (names or list(self.hook_points()))])
        return logits, cache

    def number_of_parameters(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        emb = self.tok_embed.weight.numel() + self.pos_embed.weight.numel() + self.head.weight.numel()
        return {"params": total, "params_non_embedding": total - emb}
