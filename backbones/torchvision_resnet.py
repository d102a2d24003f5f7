"""torchvision's ResNet, ResNeXt and Wide-ResNet as Backbones, under torchvision's own names."""

from __future__ import annotations

from collections.abc import Sequence

import torchvision
from torch import nn

from .base import ShapeSpec
from .catalog import LEVELS
from .staged import StagedBackbone


def _out_channels(stage: nn.Module) -> int:
    # the last convolution of the last block sets the stage's width (BasicBlock conv2, Bottleneck conv3)
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _stride(stage: nn.Sequential) -> int:
    # a stage downsamples in its first block, whose shortcut conv carries the same stride
    first = stage[0]
    return first.downsample[0].stride[0] if first.downsample is not None else 1


def resnet_backbone(
    model: torchvision.models.ResNet, out_levels: Sequence[str] = LEVELS
) -> StagedBackbone:
    """Split a torchvision ResNet (fc and avgpool dropped) into stem (c1) and four stages (c2..c5)."""
    children = [
        ("conv1", model.conv1),
        ("bn1", model.bn1),
        ("relu", model.relu),
        ("maxpool", model.maxpool),
        ("layer1", model.layer1),
        ("layer2", model.layer2),
        ("layer3", model.layer3),
        ("layer4", model.layer4),
    ]
    stride = model.conv1.stride[0]
    shapes = {"c1": ShapeSpec(model.conv1.out_channels, stride)}
    stride *= model.maxpool.stride
    for level, stage in zip(LEVELS[1:], (model.layer1, model.layer2, model.layer3, model.layer4)):
        stride *= _stride(stage)
        shapes[level] = ShapeSpec(_out_channels(stage), stride)
    taps = {"relu": "c1", "layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
    return StagedBackbone(children, taps, shapes, out_levels)


def torchvision_resnet(arch: str, *, in_chans: int = 3, out_levels: Sequence[str] = LEVELS,
                       **model_kwargs) -> StagedBackbone:
    """`torchvision.models.<arch>` (random init) as a Backbone returning c1..c5; `in_chans` != 3 replaces conv1."""
    model = getattr(torchvision.models, arch)(weights=None, **model_kwargs)
    if in_chans != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    return resnet_backbone(model, out_levels)
