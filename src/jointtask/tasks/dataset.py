"""Seeded, content-addressed datasets with train / validation / test splits of expressions.

The held-out unit is an expression up to the symmetries of its operations (`canonical`): its
keyed hash puts it in test (the first `test_fraction` of the hash range), validation (the next
`validation_fraction`) or train. A training sample is drawn only when every expression it
evaluates (its prompt, each sub-expression, each chain-of-thought step) is a train expression, so
no training sample ever computes a held-out expression, in any argument order. A validation
sample's prompt is a validation expression and it evaluates no test expression; a test sample's
prompt is a test expression. The split is a property of the expression alone, so every mixture,
every evaluation set and every pretraining run agree on it. Validation serves early stopping;
test is only reported.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write_bytes, stable_hash
from .expressions import canonical, chain_of_thought, evaluated, random_tree
from .families import EQUALS, PAD, Vocab, symmetry_of
from .spec import DataConfig, TaskConfig

GENERATOR_VERSION = 2  # bump when generated content changes, so caches are not reused
SPLITS = ("train", "validation", "test")
_SPLIT_SALT = b"jointtask-split-v2"


def split_of(key: str, test_fraction: float, validation_fraction: float) -> str:
    """The split of a canonical expression."""
    h = hashlib.blake2b(key.encode(), digest_size=8, key=_SPLIT_SALT).digest()
    u = int.from_bytes(h, "big") / 2**64
    return "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"


@dataclass
class Sample:
    tokens: list[str]
    op: str  # the root operation
    key: str = ""  # the canonical form of the prompt's expression
    pure: bool = True  # every operation of the tree is the root's

    @property
    def prompt(self) -> list[str]:
        return self.tokens[: self.tokens.index("=") + 1]

    @property
    def answer(self) -> str:
        return self.tokens[-2]

    def to_record(self) -> dict:
        return {
            "tokens": self.tokens,
            "prompt": self.prompt,
            "answer": self.answer,
            "op": self.op,
            "expression": self.key,
        }


def _ops_of(tree) -> set[str]:
    return set() if isinstance(tree, int) else {tree[0]}.union(*(_ops_of(a) for a in tree[1]))


def generate(
    task: TaskConfig,
    count: int,
    seed: int,
    split: str,
    test_fraction: float,
    validation_fraction: float = 0.1,
    unique: bool = False,
) -> list[Sample]:
    """`count` samples of one split. With `unique`, distinct expressions only (up to symmetry;
    fewer than `count` when the split holds fewer). Same arguments, same samples."""
    if count < 0:
        raise UserError(f"count must be >= 0, got {count}")
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    family = task.family(seed)
    rng = np.random.default_rng([seed, GENERATOR_VERSION, SPLITS.index(split)])
    side = {}  # canonical form -> split, memoised

    def where(key):
        if key not in side:
            side[key] = split_of(key, test_fraction, validation_fraction)
        return side[key]

    out: list[Sample] = []
    seen: set[str] = set()
    attempts, max_attempts = 0, 50 * count + 2000
    # distinct expressions the split holds, where they can be counted: once all are drawn, more
    # attempts could only repeat them (the samples are the same; small spaces end sooner)
    space = None
    if unique:
        sizes = [count_expressions(task, op, split, test_fraction, validation_fraction) for op in set(task.ops)]
        space = sum(n for n in sizes if n is not None) if None not in sizes else None
    while len(out) < count and attempts < max_attempts and len(out) != space:
        attempts += 1
        tree = random_tree(family, task.ops, rng, task.max_depth, task.min_args, task.max_args, task.p_nest)
        key = canonical(tree)
        if split == "train":
            ok = all(where(k) == "train" for k in evaluated(tree, family))
        elif split == "validation":
            ok = where(key) == "validation" and all(where(k) != "test" for k in evaluated(tree, family))
        else:
            ok = where(key) == "test"
        if not ok or (unique and key in seen):
            continue
        seen.add(key)
        out.append(Sample(chain_of_thought(tree, family), tree[0], key, _ops_of(tree) == {tree[0]}))
    if count > 0 and not out:
        raise UserError(f"could not draw any {split} expression for {task.mixture}: the expression space is too small")
    return out


def count_expressions(
    task: TaskConfig, op: str, split: str, test_fraction: float, validation_fraction: float
) -> int | None:
    """How many distinct expressions (up to symmetry) of `op` alone the split holds, for
    depth-1 trees; None for nested ones (too many to enumerate)."""
    if task.max_depth > 1 and task.p_nest > 0:
        return None
    family = task.family()
    values = range(family.n_values)
    keys = set()
    for k in range(task.min_args, task.max_args + 1):
        for args in itertools.product(values, repeat=k):
            if symmetry_of(op) == "multiset" and list(args) != sorted(args):
                continue
            keys.add(canonical((op, list(args))))
    return sum(split_of(key, test_fraction, validation_fraction) == split for key in keys)


@dataclass
class EncodedSet:
    """Token ids, right-padded with <pad>; `prompt_lengths` counts up to and including the first '='."""

    ids: np.ndarray  # [N, L] int64
    lengths: np.ndarray  # [N]
    prompt_lengths: np.ndarray  # [N]
    answers: np.ndarray  # [N] token id of the answer
    ops: np.ndarray  # [N] index of the root op in the family's op list
    pure: np.ndarray  # [N] bool: the tree uses its root's operation only
    keys: np.ndarray  # [N] str: canonical form of the prompt's expression

    FIELDS = ("ids", "lengths", "prompt_lengths", "answers", "ops", "pure", "keys")

    def __len__(self) -> int:
        return len(self.lengths)

    def save(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{k: getattr(self, k) for k in self.FIELDS})
        return buf.getvalue()

    @classmethod
    def load(cls, data: bytes) -> "EncodedSet":
        z = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(**{k: z[k] for k in cls.FIELDS})

    def subset(self, rows: np.ndarray) -> "EncodedSet":
        return EncodedSet(**{k: getattr(self, k)[rows] for k in self.FIELDS})


def encode(samples: list[Sample], vocab: Vocab) -> EncodedSet:
    n = len(samples)
    width = max((len(s.tokens) for s in samples), default=1)
    ids = np.full((n, width), PAD, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    prompt_lengths = np.zeros(n, dtype=np.int64)
    answers = np.zeros(n, dtype=np.int64)
    ops = np.zeros(n, dtype=np.int64)
    pure = np.array([s.pure for s in samples], dtype=bool)
    keys = np.array([s.key for s in samples], dtype=str)
    op_index = {op: i for i, op in enumerate(vocab.family.OPS)}
    for i, s in enumerate(samples):
        row = vocab.encode(s.tokens)
        ids[i, : len(row)] = row
        lengths[i] = len(row)
        prompt_lengths[i] = row.index(EQUALS) + 1
        answers[i] = row[-2]
        ops[i] = op_index[s.op]
    return EncodedSet(ids, lengths, prompt_lengths, answers, ops, pure, keys)


def cache_dir() -> Path:
    return Path(os.environ.get("JOINTTASK_CACHE", Path.home() / ".cache" / "jointtask")) / "data"


def cached_encoded(task: TaskConfig, count: int, seed: int, split: str, data: DataConfig, unique: bool) -> EncodedSet:
    """`encode(generate(...))`, stored under a hash of everything that determines it."""
    fractions = (data.test_fraction, data.validation_fraction)
    key = stable_hash(
        {
            "v": GENERATOR_VERSION,
            "task": task.model_dump(),
            "count": count,
            "seed": seed,
            "split": split,
            "fractions": fractions,
            "unique": unique,
        }
    )
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        try:
            return EncodedSet.load(path.read_bytes())
        except Exception:
            pass  # unreadable cache entry: regenerate and overwrite it
    vocab = Vocab(task.family(seed))
    enc = encode(generate(task, count, seed, split, *fractions, unique=unique), vocab)
    atomic_write_bytes(path, enc.save())
    return enc


@dataclass
class TaskData:
    vocab: Vocab
    train: EncodedSet
    validation_sets: dict[str, EncodedSet]  # name -> validation expressions ("ADD", ..., "mixture")
    test_sets: dict[str, EncodedSet]  # same names, test expressions: only reported
    trained_sets: dict[str, EncodedSet]  # same op names: expressions drawn from the training set itself
    test_space: dict[str, int | None]  # op -> distinct test expressions of that op alone (None: not enumerated)

    @property
    def max_len(self) -> int:
        sets = [self.train, *self.validation_sets.values(), *self.test_sets.values(), *self.trained_sets.values()]
        return max(s.ids.shape[1] for s in sets)


def trained_subset(train: EncodedSet, op_index: int, count: int) -> EncodedSet:
    """Up to `count` distinct expressions of one operation alone, taken from the training set."""
    rows = np.flatnonzero((train.ops == op_index) & train.pure)
    _, first = np.unique(train.keys[rows], return_index=True)
    return train.subset(rows[np.sort(first)][:count])


def build_task_data(task: TaskConfig, data: DataConfig, seed: int) -> TaskData:
    """Training set (size per_n * n); per operation (and for the mixture) a validation and a test
    set of distinct expressions, and the training expressions of that op to see memorisation."""
    if task.sadd_seed is None:  # pin the SADD relabelling to the run, not to each set's draw
        task = task.model_copy(update={"sadd_seed": seed})
    vocab = Vocab(task.family(seed))
    n_train = data.per_n * vocab.family.n_values
    train = cached_encoded(task, n_train, seed, "train", data, unique=False)
    eval_ops = data.eval_ops if data.eval_ops is not None else list(task.ops)
    for op in eval_ops:
        if op not in vocab.family.OPS:
            raise UserError(f"eval op {op!r} is not in the {vocab.family.name} family")
    names = list(dict.fromkeys(eval_ops))
    validation, test, trained, space = {}, {}, {}, {}
    # Evaluation sets use a seed of their own so that they do not depend on the mixture's
    # training draw; every run with the same task settings is evaluated on the same expressions.
    eval_seed = 10_000 + seed
    for name in names + (["mixture"] if len(task.ops) > 1 else []):
        sub = task if name == "mixture" else task.with_ops([name])
        validation[name] = cached_encoded(sub, data.eval_count, eval_seed, "validation", data, unique=True)
        test[name] = cached_encoded(sub, data.eval_count, eval_seed, "test", data, unique=True)
        if name != "mixture":
            space[name] = count_expressions(sub, name, "test", data.test_fraction, data.validation_fraction)
            if data.eval_train_count and name in task.ops:
                trained[name] = trained_subset(train, list(vocab.family.OPS).index(name), data.eval_train_count)
    return TaskData(vocab, train, validation, test, trained, space)


def context_length(task: TaskConfig) -> int:
    """Tokens in the longest possible sample: the full tree (max_args at every node, nested to
    max_depth) has the longest expression at every chain-of-thought step."""
    family = task.family()

    def full(depth: int):
        return (task.ops[0], [full(depth - 1) if depth > 1 else 0 for _ in range(task.max_args)])

    return len(chain_of_thought(full(task.max_depth), family))
