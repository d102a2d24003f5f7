"""Any timm CNN with features at strides 2..32 as a Backbone, via timm's `features_only` wrapper."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import timm

from .base import ShapeSpec
from .catalog import LEVELS
from .staged import StagedBackbone


def timm_backbone(
    model_name: str, *, in_chans: int = 3, out_levels: Sequence[str] = LEVELS, **model_kwargs
) -> StagedBackbone:
    """Build `timm.create_model(model_name, features_only=True)` and expose its levels as c1..c5."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=6, cutoff=0.7)
        raise KeyError(
            f"timm has no model named {model_name!r}. Close timm names: {', '.join(close) or 'none'}. "
            "See timm.list_models('*resnet*') for the full list."
        )
    feats = timm.create_model(model_name, pretrained=False, features_only=True, in_chans=in_chans, **model_kwargs)
    strides = feats.feature_info.reduction()
    if strides[-len(LEVELS) :] != [2, 4, 8, 16, 32]:
        raise ValueError(
            f"timm model {model_name!r} has feature strides {strides}; Cerberus backbones need levels at "
            "strides 2, 4, 8, 16, 32 (c1..c5), as ResNet-family models have."
        )
    channels = feats.feature_info.channels()[-len(LEVELS) :]
    shapes = {lvl: ShapeSpec(c, s) for lvl, c, s in zip(LEVELS, channels, [2, 4, 8, 16, 32])}
    # return_layers maps a flattened child name to its feature index
    first = len(strides) - len(LEVELS)
    taps = {name: LEVELS[int(idx) - first] for name, idx in feats.return_layers.items() if int(idx) >= first}
    return StagedBackbone(list(feats.items()), taps, shapes, out_levels)
