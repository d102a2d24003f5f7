"""Backward with each head's own gradient on the shared body: the weighting methods that need them (PCGrad, GradNorm).

`surgery_backward` takes each labelled head's gradient on the shared parameters (backbone + neck), lets the weighting
turn them into the body's gradient (and gradients for its own parameters), and backpropagates that. PCGrad (Yu et al.
2020, "Gradient Surgery for Multi-Task Learning", `pcgrad`): each head's gradient is projected off every other head's
where the two conflict (negative dot product), in a random order per head, and the projections are summed. The heads'
own parameters keep their plain gradients: only the body is shared. `HeadsTask.backward` calls it when the
weighting's `surgery` is set.

Cost: one extra backward through the body per labelled head (K + 1 in all, against 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # weighting.py imports pcgrad from here
    from .weighting import LossWeighting

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


def surgery_backward(module: nn.Module, shared: Sequence[nn.Parameter], weighting: LossWeighting,
                     head_losses: Mapping[str, Tensor], total: Tensor, loss: Tensor) -> None:
    """Backward for `loss` (`total`, the training step's loss, as Lightning passes it to backward: scaled for mixed
    precision, divided for gradient accumulation) with the `shared` parameters' gradient from
    `weighting.surgery_gradients` of each labelled head's gradient of its weighted loss (`head_losses`, summing to
    `total` up to the zero ties of unlabelled heads), plus the gradients it gives its own parameters; every other
    trainable parameter of `module` gets its plain gradient of `loss`.

    The gradients are put in place by one ordinary backward of sum_p (p * g_p).sum(), not written to `.grad`: it
    accumulates as any backward does and fires DDP's gradient hooks, so DDP averages them over processes."""
    # the loss scaler's factor over the accumulation divisor: each head's loss is scaled as `loss` is, so fp16
    # gradients do not underflow; PCGrad's projection and GradNorm's comparisons are linear in it
    scale = loss.detach() / total.detach()
    shared = [p for p in shared if p.requires_grad]
    ids = {id(p) for p in shared}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
    flat = {}
    for name, head_loss in head_losses.items():
        grads = torch.autograd.grad(head_loss * scale, shared, retain_graph=True, allow_unused=True)
        flat[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, shared)])
    body, own = weighting.surgery_gradients(flat)
    merged = body.split([p.numel() for p in shared])
    plain = torch.autograd.grad(loss, rest, allow_unused=True) if rest else ()
    # each gradient laid out as its parameter (channels-last ones too): DDP's buckets expect the parameter's strides
    surrogate = sum((p * torch.empty_like(p).copy_(g.view_as(p))).sum() for p, g in zip(shared, merged))
    surrogate = surrogate + sum((p * g).sum() for p, g in own)
    # an unused parameter still gets its zero, so DDP (find_unused_parameters=False) sees every one
    surrogate = surrogate + sum((p * (g if g is not None else torch.zeros_like(p))).sum() for p, g in zip(rest, plain))
    surrogate.backward()
