"""Greedy-decoding exact-match accuracy (SPEC section 3)."""

from __future__ import annotations

import numpy as np
import torch

from ..tasks.dataset import EncodedSet
from ..tasks.families import EOS, PAD, Vocab


@torch.no_grad()
def greedy_decode(model, prompts: list[np.ndarray], max_new: int, device="cpu") -> list[list[int]]:
    """Continue each prompt greedily until <eos> or `max_new` tokens; returns the new tokens
    (with the <eos> when produced). Prompts of different lengths share one right-padded buffer:
    each row writes at its own position, and causal attention keeps the padding after a row's
    last written token from affecting it."""
    n = len(prompts)
    if n == 0:
        return []
    lens = np.array([len(p) for p in prompts])
    buf_len = min(int(lens.max()) + max_new, model.max_len)
    host = np.full((n, buf_len), PAD, np.int64)
    for i, p in enumerate(prompts):
        host[i, : len(p)] = p
    buf = torch.from_numpy(host).to(device)  # one copy: one per prompt would each wait on a GPU
    plen = torch.from_numpy(lens).to(device)
    cur = plen.clone()  # next position each row writes
    active = cur < buf_len
    seq = torch.arange(n, device=device)
    for _ in range(max_new):
        if not bool(active.any()):
            break
        upto = int(cur[active].max())
        h = model.residual(buf[:, :upto])
        last = h[seq, (cur - 1).clamp(max=upto - 1)]
        nxt = model.head(last).argmax(-1)
        write = active & (cur < buf_len)
        buf[seq[write], cur[write]] = nxt[write]
        cur = torch.where(write, cur + 1, cur)
        active = write & (nxt != EOS) & (cur < buf_len)
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


def accuracy(model, es: EncodedSet, vocab: Vocab, device="cpu", batch: int = 1024) -> float:
    """Share of prompts whose greedy chain of thought ends in the right answer."""
    if len(es) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    max_new = int((es.lengths - es.prompt_lengths).max()) + 2  # the full chain of thought, and slack
    correct = 0
    for s in range(0, len(es), batch):
        prompts = [es.ids[i, : es.prompt_lengths[i]] for i in range(s, min(s + batch, len(es)))]
        outs = greedy_decode(model, prompts, max_new, device)
        for j, g in enumerate(outs):
            correct += int(final_answer(g, vocab) == int(es.answers[s + j]))
    model.train(was_training)
    return correct / len(es)
