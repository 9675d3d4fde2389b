"""One training run: data, model, AdamW with warm-up and decay, periodic
greedy evaluation, atomic checkpoints, exact resume, early stopping, a final result.json."""

from __future__ import annotations

import bisect
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..fileio import append_line, atomic_write_bytes, atomic_write_text, read_jsonl
from ..model import LoopedTransformer, Packing
from ..model_config import count_params
from ..tasks.families import Vocab
from ..tasks.dataset import EncodedSet, TaskData, build_task_data, context_length
from .config import RunConfig, config_from_dict, load_config, load_toml
from .evaluate import accuracy
from .run_dir import (
    CHECKPOINT,
    CONFIG,
    LOCK,
    METRICS,
    ExpressionCount,
    RunResult,
    quarantine,
    read_result,
    still_improving,
    transfer_run_id,
    write_result,
)


def lr_at(step: int, cfg) -> float:
    """Learning rate for optimisation step `step` (0-based)."""
    t = cfg.train
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "exponential":  # lr decays geometrically from lr to final_lr (nrgpt-style baseline)
        return t.lr * (t.final_lr / t.lr) ** (step / max(1, t.steps - 1))
    warm = int(t.warmup_fraction * t.steps)
    if step < warm:
        return t.lr * (step + 1) / warm
    progress = (step - warm) / max(1, t.steps - warm - 1)
    return t.final_lr + 0.5 * (t.lr - t.final_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """The examples of step `step`: a pure function of (seed, step), so a resumed run draws
    exactly the batches the uninterrupted run would have drawn."""
    return np.random.default_rng([seed, 7, step]).integers(n, size=batch_size)


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T], or flat [N] when packed
    targets: torch.Tensor  # [K] the tokens to predict
    loss_at: torch.Tensor  # [K] flat indices into B*T (or N) of the inputs whose next token is a target
    n_tokens: int  # tokens processed (non-padding inputs)
    positions: torch.Tensor | None = None  # packed: [N] position of each token within its example
    packing: Packing | None = None  # packed: inputs are flat [N], laid out in rows (model.Packing)


def pack_rows(lengths: np.ndarray, pack: int) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Best-fit decreasing packing of examples into rows of `pack`, 2*`pack`, 4*`pack`, ... tokens
    (each example opens the shortest row that holds it). Returns each example's row and offset,
    rows numbered group by group, and each group's row count and row length."""
    sizes = [pack]
    while sizes[-1] < lengths.max():
        sizes.append(2 * sizes[-1])
    row_len: list[int] = []
    rooms: list[tuple[int, int]] = []  # (free tokens, row), sorted: best fit is a bisection
    row = np.empty(len(lengths), np.int64)
    offset = np.empty(len(lengths), np.int64)
    for j in np.argsort(-lengths, kind="stable"):
        n = int(lengths[j])
        i = bisect.bisect_left(rooms, (n, -1))
        if i < len(rooms):
            room, r = rooms.pop(i)
        else:
            r, room = len(row_len), next(w for w in sizes if w >= n)
            row_len.append(room)
        row[j], offset[j] = r, row_len[r] - room
        if room > n:
            bisect.insort(rooms, (room - n, r))
    # renumber rows so that rows of one length are contiguous, shortest first
    order = np.argsort(np.asarray(row_len), kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    groups = [(row_len.count(w), w) for w in sizes if w in row_len]
    return renumber[row], offset, [c for c, _ in groups], [w for _, w in groups]


def padded_loss_at(lengths: np.ndarray, starts: np.ndarray, T: int) -> np.ndarray:
    """Flat indices into [len(lengths), T] padded inputs of those whose next token is a target:
    positions from each example's `starts` up to its input `lengths`."""
    pos = np.arange(T)
    return np.flatnonzero((pos >= starts[:, None]) & (pos < lengths[:, None]))


def loss_starts(train: EncodedSet, idx: np.ndarray, loss_on: str) -> np.ndarray:
    """The first input position of each example whose next token is in the loss."""
    return train.prompt_lengths[idx] - 1 if loss_on == "answer" else np.zeros(len(idx), np.int64)


def make_batch(train: EncodedSet, idx: np.ndarray, loss_on: str, device, pack: int = 0) -> Batch:
    """Whole examples. With `pack` > 0 they are packed into rows (see `pack_rows`) with
    block-diagonal causal masks and positions restarting at each example: the same computation
    per example as padding each on its own, without most of the padding."""
    lengths = train.lengths[idx] - 1  # inputs: every token but the last
    starts = loss_starts(train, idx, loss_on)
    # packing pays when padding would waste over a third of the batch (measured: docs/performance.md)
    if pack <= 0 or lengths.sum() > 0.67 * len(lengths) * lengths.max():
        T = int(lengths.max())
        ids = torch.from_numpy(train.ids[idx, : T + 1])
        flat = torch.from_numpy(padded_loss_at(lengths, starts, T))
        return Batch(
            ids[:, :-1].to(device), ids[:, 1:].reshape(-1)[flat].to(device), flat.to(device), int(lengths.sum())
        )
    row, offset, row_counts, row_lengths = pack_rows(lengths, pack)
    row_start = np.concatenate([[0], np.cumsum(np.repeat(row_lengths, row_counts))])[:-1]
    example = np.repeat(np.arange(len(idx)), lengths)  # one entry per input token
    t = np.arange(len(example)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # its position
    dest = np.repeat(row_start[row] + offset, lengths) + t
    N = int(np.dot(row_counts, row_lengths))
    inputs, nxt, pos = np.zeros(N, np.int64), np.zeros(N, np.int64), np.zeros(N, np.int64)
    seg = np.full(N, -1, np.int64)
    lossmask = np.zeros(N, bool)
    inputs[dest] = train.ids[idx[example], t]
    nxt[dest] = train.ids[idx[example], t + 1]
    pos[dest], seg[dest], lossmask[dest] = t, example, t >= starts[example]
    flat = torch.from_numpy(lossmask).nonzero().squeeze(1)
    masks, begin = [], 0  # per group [rows, 1, w, w]: causal and inside one example (padding: -1, sees itself)
    for n_rows, w in zip(row_counts, row_lengths):
        s = torch.from_numpy(seg[begin : begin + n_rows * w]).view(n_rows, w)
        begin += n_rows * w
        allowed = (s[:, :, None] == s[:, None, :]) & torch.ones(w, w, dtype=torch.bool).tril()
        # additive (0 / -inf): SDPA would convert a boolean mask again in every pass (measured: 4% of a step)
        masks.append(torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf")).unsqueeze(1).to(device))
    return Batch(
        torch.from_numpy(inputs).to(device),
        torch.from_numpy(nxt)[flat].to(device),
        flat.to(device),
        int(lengths.sum()),
        torch.from_numpy(pos).to(device),
        Packing(row_counts, row_lengths, masks),
    )


def window_starts(seed: int, step: int, n: int, batch_size: int, window: int) -> np.ndarray:
    """Where step `step`'s windows start in a stream of `n` tokens: a pure function of (seed, step)."""
    return np.random.default_rng([seed, 7, step]).integers(0, n - window - 1, size=batch_size)


def make_window_batch(stream: np.ndarray, seed: int, step: int, batch_size: int, window: int, device) -> Batch:
    """The naive baseline's batch: windows of `window` + 1 tokens at random offsets of the
    concatenated training samples; every position predicts the next token."""
    starts = window_starts(seed, step, len(stream), batch_size, window)
    chunk = torch.from_numpy(np.stack([stream[s : s + window + 1] for s in starts]))
    n = batch_size * window
    return Batch(chunk[:, :-1].to(device), chunk[:, 1:].reshape(-1).to(device), torch.arange(n, device=device), n)


def loss_on_batch(model, b: Batch) -> torch.Tensor:
    h = model.residual(b.inputs, b.positions, b.packing, at=b.loss_at)  # the head only where the loss is
    return F.cross_entropy(model.head(h), b.targets)


def optimisation_step(model, opt, b: Batch, grad_clip: float) -> float:
    """One AdamW step on one batch; returns the loss."""
    loss = loss_on_batch(model, b)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


def model_context(cfg: RunConfig) -> int:
    """The model's context length: the longest sample, or the baseline's window."""
    ctx = context_length(cfg.task)
    return max(ctx, cfg.train.window) if cfg.train.packing == "windows" else ctx


MAX_TRAIN_SAMPLES = 5_000_000


def memory_estimate(cfg: RunConfig) -> dict[str, float]:
    """Bytes a run needs, roughly and from the config alone: its training set (token ids), its
    weights with gradients and AdamW moments, and one step's activations (saved for backward)."""
    family = cfg.task.family()
    T, n = model_context(cfg), family.n_values
    params = count_params(cfg.model, len(Vocab(family)), T)["params"]
    m, t = cfg.model, cfg.train
    width_per_token = m.recurrence * m.blocks * (16 + 2 * m.mlp_ratio) * m.width + m.recurrence * m.blocks * m.heads * T
    rows = t.batch_size * (T if t.packing == "examples" else t.window)
    return {
        "data": float(cfg.data.per_n) * n * T * 8,
        "model": float(params) * 4 * 4,
        "activations": float(rows) * width_per_token * 4,
    }


def available_memory() -> float:
    """Bytes of memory this machine has available now (its total when that cannot be read)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_fits(cfg: RunConfig, runs_at_once: int = 1) -> None:
    """Refuse, before any work, a config whose data or model cannot fit in this machine's memory
    (`runs_at_once` runs side by side), with the estimate. A GPU's own memory is checked by the
    cohort sizing; this bounds what every run holds in the host's memory."""
    n_values = cfg.task.family().n_values
    n_train = cfg.data.per_n * n_values
    if n_train > MAX_TRAIN_SAMPLES:
        raise UserError(
            f"data.per_n x {n_values} values = {n_train:,} training samples; generating more than "
            f"{MAX_TRAIN_SAMPLES:,} would take hours: reduce data.per_n or the task's size"
        )
    need = memory_estimate(cfg)
    if cfg.train.device != "cpu":
        need["activations"] = 0.0
    total, have = runs_at_once * sum(need.values()), available_memory()
    if total > 0.8 * have:
        parts = ", ".join(f"{k} {v / 2**30:.3g} GiB" for k, v in need.items())
        raise UserError(
            f"this run needs about {total / 2**30:.3g} GiB ({parts}{f', x{runs_at_once} runs' if runs_at_once > 1 else ''}) "
            f"and {have / 2**30:.3g} GiB are available: reduce model.width, train.batch_size, data.per_n or the task's size"
        )


def build_model(cfg: RunConfig, vocab_size: int) -> LoopedTransformer:
    torch.manual_seed(cfg.seed)
    return LoopedTransformer(cfg.model, vocab_size, model_context(cfg))


def make_optimizer(model, cfg: RunConfig):
    t = cfg.train
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step on the CPU and on CUDA (measured in docs/performance.md)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=fused, foreach=None if fused else True)


def evaluate(model, sets: dict, data: TaskData, device) -> dict[str, float]:
    return {k: accuracy(model, s, data.vocab, device) for k, s in sets.items()}


def save_checkpoint(path: Path, model, opt, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or not {"model", "optimizer", "state"} <= ck.keys():
            raise ValueError("missing entries")
        return ck
    except Exception as e:
        raise UserError(f"corrupt checkpoint {str(path)!r}: {type(e).__name__}") from None


class Progress:
    """A rich progress bar on a terminal; a plain line per evaluation otherwise."""

    def __init__(self, total: int, start: int, label: str, quiet: bool):
        self.quiet, self.bar = quiet, None
        if not quiet and sys.stderr.isatty():
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(transient=False)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=start)

    def advance(self, step: int, loss: float):
        if self.bar:
            self.bar.update(self.task, completed=step, description=f"loss {loss:.3f}")

    def line(self, text: str):
        if self.quiet:
            return
        if self.bar:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar:
            self.bar.stop()


class Run:
    """One run's data, model, optimiser and bookkeeping, whoever takes its optimisation steps:
    `train_run` alone, or train/cohort.py together with runs of the same shape. Opening a run
    checks its directory (a changed config is refused), writes its config, builds its data and
    its model (the same initialisation either way) and resumes from its checkpoint. `result` is
    set when the directory holds a finished run already."""

    def __init__(self, cfg: RunConfig, out: str | Path, resume: bool = False, init_from: str | Path | None = None):
        self.cfg, self.out = cfg, Path(out)
        out = self.out
        self.device = torch.device(cfg.train.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("train.device is cuda but no CUDA device is available")
        if out.exists() and not out.is_dir():
            raise UserError(f"run directory {str(out)!r} is a file")
        if (out / CONFIG).exists():  # before anything is read back: a changed config is never resumed
            saved = load_config(out / CONFIG)
            if saved.run_id() != cfg.run_id():
                raise UserError(f"run directory {str(out)!r} holds a different config; use another --out")
        leftover = {p.name for p in out.iterdir()} - {CONFIG, LOCK} if out.exists() else set()
        if leftover and not resume:
            raise UserError(f"run directory {str(out)!r} is not empty; pass --resume to continue it")
        self.run_id, self.init_id = cfg.run_id(), None
        if init_from is not None:
            self.init_id = _run_id_of(Path(init_from))
            self.run_id = transfer_run_id(self.run_id, self.init_id)
        self.result = read_result(out, self.run_id) if resume else None
        if self.result is not None:
            return
        if resume:
            quarantine(out)  # an unreadable record, or another run's, is set aside and recomputed
        src = load_checkpoint(Path(init_from) / CHECKPOINT) if init_from is not None else None
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG, cfg.to_toml())

        self.data = build_task_data(cfg.task, cfg.data, cfg.seed)
        self.model = build_model(cfg, len(self.data.vocab)).to(self.device)
        if src is not None:
            try:
                self.model.load_state_dict(src["model"])
            except RuntimeError:
                raise UserError(
                    f"--init-from {str(init_from)!r} holds a model of another shape than "
                    f"this config's (width {cfg.model.width})"
                ) from None
        self.opt = make_optimizer(self.model, cfg)
        self.state = {
            "step": 0,
            "tokens_seen": 0,
            "train_seconds": 0.0,
            "best": -1.0,
            "since_best": 0,
            "stop_reason": None,
            "loss": float("nan"),
            "running": 0.0,
            "n_running": 0,
        }
        met_path = out / METRICS
        ck = None
        if resume and (out / CHECKPOINT).exists():
            try:
                ck = load_checkpoint(out / CHECKPOINT)
            except UserError as e:  # a damaged checkpoint is set aside: the run starts again
                print(f"warning: {e}; training {str(out)!r} from the start", file=sys.stderr)
                quarantine(out, CHECKPOINT)
        if ck is not None:
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
            self.state = ck["state"]
            # metrics logged after the checkpoint belong to steps that will be redone
            kept = [
                r for r in read_jsonl(met_path) if isinstance(r.get("step"), int) and r["step"] <= self.state["step"]
            ]
            atomic_write_text(met_path, "".join(json.dumps(r) + "\n" for r in kept))
        elif met_path.exists():
            met_path.unlink()
        t = cfg.train
        self.stream = None
        if t.packing == "windows":
            self.stream = np.concatenate([row[:n] for row, n in zip(self.data.train.ids, self.data.train.lengths)])
        self.targets = [op for op in cfg.task.ops if op in self.data.validation_sets]  # early stopping watches these
        self.model.train()

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def done(self) -> bool:
        return self.result is not None or self.step >= self.cfg.train.steps or self.state["stop_reason"] is not None

    def lr(self) -> float:
        return lr_at(self.step, self.cfg)

    def batch(self) -> Batch:
        """This step's batch: a pure function of (seed, step)."""
        t = self.cfg.train
        if self.stream is not None:
            return make_window_batch(self.stream, self.cfg.seed, self.step, t.batch_size, t.window, self.device)
        idx = batch_indices(self.cfg.seed, self.step, len(self.data.train), t.batch_size)
        return make_batch(self.data.train, idx, t.loss_on, self.device, t.pack)

    def evaluates_at(self, step: int) -> bool:
        """Whether the run evaluates on validation once it has taken `step` steps."""
        return step % self.cfg.train.eval_every == 0 or step == self.cfg.train.steps

    def after_step(
        self,
        loss: float,
        n_tokens: int,
        seconds: float,
        progress=None,
        sync=None,
        checkpoint: bool = False,
        validation: dict[str, float] | None = None,
    ) -> None:
        """Book one optimisation step: evaluate on validation, decide early stopping, checkpoint
        when due (or when `checkpoint`). `sync()` first brings the model and optimiser up to date
        (a cohort keeps them elsewhere between evaluations); `validation` is this step's
        validation accuracy when the caller measured it (a cohort, for all its runs at once)."""
        t, state = self.cfg.train, self.state
        lr = self.lr()
        if not math.isfinite(loss):  # diverged: no later step can mean anything; recorded as such
            state["step"] += 1
            state["loss"], state["stop_reason"] = loss, "diverged"
            if sync:
                sync()
            append_line(self.out / METRICS, json.dumps({"step": state["step"], "loss": None, "diverged": True}))
            return
        state["train_seconds"] += seconds
        state["tokens_seen"] += n_tokens
        state["step"] += 1
        state["loss"] = loss
        state["running"] += loss
        state["n_running"] += 1
        if progress:
            progress.advance(state["step"], loss)
        last = state["step"] == t.steps
        evaluate_now = self.evaluates_at(state["step"])
        checkpoint = checkpoint or last or state["step"] % t.checkpoint_every == 0
        if sync and (evaluate_now or checkpoint):
            sync()
        if evaluate_now:
            held = validation or evaluate(self.model, self.data.validation_sets, self.data, self.device)  # never test
            row = {
                "step": state["step"],
                "tokens_seen": state["tokens_seen"],
                "loss": state["running"] / state["n_running"],
                "lr": lr,
                "train_seconds": state["train_seconds"],
                "accuracy_validation": held,
            }
            append_line(self.out / METRICS, json.dumps(row))
            state["running"], state["n_running"] = 0.0, 0
            if progress:
                progress.line(
                    f"step {state['step']:>6}  loss {row['loss']:.4f}  "
                    + "  ".join(f"{k} {v:.3f}" for k, v in held.items())
                )
            score = min(held[op] for op in self.targets) if self.targets else 0.0
            if score > state["best"] + t.min_delta:
                state["best"], state["since_best"] = score, 0
            else:
                state["since_best"] += 1
            if t.early_stop and score >= t.ceiling and not last:
                state["stop_reason"] = "ceiling"
            elif t.patience is not None and state["since_best"] >= t.patience and not last:
                state["stop_reason"] = "plateau"
        if checkpoint or state["stop_reason"]:  # a stop is only decided at an evaluation: synced above
            save_checkpoint(self.out / CHECKPOINT, self.model, self.opt, state)

    def finish(self) -> RunResult:
        """Score the final model (the test sets are read once, here, and nothing is decided from
        them) and write result.json, which marks the run finished."""
        if self.result is not None:
            return self.result
        state, data, device, cfg = self.state, self.data, self.device, self.cfg
        met_path = self.out / METRICS
        rows = read_jsonl(met_path)
        diverged = state["stop_reason"] == "diverged"
        if diverged:  # no accuracy is scored: a diverged model's answers mean nothing
            last = [r for r in rows if "accuracy_validation" in r]
            final = {"loss": None, "accuracy_validation": last[-1]["accuracy_validation"] if last else {}}
            test, trained = {}, {}
        else:
            if not rows or rows[-1].get("step") != state["step"] or "accuracy_validation" not in rows[-1]:  # lost
                rows.append(
                    {
                        "step": state["step"],
                        "loss": state["loss"],
                        "accuracy_validation": evaluate(self.model, data.validation_sets, data, device),
                    }
                )
                append_line(met_path, json.dumps(rows[-1]))
            final = rows[-1]
            test = evaluate(self.model, data.test_sets, data, device)
            trained = evaluate(self.model, data.trained_sets, data, device)
        self.result = RunResult(
            run_id=self.run_id,
            mixture=cfg.task.mixture,
            ops=list(cfg.task.ops),
            seed=cfg.seed,
            init_from=self.init_id,
            width=cfg.model.width,
            heads=cfg.model.heads,
            recurrence=cfg.model.recurrence,
            blocks=cfg.model.blocks,
            **self.model.number_of_parameters(),
            steps=state["step"],
            tokens_seen=state["tokens_seen"],
            train_seconds=state["train_seconds"],
            stop_reason=state["stop_reason"] or "budget",
            final_loss=final["loss"],
            accuracy=test,
            accuracy_validation=final["accuracy_validation"],
            accuracy_train=trained,
            test_expressions={
                k: ExpressionCount(
                    scored=len(data.test_sets[k]), exist=data.test_space.get(k), steps_seen=data.steps_seen.get(k)
                )
                for k in data.test_sets
                if k in test or diverged
            },
            still_improving=still_improving(rows, cfg.train.steps, state["stop_reason"] or "budget"),
            protocol=cfg.data.protocol,
            modulus=cfg.task.modulus,
            degree=cfg.task.degree,
            device=str(device),
        )
        write_result(self.out, self.result)
        return self.result


def train_run(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    stop_after: int | None = None,
    quiet: bool = False,
    init_from: str | Path | None = None,
) -> RunResult | None:
    """Train one run into the run directory `out` (train/run_dir.py). Returns its RunResult, or
    None when stopped by `stop_after` (a checkpoint is left to resume from). `init_from` starts
    from another run's weights (transfer) with a fresh optimiser."""
    torch.set_num_threads(cfg.train.threads)
    run = Run(cfg, out, resume, init_from)
    if run.result is not None:
        return run.result
    progress = Progress(cfg.train.steps, run.step, cfg.task.mixture, quiet)
    try:
        while not run.done:
            t0 = time.perf_counter()
            for g in run.opt.param_groups:
                g["lr"] = run.lr()
            b = run.batch()
            loss = optimisation_step(run.model, run.opt, b, cfg.train.grad_clip)
            run.after_step(loss, b.n_tokens, time.perf_counter() - t0, progress, checkpoint=run.step + 1 == stop_after)
            if stop_after is not None and run.step >= stop_after and not run.done:
                return None
    finally:
        progress.close()
    return run.finish()


def train(
    config: "str | Path | Mapping[str, Any] | RunConfig",
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> RunResult:
    """Train one run into the run directory `out` and return its record (result.json), for
    Python callers (`jointtask.train(...)`). `config` is a TOML path, a dict of config sections, or
    a RunConfig; `overrides` maps dotted keys to values, as `--set` does ({"model.width": 64})."""
    if isinstance(config, RunConfig):
        tree: dict = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        tree = dict(config)
    elif isinstance(config, (str, Path)):
        tree = load_toml(config)
    else:
        raise UserError(f"config must be a path, a dict or a RunConfig, got {type(config).__name__}")
    cfg = config_from_dict(tree, [f"{k}={json.dumps(v)}" for k, v in (overrides or {}).items()])
    check_fits(cfg)
    result = train_run(cfg, out, resume=resume, quiet=True)
    assert result is not None
    return result


def _run_id_of(run_dir: Path) -> str:
    """The id of a trained run directory: from its record, else from its config."""
    done = read_result(run_dir)
    if done is not None:
        return done.run_id
    if not (run_dir / CONFIG).exists():
        raise UserError(f"--init-from {str(run_dir)!r} is not a run directory (no {CONFIG})")
    return load_config(run_dir / CONFIG).run_id()
