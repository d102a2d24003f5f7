"""Gradient surgery on the shared body: PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

Each head's gradient on the shared parameters (backbone + neck) is projected off every other head's where the two
conflict (negative dot product), in a random order per head, and the projected gradients are summed. The heads' own
parameters keep their plain gradients: only the body is shared. `task.module.weighting.method=pcgrad`
(`tasks.multitask.weighting.PCGrad`) turns it on; `HeadsTask.backward` calls `surgery_backward`.

Cost: one extra backward through the body per labelled head (K + 1 in all, against 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["pcgrad", "surgery_backward"]


def pcgrad(grads: Sequence[Tensor], generator: torch.Generator | None = None) -> Tensor:
    """PCGrad's update from K flat gradients (each (P,)): for each g_i, for every other g_j in a random order, if
    g_i . g_j < 0 then g_i -= (g_i . g_j) / |g_j|^2 * g_j (g_i as projected so far, g_j as it was); returns the sum
    of the projected g_i, (P,). With no conflict it is the plain sum."""
    if not grads:
        raise ValueError("pcgrad needs at least one gradient")
    norms = [float(g.dot(g)) for g in grads]
    total = torch.zeros_like(grads[0])
    for i, g in enumerate(grads):
        projected = g.clone()
        others = [j for j in range(len(grads)) if j != i]
        for k in torch.randperm(len(others), generator=generator).tolist():
            j = others[k]
            dot = float(projected.dot(grads[j]))
            if dot < 0 and norms[j] > 0:
                projected -= dot / norms[j] * grads[j]
        total += projected
    return total


def surgery_backward(module: nn.Module, shared: Sequence[nn.Parameter], head_losses: Sequence[Tensor],
                     total: Tensor, loss: Tensor) -> None:
    """Backward for `loss` (`total`, the training step's loss, as Lightning passes it to backward: scaled for mixed
    precision, divided for gradient accumulation) with PCGrad on the `shared` parameters: their gradient is
    `pcgrad` of the `head_losses`' gradients (the weighted loss of each labelled head, summing to `total` up to the
    zero ties of unlabelled heads); every other trainable parameter of `module` gets its plain gradient of `total`.

    The gradients are put in place by one ordinary backward of sum_p (p * g_p).sum(), not written to `.grad`: it
    accumulates as any backward does and fires DDP's gradient hooks, so DDP averages them over processes."""
    scale = loss.detach() / total.detach()  # the loss scaler's factor over the accumulation divisor
    shared = [p for p in shared if p.requires_grad]
    ids = {id(p) for p in shared}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
    per_head = [torch.autograd.grad(h, shared, retain_graph=True, allow_unused=True) for h in head_losses]
    flat = [torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, shared)])
            for gs in per_head]
    merged = pcgrad(flat).split([p.numel() for p in shared])
    plain = torch.autograd.grad(total, rest, allow_unused=True) if rest else ()
    surrogate = sum((p * g.view_as(p)).sum() for p, g in zip(shared, merged))
    # an unused parameter still gets its zero, so DDP (find_unused_parameters=False) sees every one
    surrogate = surrogate + sum((p * (g if g is not None else torch.zeros_like(p))).sum() for p, g in zip(rest, plain))
    (surrogate * scale).backward()
