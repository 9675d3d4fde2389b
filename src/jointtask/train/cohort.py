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
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..tasks.families import PAD, Vocab
from .config import RunConfig
from .evaluate import count_correct, greedy_decode, max_new_tokens, prompts_of
from .loop import Run, batch_indices, loss_starts, model_context, padded_loss_at, window_starts
from .run_dir import RunResult


def shape_of(cfg: RunConfig) -> tuple:
    """What must be equal for runs to share a cohort: the model's shape, the vocabulary and the
    context length (both set by the task), the batch's layout (size; examples or windows) and
    the device."""
    vocab, t = len(Vocab(cfg.task.family(cfg.seed))), cfg.train
    return (tuple(sorted(cfg.model.model_dump().items())), vocab, model_context(cfg), t.batch_size, t.packing, t.device)


def _layer_norm(x, w, b):  # x [K, N, d], w b [K, d]
    return torch.addcmul(b.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), w.unsqueeze(1))


class _Linear(torch.autograd.Function):
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
        c = _chunks(N) if gy.is_cuda else 1  # one CPU core reduces serially anyway (pieces: 10% slower here)
        gw = torch.bmm(gy.reshape(K * c, N // c, o).transpose(1, 2), x.reshape(K * c, N // c, i))
        return torch.bmm(gy, w), gw.view(K, c, o, i).sum(1), gy.sum(1) if ctx.bias else None


def _chunks(n: int, tokens: int = 64) -> int:
    """The most pieces of at least `tokens` tokens, a power of two dividing `n`, at most 64."""
    c = 1
    while c < 64 and n % (2 * c) == 0 and n // (2 * c) >= tokens:
        c *= 2
    return c


def _linear(x, w, b=None):  # x [K, N, i], w [K, o, i], b [K, o] -> [K, N, o]
    return _Linear.apply(x, w, b)


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
    last = blocks * recurrence - 1
    for step in range(last + 1):
        n = f"blocks.{step % blocks}."
        h = _layer_norm(x, p[n + "ln_attn.weight"], p[n + "ln_attn.bias"])
        qkv = _linear(h, p[n + "attn.qkv.weight"], p[n + "attn.qkv.bias"])  # [K, B*T, 3d]
        q, k, v = (t.reshape(K * B, T, heads, hs).transpose(1, 2) for t in qkv.chunk(3, dim=-1))  # [K*B, h, T, hs]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(K, B * T, d)
        if step == last:  # as LoopedTransformer.residual: after the last attention, only the tokens at `at`
            y, x = (torch.gather(t, 1, at.unsqueeze(-1).expand(-1, -1, d)) for t in (y, x))  # [K, A, d]
        x = x + _linear(y, p[n + "attn.proj.weight"], p[n + "attn.proj.bias"])
        h = _layer_norm(x, p[n + "ln_mlp.weight"], p[n + "ln_mlp.bias"])
        x = x + _linear(
            F.gelu(_linear(h, p[n + "mlp.fc.weight"], p[n + "mlp.fc.bias"])),
            p[n + "mlp.out.weight"],
            p[n + "mlp.out.bias"],
        )
    return _linear(_layer_norm(x, p["ln_final.weight"], p["ln_final.bias"]), p["head.weight"])


def _grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        raise RuntimeError("a stacked weight got no gradient")
    return p.grad


class Cohort:
    """The stacked weights and AdamW state of some runs (all of one shape).

    Weights, gradients and both AdamW moments are [K, P] buffers (P: one model's parameters in
    `named_parameters` order), and each named weight is a [K, ...] view into the weights: the
    optimiser is a dozen elementwise ops over the whole cohort, not a dozen per weight. On CUDA a
    step's batch has a fixed shape (padded to the longest training example) and the step, from the
    gather of its batch to the AdamW update, is captured once as a CUDA graph and replayed: a
    step of small models is a few hundred kernel launches, and a replay is one. A step is
    `launch`ed on the cohort's own stream and `collect`ed, so that several cohorts in one process
    overlap on one GPU (`train_cohort`)."""

    fixed_shapes_on: tuple[str, ...] = ("cuda",)  # device types whose steps have fixed shapes (graphs: CUDA only)
    warmup = 2  # eager steps before capture (on a side stream, as CUDA graph capture requires)

    def __init__(self, runs: list[Run]):
        self.runs, K = runs, len(runs)
        self.device = next(runs[0].model.parameters()).device
        self.static = self.device.type in self.fixed_shapes_on
        self._load_data()
        template = runs[0].model
        self.names = [n for n, _ in template.named_parameters()]
        shapes = [p.shape for _, p in template.named_parameters()]
        ends = np.cumsum([s.numel() for s in shapes]).tolist()
        spans = list(zip([0] + ends[:-1], ends))
        self.cfg = runs[0].cfg.model
        per_run = [dict(r.model.named_parameters()) for r in runs]
        states = [[r.opt.state.get(pr[n], {}) for n in self.names] for r, pr in zip(runs, per_run)]

        def flat(get) -> torch.Tensor:  # [K, P] from get(k, i) -> run k's tensor of weight i
            return torch.stack([torch.cat([get(k, i).reshape(-1) for i in range(len(self.names))]) for k in range(K)])

        self.weights = flat(lambda k, i: per_run[k][self.names[i]].detach())
        zeros = lambda k, i: torch.zeros_like(per_run[k][self.names[i]])
        self.exp_avg = flat(lambda k, i: states[k][i].get("exp_avg", zeros(k, i)))
        self.exp_avg_sq = flat(lambda k, i: states[k][i].get("exp_avg_sq", zeros(k, i)))
        self.params = {  # leaves that are views of the weights: the update below changes them
            n: self.weights[:, a:b].view(K, *shape).requires_grad_()
            for n, (a, b), shape in zip(self.names, spans, shapes)
        }
        # weight decay on matrices only, as make_optimizer groups them
        self.decay = torch.cat(
            [torch.full((b - a,), float(len(shape) >= 2)) for (a, b), shape in zip(spans, shapes)]
        ).to(self.device)
        # per-run scalars in float64 on the CPU (as torch's AdamW keeps them as Python floats)
        self.opt_step = torch.tensor(
            [float(st[0]["step"]) if "step" in st[0] else 0.0 for st in states], dtype=torch.float64
        )  # [K] AdamW steps taken
        vec = lambda f: torch.tensor([f(r.cfg.train) for r in runs], dtype=torch.float64)
        self.beta1, self.beta2 = vec(lambda t: t.beta1), vec(lambda t: t.beta2)
        self.weight_decay, self.grad_clip = vec(lambda t: t.weight_decay), vec(lambda t: t.grad_clip)
        self.ks = torch.arange(K, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_taken = 0
        # on CUDA: the cohort's own stream, and an event marking its last launched step done
        cuda = self.static and self.device.type == "cuda"
        self.stream, self.done = (torch.cuda.Stream(self.device), torch.cuda.Event()) if cuda else (None, None)

    def _load_data(self) -> None:
        """Every run's training tokens on the device, padded to [K, ...], so that a step's K
        batches are one gather (K batches built and copied one by one would each wait on a GPU).
        With fixed shapes, also the longest input (T) and the most loss positions a batch can hold (A)."""
        runs, K = self.runs, len(self.runs)
        t0 = runs[0].cfg.train
        streams = [r.stream for r in runs if r.stream is not None]
        if streams:  # windows of the concatenated samples (shape_of: all runs or none)
            self.sizes = [len(s) for s in streams]
            tokens = np.full((K, max(self.sizes)), PAD, np.int64)
            for k, stream in enumerate(streams):
                tokens[k, : self.sizes[k]] = stream
            self.T, self.A = t0.window, t0.batch_size * t0.window
        else:  # whole examples, padded
            sets = [r.data.train for r in runs]
            tokens = np.full((K, max(len(t) for t in sets), max(t.ids.shape[1] for t in sets)), PAD, np.int64)
            for k, t in enumerate(sets):
                tokens[k, : len(t), : t.ids.shape[1]] = t.ids
            everything = [np.arange(len(t)) for t in sets]
            self.T = max(int(t.lengths.max()) - 1 for t in sets)
            self.A = t0.batch_size * max(
                int((t.lengths[i] - 1 - loss_starts(t, i, r.cfg.train.loss_on)).max())
                for r, t, i in zip(runs, sets, everything)
            )
        self.tokens = torch.from_numpy(tokens).to(self.device)

    def _stage(self) -> tuple[np.ndarray, int, list[int]]:
        """This step's batch of every run (the batch it draws alone) as host ints [K, B + A + 1]:
        the examples drawn (or the windows' starts), the flat indices into each run's B * T inputs
        of those whose next token is a target (then 0s), and how many there are; with the inputs'
        length T and the tokens each run processes."""
        runs, K = self.runs, len(self.runs)
        B = runs[0].cfg.train.batch_size
        if runs[0].stream is not None:  # every position predicts the next token
            T = self.T
            rows = np.stack([window_starts(r.cfg.seed, r.step, n, B, T) for r, n in zip(runs, self.sizes)])
            flat = [np.arange(B * T)] * K
            n_tokens = [B * T] * K
        else:
            rows = np.stack([batch_indices(r.cfg.seed, r.step, len(r.data.train), B) for r in runs])
            lengths = [r.data.train.lengths[i] - 1 for r, i in zip(runs, rows)]  # inputs: all tokens but the last
            T = self.T if self.static else int(max(n.max() for n in lengths))
            flat = [  # the loss positions, as make_batch takes them
                padded_loss_at(n, loss_starts(r.data.train, i, r.cfg.train.loss_on), T)
                for r, i, n in zip(runs, rows, lengths)
            ]
            n_tokens = [int(n.sum()) for n in lengths]
        counts = np.array([len(f) for f in flat])
        at = np.zeros((K, self.A if self.static else counts.max()), np.int64)
        for k, f in enumerate(flat):
            at[k, : len(f)] = f
        return np.concatenate([rows, at, counts[:, None]], 1), T, n_tokens

    def _scalars(self) -> torch.Tensor:
        """This step's per-run AdamW scalars [7, K], computed in float64 (as torch's AdamW does)."""
        lr = torch.tensor([r.lr() for r in self.runs], dtype=torch.float64)
        step = self.opt_step + 1
        bc1, bc2 = 1 - self.beta1**step, 1 - self.beta2**step
        return torch.stack(
            [self.grad_clip, lr * self.weight_decay, 1 - self.beta1, self.beta2, 1 - self.beta2, bc2.sqrt(), lr / bc1]
        ).float()

    def _compute(self, ints: torch.Tensor, scalars: torch.Tensor, T: int) -> torch.Tensor:
        """One forward, backward and AdamW update of every run on the device, from the staged
        batch `ints` [K, B + A + 1] and `scalars` [7, K]; returns the K losses. No host sync:
        on CUDA this is what the graph holds."""
        K, B = len(self.runs), self.runs[0].cfg.train.batch_size
        first, at, count = ints[:, :B], ints[:, B:-1], ints[:, -1:]
        ks = self.ks.view(K, 1, 1)
        if self.runs[0].stream is not None:
            rows = self.tokens[ks, first.unsqueeze(-1) + torch.arange(T + 1, device=ints.device)]  # [K, B, T+1]
        else:
            rows = self.tokens[:, :, : T + 1][ks.view(K, 1), first]  # [K, B, T+1]
        targets = rows[..., 1:].reshape(K, -1).gather(1, at)
        weight = (torch.arange(at.shape[1], device=ints.device) < count).float()  # [K, A] 0: padding
        clip, lr_wd, one_b1, b2, one_b2, bc2_sqrt, step_size = (s.unsqueeze(1) for s in scalars.unbind())  # [K, 1]
        c = self.cfg
        logits = stacked_forward(self.params, rows[..., :-1], at, c.heads, c.blocks, c.recurrence)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(weight)
        losses = (ce * weight).sum(1) / weight.sum(1)  # each run's mean over its own targets
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()  # runs share no weights: each gets its own gradient
        with torch.no_grad():
            g = torch.cat([_grad(self.params[n]).flatten(1) for n in self.names], 1)  # [K, P]
            # per-run clipping by the global norm, as torch.nn.utils.clip_grad_norm_ does alone
            norm = g.pow(2).sum(1, keepdim=True).sqrt()
            g.mul_(torch.where(clip > 0, (clip / (norm + 1e-6)).clamp(max=1.0), 1.0))
            # AdamW, as torch.optim.AdamW computes it, per run
            w, m, v = self.weights, self.exp_avg, self.exp_avg_sq
            w.mul_(1 - lr_wd * self.decay)
            m.lerp_(g, one_b1)
            v.mul_(b2).addcmul_(g, g * one_b2)
            w.sub_(step_size * m / (v.sqrt() / bc2_sqrt + 1e-8))
        return losses.detach()

    def launch(self) -> None:
        """Queue one AdamW step of every run on the batch it draws alone at its step. On CUDA the
        step runs on the cohort's own stream, so that the steps of several cohorts overlap on one
        GPU; `collect` waits for it."""
        ints, T, self.n_tokens = self._stage()
        host_ints, host_scalars = torch.from_numpy(ints), self._scalars()
        self.opt_step += 1
        self.steps_taken += 1
        if self.stream is None or self.done is None:  # eager (fixed shapes on a CPU only in a test)
            self.losses = self._compute(host_ints.to(self.device), host_scalars.to(self.device), T)
            return
        if self.steps_taken == 1:  # the graph's inputs and outputs live here, at fixed addresses
            self.host_ints, self.host_scalars = host_ints.pin_memory(), host_scalars.pin_memory()
            self.ints = torch.empty_like(host_ints, device=self.device)
            self.scalars = torch.empty_like(host_scalars, device=self.device)
        else:  # the last step was collected: the pinned buffers are free
            self.host_ints.copy_(host_ints)
            self.host_scalars.copy_(host_scalars)
        # after whatever the default stream did with the weights (stacking them, `sync`)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self.ints.copy_(self.host_ints, non_blocking=True)
            self.scalars.copy_(self.host_scalars, non_blocking=True)
            if self.graph is None and self.steps_taken <= self.warmup:  # eager, off the default stream
                self.losses = self._compute(self.ints, self.scalars, T)
            else:
                if self.graph is None:
                    self.graph = torch.cuda.CUDAGraph()
                    for p in self.params.values():
                        p.grad = None
                    with torch.cuda.graph(self.graph, stream=self.stream):
                        self.losses = self._compute(self.ints, self.scalars, T)
                    self.host_losses = torch.empty(self.losses.shape, pin_memory=True)
                self.graph.replay()
                self.host_losses.copy_(self.losses, non_blocking=True)
            self.done.record(self.stream)

    def collect(self) -> tuple[list[float], list[int]]:
        """Wait for the launched step; returns the K losses and the tokens each run processed."""
        if self.done is not None:
            self.done.synchronize()
            if self.graph is not None:
                return self.host_losses.tolist(), self.n_tokens
        return self.losses.tolist(), self.n_tokens

    def step(self) -> tuple[list[float], list[int]]:
        """`launch` and `collect`: one step of every run, done."""
        self.launch()
        return self.collect()

    @torch.no_grad()
    def evaluate(self, ks: list[int]) -> list[dict[str, float]]:
        """Validation accuracy of runs `ks` (a list of dicts, as `evaluate` gives alone): every
        set of every run greedily decoded in one batch through the stacked weights, as one run
        alone decodes its own (one small model's decoding is launch-bound too)."""
        if not ks:
            return []
        sets = [list(self.runs[k].data.validation_sets.items()) for k in ks]
        per_run = [[p for _, es in named for p in prompts_of(es)] for named in sets]
        limits = [[max_new_tokens(es) for _, es in named for _ in range(len(es))] for named in sets]
        N, K = max(len(p) for p in per_run), len(ks)
        prompts = [p for ps in per_run for p in ps + [np.array([PAD])] * (N - len(ps))]  # [K * N]
        max_new = np.array([m for ms in limits for m in ms + [1] * (N - len(ms))])
        sub = {n: w[torch.tensor(ks, device=self.device)] for n, w in self.params.items()}
        c = self.cfg

        def next_logits(ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:  # ids [K*N, t], last [K*N]
            t = ids.shape[1]
            at = torch.arange(N, device=ids.device) * t + last.view(K, N)  # [K, N] into each run's N * t
            return stacked_forward(sub, ids.view(K, N, t), at, c.heads, c.blocks, c.recurrence).flatten(0, 1)

        out = greedy_decode(next_logits, prompts, max_new, self.runs[0].model.max_len, self.device)
        accuracies = []
        for i, named in enumerate(sets):
            acc, start = {}, i * N
            for name, es in named:
                right = count_correct(es, self.runs[ks[i]].data.vocab, out[start : start + len(es)])
                acc[name] = right / len(es) if len(es) else float("nan")
                start += len(es)
            accuracies.append(acc)
        return accuracies

    def sync(self, k: int) -> None:
        """Write run k's weights and AdamW state into its own model and optimiser (for its
        evaluation, checkpoint and result, which are the same as alone)."""
        r = self.runs[k]
        sizes = [self.params[n][k].numel() for n in self.names]
        m, v = self.exp_avg[k].split(sizes), self.exp_avg_sq[k].split(sizes)
        with torch.no_grad():
            for (n, p), mi, vi in zip(r.model.named_parameters(), m, v):
                p.copy_(self.params[n][k])
                r.opt.state[p] = {
                    "step": torch.tensor(float(self.opt_step[k]), device=p.device),
                    "exp_avg": mi.view_as(p).clone(),
                    "exp_avg_sq": vi.view_as(p).clone(),
                }


def train_cohort(
    cfgs: list[RunConfig],
    outs: Sequence[str | Path],
    resume: bool = True,
    init_froms: Sequence[str | Path | None] | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> list[RunResult]:
    """Train the runs `cfgs` into the run directories `outs` in cohorts: `groups` (lists of
    indices into `cfgs`; default one cohort per shape). The cohorts take their steps in turn, each
    on its own CUDA stream, so that one GPU overlaps them. Returns the results in order; finished
    runs are read back, the others resume from their checkpoints."""
    if not cfgs:
        return []
    if groups is None:
        by_shape: dict[tuple, list[int]] = {}
        for i, c in enumerate(cfgs):
            by_shape.setdefault(shape_of(c), []).append(i)
        groups = list(by_shape.values())
    for g in groups:
        if len({shape_of(cfgs[i]) for i in g}) > 1:
            raise UserError(
                "a cohort needs runs of one shape (width, heads, recurrence, blocks, vocabulary, context "
                "length, batch layout and device must agree)"
            )
    torch.set_num_threads(cfgs[0].train.threads)
    inits = list(init_froms) if init_froms is not None else [None] * len(cfgs)
    began = time.perf_counter()
    runs = [Run(c, o, resume, i) for c, o, i in zip(cfgs, outs, inits)]
    live = [Cohort(active) for g in groups if (active := [runs[i] for i in g if not runs[i].done])]
    opened, rounds, stepping, booking = time.perf_counter(), 0, 0.0, 0.0
    while live:
        t0 = time.perf_counter()
        for cohort in live:
            cohort.launch()
        stepped = [cohort.collect() for cohort in live]
        t1 = time.perf_counter()
        share = (t1 - t0) / sum(len(c.runs) for c in live)  # each run's part of the round's time
        for cohort, (losses, n_tokens) in zip(live, stepped):
            due = [k for k, r in enumerate(cohort.runs) if r.evaluates_at(r.step + 1)]
            held = dict(zip(due, cohort.evaluate(due)))
            for k, r in enumerate(cohort.runs):
                r.after_step(
                    losses[k], n_tokens[k], share, sync=lambda c=cohort, k=k: c.sync(k), validation=held.get(k)
                )
        rounds, stepping, booking = rounds + 1, stepping + t1 - t0, booking + time.perf_counter() - t1
        going = []
        for cohort in live:
            if not any(r.done for r in cohort.runs):
                going.append(cohort)
                continue
            for k in range(len(cohort.runs)):  # a stopped run leaves with the state it stopped with
                cohort.sync(k)
            if rest := [r for r in cohort.runs if not r.done]:
                going.append(Cohort(rest))
        live = going
    results = [r.finish() for r in runs]
    if rounds:  # where the time went: the first thing to read when a sweep is slower than its bench
        print(
            f"{len(groups)} cohort(s) of {'/'.join(str(len(g)) for g in groups)} runs at width(s) "
            f"{'/'.join(str(cfgs[g[0]].model.width) for g in groups)}: {rounds} steps in "
            f"{time.perf_counter() - began:.1f} s (opening runs {opened - began:.1f} s, steps {stepping:.1f} s, "
            f"evaluations and checkpoints {booking:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return results


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


def free_memory(device: str) -> int:
    """Bytes free on the device (CUDA), or in this machine's memory."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def run_memory(cfg: RunConfig) -> int:
    """Bytes one run of `cfg` needs in a cohort (`cohort_memory`)."""
    vocab, ctx = shape_of(cfg)[1:3]
    return cohort_memory(cfg, vocab, ctx)


def fit_cohort_size(cfg: RunConfig, wanted: int, free_bytes: int | None = None) -> tuple[int, str]:
    """The largest cohort size up to `wanted` whose runs fit in half the device's free memory,
    and a sentence saying why."""
    need = run_memory(cfg)
    if free_bytes is None:
        free_bytes = free_memory(cfg.train.device)
    k = max(1, min(wanted, int(free_bytes // 2 // max(need, 1))))
    why = (
        f"cohort size {k}"
        + (f" (asked {wanted})" if k < wanted else "")
        + f": about {math.ceil(need / 2**20)} MiB a run, {free_bytes // 2**20} MiB free on {cfg.train.device}"
    )
    return k, why
