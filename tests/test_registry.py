"""The Backbone contract over every registered name, and the registry's options."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm.layers
import torch
import torchvision
from torch import nn

from backbones import BACKBONES, FPN, LEVELS, NECKS, build_backbone, build_body

ROOT = Path(__file__).resolve().parents[1]

NAMED = [n for n in BACKBONES.names() if n != "timm"]
REQUIRED = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
            "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "resnetv2_50"]


def check_contract(net, size: int = 64, in_chans: int = 3) -> None:
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_chans, size, size + 32))
    shapes = net.output_shape()
    assert list(out) == list(shapes)
    for name, spec in shapes.items():
        # every ResNet / FPN op pads so that a side of n becomes ceil(n / stride)
        expected = (2, spec.channels, math.ceil(size / spec.stride), math.ceil((size + 32) / spec.stride))
        assert out[name].shape == expected, name


def test_required_names_are_registered():
    assert set(REQUIRED) <= set(BACKBONES.names())


@pytest.mark.parametrize("name", NAMED)
def test_outputs_match_output_shape(name):
    net = build_backbone(name)
    assert list(net.output_shape()) == list(LEVELS)
    assert [s.stride for s in net.output_shape().values()] == [2, 4, 8, 16, 32]
    check_contract(net)


def test_any_timm_model_by_name():
    net = build_backbone("timm", model_name="resnet26d", out_levels=["c3", "c5"])
    check_contract(net)
    assert net.output_shape()["c5"].channels == 2048


def test_unknown_timm_name_is_explained():
    with pytest.raises(KeyError, match="timm has no model named 'resnet9000'"):
        build_backbone("timm", model_name="resnet9000")


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError) as err:
        build_backbone("resnet05")
    msg = str(err.value)
    assert "Did you mean resnet50" in msg
    assert all(name in msg for name in REQUIRED)


@pytest.mark.parametrize("name", ["resnet18", "resnet50d"])
def test_out_levels_and_in_chans(name):
    net = build_backbone(name, out_levels=["c2", "c4"], in_chans=1)
    assert list(net.output_shape()) == ["c2", "c4"]
    check_contract(net, in_chans=1)
    # stages after the deepest requested level are not built at all
    assert not hasattr(net, "layer4")


def test_bad_out_levels():
    with pytest.raises(ValueError, match="subset"):
        build_backbone("resnet18", out_levels=["c6"])


def _norm_types(net: nn.Module) -> set[type]:
    kinds = (nn.BatchNorm2d, nn.GroupNorm, torchvision.ops.FrozenBatchNorm2d,
             timm.layers.FrozenBatchNormAct2d, nn.SyncBatchNorm, timm.layers.BatchNormAct2d, timm.layers.GroupNormAct)
    return {type(m) for m in net.modules() if isinstance(m, kinds)}


@pytest.mark.parametrize("name", ["resnet18", "resnetv2_50"])
@pytest.mark.parametrize("norm,expected", [
    ("bn", {nn.BatchNorm2d, timm.layers.BatchNormAct2d}),
    ("frozen_bn", {torchvision.ops.FrozenBatchNorm2d, timm.layers.FrozenBatchNormAct2d}),
    ("sync_bn", {nn.SyncBatchNorm, timm.layers.SyncBatchNormAct}),
    ("gn", {nn.GroupNorm, timm.layers.GroupNormAct}),
])
def test_norm_choices(name, norm, expected):
    net = build_backbone(name, norm=norm)
    found = _norm_types(net)
    assert found and found <= expected, found
    if norm != "sync_bn":  # SyncBatchNorm needs a process group to run in train mode
        check_contract(net)


def test_frozen_bn_keeps_statistics_and_has_no_grad():
    net = build_backbone("resnet18", norm="frozen_bn")
    before = net.bn1.running_mean.clone()
    net.train()
    net(torch.randn(2, 3, 64, 64) * 5 + 3).__getitem__("c5").sum().backward()
    assert torch.equal(net.bn1.running_mean, before)
    assert not any(isinstance(p, nn.Parameter) and p.requires_grad for p in net.bn1.parameters())


@pytest.mark.parametrize("freeze_at,frozen,trainable", [
    (0, [], ["conv1", "layer1", "layer4"]),
    (1, ["conv1", "bn1"], ["layer1"]),
    (2, ["conv1", "layer1"], ["layer2"]),
    (5, ["conv1", "layer1", "layer4"], []),
])
def test_freeze_at(freeze_at, frozen, trainable):
    net = build_backbone("resnet18", freeze_at=freeze_at)
    for name in frozen:
        module = getattr(net, name)
        assert not any(p.requires_grad for p in module.parameters()), name
        assert not any(isinstance(m, nn.BatchNorm2d) for m in module.modules()), f"{name} BN must be frozen"
    for name in trainable:
        assert all(p.requires_grad for p in getattr(net, name).parameters()), name


def test_freeze_at_on_timm_backbone():
    net = build_backbone("resnet50d", freeze_at=2)
    assert not any(p.requires_grad for p in net.conv1.parameters())
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())


def test_torchvision_state_dict_loads_key_for_key():
    reference = torchvision.models.resnet50(weights=None)
    net = build_backbone("resnet50")
    result = net.load_state_dict(reference.state_dict(), strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    reference.eval(), net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        body = torchvision.models._utils.IntermediateLayerGetter(reference, {"layer4": "c5"})
        torch.testing.assert_close(net(x)["c5"], body(x)["c5"])


@pytest.mark.parametrize("top_block,names", [
    ("maxpool", ["p2", "p3", "p4", "p5", "p6"]),
    ("p6p7", ["p2", "p3", "p4", "p5", "p6", "p7"]),
    ("none", ["p2", "p3", "p4", "p5"]),
])
def test_fpn_contract(top_block, names):
    net = build_body({"name": "resnet18"}, {"name": "fpn", "out_channels": 32, "top_block": top_block})
    assert isinstance(net, FPN)
    assert list(net.output_shape()) == names
    assert {s.channels for s in net.output_shape().values()} == {32}
    assert [s.stride for s in net.output_shape().values()] == [2 ** int(n[1]) for n in names]
    check_contract(net, size=128)


def test_fpn_reads_widths_from_output_shape():
    net = build_body({"name": "resnext50_32x4d", "out_levels": ["c3", "c4", "c5"]},
                     {"name": "fpn", "in_levels": ["c3", "c4", "c5"], "out_channels": 16})
    assert list(net.output_shape()) == ["p3", "p4", "p5", "p6"]
    check_contract(net)


def test_fpn_missing_level_is_explained():
    with pytest.raises(ValueError, match="add them to backbone.out_levels"):
        build_body({"name": "resnet18", "out_levels": ["c4", "c5"]}, {"name": "fpn"})


def test_no_neck_is_identity():
    body = build_body({"name": "resnet18"}, {"name": "none"})
    assert list(body.output_shape()) == list(LEVELS)


def test_declared_options_match_the_builders():
    """The catalog declares each built-in builder's config options (so configs compose without torch): they must
    be what the builder itself takes."""
    from backbones.registry import keyword_defaults

    for registry, skip in ((BACKBONES, ("in_chans", "out_levels")), (NECKS, ("body",))):
        for entry in registry.entries():
            real = keyword_defaults(entry.builder, skip=(*skip, *entry.bound))
            assert entry.options(skip=skip) == real, entry.name


def test_names_and_configs_need_no_torch():
    """`train.py --help` and config errors list the registry: that must not import torch, torchvision or timm."""
    code = ("import sys; from backbones.hydra_configs import register_configs; register_configs(); "
            "from backbones import BACKBONES, NECKS; BACKBONES.names(); NECKS.names(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_contract_is_the_class():
    """freeze / level_modules / bottom_up are declared on Backbone and Neck; a builder returning something else is
    refused with the contract named."""
    from backbones.base import Backbone, Neck, registry_backbone
    from backbones.registry import Registry

    assert {"forward", "output_shape", "level_modules", "freeze"} <= Backbone.__abstractmethods__
    body = build_body({"name": "resnet18"}, {"name": "fpn"})
    assert isinstance(body, Neck) and registry_backbone(body) is body.bottom_up is body.body
    assert body.level_modules("c2") == body.bottom_up.level_modules("c2") and body.level_modules("c2")
    body.freeze(2)
    assert not any(p.requires_grad for m in body.bottom_up.level_modules("c2") for p in m.parameters())
    assert all(p.requires_grad for p in body.fpn.parameters())

    bogus = Registry("backbone")
    bogus.add("plain", lambda **kwargs: nn.Conv2d(3, 8, 3))
    from backbones import build as build_module

    original = build_module.BACKBONES
    build_module.BACKBONES = bogus
    try:
        with pytest.raises(TypeError, match="returned a Conv2d, not a backbones.Backbone"):
            build_backbone("plain")
    finally:
        build_module.BACKBONES = original


def test_configs_stored_by_older_runs_still_build():
    """A checkpoint's stored config from before `backbone.lr_mult` moved to the task module still rebuilds."""
    body = build_body({"name": "resnet18", "lr_mult": 0.1, "calibrate_bn": "auto"}, {"name": "none"})
    assert list(body.output_shape()) == list(LEVELS)
