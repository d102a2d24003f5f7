"""The built-in registry entries, declared without importing torch, torchvision or timm.

Each names its builder as `"module:function"` and declares its config options, so `train.py --help` and config
errors are instant; tests/test_registry.py checks every declaration against the real builder's signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import Registry

LEVELS = ("c1", "c2", "c3", "c4", "c5")  # stem output and the four stages, strides 2..32

# the input statistics (RGB in [0, 1]) every built-in pretrained weight set was trained with: torchvision's and timm's
# ImageNet weights; they belong to the weights, so models and data transforms take them from here
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's ResNet, ResNeXt and Wide-ResNet under torchvision's own names
TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)

# timm models registered under their own names; any other timm name works with `backbone=timm`
TIMM_NAMED = (
    "resnetv2_50",  # pre-activation ResNet-50 (He et al., "Identity Mappings in Deep Residual Networks")
    "resnetv2_101",
    "resnet50d",  # ResNet-D: deep stem, avg-pool shortcut
    "resnet101d",
    "seresnet50",
    "seresnext50_32x4d",
    "seresnext101_32x8d",
    "ecaresnet50d",
    "resnest50d",
    "res2net50_26w_4s",
)

FPN_OPTIONS = {"in_levels": ["c2", "c3", "c4", "c5"], "out_channels": 256, "top_block": "maxpool", "norm": None}


def register_builtins(backbones: Registry, necks: Registry) -> None:
    # torchvision first, so its names lead every listing
    for name in TORCHVISION_RESNETS:
        backbones.add(name, "backbones.torchvision_resnet:torchvision_resnet", "torchvision", options={}, arch=name)
    for name in TIMM_NAMED:
        backbones.add(name, "backbones.timm_backbone:timm_backbone", "timm", options={}, model_name=name)
    backbones.add("timm", "backbones.timm_backbone:timm_backbone", "timm", options={"model_name": "???"})
    necks.add("fpn", "backbones.fpn:FPN", "torchvision", options=FPN_OPTIONS)
    necks.add("none", no_neck, options={})


def no_neck(body: Any) -> Any:
    """The identity neck: heads see the backbone's own levels."""
    return body
