"""Semantic segmentation models: backbone (+ neck) -> a decoder -> one logit map per class at the input resolution.

One class per decoder, each selectable by `task.model._target_`: `UnetModel` (segmentation-models-pytorch's U-Net
decoder) and `SemanticFPNModel` (Panoptic FPN's semantic head). `SegmentationModel`, the default target, picks
the semantic-FPN head on an FPN neck and the U-Net otherwise (`decoder=auto`), or the one named by `decoder`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from backbones import Backbone
from backbones.base import Neck
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

from ..normalize import Normalize
from .semantic_fpn import SemanticFPNHead

log = logging.getLogger(__name__)
DECODERS = ("auto", "unet", "semantic_fpn")


def _levels(body: Backbone) -> list[str]:
    shapes = body.output_shape()
    return sorted(shapes, key=lambda name: shapes[name].stride)


class _Segmenter(nn.Module):
    """What both decoders share: the input normalisation (`mean` / `std`, the preprocessing record's), `body`,
    `num_classes`, the levels read (`in_features`) and logits brought to the input's size. Subclasses set
    `decoder_name` and implement `decode`."""

    decoder_name: str

    def __init__(self, body: Backbone, num_classes: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.num_classes = num_classes
        self.in_features: list[str] = []

    def decode(self, x: Tensor, feats: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) RGB in [0, 1] -> logits (B, num_classes, H, W)."""
        x = self.normalize(x)
        out = self.decode(x, self.body(x))
        if out.shape[-2:] != x.shape[-2:]:  # semantic FPN predicts at stride 4
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class UnetModel(_Segmenter):
    """smp's U-Net decoder on the body's shallowest `len(decoder_channels)` levels (widths and strides from
    `output_shape()`).

    Args:
        decoder_channels: one width per decoder block, coarsest first; its length is the depth, i.e. the number of
            levels used (the shallowest ones: 5 -> c1..c5, 4 -> c1..c4).
        decoder_norm: the blocks' normalization (`batchnorm`, `groupnorm`, `instancenorm`, `identity` / false).
        decoder_attention: None or `scse` (smp's squeeze-excitation on the skip connections).
        decoder_interpolation: upsampling, `nearest` (smp's default) or `bilinear`.
    """

    decoder_name = "unet"

    def __init__(self, body: Backbone, num_classes: int, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 decoder_norm: str | bool = "batchnorm", decoder_attention: str | None = None,
                 decoder_interpolation: str = "nearest", *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(body, num_classes, mean, std)
        shapes, levels, depth = body.output_shape(), _levels(body), len(decoder_channels)
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

    def decode(self, x: Tensor, feats: dict[str, Tensor]) -> Tensor:
        return self.segmentation_head(self.decoder([x, *(feats[f] for f in self.in_features)]))


class SemanticFPNModel(_Segmenter):
    """Panoptic FPN's semantic head on `fpn_features` (default: every level with stride <= 32, p2..p5 of an FPN).

    Args:
        fpn_channels: head width (128 in Panoptic FPN).
        fpn_features: levels to fuse.
        dropout: Dropout2d before the classifier.
    """

    decoder_name = "semantic_fpn"

    def __init__(self, body: Backbone, num_classes: int, fpn_channels: int = 128,
                 fpn_features: Sequence[str] | None = None, dropout: float = 0.0, *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(body, num_classes, mean, std)
        shapes, levels = body.output_shape(), _levels(body)
        features = list(fpn_features) if fpn_features else [f for f in levels if shapes[f].stride <= 32]
        unknown = [f for f in features if f not in shapes]
        if unknown:
            raise ValueError(f"task.model.fpn_features {unknown} are not among the body's levels {levels}")
        self.in_features = features
        self.decoder = SemanticFPNHead(shapes, features, fpn_channels, num_classes, dropout)

    def decode(self, x: Tensor, feats: dict[str, Tensor]) -> Tensor:
        return self.decoder(feats)


MODELS: dict[str, type[_Segmenter]] = {"unet": UnetModel, "semantic_fpn": SemanticFPNModel}
OPTIONS = {"unet": ("decoder_channels", "decoder_norm", "decoder_attention", "decoder_interpolation"),
           "semantic_fpn": ("fpn_channels", "fpn_features", "dropout")}


def SegmentationModel(body: Backbone, num_classes: int, decoder: str = "auto", *,
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                      **options: Any) -> _Segmenter:
    """The default `task.model._target_`: `decoder=auto` builds `SemanticFPNModel` on an FPN neck (any Neck), else
    `UnetModel`; `unet` / `semantic_fpn` force one. `options` are both decoders' settings (the config carries both):
    each model takes its own."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown segmentation decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    name = ("semantic_fpn" if isinstance(body, Neck) else "unet") if decoder == "auto" else decoder
    unknown = set(options) - {o for opts in OPTIONS.values() for o in opts}
    if unknown:
        raise TypeError(f"SegmentationModel got unknown options {sorted(unknown)}")
    chosen = {k: v for k, v in options.items() if k in OPTIONS[name]}
    return MODELS[name](body, num_classes, mean=mean, std=std, **chosen)
