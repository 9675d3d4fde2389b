"""`jointtask bench`: training throughput of jointtask's trainer against a naive baseline, and
the fraction of this core's FP32 peak, in one run on one thread, each measurement in a fresh
process (spawned) so that none inherits another's allocator state or caches.

naive: the model a researcher writes first, defined here and sharing no code with the package:
the same architecture (one pre-LayerNorm block applied 4 times, one head, GELU MLP, learned
positions) as a plain nn.Module with F.scaled_dot_product_attention, trained by an eager loop with
AdamW on batches of 64 packed 128-token windows cut from the concatenated training samples, loss
on every token.
ours: the package's training step (whole examples packed into rows of 64, 128, ... tokens when
padding would waste over a third of the batch, each token attending inside its own example via
the C++ kernels of the fused trunk (fused_trunk.py), loss and output head only on the tokens after the first
'=', batch 256), as `jointtask train` runs it, batch building and malloc settings included
(train/allocator.py); naive runs with the C library's defaults, as a plain script does. Both are
also measured with the other setting: `ratio_same_allocator` compares them with it alike.
Tokens/s counts input tokens that are not padding. FLOPs per token: 6 x (weights applied per
token, with the block counted once per pass) + 6 x passes x context x width for attention, where
context is the mean number of keys a query needs: its causal context inside its own example for
ours (whatever the kernel computes beyond that is waste, not work), (128 + 1) / 2 for naive.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .fileio import atomic_write_json
from . import cpu_kernels
from .model import LoopedTransformer, ModelConfig
from .tasks.dataset import build_task_data, context_length
from .tasks.spec import DataConfig, TaskConfig
from .train.config import RunConfig
from .train.allocator import keep_freed_memory
from .train.loop import batch_indices, make_batch, make_optimizer, optimisation_step


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is often just the architecture)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops(seconds: float = 1.0, n: int = 512) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0)


def flops_per_token(model: LoopedTransformer, context: float) -> float:
    cfg = model.cfg
    d = cfg.width
    block = sum(p.numel() for p in model.blocks.parameters()) / cfg.blocks
    applied = cfg.recurrence * cfg.blocks * block + d * model.vocab_size
    return 6 * applied + 6 * cfg.recurrence * cfg.blocks * context * d


class NaiveLoopedTransformer(nn.Module):
    """The baseline: the paper's architecture written the obvious way."""

    def __init__(self, vocab: int, width: int, context: int, recurrence: int = 4):
        super().__init__()
        self.recurrence = recurrence
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.ln_attn, self.ln_mlp, self.ln_final = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T))
        for _ in range(self.recurrence):
            q, k, v = (t.unsqueeze(1) for t in self.qkv(self.ln_attn(x)).chunk(3, dim=-1))
            x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).squeeze(1))
            x = x + self.mlp(self.ln_mlp(x))
        return self.head(self.ln_final(x))


def _time_steps(step, seconds: float) -> tuple[float, int]:
    for _ in range(3):
        step()
    tokens, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tokens += step()
    return time.perf_counter() - t0, tokens


def bench_task() -> tuple[TaskConfig, object]:
    task = TaskConfig(ops=["ADD", "MAX", "MED"], modulus=10, max_depth=2)
    return task, build_task_data(task, DataConfig(per_n=500, eval_count=0, eval_train_count=0), 0)


def measure(loop: str, width: int, kept_memory: bool, seconds: float) -> dict:
    """Tokens/s and FLOP/s of one loop ("ours" or "naive") at one width, run in a fresh process
    (run_bench spawns one per measurement): the allocator's state and the caches then owe
    nothing to whatever ran before. `kept_memory` applies the trainer's malloc settings
    (train/allocator.py), as `jointtask train` does. The peak is measured in the same process
    just before and after the loop (the larger of the two): this machine's speed drifts by a
    few percent over minutes, and a share of a peak taken at another time inherits the drift."""
    torch.set_num_threads(1)
    peak_seconds = max(0.5, seconds / 10)
    peak_before = peak_flops(peak_seconds)
    applied = keep_freed_memory() if kept_memory else False
    task, data = bench_task()
    vocab = len(data.vocab)
    cfg = RunConfig(task=task, model=ModelConfig(width=width))
    torch.manual_seed(0)
    ours = LoopedTransformer(cfg.model, vocab, context_length(task))
    if loop == "naive":
        # packed windows of 128 tokens, batch 64, loss everywhere; written out on purpose as a plain
        # loop that shares no training code with the package, so it stays an independent baseline
        stream = np.concatenate([row[:n] for row, n in zip(data.train.ids, data.train.lengths)])
        naive = NaiveLoopedTransformer(vocab, width, 128)
        opt = torch.optim.AdamW(naive.parameters(), lr=5e-4)
        rng = np.random.default_rng(0)

        def step():
            starts = rng.integers(0, len(stream) - 129, size=64)
            chunk = torch.from_numpy(np.stack([stream[s: s + 129] for s in starts]))
            logits = naive(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(naive.parameters(), 1.0)
            opt.step()
            return 64 * 128

        seconds_taken, tokens = _time_steps(step, seconds)
        context = 64.5  # mean causal context of a 128-token window
    else:  # the trainer's own step, batch building included
        opt = make_optimizer(ours, cfg)
        state = {"step": 0}
        contexts = []  # per token: the keys its query needs (its causal context within its example)

        def step():
            b = make_batch(data.train, batch_indices(0, state["step"], len(data.train), cfg.train.batch_size),
                           "answer", "cpu", cfg.train.pack)
            state["step"] += 1
            if b.packing is None:
                contexts.append(float(b.inputs.shape[1] + 1) / 2)
            else:
                real = b.packing.segment >= 0
                contexts.append(float((b.pos[real] + 1).double().mean()))
            optimisation_step(ours, opt, b, cfg.train.grad_clip)
            return b.n_tokens

        seconds_taken, tokens = _time_steps(step, seconds)
        context = float(np.mean(contexts))
    tok_s = tokens / seconds_taken
    return {"tok_s": tok_s, "flops": tok_s * flops_per_token(ours, context), "kept_memory": applied,
            "kernels": cpu_kernels.usable(torch.zeros(1)), "peak_flops": max(peak_before, peak_flops(peak_seconds))}


def _in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(measure, *args).result()


def bench_width(width: int, seconds: float) -> dict:
    """Both loops as a user runs them (ours with the trainer's malloc settings, naive with the C
    library's defaults), then each with the other allocator setting, so the JSON shows how much
    of the ratio the allocator accounts for."""
    ours = _in_fresh_process("ours", width, True, seconds)
    naive = _in_fresh_process("naive", width, False, seconds)
    ours_default = _in_fresh_process("ours", width, False, seconds)
    naive_kept = _in_fresh_process("naive", width, True, seconds)
    return {"ours_tok_s": ours["tok_s"], "naive_tok_s": naive["tok_s"], "ratio": ours["tok_s"] / naive["tok_s"],
            "peak_fraction": ours["flops"] / ours["peak_flops"], "naive_peak_fraction": naive["flops"] / naive["peak_flops"],
            "peak_flops": ours["peak_flops"], "naive_peak_flops": naive["peak_flops"],
            "ours_default_malloc_tok_s": ours_default["tok_s"], "naive_kept_memory_tok_s": naive_kept["tok_s"],
            "ratio_same_allocator": ours["tok_s"] / naive_kept["tok_s"] if naive_kept["kept_memory"] else None,
            "kept_memory": ours["kept_memory"],
            "kernels": "fused trunk (C++)" if ours["kernels"] else "off: PyTorch ops, SDPA with masks"}


def run_bench(quick: bool = False, widths=(16, 32, 64, 128)) -> dict:
    torch.set_num_threads(1)
    seconds = 3.0 if quick else 15.0
    cpu_kernels.kernels()  # compile (or load) once here, not in a measured process
    out = {"machine": {"platform": platform.platform(), "processor": cpu_model(),
                       "torch": torch.__version__, "threads": 1},
           "task": "ADD+MAX+MED mod 10, depth 2", "seconds_per_measurement": seconds,
           "peak": "FP32 512x512 matmul on one thread, in each measurement's process before and after it",
           "widths": {str(w): bench_width(w, seconds) for w in widths}}
    out["peak_flops"] = max(r["peak_flops"] for r in out["widths"].values())
    return out


def write_bench(path, quick: bool = False) -> dict:
    res = run_bench(quick)
    atomic_write_json(path, res)
    return res


if __name__ == "__main__":
    print(json.dumps(run_bench(quick=True), indent=1))
