"""Semantic segmentation models: backbone (+ neck) -> a decoder -> one logit map per class at the input resolution.

One head class per decoder: `UnetHead` (segmentation-models-pytorch's U-Net decoder) and `FPNSemanticHead`
(Panoptic FPN's semantic head); `UnetModel` / `SemanticFPNModel` put one on a body (selectable by
`task.model._target_`). `SegmentationModel`, the default target, picks the semantic-FPN head on an FPN neck and the
U-Net otherwise (`decoder=auto`), or the one named by `decoder`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from backbones import Backbone
from backbones.base import Neck, ShapeSpec
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

from ..multihead import MultiHeadModel
from .semantic_fpn import SemanticFPNHead

log = logging.getLogger(__name__)
DECODERS = ("auto", "unet", "semantic_fpn")


def _levels(shapes: Mapping[str, ShapeSpec]) -> list[str]:
    return sorted(shapes, key=lambda name: shapes[name].stride)


class _SegmentationHead(nn.Module):
    """What both decoders share: `num_classes`, the levels read (`in_features`) and logits brought to the input's
    size. Subclasses set `decoder_name` and implement `decode`.

    forward(feats: {level: (B, C, h, w)}, x: the body's input (B, 3, H, W)) -> logits (B, num_classes, H, W).
    """

    kind = "segmentation"
    decoder_name: str

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_features: list[str] = []

    def decode(self, x: Tensor, feats: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, feats: Mapping[str, Tensor], x: Tensor) -> Tensor:
        out = self.decode(x, feats)
        if out.shape[-2:] != x.shape[-2:]:  # semantic FPN predicts at stride 4
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class UnetHead(_SegmentationHead):
    """smp's U-Net decoder on the body's shallowest `len(decoder_channels)` levels (widths and strides from
    `shapes`, the body's `output_shape()`).

    Args:
        decoder_channels: one width per decoder block, coarsest first; its length is the depth, i.e. the number of
            levels used (the shallowest ones: 5 -> c1..c5, 4 -> c1..c4).
        decoder_norm: the blocks' normalization (`batchnorm`, `groupnorm`, `instancenorm`, `identity` / false).
        decoder_attention: None or `scse` (smp's squeeze-excitation on the skip connections).
        decoder_interpolation: upsampling, `nearest` (smp's default) or `bilinear`.
    """

    decoder_name = "unet"

    def __init__(self, shapes: Mapping[str, ShapeSpec], num_classes: int,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), decoder_norm: str | bool = "batchnorm",
                 decoder_attention: str | None = None, decoder_interpolation: str = "nearest") -> None:
        super().__init__(num_classes)
        levels, depth = _levels(shapes), len(decoder_channels)
        if not 1 <= depth <= len(levels):
            raise ValueError(
                f"task.model.decoder_channels has {depth} entries (the U-Net depth) but the body returns "
                f"{len(levels)} levels {levels}; give at most {len(levels)} widths, coarsest first")
        self.in_features = levels[:depth]
        if depth < len(levels):
            log.warning("the U-Net of depth %d uses %s; the body also computes %s for nothing: set "
                        "backbone.out_levels=[%s] to skip them", depth, self.in_features, levels[depth:],
                        ",".join(self.in_features))
        # smp's decoder takes [full-res input, level 1, ..., level depth]; it reads only the input's size
        self.decoder = UnetDecoder(
            encoder_channels=[0, *(shapes[f].channels for f in self.in_features)],
            decoder_channels=list(decoder_channels), n_blocks=depth, use_norm=decoder_norm,
            attention_type=decoder_attention, interpolation_mode=decoder_interpolation)
        self.segmentation_head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)

    def decode(self, x: Tensor, feats: Mapping[str, Tensor]) -> Tensor:
        return self.segmentation_head(self.decoder([x, *(feats[f] for f in self.in_features)]))


class FPNSemanticHead(_SegmentationHead):
    """Panoptic FPN's semantic head on `fpn_features` (default: every level with stride <= 32, p2..p5 of an FPN).

    Args:
        fpn_channels: head width (128 in Panoptic FPN).
        fpn_features: levels to fuse.
        dropout: Dropout2d before the classifier.
    """

    decoder_name = "semantic_fpn"

    def __init__(self, shapes: Mapping[str, ShapeSpec], num_classes: int, fpn_channels: int = 128,
                 fpn_features: Sequence[str] | None = None, dropout: float = 0.0) -> None:
        super().__init__(num_classes)
        levels = _levels(shapes)
        features = list(fpn_features) if fpn_features else [f for f in levels if shapes[f].stride <= 32]
        unknown = [f for f in features if f not in shapes]
        if unknown:
            raise ValueError(f"task.model.fpn_features {unknown} are not among the body's levels {levels}")
        self.in_features = features
        self.decoder = SemanticFPNHead(shapes, features, fpn_channels, num_classes, dropout)

    def decode(self, x: Tensor, feats: Mapping[str, Tensor]) -> Tensor:
        return self.decoder(feats)


def UnetModel(body: Backbone, num_classes: int, *, mean: Sequence[float] = IMAGENET_MEAN,  # noqa: N802
              std: Sequence[float] = IMAGENET_STD, **options: Any) -> MultiHeadModel:
    """`body` and one `UnetHead` named "segmentation" (`options`: the head's)."""
    return _one_head(body, UnetHead(body.output_shape(), num_classes, **options), mean, std)


def SemanticFPNModel(body: Backbone, num_classes: int, *, mean: Sequence[float] = IMAGENET_MEAN,  # noqa: N802
                     std: Sequence[float] = IMAGENET_STD, **options: Any) -> MultiHeadModel:
    """`body` and one `FPNSemanticHead` named "segmentation" (`options`: the head's)."""
    return _one_head(body, FPNSemanticHead(body.output_shape(), num_classes, **options), mean, std)


def _one_head(body: Backbone, head: _SegmentationHead, mean: Sequence[float], std: Sequence[float]) -> MultiHeadModel:
    return MultiHeadModel(body, {"segmentation": head}, mean=mean, std=std)


HEADS: dict[str, type[_SegmentationHead]] = {"unet": UnetHead, "semantic_fpn": FPNSemanticHead}
OPTIONS = {"unet": ("decoder_channels", "decoder_norm", "decoder_attention", "decoder_interpolation"),
           "semantic_fpn": ("fpn_channels", "fpn_features", "dropout")}


def segmentation_head(body: Backbone, num_classes: int, decoder: str = "auto", **options: Any) -> _SegmentationHead:
    """`decoder=auto` builds `FPNSemanticHead` on an FPN neck (any Neck), else `UnetHead`; `unet` / `semantic_fpn`
    force one. `options` are both decoders' settings (the config carries both): each head takes its own."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown segmentation decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    name = ("semantic_fpn" if isinstance(body, Neck) else "unet") if decoder == "auto" else decoder
    unknown = set(options) - {o for opts in OPTIONS.values() for o in opts}
    if unknown:
        raise TypeError(f"SegmentationModel got unknown options {sorted(unknown)}")
    chosen = {k: v for k, v in options.items() if k in OPTIONS[name]}
    return HEADS[name](body.output_shape(), num_classes, **chosen)


def SegmentationModel(body: Backbone, num_classes: int, decoder: str = "auto", *,  # noqa: N802 - config target
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                      **options: Any) -> MultiHeadModel:
    """The default `task.model._target_`: `body` and the head `segmentation_head` picks, named "segmentation".
    Input (B, 3, H, W) RGB in [0, 1]; output {"segmentation": logits (B, K, H, W)}."""
    return _one_head(body, segmentation_head(body, num_classes, decoder, **options), mean, std)
