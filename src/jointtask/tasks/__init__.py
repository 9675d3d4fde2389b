"""Tasks: ListOps-style arithmetic mod n and permutation products, with chain of thought."""

from .dataset import SPLITS, EncodedSet, Sample, TaskData, build_task_data, context_length, encode, generate, split_of
from .expressions import canonical, chain_of_thought, evaluated, random_tree, reduce_leftmost, to_tokens
from .families import LISTOPS_OPS, PERM_OPS, ListOps, Permutations, Vocab, family_of, make_family
from .spec import DataConfig, TaskConfig

__all__ = [
    "SPLITS", "EncodedSet", "Sample", "TaskData", "build_task_data", "context_length", "encode", "generate", "split_of",
    "canonical", "evaluated", "chain_of_thought", "random_tree", "reduce_leftmost", "to_tokens",
    "LISTOPS_OPS", "PERM_OPS", "ListOps", "Permutations", "Vocab", "family_of", "make_family",
    "DataConfig", "TaskConfig",
]
