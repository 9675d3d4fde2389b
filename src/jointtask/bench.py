"""`jointtask bench`: training throughput of jointtask's trainer against a naive baseline, and
the fraction of this core's FP32 peak, on one thread, each measurement in a fresh process
(spawned) so that none inherits another's allocator state or caches. The two loops alternate
(ours, naive, ours, naive, ...) and each reports its median: the speed of a shared machine drifts
over minutes, and alternating keeps that drift out of the ratio.

naive: the model a researcher writes first, defined here and sharing no code with the package:
the same architecture (one pre-LayerNorm block applied 4 times, one head, GELU MLP, learned
positions) as a plain nn.Module with F.scaled_dot_product_attention, trained by an eager loop with
AdamW on batches of 64 packed 128-token windows cut from the concatenated training samples, loss
on every token.
ours: the package's training step as `jointtask train` runs it (plain PyTorch: whole examples
packed into rows of 64, 128, ... tokens when padding would waste over a third of the batch, each
token attending inside its own example through a block-diagonal mask, loss and output head only on
the tokens after the first '=', batch 256, fused AdamW), batch building included.
Tokens/s counts input tokens that are not padding. FLOPs per token: 6 x (weights applied per
token, with the block counted once per pass) + 6 x passes x context x width for attention, where
context is the mean number of keys a query needs: its causal context inside its own example for
ours, (128 + 1) / 2 for naive.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .fileio import atomic_write_json
from .sweep.runner import processor
from .model import LoopedTransformer, ModelConfig
from .tasks.dataset import TaskData, build_task_data, context_length
from .tasks.config import DataConfig, TaskConfig
from .train.config import RunConfig, TrainConfig
from .train.loop import Run, batch_indices, make_batch, make_optimizer, optimisation_step


PATH = "plain PyTorch (SDPA attention with block-diagonal masks, fused AdamW)"
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu_flags() -> list[str]:
    """The vector extensions this CPU reports (x86: /proc/cpuinfo flags; Arm: Features)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in VECTOR_FLAGS if f in have]
    except OSError:
        pass
    return []


def peak_flops(seconds: float = 1.0, n: int = 512) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
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


def bench_task() -> tuple[TaskConfig, TaskData]:
    task = TaskConfig(ops=["ADD", "MAX", "MED"], modulus=10, max_depth=2)
    return task, build_task_data(task, DataConfig(per_n=500, eval_count=1, eval_train_count=0), 0)


def measure(loop: str, width: int, seconds: float) -> dict:
    """Tokens/s and FLOP/s of one loop ("ours" or "naive") at one width, run in a fresh process
    (run_bench spawns one per measurement): the allocator's state and the caches then owe
    nothing to whatever ran before. The peak is measured in the same process
    just before and after the loop (the larger of the two): this machine's speed drifts by a
    few percent over minutes, and a share of a peak taken at another time inherits the drift."""
    torch.set_num_threads(1)
    peak_seconds = max(0.5, seconds / 10)
    peak_before = peak_flops(peak_seconds)
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

        def naive_step():
            starts = rng.integers(0, len(stream) - 129, size=64)
            chunk = torch.from_numpy(np.stack([stream[s : s + 129] for s in starts]))
            logits = naive(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(naive.parameters(), 1.0)
            opt.step()
            return 64 * 128

        seconds_taken, tokens = _time_steps(naive_step, seconds)
        context = 64.5  # mean causal context of a 128-token window
    else:  # the trainer's own step, batch building included
        opt = make_optimizer(ours, cfg)
        state = {"step": 0}
        contexts = []  # per token: the keys its query needs (its causal context within its example)

        def step():
            b = make_batch(
                data.train,
                batch_indices(0, state["step"], len(data.train), cfg.train.batch_size),
                "answer",
                "cpu",
                cfg.train.pack,
            )
            state["step"] += 1
            if b.packing is None:
                contexts.append(float(b.inputs.shape[1] + 1) / 2)
            else:  # padding sits at position 0 of no example: each padding slot adds 1 to the sum
                n_pad = len(b.inputs) - b.n_tokens
                assert b.positions is not None
                contexts.append(float((b.positions + 1).sum() - n_pad) / b.n_tokens)
            optimisation_step(ours, opt, b, cfg.train.grad_clip)
            return b.n_tokens

        seconds_taken, tokens = _time_steps(step, seconds)
        context = float(np.mean(contexts))
    tok_s = tokens / seconds_taken
    return {
        "tok_s": tok_s,
        "flops": tok_s * flops_per_token(ours, context),
        "peak_flops": max(peak_before, peak_flops(peak_seconds)),
    }


def _in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(measure, *args).result()


def bench_width(width: int, seconds: float, rounds: int = 3) -> dict:
    """Both loops alternating for `rounds` rounds of `seconds` each; medians."""
    runs = {"ours": [], "naive": []}
    for _ in range(rounds):
        runs["ours"].append(_in_fresh_process("ours", width, seconds))
        runs["naive"].append(_in_fresh_process("naive", width, seconds))
    med = {
        k: {key: float(np.median([r[key] for r in v])) for key in ("tok_s", "flops", "peak_flops")}
        for k, v in runs.items()
    }
    o, n = med["ours"], med["naive"]
    return {
        "ours_tok_s": o["tok_s"],
        "naive_tok_s": n["tok_s"],
        "ratio": o["tok_s"] / n["tok_s"],
        "ratio_per_round": [a["tok_s"] / b["tok_s"] for a, b in zip(runs["ours"], runs["naive"])],
        "peak_fraction": o["flops"] / o["peak_flops"],
        "naive_peak_fraction": n["flops"] / n["peak_flops"],
        "peak_flops": o["peak_flops"],
        "naive_peak_flops": n["peak_flops"],
    }


def recommendation(widths: dict) -> str:
    slower = [w for w, r in widths.items() if r["ratio"] < 1.0]
    if not slower:
        return f"{PATH}: at least as fast as the naive loop at every width measured"
    return (
        f"{PATH} is the only training path; it measured slower than the naive loop at width(s) "
        f"{', '.join(slower)} here: report this machine (docs/performance.md)"
    )


def run_bench(quick: bool = False, widths=(16, 32, 64, 128)) -> dict:
    torch.set_num_threads(1)
    seconds, rounds = (2.0, 2) if quick else (5.0, 3)
    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": processor(),
            "vector_extensions": cpu_flags(),
            "torch": torch.__version__,
            "threads": 1,
        },
        "path": PATH,
        "task": "ADD+MAX+MED mod 10, depth 2",
        "seconds_per_measurement": seconds,
        "rounds": rounds,
        "peak": "FP32 512x512 matmul on one thread, in each measurement's process before and after it",
        "widths": {str(w): bench_width(w, seconds, rounds) for w in widths},
    }
    out["peak_flops"] = max(r["peak_flops"] for r in out["widths"].values())
    out["recommendation"] = recommendation(out["widths"])
    return out


def measure_cohort(width: int, size: int, seconds: float, device: str) -> float:
    """Model-steps per second of a cohort of `size` runs at `width` (size 0: one run alone, on the
    solo trainer's path, packing and all). The runs are real runs (train/loop.py's `Run`) in a
    scratch directory; only their steps are timed."""
    from .train.cohort import Cohort

    torch.set_num_threads(1)
    task = TaskConfig(ops=["ADD", "MAX", "MED"], modulus=20, max_depth=1)  # the C2 grid's task
    data = DataConfig(per_n=200, eval_count=1, eval_train_count=0)
    cfgs = [
        RunConfig(task=task, data=data, model=ModelConfig(width=width), seed=k, train=TrainConfig(device=device))
        for k in range(max(size, 1))
    ]
    dev = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="jointtask-bench-") as scratch:
        runs = [Run(c, Path(scratch) / str(k)) for k, c in enumerate(cfgs)]
        if size == 0:
            r = runs[0]

            def work() -> int:
                optimisation_step(r.model, r.opt, r.batch(), r.cfg.train.grad_clip)
                r.state["step"] += 1
                return 1
        else:
            cohort = Cohort(runs)

            def work() -> int:
                cohort.step()
                for r in runs:
                    r.state["step"] += 1
                return size

        def step() -> int:
            n = work()
            if dev.type == "cuda":  # a step is timed when its work is done, not when it is queued
                torch.cuda.synchronize(dev)
            return n

        for _ in range(Cohort.warmup + 1):  # warm-up (on CUDA: past the graph's capture)
            step()
        taken, model_steps = _time_steps(step, seconds)
    return model_steps / taken


def run_cohort_bench(
    device: str = "cpu",
    quick: bool = False,
    widths=(8, 16, 32, 64, 128),
    sizes=(1, 4, 16, 64),
    seconds: float | None = None,
) -> dict:
    """Model-steps per second for cohorts of each size at each width, against runs alone."""
    seconds = seconds or (1.0 if quick else 3.0)
    rows = {}
    for w in widths:
        solo = measure_cohort(w, 0, seconds, device)
        rows[str(w)] = {"solo": solo, **{str(k): measure_cohort(w, k, seconds, device) for k in sizes}}
        rows[str(w)]["speedup"] = {str(k): rows[str(w)][str(k)] / solo for k in sizes}
    from .train.cohort import Cohort

    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(torch.device(device)) if cuda else processor()
    fixed = torch.device(device).type in Cohort.fixed_shapes_on
    return {
        "machine": {"device": device, "name": name, "torch": torch.__version__, "threads": 1},
        "path": "cohort steps of fixed shape replayed as one CUDA graph" if cuda and fixed else "eager cohort steps",
        "task": "ADD+MAX+MED mod 20, depth 1, batch 256 (the C2 grid)",
        "seconds_per_measurement": seconds,
        "unit": "model-steps per second; speedup = cohort / one run alone (the solo trainer, packing and all)",
        "widths": rows,
    }


def write_bench(path, quick: bool = False, cohort: bool = False, device: str = "cpu") -> dict:
    res = run_cohort_bench(device, quick) if cohort else run_bench(quick)
    atomic_write_json(path, res)
    return res


if __name__ == "__main__":
    print(json.dumps(run_bench(quick=True), indent=1))
