"""Combine the per-head losses of a multi-task model into the one scalar that is backpropagated.

Every method is an `nn.Module`, so learned weights (uncertainty) and recorded state (DWA) are registered on the task
module, moved with it to the device and saved in its checkpoints. A batch need not label every head: a head whose
labels are missing from the whole batch is absent from the `losses` mapping and contributes nothing to the total.

Methods: "equal" (fixed weights, the baseline), "uncertainty" (Kendall, Gal & Cipolla 2018), "dwa" (Liu, Johns &
Davison 2019), "pcgrad" (Yu et al. 2020: equal's sum, with gradient surgery on the shared body at backward,
tasks/multitask/surgery.py), "gradnorm" (Chen et al. 2018: weights learned so that each head's gradient norm on the
shared body follows its relative training rate). `build_weighting` builds one by name from a config.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "DynamicWeightAverage",
    "EqualWeighting",
    "GradNorm",
    "LossWeighting",
    "PCGrad",
    "UncertaintyWeighting",
    "WEIGHTING_METHODS",
    "build_weighting",
]


class LossWeighting(nn.Module):
    """Base: heads are named (e.g. "detection", "segmentation", "classification"); their order is the order of any
    per-head parameter or buffer, so a checkpoint loads into a module built with the same heads in the same order.

    `surgery`: True where the method needs each head's own gradient on the shared body (PCGrad, GradNorm): the task
    module then backpropagates each head's weighted loss on its own and asks `surgery_gradients` what to apply
    (`tasks/multitask/surgery.py`)."""

    surgery = False

    def surgery_gradients(self, grads: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[nn.Parameter, Tensor]]]:
        """grads: labelled head -> its weighted loss's flat gradient on the shared parameters, (P,). Returns the
        shared parameters' gradient (P,) and (parameter, gradient) pairs for this module's own parameters."""
        raise NotImplementedError(f"{type(self).__name__} does no gradient surgery")

    def __init__(self, heads: Sequence[str]) -> None:
        super().__init__()
        heads = tuple(heads)
        if not heads:
            raise ValueError("loss weighting needs at least one head")
        for head in heads:
            # names become state_dict keys (nn.ParameterDict), where "." would read as a submodule path
            if not isinstance(head, str) or not head or "." in head:
                raise ValueError(f"head names must be non-empty strings without '.', got {head!r}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"head names must be unique, got {list(heads)}")
        self.heads: tuple[str, ...] = heads
        self._index = {head: i for i, head in enumerate(heads)}
        # carries the module's device and dtype for a total built from no loss at all; not saved, it holds no state
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """losses: head name -> 0-dim loss of the heads that have labels in this batch (a head whose label is missing
        in the whole batch is simply absent from the mapping). Returns (total 0-dim loss, head -> the weight applied,
        detached 0-dim tensors, for logging); the total keeps the losses' autograd graph."""
        self._check_heads(losses)
        for head, loss in losses.items():
            # a per-sample (B,) loss would broadcast into a vector "total" and fail only at backward, far from here
            if loss.dim() != 0:
                raise ValueError(f"loss of head {head!r} must be 0-dim, got shape {tuple(loss.shape)}")
        return self._combine(losses)

    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        """Called once per training epoch with each head's mean (unweighted) loss over the epoch; default: nothing."""

    def _combine(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def _check_heads(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._index:
                raise KeyError(f"unknown head {name!r}; known heads: {list(self.heads)}")

    def _weighted_sum(self, losses: Mapping[str, Tensor], weights: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """sum_i weights[i] * losses[i] over the present heads; weights: (K,) without grad, in `self.heads` order."""
        if not losses:
            return self._empty_total(), {}
        applied = {head: weights[self._index[head]].detach() for head in losses}
        total = sum(applied[head] * loss for head, loss in losses.items())
        return total, applied

    def _empty_total(self) -> Tensor:
        """0-dim zero for a batch without any labelled head: it depends on every parameter of this module (so
        backward reaches them, with gradient 0, and DDP sees them used); a module without parameters returns a
        fresh leaf that requires grad, so `backward()` still works. The model's own parameters are the caller's
        concern: under DDP it must tie them in too (e.g. add 0 * its outputs)."""
        params = list(self.parameters())
        if params:
            return sum((0 * p.sum() for p in params), self._zero)
        return self._zero.detach().clone().requires_grad_(True)

    def extra_repr(self) -> str:
        return f"heads={list(self.heads)}"


class EqualWeighting(LossWeighting):
    """total = sum_i w_i * L_i over the present heads, w_i = 1 or a fixed user weight (the documented baseline).

    weights: head -> w_i >= 0 for any subset of the heads; the others keep 1. They are configuration, not state:
    they are not saved in the state_dict (the config rebuilds them)."""

    def __init__(self, heads: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(heads)
        weights = dict(weights or {})
        self._check_heads(weights)
        for head, w in weights.items():
            if not math.isfinite(float(w)) or float(w) < 0:
                raise ValueError(f"weight of head {head!r} must be finite and >= 0, got {w!r}")
        values = [float(weights.get(head, 1.0)) for head in self.heads]
        # a buffer, so .to(device) moves it and indexing it gives a 0-dim tensor on the losses' device
        self.register_buffer("weights", torch.tensor(values), persistent=False)

    def _combine(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self._weighted_sum(losses, self.weights)


class UncertaintyWeighting(LossWeighting):
    """Kendall, Gal & Cipolla 2018, in the form LibMTL and most libraries use (the paper's regression form): one
    learned log-variance s_i per head, total = sum_i (0.5 * exp(-s_i) * L_i + 0.5 * s_i); weight 0.5 * exp(-s_i).

    For a fixed L_i the term is smallest at s_i = log L_i, so a head with a large loss gets a small weight. At
    init = 0 every weight is 0.5, half the equal baseline's. The s_i (`log_vars`, shape () each) are parameters of
    this module: the optimizer must include them and should not decay them (weight decay pulls every weight to 0.5).

    Under DDP every parameter must get a gradient on every step: a head absent from `losses` adds 0 * s_i, so its
    gradient is exactly 0 (not None) and DDP never reports it unused. (An optimizer with momentum or weight decay may
    still move that s_i; its loss term does not.)"""

    def __init__(self, heads: Sequence[str], init: float = 0.0) -> None:
        super().__init__(heads)
        if not math.isfinite(float(init)):
            raise ValueError(f"init log-variance must be finite, got {init!r}")
        self.log_vars = nn.ParameterDict({head: nn.Parameter(torch.tensor(float(init))) for head in self.heads})

    def _combine(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        total = self._zero
        applied: dict[str, Tensor] = {}
        for head in self.heads:
            s = self.log_vars[head]
            if head in losses:
                weight = 0.5 * torch.exp(-s)
                total = total + weight * losses[head] + 0.5 * s
                applied[head] = weight.detach()
            else:
                # keeps s_i in the graph (gradient exactly 0) so DDP's reducer sees every parameter used
                total = total + 0 * s
        # with no loss present this is sum_i 0 * s_i: a zero that still backpropagates to every s_i
        return total, applied


class DynamicWeightAverage(LossWeighting):
    """Liu, Johns & Davison 2019 (DWA): w_i(t) = K * exp(r_i(t-1) / T) / sum_j exp(r_j(t-1) / T), with
    r_i(t-1) = Lbar_i(t-1) / Lbar_i(t-2) the ratio of the head's mean losses over the last two epochs and K the number
    of heads; w_i = 1 for the first two epochs, before two epoch means exist. A head whose loss falls more slowly
    gets the larger weight; the weights sum to K. A larger temperature T makes them more equal.

    `epoch_end` records each epoch's means and sets the weights for the next epoch; it must be called on every rank.
    Under DDP the caller passes means already reduced over ranks, so every rank computes the same weights. A head
    without a (finite) mean in either of the last two epochs (no labelled batch) gets ratio 1, a neutral value,
    instead of a NaN that would spread to every head through the softmax.

    Buffers (persistent, so a resumed run continues with the same weights): `history` (2, K), the means of epochs
    t-2 and t-1 with NaN for a missing one; `epochs_recorded` (), how many epochs were recorded; `weights` (K,), the
    weights in use."""

    def __init__(self, heads: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(heads)
        if not (math.isfinite(float(temperature)) and float(temperature) > 0):
            raise ValueError(f"DWA temperature must be finite and > 0, got {temperature!r}")
        self.temperature = float(temperature)
        k = len(self.heads)
        self.register_buffer("history", torch.full((2, k), math.nan))
        self.register_buffer("epochs_recorded", torch.zeros((), dtype=torch.long))
        self.register_buffer("weights", torch.ones(k))

    def _combine(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self._weighted_sum(losses, self.weights)

    @torch.no_grad()
    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        """mean_losses: head -> the epoch's mean unweighted loss (float or 0-dim tensor); a head without one is left
        out (or None)."""
        self._check_heads(mean_losses)
        means = [mean_losses.get(head) for head in self.heads]
        latest = torch.tensor(
            [math.nan if mean is None else float(mean) for mean in means],
            dtype=self.history.dtype,
            device=self.history.device,
        )
        self.history.copy_(torch.stack([self.history[1], latest]))
        self.epochs_recorded += 1
        if int(self.epochs_recorded) >= 2:
            ratio = self.history[1] / self.history[0]
            # NaN (a missing mean) or inf (a zero previous mean): no usable trend, so neutral
            ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
            self.weights.copy_(len(self.heads) * torch.softmax(ratio / self.temperature, dim=0))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"


class PCGrad(EqualWeighting):
    """Yu et al. 2020 (PCGrad): the total is equal's (sum_i w_i * L_i, `weights` as equal takes them), and on the
    shared body each head's gradient of w_i * L_i is projected off the others' where they conflict before they are
    summed (`tasks.multitask.surgery.pcgrad`); the heads' own parameters get their plain gradients. The task module
    does the backward (`HeadsTask.backward`): one extra backward through the body per labelled head."""

    surgery = True

    def surgery_gradients(self, grads: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[nn.Parameter, Tensor]]]:
        from .surgery import pcgrad

        return pcgrad(list(grads.values())), []


class GradNorm(LossWeighting):
    """Chen et al. 2018 (GradNorm): total = sum_i w_i * L_i with learned weights w_i (init 1, kept > 0 and summing to
    K, the number of heads). Each step, with G_i = |grad of w_i * L_i| on the shared body (all of it; the paper's
    last shared layer is a cheaper stand-in), r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)) over the labelled heads
    (L_i(0): the head's first labelled loss) and the target T_i = mean_j G_j * r_i ** alpha held constant, w_i
    moves down the gradient of sum_i |G_i - T_i|: dw_i = sign(G_i - T_i) * G_i / w_i. A head that trains more slowly
    (larger r_i) gets the larger gradient, so the larger weight; alpha (1.5) sets how strongly.

    The model's gradient is the plain one of the weighted sum; the task module does the backward
    (`HeadsTask.backward`, one extra backward through the body per labelled head). The w_i are parameters of this
    module (the optimizer takes them, without weight decay), renormalised to sum to K before each use.
    `initial_losses` (K,) is a persistent buffer: a resumed run keeps its L_i(0)."""

    surgery = True

    def __init__(self, heads: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(heads)
        if not (math.isfinite(float(alpha)) and float(alpha) >= 0):
            raise ValueError(f"task.module.weighting.alpha={alpha!r}: GradNorm's alpha must be finite and >= 0 "
                             "(1.5 is the paper's; 0 asks for equal gradient norms)")
        self.alpha = float(alpha)
        self.weights = nn.ParameterDict({head: nn.Parameter(torch.tensor(1.0)) for head in self.heads})
        self.register_buffer("initial_losses", torch.full((len(self.heads),), math.nan))
        self._losses: dict[str, Tensor] = {}  # this step's detached losses, on the device (no host sync)

    @torch.no_grad()
    def _renormalise(self) -> None:
        w = torch.stack([self.weights[h] for h in self.heads]).clamp_min(1e-3)
        w = w * len(self.heads) / w.sum()
        for head, value in zip(self.heads, w):
            self.weights[head].copy_(value)

    def _combine(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        self._renormalise()
        total = self._zero
        applied: dict[str, Tensor] = {}
        for i, head in enumerate(self.heads):
            w = self.weights[head]
            if head in losses:
                loss = losses[head].detach()
                first = self.initial_losses[i]
                self.initial_losses[i] = torch.where(torch.isnan(first), loss.to(first.dtype), first)
                self._losses[head] = loss
                applied[head] = w.detach()
                total = total + applied[head] * loss
            # w_i's gradient comes from surgery_gradients; 0 * w_i keeps it in the graph for DDP's reducer
            total = total + 0 * w
        return total, applied

    def surgery_gradients(self, grads: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[nn.Parameter, Tensor]]]:
        heads = list(grads)
        norms = torch.stack([grads[h].norm() for h in heads])  # G_i
        rates = torch.stack([self._losses[h] / self.initial_losses[self._index[h]] for h in heads]).to(norms)
        target = norms.mean() * (rates / rates.mean()) ** self.alpha
        own = []
        for head, g, t in zip(heads, norms, target):
            w = self.weights[head]
            own.append((w, torch.sign(g - t) * g / w.detach()))
        return sum(grads.values()), own

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}"


WEIGHTING_METHODS: dict[str, type[LossWeighting]] = {
    "equal": EqualWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "pcgrad": PCGrad,
    "gradnorm": GradNorm,
}


def build_weighting(method: str, heads: Sequence[str], **options: object) -> LossWeighting:
    """The weighting `method` (`WEIGHTING_METHODS`: equal, uncertainty, dwa, pcgrad, gradnorm) over `heads`, with its
    keyword `options`."""
    if method not in WEIGHTING_METHODS:
        raise ValueError(f"unknown loss weighting method {method!r}; known methods: {sorted(WEIGHTING_METHODS)}")
    cls = WEIGHTING_METHODS[method]
    # the options each method takes are its constructor's keywords, so this check cannot drift from the classes
    taken = set(inspect.signature(cls).parameters) - {"heads"}
    unknown = sorted(set(options) - taken)
    if unknown:
        raise ValueError(
            f"option(s) {unknown} not taken by loss weighting method {method!r}; it takes: {sorted(taken) or 'none'}"
        )
    return cls(heads, **options)
