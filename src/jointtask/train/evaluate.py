"""Greedy-decoding exact-match accuracy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..tasks.dataset import EncodedSet
from ..tasks.families import EOS, PAD, Vocab


def next_logits_of(model) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model's logits [n, vocab] for ids [n, t] at positions `last` [n]."""
    return lambda ids, last: model.head(
        model.residual(ids, at=torch.arange(len(ids), device=ids.device) * ids.shape[1] + last)
    )


@torch.no_grad()
def greedy_decode(
    next_logits, prompts: list[np.ndarray], max_new: int | np.ndarray, max_len: int, device: str | torch.device = "cpu"
) -> list[list[int]]:
    """Continue each prompt greedily until <eos> or `max_new` tokens (one number, or one per
    prompt); returns the new tokens (with the <eos> when produced). `next_logits(ids [n, t], last [n]) -> [n, vocab]` is one
    model's (`next_logits_of`) or, for a cohort, each prompt's own model's. Prompts of different
    lengths share one right-padded buffer of at most `max_len` tokens: each row writes at its own
    position, and causal attention keeps the padding after a row's last written token from
    affecting it."""
    n = len(prompts)
    if n == 0:
        return []
    lens = np.array([len(p) for p in prompts])
    limit = np.minimum(lens + max_new, max_len)  # each row writes below its limit
    buf_len = int(limit.max())
    host = np.full((n, buf_len), PAD, np.int64)
    for i, p in enumerate(prompts):
        host[i, : len(p)] = p
    buf = torch.from_numpy(host).to(device)  # one copy: one per prompt would each wait on a GPU
    plen = torch.from_numpy(lens).to(device)
    cur, lim = plen.clone(), torch.from_numpy(limit).to(device)  # next position each row writes
    active = cur < lim
    seq = torch.arange(n, device=device)
    for _ in range(int(np.max(max_new))):
        if not bool(active.any()):
            break
        upto = int(cur[active].max())
        nxt = next_logits(buf[:, :upto], (cur - 1).clamp(max=upto - 1)).argmax(-1)
        write = active & (cur < lim)
        buf[seq[write], cur[write]] = nxt[write]
        cur = torch.where(write, cur + 1, cur)
        active = write & (nxt != EOS) & (cur < lim)
    out = []
    buf_cpu, plen_cpu, cur_cpu = buf.cpu().numpy(), plen.cpu().numpy(), cur.cpu().numpy()
    for i in range(n):
        out.append(buf_cpu[i, plen_cpu[i] : cur_cpu[i]].tolist())
    return out


def final_answer(generated: list[int], vocab: Vocab) -> int | None:
    """The last value token before <eos>; None when no <eos> was produced."""
    if EOS not in generated:
        return None
    body = generated[: generated.index(EOS)]
    values = [t for t in body if vocab.is_value_id(t)]
    return values[-1] if values else None


def max_new_tokens(es: EncodedSet) -> int:
    return int((es.lengths - es.prompt_lengths).max()) + 2  # the full chain of thought, and slack


def prompts_of(es: EncodedSet, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
    return [es.ids[i, : es.prompt_lengths[i]] for i in range(start, len(es) if stop is None else stop)]


def count_correct(es: EncodedSet, vocab: Vocab, generated: list[list[int]], start: int = 0) -> int:
    """How many of `generated` (the continuations of es's prompts from `start` on) end in the right answer."""
    return sum(int(final_answer(g, vocab) == int(es.answers[start + j])) for j, g in enumerate(generated))


def accuracy(model, es: EncodedSet, vocab: Vocab, device="cpu", batch: int = 1024) -> float:
    """Share of prompts whose greedy chain of thought ends in the right answer."""
    if len(es) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    for s in range(0, len(es), batch):
        outs = greedy_decode(
            next_logits_of(model), prompts_of(es, s, min(s + batch, len(es))), max_new_tokens(es), model.max_len, device
        )
        correct += count_correct(es, vocab, outs, s)
    model.train(was_training)
    return correct / len(es)
