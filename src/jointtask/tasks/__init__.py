"""Tasks: ListOps-style arithmetic mod n and permutation products, with chain of thought."""

from .dataset import SPLITS, EncodedSet, Sample, TaskData, build_task_data, context_length, encode, generate, split_of
from .expressions import canonical, chain_of_thought, evaluated, random_tree, reduce_leftmost, to_tokens
from .families import FAMILIES, Family, ListOps, Permutations, Vocab, family_of
from .config import DataConfig, TaskConfig

__all__ = [
    "SPLITS",
    "EncodedSet",
    "Sample",
    "TaskData",
    "build_task_data",
    "context_length",
    "encode",
    "generate",
    "split_of",
    "canonical",
    "evaluated",
    "chain_of_thought",
    "random_tree",
    "reduce_leftmost",
    "to_tokens",
    "FAMILIES",
    "Family",
    "ListOps",
    "Permutations",
    "Vocab",
    "family_of",
    "DataConfig",
    "TaskConfig",
]
