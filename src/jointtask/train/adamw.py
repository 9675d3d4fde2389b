"""The AdamW step of torch.optim.AdamW(foreach=True), with each group's update in one C++ call
(csrc/optimizer.cpp) when the kernels are available and every tensor is a float32 CPU tensor.

Bitwise the same as `opt.step()`: the same state (step counts as float32 tensors, exp_avg,
exp_avg_sq; checkpoints are interchangeable), the same scalars computed the same way in Python,
the same float operations per element (tests/test_train.py compares them step by step). On the CPU
torch's foreach AdamW runs ~8 ops per parameter tensor; for models of 16-128 wide that was about
1 ms of a training step, most of it calls, not arithmetic. Anything else falls back to opt.step().
"""

from __future__ import annotations

import torch

from .. import cpu_kernels


def _supported(opt: torch.optim.Optimizer) -> bool:
    if not isinstance(opt, torch.optim.AdamW):
        return False
    for g in opt.param_groups:
        if g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"] or g.get("fused"):
            return False
        if isinstance(g["lr"], torch.Tensor) or any(isinstance(b, torch.Tensor) for b in g["betas"]):
            return False
        for p in g["params"]:
            if p.grad is not None and not (p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                                           and p.grad.is_contiguous() and not p.grad.is_sparse):
                return False
    K = cpu_kernels.kernels()
    return K is not None and K.adamw_available()


@torch.no_grad()
def adamw_step(opt: torch.optim.Optimizer) -> None:
    if not _supported(opt):
        opt.step()
        return
    K = cpu_kernels.kernels()
    for g in opt.param_groups:
        params = [p for p in g["params"] if p.grad is not None]
        if not params:
            continue
        beta1, beta2 = g["betas"]
        states = []
        for p in params:
            state = opt.state[p]
            if len(state) == 0:  # as torch.optim.AdamW initialises it
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states.append(state)
        # one step count per tensor, as torch keeps them; the update below needs them equal
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        step = steps[0].item()
        if any(s.item() != step for s in steps[1:]):
            raise RuntimeError("adamw_step: parameters of a group at different step counts")
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = (g["lr"] / bias_correction1) * -1
        K.adamw_update(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                       [s["exp_avg_sq"] for s in states], g["lr"], g["weight_decay"], beta1, beta2, g["eps"],
                       step_size, bias_correction2**0.5)
