"""The semantic-FPN head of Panoptic FPN (Kirillov et al. 2019): every pyramid level is brought to stride 4 by
conv-GN-ReLU(-upsample) blocks, the maps are summed and a 1x1 conv predicts the classes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from backbones import ShapeSpec


def _conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = math.gcd(32, out_channels)  # 32 groups as the paper, fewer for narrow heads
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """Fuses `in_features` (e.g. p2..p5) at the finest of their strides.

    Args:
        in_shapes: the body's `output_shape()`.
        in_features: levels to fuse; the level with stride s gets max(1, log2(s / finest)) conv blocks, each
            followed by a 2x bilinear upsample (to the next finer level's exact size, so any input size works).
        channels: width of the conv blocks (128 in the paper).
        num_classes: output maps.
        dropout: Dropout2d before the classifier.
    """

    def __init__(self, in_shapes: Mapping[str, ShapeSpec], in_features: Sequence[str], channels: int,
                 num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features = sorted(in_features, key=lambda f: in_shapes[f].stride)
        finest = in_shapes[self.in_features[0]].stride
        self.scale_heads = nn.ModuleList()
        for f in self.in_features:
            steps = max(1, int(math.log2(in_shapes[f].stride // finest)))
            blocks = [_conv_gn_relu(in_shapes[f].channels if i == 0 else channels, channels) for i in range(steps)]
            self.scale_heads.append(nn.ModuleList(blocks))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        """{level: (B, C_l, H_l, W_l)} -> logits (B, num_classes, H_finest, W_finest)."""
        maps = [feats[f] for f in self.in_features]
        sizes = [m.shape[-2:] for m in maps]
        out: Tensor | None = None
        for level, (x, blocks) in enumerate(zip(maps, self.scale_heads)):
            for i, block in enumerate(blocks):
                x = block(x)
                if level - i > 0:  # one level finer per upsample, down to the finest
                    x = F.interpolate(x, size=sizes[level - i - 1], mode="bilinear", align_corners=False)
            out = x if out is None else out + x
        return self.classifier(self.dropout(out))
