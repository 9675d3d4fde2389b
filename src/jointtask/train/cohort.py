"""Cohorts: K runs of one shape trained as one computation, with stacked weights.

Small models leave a GPU idle: one process per model is launch-bound. A cohort stacks the
weights of K runs that share every shape-determining setting (`shape_of`) into [K, ...] tensors
and takes one optimisation step of all K with one forward, one backward and one optimiser update.
Everything else stays per run, through the same `Run` bookkeeping a run trained alone uses: its
own data and batches (a pure function of its seed and step; the runs' training tokens are held
on the device and a step's K batches are one gather), its own initialisation, learning-rate
schedule, gradient clipping, evaluation, early stopping, checkpoint and result.json. A run that
stops leaves the cohort with the state it stopped with; the others go on. A run directory trained
in a cohort looks as if the run had trained alone, and either trainer resumes it.

The stacked forward below is the looped transformer of model.py written for [K, B, T, d]
activations (a test checks losses and gradients against K separate models). torch.func.vmap over
the model would be shorter, but has no batching rule for the CPU's fused attention kernel.

On a CPU a cohort pays little (the matrices of small models are already per-core), so the sweep's
default cohort size is 1 there; see `jointtask bench --cohort`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..tasks.dataset import build_task_data
from ..tasks.families import PAD, Vocab
from .config import RunConfig
from .loop import Run, batch_indices, loss_starts, model_context, padded_loss_at, window_starts
from .run_dir import RESULT, RunResult


def shape_of(cfg: RunConfig) -> tuple:
    """What must be equal for runs to share a cohort: the model's shape, the vocabulary and the
    context length (both set by the task), the batch's layout (size; examples or windows) and
    the device."""
    vocab, t = len(Vocab(cfg.task.family(cfg.seed))), cfg.train
    return (tuple(sorted(cfg.model.model_dump().items())), vocab, model_context(cfg), t.batch_size, t.packing, t.device)


def _layer_norm(x, w, b):  # x [K, N, d], w b [K, d]
    return torch.addcmul(b.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), w.unsqueeze(1))


def _linear(x, w, b=None):  # x [K, N, i], w [K, o, i], b [K, o] -> [K, N, o]
    wt = w.transpose(1, 2)
    return torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)


def stacked_forward(
    p: dict[str, torch.Tensor], idx: torch.Tensor, at: torch.Tensor, heads: int, blocks: int, recurrence: int
) -> torch.Tensor:
    """Logits [K, A, vocab] of K models (weights `p`, named as in LoopedTransformer, stacked on
    dim 0) for ids [K, B, T], at flat token indices `at` [K, A] into each model's B * T."""
    K, B, T = idx.shape
    ks = torch.arange(K, device=idx.device).view(K, 1, 1)
    x = p["tok_embed.weight"][ks, idx] + p["pos_embed.weight"][:, :T].unsqueeze(1)  # [K, B, T, d]
    d = x.shape[-1]
    hs = d // heads
    x = x.view(K, B * T, d)
    for step in range(blocks * recurrence):
        n = f"blocks.{step % blocks}."
        h = _layer_norm(x, p[n + "ln_attn.weight"], p[n + "ln_attn.bias"])
        qkv = _linear(h, p[n + "attn.qkv.weight"], p[n + "attn.qkv.bias"])  # [K, B*T, 3d]
        q, k, v = (t.reshape(K * B, T, heads, hs).transpose(1, 2) for t in qkv.chunk(3, dim=-1))  # [K*B, h, T, hs]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(K, B * T, d)
        x = x + _linear(y, p[n + "attn.proj.weight"], p[n + "attn.proj.bias"])
        h = _layer_norm(x, p[n + "ln_mlp.weight"], p[n + "ln_mlp.bias"])
        x = x + _linear(
            F.gelu(_linear(h, p[n + "mlp.fc.weight"], p[n + "mlp.fc.bias"])),
            p[n + "mlp.out.weight"],
            p[n + "mlp.out.bias"],
        )
    x = _layer_norm(x, p["ln_final.weight"], p["ln_final.bias"])
    x = torch.gather(x, 1, at.unsqueeze(-1).expand(-1, -1, d))  # [K, A, d]: the head only where the loss is
    return _linear(x, p["head.weight"])


def _grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        raise RuntimeError("a stacked weight got no gradient")
    return p.grad


class Cohort:
    """The stacked weights and AdamW state of some runs (all of one shape)."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.device = next(runs[0].model.parameters()).device
        self._load_data()
        template = runs[0].model
        self.names = [n for n, _ in template.named_parameters()]
        self.decay = {n: p.dim() >= 2 for n, p in template.named_parameters()}  # as make_optimizer groups them
        self.cfg = runs[0].cfg.model
        per_run = [dict(r.model.named_parameters()) for r in runs]
        self.params = {n: torch.stack([pr[n].detach() for pr in per_run]).requires_grad_() for n in self.names}
        self.exp_avg, self.exp_avg_sq = {}, {}
        steps = []
        for n in self.names:
            states = [r.opt.state.get(pr[n], {}) for r, pr in zip(runs, per_run)]
            self.exp_avg[n] = torch.stack([s.get("exp_avg", torch.zeros_like(pr[n])) for s, pr in zip(states, per_run)])
            self.exp_avg_sq[n] = torch.stack(
                [s.get("exp_avg_sq", torch.zeros_like(pr[n])) for s, pr in zip(states, per_run)]
            )
            steps.append([float(s["step"]) if "step" in s else 0.0 for s in states])
        # per-run scalars in float64 on the CPU (as torch's AdamW keeps them as Python floats)
        self.opt_step = torch.tensor(steps[0], dtype=torch.float64)  # [K] AdamW steps taken
        vec = lambda f: torch.tensor([f(r.cfg.train) for r in runs], dtype=torch.float64)
        self.beta1, self.beta2 = vec(lambda t: t.beta1), vec(lambda t: t.beta2)
        self.weight_decay, self.grad_clip = vec(lambda t: t.weight_decay), vec(lambda t: t.grad_clip)

    def _load_data(self) -> None:
        """Every run's training tokens on the device, padded to [K, ...], so that a step's K
        batches are one gather (K batches built and copied one by one would each wait on a GPU)."""
        runs, K = self.runs, len(self.runs)
        streams = [r.stream for r in runs if r.stream is not None]
        if streams:  # windows of the concatenated samples (shape_of: all runs or none)
            self.sizes = [len(s) for s in streams]
            tokens = np.full((K, max(self.sizes)), PAD, np.int64)
            for k, stream in enumerate(streams):
                tokens[k, : self.sizes[k]] = stream
        else:  # whole examples, padded
            sets = [r.data.train for r in runs]
            tokens = np.full((K, max(len(t) for t in sets), max(t.ids.shape[1] for t in sets)), PAD, np.int64)
            for k, t in enumerate(sets):
                tokens[k, : len(t), : t.ids.shape[1]] = t.ids
        self.tokens = torch.from_numpy(tokens).to(self.device)

    def _batches(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """This step's batch of every run, the batch it draws alone: inputs [K, B, T], flat
        indices [K, A] into each run's B * T of the inputs whose next token is a target, their
        weights [K, A] (0: padding), and the tokens each run processes."""
        runs, K, dev = self.runs, len(self.runs), self.device
        t0 = runs[0].cfg.train
        B = t0.batch_size
        if runs[0].stream is not None:  # every position predicts the next token
            T = t0.window
            first = np.stack([window_starts(r.cfg.seed, r.step, n, B, T) for r, n in zip(runs, self.sizes)])
            flat = [np.arange(B * T)] * K
            n_tokens = [B * T] * K
            cols = torch.from_numpy(first).to(dev).unsqueeze(-1) + torch.arange(T + 1, device=dev)  # [K, B, T+1]
            rows = self.tokens[torch.arange(K, device=dev).view(K, 1, 1), cols]
        else:
            idx = [batch_indices(r.cfg.seed, r.step, len(r.data.train), B) for r in runs]
            lengths = [r.data.train.lengths[i] - 1 for r, i in zip(runs, idx)]  # inputs: all tokens but the last
            T = int(max(n.max() for n in lengths))
            flat = [  # the loss positions, as make_batch takes them
                padded_loss_at(n, loss_starts(r.data.train, i, r.cfg.train.loss_on), T)
                for r, i, n in zip(runs, idx, lengths)
            ]
            n_tokens = [int(n.sum()) for n in lengths]
            ks = torch.arange(K, device=dev).view(K, 1)
            rows = self.tokens[:, :, : T + 1][ks, torch.from_numpy(np.stack(idx)).to(dev)]  # [K, B, T+1]
        counts = np.array([len(f) for f in flat])
        at = np.zeros((K, counts.max()), np.int64)
        for k, f in enumerate(flat):
            at[k, : len(f)] = f
        at_t = torch.from_numpy(at).to(dev)
        targets = rows[..., 1:].reshape(K, -1).gather(1, at_t)
        weight = (torch.arange(at.shape[1], device=dev) < torch.from_numpy(counts).to(dev).unsqueeze(1)).float()
        return rows[..., :-1], at_t, targets, weight, n_tokens

    @staticmethod
    def _k(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A per-run vector [K] shaped to broadcast over stacked tensors like `like`."""
        return v.view((-1,) + (1,) * (like.dim() - 1))

    def step(self) -> tuple[list[float], list[int]]:
        """One AdamW step of every run on the batch it draws alone at its step; returns the K
        losses and the tokens each run processed."""
        device = self.device
        inputs, at, targets, weight, n_tokens = self._batches()
        lr = torch.tensor([r.lr() for r in self.runs], dtype=torch.float64)
        self.opt_step += 1
        bc1, bc2 = 1 - self.beta1**self.opt_step, 1 - self.beta2**self.opt_step
        # this step's per-run scalars, computed in float64 and moved in one copy: one wait, not one per weight
        scalars = torch.stack(
            [self.grad_clip, lr * self.weight_decay, 1 - self.beta1, self.beta2, 1 - self.beta2, bc2.sqrt(), lr / bc1]
        ).to(device=device, dtype=weight.dtype)
        clip, lr_wd, one_b1, b2, one_b2, bc2_sqrt, step_size = scalars.unbind()
        c = self.cfg
        logits = stacked_forward(self.params, inputs, at, c.heads, c.blocks, c.recurrence)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(weight)
        losses = (ce * weight).sum(1) / weight.sum(1)  # each run's mean over its own targets
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()  # runs share no weights: each gets its own gradient
        with torch.no_grad():
            grads = [_grad(self.params[n]) for n in self.names]
            # per-run clipping by the global norm, as torch.nn.utils.clip_grad_norm_ does alone
            norm = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # [K]
            coef = torch.where(clip > 0, (clip / (norm + 1e-6)).clamp(max=1.0), 1.0)
            for n, g in zip(self.names, grads):  # AdamW, as torch.optim.AdamW computes it, per run
                p, m, v = self.params[n], self.exp_avg[n], self.exp_avg_sq[n]
                g = g * self._k(coef, g)
                if self.decay[n]:
                    p.mul_(1 - self._k(lr_wd, p))
                m.lerp_(g, self._k(one_b1, m))
                v.mul_(self._k(b2, v)).addcmul_(g, g * self._k(one_b2, v))
                denom = v.sqrt() / self._k(bc2_sqrt, v) + 1e-8
                p.sub_(self._k(step_size, p) * m / denom)
        return losses.detach().tolist(), n_tokens

    def sync(self, k: int) -> None:
        """Write run k's weights and AdamW state into its own model and optimiser (for its
        evaluation, checkpoint and result, which are the same as alone)."""
        r = self.runs[k]
        with torch.no_grad():
            for n, p in r.model.named_parameters():
                p.copy_(self.params[n][k])
                r.opt.state[p] = {
                    "step": torch.tensor(float(self.opt_step[k]), device=p.device),
                    "exp_avg": self.exp_avg[n][k].clone(),
                    "exp_avg_sq": self.exp_avg_sq[n][k].clone(),
                }


def _build_data(cfg: RunConfig) -> None:
    build_task_data(cfg.task, cfg.data, cfg.seed)


def prepare_data(cfgs: Sequence[RunConfig]) -> None:
    """Build the runs' data (into the data cache, where each run then reads it) in parallel
    processes when the cohort trains on an accelerator: one after another, 64 runs at modulus 20
    would hold it for minutes while the cores sit idle. On a CPU the sweep's workers already
    keep every core busy."""
    workers = min(len(cfgs), os.cpu_count() or 1)
    if workers > 1 and cfgs[0].train.device != "cpu":
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_build_data, cfgs))


def train_cohort(
    cfgs: list[RunConfig],
    outs: Sequence[str | Path],
    resume: bool = True,
    init_froms: Sequence[str | Path | None] | None = None,
) -> list[RunResult]:
    """Train the runs `cfgs` into the run directories `outs` as one cohort; returns their results
    in order. Finished runs are read back; the others resume from their checkpoints."""
    if not cfgs:
        return []
    shapes = {shape_of(c) for c in cfgs}
    if len(shapes) > 1:
        raise UserError(
            f"a cohort needs runs of one shape; got {len(shapes)} (width, heads, recurrence, blocks, "
            "vocabulary, context length and device must agree)"
        )
    torch.set_num_threads(cfgs[0].train.threads)
    inits = list(init_froms) if init_froms is not None else [None] * len(cfgs)
    prepare_data([c for c, o in zip(cfgs, outs) if not (resume and (Path(o) / RESULT).exists())])
    runs = [Run(c, o, resume, i) for c, o, i in zip(cfgs, outs, inits)]
    active = [r for r in runs if not r.done]
    while active:
        cohort = Cohort(active)
        while all(not r.done for r in cohort.runs):
            t0 = time.perf_counter()
            losses, n_tokens = cohort.step()
            share = (time.perf_counter() - t0) / len(cohort.runs)  # each run's part of the step's time
            for k, r in enumerate(cohort.runs):
                r.after_step(losses[k], n_tokens[k], share, sync=lambda k=k: cohort.sync(k))
        for k in range(len(cohort.runs)):  # a stopped run leaves with the state it stopped with
            cohort.sync(k)
        active = [r for r in cohort.runs if not r.done]
    return [r.finish() for r in runs]


def cohort_memory(cfg: RunConfig, vocab: int, context: int) -> int:
    """Bytes one run of a cohort needs: weights, gradients and two AdamW moments (float32), the
    activations autograd keeps for one batch (about 20 values per token, width and pass), and its
    training tokens (int64, padded to the context)."""
    from ..model_config import count_params

    params = count_params(cfg.model, vocab, context)["params"]
    passes = cfg.model.blocks * cfg.model.recurrence
    acts = cfg.train.batch_size * context * cfg.model.width * passes * 20 * cfg.model.mlp_ratio / 4
    tokens = cfg.data.per_n * cfg.task.family(cfg.seed).n_values * context
    return int(4 * (4 * params + acts) + 8 * tokens)


def fit_cohort_size(cfg: RunConfig, wanted: int, free_bytes: int | None = None) -> tuple[int, str]:
    """The largest cohort size up to `wanted` whose runs fit in half the device's free memory,
    and a sentence saying why."""
    vocab, ctx = shape_of(cfg)[1:3]
    need = cohort_memory(cfg, vocab, ctx)
    if free_bytes is None:
        if cfg.train.device.startswith("cuda") and torch.cuda.is_available():
            free_bytes = torch.cuda.mem_get_info(torch.device(cfg.train.device))[0]
        else:
            import os

            free_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    k = max(1, min(wanted, int(free_bytes // 2 // max(need, 1))))
    why = (
        f"cohort size {k}"
        + (f" (asked {wanted})" if k < wanted else "")
        + f": about {math.ceil(need / 2**20)} MiB a run, {free_bytes // 2**20} MiB free on {cfg.train.device}"
    )
    return k, why
