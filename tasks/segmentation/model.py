"""Semantic segmentation: backbone (+ neck) -> U-Net decoder (segmentation-models-pytorch's) or semantic-FPN head
-> one logit map per class at the input resolution."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from backbones import Backbone
from backbones.fpn import FPN

from .semantic_fpn import SemanticFPNHead

log = logging.getLogger(__name__)
DECODERS = ("auto", "unet", "semantic_fpn")


class SegmentationModel(nn.Module):
    """Widths and strides come from `body.output_shape()`; any backbone or neck works with either decoder.

    Args:
        body: a Backbone (backbone, or backbone + neck).
        num_classes: logit maps, from the dataset (background included when the dataset has one).
        decoder: `unet`, `semantic_fpn`, or `auto` = `semantic_fpn` on an FPN neck, else `unet`.
        decoder_channels: U-Net: one width per decoder block, coarsest first; its length is the depth, i.e. the
            number of backbone levels used (the shallowest ones: 5 -> c1..c5, 4 -> c1..c4).
        decoder_norm: U-Net blocks' normalization (`batchnorm`, `groupnorm`, `instancenorm`, `identity` / false).
        decoder_attention: U-Net: None or `scse` (smp's squeeze-excitation on the skip connections).
        decoder_interpolation: U-Net upsampling, `nearest` (smp's default) or `bilinear`.
        fpn_channels: semantic-FPN head width (128 in Panoptic FPN).
        fpn_features: semantic-FPN levels to fuse; None = every level with stride <= 32 (p2..p5 of an FPN).
        dropout: semantic-FPN: Dropout2d before the classifier.
    """

    def __init__(
        self,
        body: Backbone,
        num_classes: int,
        decoder: str = "auto",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        decoder_norm: str | bool = "batchnorm",
        decoder_attention: str | None = None,
        decoder_interpolation: str = "nearest",
        fpn_channels: int = 128,
        fpn_features: Sequence[str] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown segmentation decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
        self.decoder_name = ("semantic_fpn" if isinstance(body, FPN) else "unet") if decoder == "auto" else decoder
        shapes = body.output_shape()
        levels = sorted(shapes, key=lambda name: shapes[name].stride)
        self.body = body
        if self.decoder_name == "unet":
            depth = len(decoder_channels)
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
        else:
            features = list(fpn_features) if fpn_features else [f for f in levels if shapes[f].stride <= 32]
            unknown = [f for f in features if f not in shapes]
            if unknown:
                raise ValueError(f"task.model.fpn_features {unknown} are not among the body's levels {levels}")
            self.in_features = features
            self.decoder = SemanticFPNHead(shapes, features, fpn_channels, num_classes, dropout)
            self.segmentation_head = nn.Identity()
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes, H, W)."""
        feats = self.body(x)
        if self.decoder_name == "unet":
            out = self.segmentation_head(self.decoder([x, *(feats[f] for f in self.in_features)]))
        else:
            out = self.decoder(feats)
        if out.shape[-2:] != x.shape[-2:]:  # semantic FPN predicts at stride 4
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out
