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

The forward is the looped transformer of model.py itself, run on stacked [K, ...] weights (its
layers take them; a test checks losses and gradients against K separate models); the optimiser is
torch's AdamW, each run's weights in the parameter groups of its learning rate, betas and weight
decay (on matrices only, as `make_optimizer` groups them alone).

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
from torch.func import functional_call

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


def stacked_forward(
    model: torch.nn.Module, params: dict[str, torch.Tensor], idx: torch.Tensor, at: torch.Tensor
) -> torch.Tensor:
    """Logits [K, A, vocab] of K models of `model`'s shape (weights `params`, named as in
    LoopedTransformer and stacked on dim 0) for ids [K, B, T], at flat token indices `at` [K, A]
    into each model's B * T: the model's own code, run on stacked weights (model.py)."""
    return functional_call(model, params, (idx,), {"at": at})


def _grad(w: torch.Tensor) -> torch.Tensor:
    if w.grad is None:
        raise RuntimeError("a cohort weight got no gradient")
    return w.grad


class Cohort:
    """The stacked weights and AdamW state of some runs (all of one shape).

    Each run's weights are two flat tensors, its matrices and the rest (`make_optimizer`'s two
    groups), optimised by one torch AdamW whose two parameter groups per learning-rate schedule hold
    every run on that schedule; a step stacks them
    into the [K, ...] weights the model runs on. On CUDA a step's batch has a fixed shape (padded
    to the longest training example) and the step, from the gather of its batch to the AdamW
    update, is captured once as a CUDA graph and replayed: a step of small models is a few hundred
    kernel launches, and a replay is one. A step is `launch`ed on the cohort's own stream and
    `collect`ed, so that several cohorts in one process overlap on one GPU (`train_cohort`)."""

    fixed_shapes_on: tuple[str, ...] = ("cuda",)  # device types whose steps have fixed shapes (graphs: CUDA only)
    warmup = 2  # eager steps before capture (on a side stream, as CUDA graph capture requires)

    def __init__(self, runs: list[Run]):
        self.runs, K = runs, len(runs)
        self.device = next(runs[0].model.parameters()).device
        self.static = self.device.type in self.fixed_shapes_on
        self._load_data()
        self.model = runs[0].model  # whose code runs the stacked weights
        self.cfg = runs[0].cfg.model
        named = list(self.model.named_parameters())
        # matrices (decayed) first, then vectors, as make_optimizer groups them; (group, start, end, shape)
        self.layout: dict[str, tuple[int, int, int, torch.Size]] = {}
        ends = [0, 0]
        for decayed in (1, 0):
            for n, w in named:
                if int(w.dim() >= 2) == decayed:
                    g = 1 - decayed
                    self.layout[n] = (g, ends[g], ends[g] + w.numel(), w.shape)
                    ends[g] += w.numel()
        self.names = [n for n, _ in named]
        per_run = [dict(r.model.named_parameters()) for r in runs]

        def flat(g: int, get) -> torch.Tensor:  # group g flat, from get(name) -> that weight's tensor
            parts = [get(n).reshape(-1) for n in self.layout if self.layout[n][0] == g]
            return torch.cat(parts) if parts else torch.zeros(0, device=self.device)

        self.leaves = [
            [flat(g, lambda n, k=k: per_run[k][n].detach()).clone().requires_grad_() for g in (0, 1)] for k in range(K)
        ]
        self.stream, self.done = None, None
        if self.static and self.device.type == "cuda":  # its own stream; an event marks its last launched step done
            self.stream, self.done = torch.cuda.Stream(self.device), torch.cuda.Event()
        # runs whose learning rate, betas and weight decay agree at every step share parameter groups
        # (one multi-tensor update for all of them); a group's member runs are `self.members[i]`
        keys: dict[tuple, list[int]] = {}
        for k, r in enumerate(runs):
            t = r.cfg.train
            schedule = (t.lr, t.schedule, t.warmup_fraction, t.final_lr, t.steps, t.beta1, t.beta2, t.weight_decay)
            keys.setdefault((schedule, r.step), []).append(k)
        self.members = list(keys.values())
        # captured steps read each group's learning rate from the device; eager steps take floats
        lrs = [runs[m[0]].lr() for m in self.members]
        self.lrs = torch.tensor(lrs, device=self.device) if self.stream is not None else None
        groups = []
        for i, m in enumerate(self.members):
            t = runs[m[0]].cfg.train
            lr = self.lrs[i] if self.lrs is not None else lrs[i]
            for g, wd in ((0, t.weight_decay), (1, 0.0)):
                groups.append(
                    {
                        "params": [self.leaves[k][g] for k in m],
                        "lr": lr,
                        "betas": (t.beta1, t.beta2),
                        "weight_decay": wd,
                    }
                )
        if self.stream is not None:
            self.opt = torch.optim.AdamW(groups, foreach=True, capturable=True)
        else:
            self.opt = torch.optim.AdamW(groups, fused=self.device.type in ("cpu", "cuda"))
        for k, r in enumerate(runs):  # each run's AdamW state, as its own optimiser holds it
            states = {n: r.opt.state.get(per_run[k][n], {}) for n in self.names}
            if all("exp_avg" in st for st in states.values()):
                step = torch.as_tensor(states[self.names[0]]["step"], dtype=torch.float32)
                for g in (0, 1):
                    self.opt.state[self.leaves[k][g]] = {
                        "step": step.clone().to(self.device),
                        "exp_avg": flat(g, lambda n: states[n]["exp_avg"]).clone(),
                        "exp_avg_sq": flat(g, lambda n: states[n]["exp_avg_sq"]).clone(),
                    }
        clip = [r.cfg.train.grad_clip for r in runs]
        self.clip = torch.tensor(clip, device=self.device).repeat_interleave(2)  # [2K]: per flat weight
        self.clipped = torch.tensor([c > 0 for c in clip], device=self.device).repeat_interleave(2)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_taken = 0

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

    def weights(self, ks: list[int] | None = None) -> dict[str, torch.Tensor]:
        """The stacked weights [K, ...] by name (of runs `ks` only, when given), differentiable
        with respect to the runs' flat weights."""
        leaves = self.leaves if ks is None else [self.leaves[k] for k in ks]
        groups = [torch.stack([pair[g] for pair in leaves]) for g in (0, 1)]  # [K, P_g]
        return {n: groups[g][:, a:b].view(len(leaves), *shape) for n, (g, a, b, shape) in self.layout.items()}

    def _compute(self, ints: torch.Tensor, T: int) -> torch.Tensor:
        """One forward, backward, clipping and AdamW update of every run on the device, from the
        staged batch `ints` [K, B + A + 1]; returns the K losses. No host sync: on CUDA this is
        what the graph holds."""
        K, B = len(self.runs), self.runs[0].cfg.train.batch_size
        first, at, count = ints[:, :B], ints[:, B:-1], ints[:, -1:]
        ks = torch.arange(K, device=ints.device).view(K, 1, 1)
        if self.runs[0].stream is not None:
            rows = self.tokens[ks, first.unsqueeze(-1) + torch.arange(T + 1, device=ints.device)]  # [K, B, T+1]
        else:
            rows = self.tokens[:, :, : T + 1][ks.view(K, 1), first]  # [K, B, T+1]
        targets = rows[..., 1:].reshape(K, -1).gather(1, at)
        weight = (torch.arange(at.shape[1], device=ints.device) < count).float()  # [K, A] 0: padding
        logits = stacked_forward(self.model, self.weights(), rows[..., :-1], at)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(weight)
        losses = (ce * weight).sum(1) / weight.sum(1)  # each run's mean over its own targets
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # runs share no weights: each gets its own gradient
        with torch.no_grad():  # each run clipped by its own norm, as clip_grad_norm_ clips it alone
            grads = [_grad(w) for pair in self.leaves for w in pair]  # [2K], run by run
            # torch's own multi-tensor kernels, as clip_grad_norm_ uses them
            per_weight = torch._foreach_norm(grads)  # pyright: ignore[reportPrivateImportUsage]
            norms = torch.stack(per_weight).view(-1, 2).pow(2).sum(1).sqrt()  # [K]
            scale = (self.clip / (norms.repeat_interleave(2) + 1e-6)).clamp(max=1.0)
            factors = list(torch.where(self.clipped, scale, 1.0).unbind())
            torch._foreach_mul_(grads, factors)  # pyright: ignore[reportPrivateImportUsage]
        self.opt.step()
        return losses.detach()

    def launch(self) -> None:
        """Queue one AdamW step of every run on the batch it draws alone at its step. On CUDA the
        step runs on the cohort's own stream, so that the steps of several cohorts overlap on one
        GPU; `collect` waits for it."""
        ints, T, self.n_tokens = self._stage()
        host_ints = torch.from_numpy(ints)
        lrs = [r.lr() for r in self.runs]
        self.steps_taken += 1
        if self.stream is None or self.done is None:  # eager (fixed shapes on a CPU only in a test)
            for i, group in enumerate(self.opt.param_groups):
                group["lr"] = lrs[self.members[i // 2][0]]
            self.losses = self._compute(host_ints.to(self.device), T)
            return
        assert self.lrs is not None
        host_lrs = torch.tensor([lrs[m[0]] for m in self.members], dtype=self.lrs.dtype)
        if self.steps_taken == 1:  # the graph's inputs and outputs live here, at fixed addresses
            self.host_ints, self.host_lrs = host_ints.pin_memory(), host_lrs.pin_memory()
            self.ints = torch.empty_like(host_ints, device=self.device)
        else:  # the last step was collected: the pinned buffers are free
            self.host_ints.copy_(host_ints)
            self.host_lrs.copy_(host_lrs)
        # after whatever the default stream did with the weights (stacking them, `sync`)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self.ints.copy_(self.host_ints, non_blocking=True)
            self.lrs.copy_(self.host_lrs, non_blocking=True)  # the learning rates the optimiser reads
            if self.graph is None and self.steps_taken <= self.warmup:  # eager, off the default stream
                self.losses = self._compute(self.ints, T)
            else:
                if self.graph is None:
                    self.graph = torch.cuda.CUDAGraph()
                    self.opt.zero_grad(set_to_none=True)
                    with torch.cuda.graph(self.graph, stream=self.stream):
                        self.losses = self._compute(self.ints, T)
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
        sub = self.weights(ks)

        def next_logits(ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:  # ids [K*N, t], last [K*N]
            t = ids.shape[1]
            at = torch.arange(N, device=ids.device) * t + last.view(K, N)  # [K, N] into each run's N * t
            return stacked_forward(self.model, sub, ids.view(K, N, t), at).flatten(0, 1)

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
        states = [self.opt.state.get(leaf, {}) for leaf in self.leaves[k]]
        with torch.no_grad():
            for n, p in r.model.named_parameters():
                g, a, b, shape = self.layout[n]
                p.copy_(self.leaves[k][g][a:b].view(shape))
                if "exp_avg" in states[g]:
                    st = states[g]
                    r.opt.state[p] = {
                        "step": st["step"].detach().clone().to(p.device),
                        "exp_avg": st["exp_avg"][a:b].view(shape).clone(),
                        "exp_avg_sq": st["exp_avg_sq"][a:b].view(shape).clone(),
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
