"""Seeded, content-addressed datasets with train / validation / test splits, under one of two
protocols (`DataConfig.protocol`; docs/definitions.md, "Splits").

- **paper**: the paper group's rule. A set of ordered tuples of `max_args` distinct values (the
  draws are `heldout_rate * n ** max_args`, fixed by `heldout_seed`) is held out, divided between
  validation and test. A sample whose chain of thought holds a held-out tuple as consecutive
  arguments anywhere (its prompt, a nested expression, any step) is a test sample when one of
  them is a test tuple, else a validation sample; every other sample is a training sample. Other
  orders of a held-out tuple, shorter argument lists and the atomic steps of held-out samples
  stay in training: the test asks for the operations and the procedure applied to new
  expressions.
- **strict**: the held-out unit is an expression up to the symmetries of its operations
  (`canonical`): its keyed hash puts it in test (the first `test_fraction` of the hash range),
  validation (the next `validation_fraction`) or train. A training sample is drawn only when
  every expression it evaluates (its prompt, each sub-expression, each chain-of-thought step) is a
  train expression; a validation sample's prompt is a validation expression and it evaluates no
  test expression; a test sample's prompt is a test expression. The test asks for the operation's
  table generalised to argument sets never seen.

Either way the split is a property of the sample alone, so every mixture, every evaluation set and
every pretraining run agree on it. Validation serves early stopping; test is only reported.
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
from .families import EQUALS, PAD, Family, Vocab
from .config import DataConfig, TaskConfig, check_protocol

MAX_ENUMERATED = 200_000  # depth-1 argument lists enumerated at most (n ** max_args)
GENERATOR_VERSION = 2  # seeds the draws: changing it changes every dataset
CACHE_VERSION = 3  # bump whenever a set drawn from the same arguments changes, so that no cache is reused
SPLITS = ("train", "validation", "test")
_SPLIT_SALT = b"jointtask-split-v2"


def split_of(key: str, test_fraction: float, validation_fraction: float) -> str:
    """The split of a canonical expression under the strict protocol."""
    h = hashlib.blake2b(key.encode(), digest_size=8, key=_SPLIT_SALT).digest()
    u = int.from_bytes(h, "big") / 2**64
    return "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"


def heldout_tuples(n_values: int, k: int, data: DataConfig, seed: int) -> dict[str, frozenset[tuple[int, ...]]]:
    """The paper protocol's held-out tuples: `heldout_rate * n ** k` draws of k distinct values
    (repeats collapse), each given to validation or to test in the ratio of their fractions.
    `seed` is the draw's (`heldout_seed_of`)."""
    rng = np.random.default_rng([seed, 0x7E57])
    draws = int(n_values**k * data.heldout_rate)
    share = data.validation_fraction / (data.validation_fraction + data.test_fraction)
    out: dict[str, set[tuple[int, ...]]] = {"validation": set(), "test": set()}
    for _ in range(draws):
        t = tuple(int(x) for x in rng.choice(n_values, size=k, replace=False))
        side = "validation" if rng.random() < share else "test"
        if t not in out["validation"] and t not in out["test"]:
            out[side].add(t)
    return {name: frozenset(v) for name, v in out.items()}


class Splitter:
    """Which split a sample belongs to under a data config's protocol (None: to none, a strict
    sample whose prompt is a train expression but which evaluates a held-out one)."""

    def __init__(self, task: TaskConfig, data: DataConfig, family: Family, heldout_seed: int):
        check_protocol(task, data)
        self.data, self.family = data, family
        self.memo: dict[str, str] = {}
        if data.protocol == "paper":
            self.k = task.max_args
            self.tuples = heldout_tuples(family.n_values, self.k, data, heldout_seed)
            self.value_of = {family.value_token(v): v for v in range(family.n_values)}

    def where(self, key: str) -> str:
        """The strict protocol's split of a canonical expression, memoised."""
        if key not in self.memo:
            self.memo[key] = split_of(key, self.data.test_fraction, self.data.validation_fraction)
        return self.memo[key]

    def windows(self, tokens: list[str]) -> set[tuple[int, ...]]:
        """Every run of k consecutive value tokens of a sample (the paper protocol's unit)."""
        vals = [self.value_of.get(t) for t in tokens]
        out = set()
        for i in range(len(vals) - self.k + 1):
            w = vals[i : i + self.k]
            if None not in w:
                out.add(tuple(int(v) for v in w if v is not None))
        return out

    def split(self, tree: tuple, tokens: list[str]) -> str | None:
        if self.data.protocol == "paper":
            seen = self.windows(tokens)
            if seen & self.tuples["test"]:
                return "test"
            return "validation" if seen & self.tuples["validation"] else "train"
        keys = evaluated(tree, self.family)
        if all(self.where(k) == "train" for k in keys):
            return "train"
        prompt = self.where(canonical(tree))
        if prompt == "test" or (prompt == "validation" and all(self.where(k) != "test" for k in keys)):
            return prompt
        return None

    def key(self, tree: tuple) -> str:
        """What makes two prompts the same expression: under strict, the expression up to its
        symmetries (the held-out unit); under paper, the expression as written."""
        return canonical(tree, up_to_symmetry=self.data.protocol == "strict")


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
    data: DataConfig | None = None,
    unique: bool = False,
    heldout_seed: int | None = None,
) -> list[Sample]:
    """`count` samples of one split under `data`'s protocol (default: DataConfig()). With
    `unique`, distinct expressions only (`Splitter.key`; fewer than `count` when the split holds
    fewer). `heldout_seed` overrides data.heldout_seed (the paper protocol's held-out draw).
    Same arguments, same samples."""
    data = data or DataConfig()
    if count < 0:
        raise UserError(f"count must be >= 0, got {count}")
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    family = task.family(seed)
    splitter = Splitter(task, data, family, heldout_seed_of(data, heldout_seed, seed))
    rng = np.random.default_rng([seed, GENERATOR_VERSION, SPLITS.index(split)])
    pools = [expressions_of(splitter, task, op, split) for op in task.ops] if unique else []
    if pools and all(p is not None for p in pools):  # every distinct expression is known: draw from them
        trees = [t for p in pools for t in p or []]
        chosen = [trees[i] for i in rng.permutation(len(trees))[:count]]
        out = [Sample(chain_of_thought(t, family), t[0], splitter.key(t)) for t in chosen]
    else:
        out = _draw(task, count, split, unique, family, splitter, rng)
    if count > 0 and not out:
        raise UserError(f"could not draw any {split} expression for {task.mixture}: the expression space is too small")
    return out


def _draw(task, count, split, unique, family, splitter, rng) -> list[Sample]:
    """Random trees, kept when they fall in `split` (and, with `unique`, are new)."""
    out: list[Sample] = []
    seen: set[str] = set()
    attempts, max_attempts = 0, 50 * count + 2000
    while len(out) < count and attempts < max_attempts:
        attempts += 1
        tree = random_tree(family, task.ops, rng, task.max_depth, task.min_args, task.max_args, task.p_nest)
        key = splitter.key(tree)
        if unique and key in seen:
            continue
        tokens = chain_of_thought(tree, family)
        if splitter.split(tree, tokens) != split:
            continue
        seen.add(key)
        out.append(Sample(tokens, tree[0], key, _ops_of(tree) == {tree[0]}))
    return out


def heldout_seed_of(data: DataConfig, override: int | None, seed: int) -> int:
    """The paper protocol's held-out draw: `override`, else data.heldout_seed ("run": `seed`)."""
    return override if override is not None else seed if data.heldout_seed == "run" else data.heldout_seed


def expressions_of(splitter: Splitter, task: TaskConfig, op: str, split: str) -> list[tuple] | None:
    """Every distinct expression (`Splitter.key`) of `op` alone that the split holds, for
    depth-1 trees, in a fixed order; None for nested ones or too many to enumerate."""
    if (task.max_depth > 1 and task.p_nest > 0) or splitter.family.n_values**task.max_args > MAX_ENUMERATED:
        return None
    out, keys = [], set()
    for k in range(task.min_args, task.max_args + 1):
        for args in itertools.product(range(splitter.family.n_values), repeat=k):
            tree = (op, list(args))
            key = splitter.key(tree)
            if key not in keys and splitter.split(tree, chain_of_thought(tree, splitter.family)) == split:
                keys.add(key)
                out.append(tree)
    return out


def count_expressions(splitter: Splitter, task: TaskConfig, op: str, split: str) -> int | None:
    """How many distinct expressions of `op` alone the split holds (`expressions_of`)."""
    trees = expressions_of(splitter, task, op, split)
    return None if trees is None else len(trees)


def atomic_steps(tokens: list[str], family: Family) -> list[str]:
    """The atomic steps of a sample (each operation applied to values only, in its prompt or in a
    chain-of-thought step), as expressions up to argument order (`canonical`)."""
    value_of = {family.value_token(v): v for v in range(family.n_values)}
    out = []
    for i, t in enumerate(tokens[:-1]):
        if t in family.OPS and tokens[i + 1] == "(":
            args = tokens[i + 2 : tokens.index(")", i)]
            if all(a in value_of for a in args):
                out.append(canonical((t, [value_of[a] for a in args])))
    return out


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

    def checksum(self, salt: str = "") -> str:
        h = hashlib.sha256(salt.encode())
        for k in self.FIELDS:
            a = np.ascontiguousarray(getattr(self, k))
            h.update(f"{k}{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, salt: str = "") -> bytes:
        """The arrays and a checksum of them (salted with the cache key: a file moved under another
        key fails too)."""
        buf = io.BytesIO()
        np.savez(buf, checksum=np.array(self.checksum(salt)), **{k: getattr(self, k) for k in self.FIELDS})
        return buf.getvalue()

    @classmethod
    def load(cls, data: bytes, salt: str = "") -> "EncodedSet":
        """Raises ValueError when the content does not match its checksum."""
        z = np.load(io.BytesIO(data), allow_pickle=False)
        out = cls(**{k: z[k] for k in cls.FIELDS})
        if "checksum" not in z or str(z["checksum"]) != out.checksum(salt):
            raise ValueError("cached data do not match their checksum")
        return out

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


def cached_encoded(
    task: TaskConfig, count: int, seed: int, split: str, data: DataConfig, unique: bool, heldout_seed: int
) -> EncodedSet:
    """`encode(generate(...))`, stored under a hash of everything that determines it."""
    rule = {"protocol": data.protocol, "fractions": (data.test_fraction, data.validation_fraction)}
    if data.protocol == "paper":
        rule |= {"heldout_rate": data.heldout_rate, "heldout_seed": heldout_seed}
    key = stable_hash(
        {
            "v": GENERATOR_VERSION,
            "task": task.model_dump(),
            "count": count,
            "seed": seed,
            "split": split,
            "unique": unique,
        }
        | rule
    )
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        try:
            return EncodedSet.load(path.read_bytes(), key)
        except Exception:
            pass  # unreadable or altered cache entry: regenerate and overwrite it
    vocab = Vocab(task.family(seed))
    enc = encode(generate(task, count, seed, split, data, unique=unique, heldout_seed=heldout_seed), vocab)
    atomic_write_bytes(path, enc.save(key))
    return enc


@dataclass
class TaskData:
    vocab: Vocab
    train: EncodedSet
    validation_sets: dict[str, EncodedSet]  # name -> validation expressions ("ADD", ..., "mixture")
    test_sets: dict[str, EncodedSet]  # same names, test expressions: only reported
    trained_sets: dict[str, EncodedSet]  # same op names: expressions drawn from the training set itself
    test_space: dict[str, int | None]  # op -> distinct test expressions of that op alone (None: not enumerated)
    steps_seen: dict[str, float]  # op -> share of its test samples' atomic steps (up to argument order) in training

    @property
    def max_len(self) -> int:
        sets = [self.train, *self.validation_sets.values(), *self.test_sets.values(), *self.trained_sets.values()]
        return max(s.ids.shape[1] for s in sets)


def trained_subset(train: EncodedSet, op_index: int, count: int) -> EncodedSet:
    """Up to `count` distinct expressions of one operation alone, taken from the training set."""
    rows = np.flatnonzero((train.ops == op_index) & train.pure)
    _, first = np.unique(train.keys[rows], return_index=True)
    return train.subset(rows[np.sort(first)][:count])


def decoded(s: EncodedSet, vocab: Vocab) -> list[list[str]]:
    return [vocab.decode(row[:n]) for row, n in zip(s.ids, s.lengths)]


def steps_seen(test: EncodedSet, train_steps: set[str], vocab: Vocab) -> float:
    """The share of the atomic steps of a test set's samples that training samples evaluate."""
    steps = [k for tokens in decoded(test, vocab) for k in atomic_steps(tokens, vocab.family)]
    return sum(k in train_steps for k in steps) / len(steps) if steps else float("nan")


def build_task_data(task: TaskConfig, data: DataConfig, seed: int) -> TaskData:
    """Training set (size per_n * n); per operation (and for the mixture) a validation and a test
    set of distinct expressions, and the training expressions of that op to see memorisation."""
    check_protocol(task, data)
    if task.sadd_seed is None:  # pin the SADD relabelling to the run, not to each set's draw
        task = task.model_copy(update={"sadd_seed": seed})
    heldout = heldout_seed_of(data, None, seed)  # pinned to the run too, whichever set is drawn
    vocab = Vocab(task.family(seed))
    n_train = data.per_n * vocab.family.n_values
    train = cached_encoded(task, n_train, seed, "train", data, False, heldout)
    eval_ops = data.eval_ops if data.eval_ops is not None else list(task.ops)
    for op in eval_ops:
        if op not in vocab.family.OPS:
            raise UserError(f"eval op {op!r} is not in the {vocab.family.name} family")
    names = list(dict.fromkeys(eval_ops))
    validation, test, trained, space, seen = {}, {}, {}, {}, {}
    train_steps = {k for tokens in decoded(train, vocab) for k in atomic_steps(tokens, vocab.family)}
    # Evaluation sets use a seed of their own so that they do not depend on the mixture's
    # training draw; every run with the same task settings is evaluated on the same expressions.
    eval_seed = 10_000 + seed
    for name in names + (["mixture"] if len(task.ops) > 1 else []):
        sub = task if name == "mixture" else task.with_ops([name])
        validation[name] = cached_encoded(sub, data.eval_count, eval_seed, "validation", data, True, heldout)
        test[name] = cached_encoded(sub, data.eval_count, eval_seed, "test", data, True, heldout)
        if name != "mixture":
            space[name] = count_expressions(Splitter(sub, data, vocab.family, heldout), sub, name, "test")
            seen[name] = steps_seen(test[name], train_steps, vocab)
            if data.eval_train_count and name in task.ops:
                trained[name] = trained_subset(train, list(vocab.family.OPS).index(name), data.eval_train_count)
    return TaskData(vocab, train, validation, test, trained, space, seen)


def context_length(task: TaskConfig) -> int:
    """Tokens in the longest possible sample: the full tree (max_args at every node, nested to
    max_depth) has the longest expression at every chain-of-thought step."""
    family = task.family()

    def full(depth: int):
        return (task.ops[0], [full(depth - 1) if depth > 1 else 0 for _ in range(task.max_args)])

    return len(chain_of_thought(full(task.max_depth), family))
