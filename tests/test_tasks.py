"""Generated data against an independent brute-force evaluator written here, token by token."""

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointtask.errors import UserError
from jointtask.tasks import ListOps, Permutations, TaskConfig, Vocab, generate

from jointtask.tasks.dataset import build_task_data, context_length
from jointtask.tasks.config import DataConfig

from .conftest import run_cli

STRICT = DataConfig(protocol="strict")

LISTOPS_OPS, PERM_OPS = list(ListOps.OPS), list(Permutations.OPS)

# ---- an independent evaluator: works on token lists, knows nothing of the package's trees ----


def brute_listops(op, xs, n, sadd_perm):
    if op == "MAX":
        return max(xs)
    if op == "MIN":
        return min(xs)
    if op == "MED":  # upper median, by counting rather than sorting
        k = len(xs) // 2
        return next(x for x in xs if sum(y < x for y in xs) <= k < sum(y <= x for y in xs))
    if op == "ADD":
        return sum(xs) % n
    if op == "PROD":
        out = 1
        for x in xs:
            out = out * x % n
        return out
    if op == "NADD":
        return (sum(xs[0::2]) - sum(xs[1::2])) % n
    if op == "SADD":
        inv = {int(v): i for i, v in enumerate(sadd_perm)}
        return int(sadd_perm[sum(inv[x] for x in xs) % n])
    raise AssertionError(op)


def _fact(m):
    out = 1
    for i in range(2, m + 1):
        out *= i
    return out


def perm_unrank(r, k):
    items, out = list(range(k)), []
    for i in range(k, 0, -1):
        f = _fact(i - 1)
        out.append(items.pop(r // f))
        r %= f
    return out


def brute_perm(op, xs, k):
    arrs = [np.array(perm_unrank(x, k)) for x in xs]
    prod = arrs[0]
    for a in arrs[1:]:
        prod = prod[a]  # (a*b)[i] = a[b[i]]
    if op in ("PMUL", "PSUB"):
        return _rank(prod)
    if op == "PMAX":
        return max(xs)
    if op == "PMIN":
        return min(xs)
    if op == "PPAR":
        cycles, seen = 0, set()
        for i in range(k):
            if i not in seen:
                cycles += 1
                j = i
                while j not in seen:
                    seen.add(j)
                    j = prod[j]
        return (k - cycles) % 2
    raise AssertionError(op)


def _rank(p):
    p, k, r = list(p), len(p), 0
    for i in range(k):
        r += sum(1 for j in range(i + 1, k) if p[j] < p[i]) * _fact(k - 1 - i)
    return r


def value_of(tok):
    return int(tok[1:]) if tok.startswith("p") else int(tok)


def is_value(tok):
    return tok[0].isdigit() or (tok.startswith("p") and tok[1:].isdigit())


def reduce_tokens(tokens, evaluate):
    """Replace the leftmost `OP ( v v ... )` whose arguments are all values."""
    for i, t in enumerate(tokens):
        if t in LISTOPS_OPS or t in PERM_OPS:
            j = i + 2
            while j < len(tokens) and is_value(tokens[j]):
                j += 1
            if tokens[j] == ")":
                xs = [value_of(x) for x in tokens[i + 2 : j]]
                return tokens[:i] + [evaluate(t, xs)] + tokens[j + 1 :]
    raise AssertionError(f"nothing to reduce in {tokens}")


def check_chain(tokens, evaluate):
    assert tokens[-1] == "<eos>" and tokens.count("<eos>") == 1
    steps, cur = [], []
    for t in tokens[:-1]:
        if t == "=":
            steps.append(cur)
            cur = []
        else:
            cur.append(t)
    steps.append(cur)
    for before, after in zip(steps, steps[1:]):
        assert reduce_tokens(before, evaluate) == after, (before, after)
    assert len(steps[-1]) == 1 and is_value(steps[-1][0])


listops_task = st.builds(
    lambda ops, n, depth, p: TaskConfig(ops=ops, modulus=n, max_depth=depth, p_nest=p),
    st.lists(st.sampled_from(LISTOPS_OPS), min_size=1, max_size=4, unique=True),
    st.integers(2, 50),
    st.integers(1, 3),
    st.sampled_from([0.0, 0.25, 0.6]),
)
perm_task = st.builds(
    lambda ops, k, depth: TaskConfig(ops=ops, degree=k, max_depth=depth, p_nest=0.4),
    st.lists(st.sampled_from(PERM_OPS), min_size=1, max_size=3, unique=True),
    st.integers(2, 4),
    st.integers(1, 3),
)


@settings(max_examples=40, deadline=None)
@given(listops_task, st.integers(0, 2**31))
def test_listops_chain_of_thought_is_right(task, seed):
    family = task.family(seed)
    ev = lambda op, xs: str(brute_listops(op, xs, task.modulus, family.sadd_perm))
    for s in generate(task, 30, seed, "train", STRICT):
        check_chain(s.tokens, ev)
        assert s.answer == s.tokens[-2] and s.prompt[-1] == "="
        assert all(tok in ("(", ")", "=", "<eos>") or tok in task.ops or int(tok) < task.modulus for tok in s.tokens)


@settings(max_examples=25, deadline=None)
@given(perm_task, st.integers(0, 2**31))
def test_permutation_chain_of_thought_is_right(task, seed):
    ev = lambda op, xs: f"p{brute_perm(op, xs, task.degree)}"
    for s in generate(task, 30, seed, "train", STRICT):
        check_chain(s.tokens, ev)


def test_permutation_tokens_follow_the_spec():
    fam = TaskConfig(ops=["PMUL"], degree=4).family()
    assert fam.elements[0] == (0, 1, 2, 3)  # p0 is the identity
    assert fam.elements[1] == (0, 1, 3, 2)  # p1 swaps the last two points
    assert fam.n_values == 24
    assert fam.stabiliser == [i for i, p in enumerate(itertools.permutations(range(4))) if p[3] == 3]


def test_med_is_upper_median_and_nadd_is_python_mod():
    fam = TaskConfig(ops=["MED"], modulus=10).family()
    assert fam.apply("MED", [1, 9, 3, 7]) == 7
    assert fam.apply("NADD", [1, 5, 2]) == (1 - 5 + 2) % 10 == 8


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 40), st.integers(0, 1000), st.lists(st.integers(0, 1000), min_size=2, max_size=4))
def test_sadd_is_add_relabelled(n, seed, raw):
    fam = TaskConfig(ops=["SADD"], modulus=n, sadd_seed=seed).family()
    xs = [x % n for x in raw]
    inv = fam.sadd_inverse
    assert inv[fam.apply("SADD", xs)] == fam.apply("ADD", [int(inv[x]) for x in xs])


@settings(max_examples=30, deadline=None)
@given(st.one_of(listops_task, perm_task), st.integers(0, 2**31))
def test_tokens_survive_encode_and_decode(task, seed):
    vocab = Vocab(task.family(seed))
    assert len(set(vocab.tokens)) == len(vocab.tokens)
    for s in generate(task, 20, seed, "train", STRICT):
        assert vocab.decode(vocab.encode(s.tokens)) == s.tokens
        assert len(s.tokens) <= context_length(task)


# ---- an independent canonicaliser: parses token lists, knows nothing of the package's trees ----

COMMUTATIVE = {"MAX", "MIN", "MED", "ADD", "PROD", "SADD", "PMAX", "PMIN", "PPAR"}


def parse(tokens, i=0):
    """(canonical string, next index) of the expression starting at tokens[i]."""
    t = tokens[i]
    if is_value(t):
        return t, i + 1
    assert tokens[i + 1] == "("
    args, j = [], i + 2
    while tokens[j] != ")":
        a, j = parse(tokens, j)
        args.append(a)
    if t in COMMUTATIVE:
        args = sorted(args)
    elif t == "NADD":
        args = sorted(args[0::2]) + ["/"] + sorted(args[1::2])
    return t + "[" + ",".join(args) + "]", j + 1


def all_subexpressions(tokens):
    """Canonical forms of every operation node in every step of a chain of thought."""
    out, step = set(), []
    for t in tokens[:-1] + ["="]:
        if t != "=":
            step.append(t)
            continue
        for k, tok in enumerate(step):
            if tok in LISTOPS_OPS or tok in PERM_OPS:
                out.add(parse(step, k)[0])
        step = []
    return out


@settings(max_examples=12, deadline=None)
@given(st.one_of(listops_task, perm_task), st.integers(0, 2**31))
def test_no_training_sample_evaluates_a_held_out_expression(task, seed):
    from jointtask.errors import UserError

    def draw(count, s, split, unique=True):
        try:
            return generate(task, count, s, split, STRICT, unique=unique)
        except UserError:  # a tiny space (MAX mod 2 has 7 expressions) may leave a split empty
            return []

    train, val, test = draw(300, seed, "train", False), draw(60, seed + 1, "validation"), draw(60, seed + 2, "test")
    trained = set().union(*(all_subexpressions(s.tokens) for s in train))
    val_keys = {parse(s.prompt[:-1])[0] for s in val}
    test_keys = [parse(s.prompt[:-1])[0] for s in test]
    assert not trained & val_keys and not trained & set(test_keys)
    assert not val_keys & set(test_keys)
    assert len(test_keys) == len(set(test_keys))  # distinct up to symmetry
    for s in val:  # validation never evaluates a test expression either
        assert not all_subexpressions(s.tokens) & set(test_keys) or not test_keys


def test_held_out_expressions_are_unseen_in_every_argument_order():
    """The old failure: 95% of held-out ADD prompts (mod 10) had a reordering in training."""
    for n, depth in ((10, 1), (20, 2)):
        task = TaskConfig(ops=["ADD", "MAX", "MED"], modulus=n, max_depth=depth)
        train = generate(task, 3000, 0, "train", STRICT)
        test = generate(task, 3000, 1, "test", STRICT)
        trained = set().union(*(all_subexpressions(s.tokens) for s in train))
        assert not {parse(s.prompt[:-1])[0] for s in test} & trained
        if depth == 2:  # and nested test prompts stay unseen as sub-expressions and steps
            assert any(s.tokens.count("=") > 1 for s in test)


def test_canonical_forms_identify_exactly_the_symmetries():
    from jointtask.tasks import canonical

    assert canonical(("ADD", [3, 1, 2])) == canonical(("ADD", [2, 3, 1]))
    assert canonical(("NADD", [1, 2, 3])) == canonical(("NADD", [3, 2, 1]))  # odd {1,3}, even {2}
    assert canonical(("NADD", [1, 2, 3])) != canonical(("NADD", [2, 1, 3]))
    assert canonical(("PMUL", [1, 2])) != canonical(("PMUL", [2, 1]))
    assert canonical(("MAX", [("ADD", [1, 2]), 5])) == canonical(("MAX", [5, ("ADD", [2, 1])]))


def test_task_data_sizes_and_disjoint_eval_sets():
    task = TaskConfig(ops=["ADD", "MAX"], modulus=7, max_depth=1)
    d = build_task_data(task, DataConfig(per_n=50, eval_count=60, eval_train_count=30), seed=3)
    assert len(d.train) == 50 * 7  # linear in n
    assert set(d.test_sets) == set(d.validation_sets) == {"ADD", "MAX", "mixture"}
    train_keys = set(d.train.keys)
    for name in d.test_sets:
        test_keys, val_keys = set(d.test_sets[name].keys), set(d.validation_sets[name].keys)
        assert not test_keys & train_keys and not val_keys & train_keys and not test_keys & val_keys, name
    # pure single-op sets hold only their operation
    add_op = d.vocab.stoi["ADD"]
    assert (d.test_sets["ADD"].ids[:, 0] == add_op).all()
    # accuracy on training expressions is measured on expressions that are in the training set
    for op, es in d.trained_sets.items():
        assert set(es.keys) <= train_keys and len(set(es.keys)) == len(es) > 0
    # the whole depth-1 test split of ADD mod 7 is scored, and its size is known
    assert d.test_space["ADD"] == len(d.test_sets["ADD"])


@pytest.mark.slow
def test_cli_data_is_deterministic(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for f in (a, b):
        r = run_cli("data", "--ops", "ADD,MAX", "--modulus", "12", "--count", "300", "--seed", "0", "--out", f)
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    for split in ("validation", "test"):
        r = run_cli(
            "data",
            "--ops",
            "ADD",
            "--modulus",
            "10",
            "--count",
            "500",
            "--split",
            split,
            "--unique",
            "--out",
            tmp_path / f"{split}.jsonl",
        )
        assert r.returncode == 0, r.stderr
    keys = {
        s: {json.loads(x)["expression"] for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()}
        for s in ("validation", "test")
    }
    assert keys["validation"] and keys["test"] and not keys["validation"] & keys["test"]
    r = run_cli("data", "--ops", "ADD", "--modulus", "10", "--split", "holdout", "--out", tmp_path / "x.jsonl")
    assert r.returncode == 2 and "split" in r.stderr
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(rows) == 300
    assert all(
        r["prompt"] == r["tokens"][: r["tokens"].index("=") + 1] and r["answer"] == r["tokens"][-2] for r in rows
    )
    r = run_cli("data", "--ops", "PMUL", "--degree", "4", "--count", "5", "--out", tmp_path / "p.jsonl")
    assert r.returncode == 0 and json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])["answer"].startswith(
        "p"
    )


def test_a_new_family_is_one_class():
    """A family defined here, registered, goes through config, generation, split and vocabulary."""
    import functools
    import operator

    from jointtask.tasks.dataset import build_task_data
    from jointtask.tasks.families import Family, Op, register, unregister
    from jointtask.tasks.config import DataConfig

    class Bits(Family):
        name, parameter = "bits", "modulus"
        OPS = {
            "XOR": Op(lambda f, xs: functools.reduce(operator.xor, xs), "multiset"),
            "SUB": Op(lambda f, xs: (xs[0] - sum(xs[1:])) % f.size, "ordered"),
        }

        @classmethod
        def check(cls, size):
            if size & (size - 1):
                raise ValueError(f"modulus must be a power of 2, got {size}")

        n_values = property(lambda self: self.size)
        value_token = lambda self, v: f"b{v}"
        labellings = lambda self: {"low bit": np.arange(self.size) % 2}

    register(Bits)
    try:
        with pytest.raises(ValueError, match="power of 2"):
            TaskConfig(ops=["XOR"], modulus=6)
        task = TaskConfig(ops=["XOR", "SUB"], modulus=8, max_depth=2)
        samples = generate(task, 300, seed=1, split="train", data=STRICT)
        for s in samples:  # the answer is the brute-force value of the prompt
            assert s.tokens[-2] == f"b{_brute_bits(s.tokens[: s.tokens.index('=')])}"
        data = build_task_data(task, DataConfig(per_n=50, eval_count=20, eval_train_count=10), seed=0)
        assert data.vocab.tokens[5:7] == ["XOR", "SUB"] and "b7" in data.vocab.tokens
        assert {"XOR", "SUB"} <= set(data.test_sets) and len(data.train) == 400
        with pytest.raises(UserError, match="mix the"):
            TaskConfig(ops=["XOR", "ADD"], modulus=8)
    finally:
        unregister(Bits)
    with pytest.raises(UserError, match="unknown operation 'XOR'"):
        TaskConfig(ops=["XOR"], modulus=8)


def _brute_bits(toks: list[str]) -> int:
    """Evaluate a Bits prompt ('XOR ( b1 SUB ( b3 b2 ) )') by recursive descent, apart from the generator."""

    def expr(i):
        if toks[i].startswith("b"):
            return int(toks[i][1:]), i + 1
        assert toks[i + 1] == "("
        op, i = toks[i], i + 2
        args = []
        while toks[i] != ")":
            v, i = expr(i)
            args.append(v)
        if op == "XOR":
            out = 0
            for a in args:
                out ^= a
            return out, i + 1
        return (args[0] - sum(args[1:])) % 8, i + 1

    return expr(0)[0]


# ---- the paper protocol, checked from the written samples with a scanner of its own ----


def value_triples(tokens):
    """Every three consecutive number tokens of a sample, as written."""
    return {
        tuple(map(int, tokens[i : i + 3]))
        for i in range(len(tokens) - 2)
        if all(is_value(t) for t in tokens[i : i + 3])
    }


def atomic(tokens):
    """Operations applied to numbers only, anywhere in a chain of thought, up to argument order."""
    out = []
    for i, t in enumerate(tokens[:-1]):
        if t in LISTOPS_OPS and tokens[i + 1] == "(":
            j = tokens.index(")", i)
            if all(is_value(a) for a in tokens[i + 2 : j]):
                out.append((t, tuple(sorted(int(a) for a in tokens[i + 2 : j]))))
    return out


@pytest.mark.slow
def test_paper_protocol_holds_out_ordered_triples(tmp_path):
    from jointtask.tasks.dataset import heldout_tuples

    rows = {}
    for split, count in (("train", 20000), ("validation", 400), ("test", 400)):  # train: per_n 1000 x 20
        f = tmp_path / f"{split}.jsonl"
        args = ["--protocol", "paper", "--ops", "ADD,MAX,MED", "--modulus", "20", "--max-depth", "2"]
        r = run_cli("data", *args, "--split", split, "--count", str(count), "--seed", "1", "--out", f)
        assert r.returncode == 0, r.stderr
        rows[split] = [json.loads(x)["tokens"] for x in f.read_text().splitlines()]
    held = heldout_tuples(20, 3, DataConfig(), seed=0)
    both = held["validation"] | held["test"]
    assert not held["validation"] & held["test"]
    assert all(len(set(t)) == 3 and all(0 <= v < 20 for v in t) for t in both)
    assert 0.9 * 0.05 * 20**3 <= len(both) <= 0.05 * 20**3  # 5% of n^3 draws, a few repeats collapse
    assert 0.2 < len(held["validation"]) / len(both) < 0.45  # validation : test = 0.1 : 0.2
    for tokens in rows["train"]:
        assert not value_triples(tokens) & both
    for tokens in rows["validation"]:
        assert value_triples(tokens) & held["validation"] and not value_triples(tokens) & held["test"]
    for tokens in rows["test"]:
        assert value_triples(tokens) & held["test"]
    prompts = {s: {" ".join(t[: t.index("=")]) for t in rows[s]} for s in rows}
    assert not prompts["train"] & prompts["validation"] and not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    # the atomic steps of test samples, up to argument order, are mostly evaluated in training
    trained = {a for t in rows["train"] for a in atomic(t)}
    steps = [a for t in rows["test"] for a in atomic(t)]
    assert sum(a in trained for a in steps) / len(steps) > 0.75
    # nested test samples exist, and another order of a held-out triple is trained on
    assert any(t.count("=") > 1 for t in rows["test"])
    assert any(tuple(reversed(x)) in {w for t in rows["train"] for w in value_triples(t)} for x in held["test"])


@pytest.mark.slow
def test_paper_protocol_bad_input(tmp_path):
    r = run_cli("data", "--ops", "ADD", "--modulus", "20", "--protocol", "nope", "--out", tmp_path / "a.jsonl")
    assert r.returncode == 2 and "protocol" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("data", "--ops", "ADD", "--modulus", "2", "--protocol", "paper", "--out", tmp_path / "a.jsonl")
    assert r.returncode == 2 and "max_args" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a.jsonl").exists()
    with pytest.raises(UserError, match="max_args"):
        from jointtask.train.config import config_from_dict

        config_from_dict({"task": {"ops": ["ADD"], "modulus": 2}, "data": {"protocol": "paper"}})


def test_paper_protocol_depth_one_test_set_is_whole_and_its_steps_trained():
    task = TaskConfig(ops=["ADD"], modulus=20, max_depth=1)
    d = build_task_data(task, DataConfig(per_n=1000, eval_count=400), seed=0)
    assert d.test_space["ADD"] == len(d.test_sets["ADD"])  # every held-out ADD triple is scored
    assert d.steps_seen["ADD"] > 0.8
    strict = build_task_data(task, DataConfig(per_n=200, eval_count=50, protocol="strict"), seed=0)
    assert strict.steps_seen["ADD"] == 0.0  # strict at depth 1: a test prompt is its only step, never trained
