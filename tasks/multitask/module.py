"""The joint task module: `HeadsTask` with one part per head of a `MultiTaskModel` and a loss weighting."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..classification.module import ClassificationPart
from ..detection.module import DetectionPart
from ..module import HeadsTask
from ..parts import HeadPart
from ..segmentation.module import SegmentationPart
from .weighting import WEIGHTING_METHODS, build_weighting

# The learned loss weights' (uncertainty, gradnorm) factor on optim.lr. At 1 they did not move in the default 6-epoch
# joint run (AdamW moves each by about the lr, 2e-4, per step: uncertainty's weights 0.4998 -> 0.5000), which made
# both methods equal weighting under another name; at 50 they move (README: One model, several heads).
LEARNED_WEIGHTS_LR_MULT = 50.0


def joint_parts(model: nn.Module, class_names: list[str],
                options: Mapping[str, Mapping[str, Any]]) -> dict[str, HeadPart]:
    """One part per head of `model`, logging under `<split>/<head>/`; `options[kind]` are the part's settings."""
    parts: dict[str, HeadPart] = {}
    k = len(class_names)
    for name, head in model.heads.items():
        opts = dict(options.get(head.kind) or {})
        if head.kind == "classification":
            parts[name] = ClassificationPart(name, k, class_names, f"{name}/", multilabel=True, **opts)
        elif head.kind == "segmentation":
            parts[name] = SegmentationPart(name, k + 1, ["background", *class_names], f"{name}/", **opts)
        else:
            parts[name] = DetectionPart(name, k, class_names, f"{name}/", masks=head.masks, **opts)
    return parts


def MultiTaskTask(model: nn.Module, *args: Any, class_names: list[str] | None = None,  # noqa: N802 - config target
                  weighting: Mapping[str, Any] | None = None, head_lr_mult: Mapping[str, float] | None = None,
                  score: Mapping[str, float] | None = None, classification: Mapping[str, Any] | None = None,
                  segmentation: Mapping[str, Any] | None = None, detection: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> HeadsTask:
    """The joint task module (`task=multitask`): batches of images and per-image target dicts
    (`data.multitask.MultiTaskCocoDataModule`); every head's metrics under `<split>/<head>/`, the heads' losses
    combined by `weighting` ({"method": equal | uncertainty | dwa, ...its options}).

    classification / segmentation / detection: the options of that kind of head's part (label_smoothing; loss,
    ignore_index; vis_score_threshold). `score` entries of heads the model does not have are left out."""
    names = list(class_names or [])
    parts = joint_parts(model, names, {"classification": classification or {}, "segmentation": segmentation or {},
                                       "detection": detection or {}})
    weighting = dict(weighting or {"method": "equal"})
    method = weighting.pop("method", "equal")
    weighting_lr_mult = weighting.pop("lr_mult", None)
    weighting_lr_mult = LEARNED_WEIGHTS_LR_MULT if weighting_lr_mult is None else float(weighting_lr_mult)
    if not (math.isfinite(weighting_lr_mult) and weighting_lr_mult > 0):
        # 0 or less would leave the learned weights out of the optimizer (param_groups drops lr_mult <= 0)
        raise ValueError(f"task.module.weighting.lr_mult={weighting_lr_mult:g}: the learned loss weights' factor on "
                         "optim.lr must be > 0 (1 trains them at optim.lr, e.g. 50 lets them move in a short run)")
    if "weights" in weighting and weighting["weights"] is not None:  # only the heads of this run
        weighting["weights"] = {k: v for k, v in dict(weighting["weights"]).items() if k in parts}
    # the config carries every method's options (weights, init, temperature): each method takes its own
    taken = set(inspect.signature(WEIGHTING_METHODS[method]).parameters) if method in WEIGHTING_METHODS else set()
    combine = build_weighting(method, list(parts), **{k: v for k, v in weighting.items()
                                                      if k in taken and v is not None})
    heads = set(parts)
    score = {k: v for k, v in dict(score or {}).items() if k.split("/")[0] in heads}
    lr = {k: v for k, v in dict(head_lr_mult or {}).items() if k in heads}
    return HeadsTask(model, *args, parts=parts, weighting=combine, head_lr_mult=lr, score=score,
                     weighting_lr_mult=weighting_lr_mult, class_names=names, **kwargs)
