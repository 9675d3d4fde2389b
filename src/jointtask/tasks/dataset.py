"""Seeded, content-addressed datasets with a train/held-out split by prompt hash.

A prompt belongs to the held-out side when its hash falls in the first `test_fraction` of
the hash range. The split is a property of the prompt alone, so the training set and every
evaluation set of every mixture agree on it: no held-out prompt is ever trained on, also
across pretraining and transfer.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write_bytes, stable_hash
from .expressions import chain_of_thought, random_tree
from .families import EQUALS, PAD, Vocab
from .spec import DataConfig, TaskConfig

GENERATOR_VERSION = 1  # bump when generated content changes, so caches are not reused
_SPLIT_SALT = b"jointtask-split-v1"


def is_held_out(prompt: list[str], test_fraction: float) -> bool:
    h = hashlib.blake2b(" ".join(prompt).encode(), digest_size=8, key=_SPLIT_SALT).digest()
    return int.from_bytes(h, "big") < test_fraction * 2**64


@dataclass
class Sample:
    tokens: list[str]
    op: str  # the root operation

    @property
    def prompt(self) -> list[str]:
        return self.tokens[: self.tokens.index("=") + 1]

    @property
    def answer(self) -> str:
        return self.tokens[-2]

    def to_record(self) -> dict:
        return {"tokens": self.tokens, "prompt": self.prompt, "answer": self.answer, "op": self.op}


def generate(task: TaskConfig, count: int, seed: int, split: str, test_fraction: float,
             unique: bool = False) -> list[Sample]:
    """`count` samples from one side of the split. With `unique`, distinct prompts only (fewer
    than `count` when the space is small). Same arguments, same samples."""
    if count < 0:
        raise UserError(f"count must be >= 0, got {count}")
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    family = task.family(seed)
    rng = np.random.default_rng([seed, GENERATOR_VERSION, 0 if split == "train" else 1])
    want_test = split == "test"
    out: list[Sample] = []
    seen: set[tuple] = set()
    attempts, max_attempts = 0, 50 * count + 1000
    while len(out) < count and attempts < max_attempts:
        attempts += 1
        tree = random_tree(family, task.ops, rng, task.max_depth, task.min_args, task.max_args, task.p_nest)
        tokens = chain_of_thought(tree, family)
        prompt = tokens[: tokens.index("=") + 1]
        if is_held_out(prompt, test_fraction) != want_test:
            continue
        if unique:
            key = tuple(prompt)
            if key in seen:
                continue
            seen.add(key)
        out.append(Sample(tokens, tree[0]))
    if count > 0 and not out:
        raise UserError(f"could not draw any {split} prompt for {task.mixture}: the expression space is too small")
    return out


@dataclass
class EncodedSet:
    """Token ids, right-padded with <pad>; `prompt_lengths` counts up to and including the first '='."""

    ids: np.ndarray  # [N, L] int64
    lengths: np.ndarray  # [N]
    prompt_lengths: np.ndarray  # [N]
    answers: np.ndarray  # [N] token id of the answer
    ops: np.ndarray  # [N] index of the root op in the family's op list

    def __len__(self) -> int:
        return len(self.lengths)

    def save(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, ids=self.ids, lengths=self.lengths, prompt_lengths=self.prompt_lengths,
                 answers=self.answers, ops=self.ops)
        return buf.getvalue()

    @classmethod
    def load(cls, data: bytes) -> "EncodedSet":
        z = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(**{k: z[k] for k in ("ids", "lengths", "prompt_lengths", "answers", "ops")})


def encode(samples: list[Sample], vocab: Vocab) -> EncodedSet:
    n = len(samples)
    width = max((len(s.tokens) for s in samples), default=1)
    ids = np.full((n, width), PAD, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    prompt_lengths = np.zeros(n, dtype=np.int64)
    answers = np.zeros(n, dtype=np.int64)
    ops = np.zeros(n, dtype=np.int64)
    op_index = {op: i for i, op in enumerate(vocab.family.ops)}
    for i, s in enumerate(samples):
        row = vocab.encode(s.tokens)
        ids[i, : len(row)] = row
        lengths[i] = len(row)
        prompt_lengths[i] = row.index(EQUALS) + 1
        answers[i] = row[-2]
        ops[i] = op_index[s.op]
    return EncodedSet(ids, lengths, prompt_lengths, answers, ops)


def cache_dir() -> Path:
    return Path(os.environ.get("JOINTTASK_CACHE", Path.home() / ".cache" / "jointtask")) / "data"


def cached_encoded(task: TaskConfig, count: int, seed: int, split: str, test_fraction: float,
                   unique: bool) -> EncodedSet:
    """`encode(generate(...))`, stored under a hash of everything that determines it."""
    key = stable_hash({"v": GENERATOR_VERSION, "task": task.model_dump(), "count": count, "seed": seed,
                       "split": split, "test_fraction": test_fraction, "unique": unique})
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        try:
            return EncodedSet.load(path.read_bytes())
        except Exception:
            pass  # unreadable cache entry: regenerate and overwrite it
    vocab = Vocab(task.family(seed))
    enc = encode(generate(task, count, seed, split, test_fraction, unique=unique), vocab)
    atomic_write_bytes(path, enc.save())
    return enc


@dataclass
class TaskData:
    vocab: Vocab
    train: EncodedSet
    eval_sets: dict[str, EncodedSet]  # name -> held-out prompts ("ADD", ..., "mixture")
    eval_train_sets: dict[str, EncodedSet]  # same names, prompts from the training side

    @property
    def max_len(self) -> int:
        sets = [self.train, *self.eval_sets.values(), *self.eval_train_sets.values()]
        return max(s.ids.shape[1] for s in sets)


def build_task_data(task: TaskConfig, data: DataConfig, seed: int) -> TaskData:
    """Training set (size per_n * n) and one held-out set per operation plus the mixture's."""
    if task.sadd_seed is None:  # pin the SADD relabelling to the run, not to each set's draw
        task = task.model_copy(update={"sadd_seed": seed})
    vocab = Vocab(task.family(seed))
    n_train = data.per_n * vocab.family.n_values
    train = cached_encoded(task, n_train, seed, "train", data.test_fraction, unique=False)
    eval_ops = data.eval_ops if data.eval_ops is not None else list(task.ops)
    for op in eval_ops:
        if op not in vocab.family.ops:
            raise UserError(f"eval op {op!r} is not in the {vocab.family.name} family")
    names = list(dict.fromkeys(eval_ops))
    eval_sets, eval_train_sets = {}, {}
    # Evaluation prompts use a seed of their own so that they do not depend on the mixture's
    # training draw; every run with the same task settings is tested on the same prompts.
    eval_seed = 10_000 + seed
    for name in names + (["mixture"] if len(task.ops) > 1 else []):
        sub = task if name == "mixture" else task.with_ops([name])
        eval_sets[name] = cached_encoded(sub, data.eval_count, eval_seed, "test", data.test_fraction, unique=True)
        if data.eval_train_count:
            eval_train_sets[name] = cached_encoded(sub, data.eval_train_count, eval_seed, "train",
                                                   data.test_fraction, unique=True)
    return TaskData(vocab, train, eval_sets, eval_train_sets)


def context_length(task: TaskConfig) -> int:
    """Tokens in the longest possible sample: the full tree (max_args at every node, nested to
    max_depth) has the longest expression at every chain-of-thought step."""
    family = task.family()

    def full(depth: int):
        return (task.ops[0], [full(depth - 1) if depth > 1 else 0 for _ in range(task.max_args)])

    return len(chain_of_thought(full(task.max_depth), family))
