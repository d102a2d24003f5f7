"""Frozen BatchNorm from random init: statistics measured on training batches, chosen and said at start-up."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from backbones import build_backbone
from tasks.bn_calibration import (
    BatchNormCalibration,
    calibrate,
    frozen_norms,
    residual_branch_norms,
    resolve_norm_policy,
    scale_residual_branches,
)


class _Wrap(nn.Module):
    """A task module's forward on a batch's images."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.device = torch.device("cpu")

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("name", ["resnet50", "seresnext50_32x4d"])  # torchvision's FrozenBatchNorm2d, timm's own
def test_calibration_normalises_a_random_frozen_bn_backbone(name):
    torch.manual_seed(0)
    body = build_backbone(name, norm="frozen_bn", freeze_at=2)
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        before = body(x)["c5"].std().item()
    n = calibrate(_Wrap(body), [(x[:4], None), (x[4:], None)])
    assert n == len(frozen_norms(body)) > 0
    with torch.no_grad():
        after = body(x)["c5"]
    assert torch.isfinite(after).all()
    # default statistics (0 / 1) normalise nothing: a ResNet-50's c5 std is ~21 at unit input, about 1 calibrated
    assert after.std().item() < 3 < before or name != "resnet50"
    first = frozen_norms(body)[0]
    # the first norm sees the stem conv's output of the images: its mean / variance are theirs
    assert first.running_var.mean().item() != pytest.approx(1.0, abs=1e-3)


def _c5_std(name: str, scale: bool) -> tuple[float, float]:
    """c5's std of a random-init frozen-BN body calibrated on 8 images, on 2 of them and on 2 new ones; the images
    as the synthetic sets draw them, each on a background colour of its own."""
    torch.manual_seed(0)
    body = build_backbone(name, norm="frozen_bn", freeze_at=2)
    if scale:
        scale_residual_branches(body)
    x = torch.rand(10, 3, 64, 64) * 0.3 + torch.rand(10, 3, 1, 1) * 0.7
    calibrate(_Wrap(body), [(x[i:i + 2], None) for i in range(0, 8, 2)])
    with torch.no_grad():
        return body(x[:2])["c5"].std().item(), body(x[8:])["c5"].std().item()


def test_scaled_residual_branches_keep_a_deep_calibrated_body_near_unit_scale():
    # measured: ResNet-101 c5 std 65 on calibration images and 133 on new ones; scaled 5.3 and 9.7
    plain_seen, plain_new = _c5_std("resnet101", scale=False)
    seen, new = _c5_std("resnet101", scale=True)
    assert plain_new > 50 and new * 5 < plain_new and seen * 5 < plain_seen


def test_residual_branch_norms_are_the_last_frozen_norm_of_each_block_with_its_stages_gain():
    body = build_backbone("resnet50", norm="frozen_bn")
    gains = residual_branch_norms(body)
    named = {n: gains[m] for n, m in body.named_modules() if m in gains}
    assert sorted(named) == sorted(f"layer{s}.{i}.bn3" for s, n in enumerate((3, 4, 6, 3), 1) for i in range(n))
    assert named["layer1.0.bn3"] == pytest.approx(3 ** -0.5) and named["layer3.5.bn3"] == pytest.approx(6 ** -0.5)
    # stages with live BatchNorm keep their own trainable gain: only the frozen stem + first stage's blocks
    partly = residual_branch_norms(build_backbone("resnet50", norm="bn", freeze_at=2))
    assert len(partly) == 3


def test_timm_blocks_zero_initialised_last_norm_is_left_at_zero():
    # timm zero-initialises each block's last norm (`zero_init_last`); revived at 1/sqrt(n), ResNeSt and ResNet-D
    # detectors blew up within 3 steps (README), so those stay as timm made them
    body = build_backbone("seresnext50_32x4d", norm="frozen_bn")
    assert scale_residual_branches(body) == 0
    assert float(body.layer1[0].bn3.weight.abs().sum()) == 0
    # pre-activation blocks (timm zeroes their last conv instead) keep a norm to scale
    assert len(residual_branch_norms(build_backbone("resnetv2_50", norm="frozen_bn"))) == 16


def test_callback_runs_once_and_its_state_survives_a_resume():
    cb = BatchNormCalibration(num_batches=2)
    assert cb.state_dict() == {"done": False}
    cb.load_state_dict({"done": True})
    assert cb.done  # a resumed run keeps the statistics in its checkpoint and does not measure again


def _cfg(**backbone):
    return OmegaConf.create({"backbone": {"name": "resnet50", "norm": "frozen_bn", "freeze_at": 2, "weights": None,
                                          "calibrate_bn": "auto", "calibrate_bn_batches": 8, **backbone},
                             "init_from": None})


@pytest.mark.parametrize("backbone, init_from, expected", [
    ({}, None, True),  # random init, frozen BN: measure
    ({"weights": "IMAGENET1K_V2"}, None, False),  # the weights bring their statistics
    ({}, "run.ckpt", False),  # so does another run's checkpoint
    ({"norm": "bn", "freeze_at": 0}, None, False),  # trainable BN normalises by itself
    ({"norm": "bn", "freeze_at": 1}, None, True),  # the frozen stem's BN is frozen BN
    ({"calibrate_bn": False}, None, False),  # the user's word wins
    ({"calibrate_bn": True, "weights": "IMAGENET1K_V2"}, None, True),  # also to measure over pretrained weights
])
def test_policy_is_resolved_said_and_stored(backbone, init_from, expected, caplog):
    cfg = _cfg(**backbone)
    cfg.init_from = init_from
    with caplog.at_level(logging.INFO, logger="tasks.bn_calibration"):
        callbacks = resolve_norm_policy(cfg)
    assert cfg.backbone.calibrate_bn is expected  # the stored config records what ran
    assert bool(callbacks) is expected
    # pretrained gains are the weights' own: only random init is rescaled
    assert all(cb.scale_residuals is not (bool(backbone.get("weights")) or bool(init_from)) for cb in callbacks)
    if callbacks and not backbone.get("weights"):
        cfg.backbone.scale_residuals = False  # the user's word again
        assert resolve_norm_policy(cfg)[0].scale_residuals is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("backbone: resnet50, ")
    assert f"calibrate_bn={str(expected).lower()}" in lines[0]
