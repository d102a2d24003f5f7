"""Frozen BatchNorm from random init: statistics measured on training batches, chosen and said at start-up."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from backbones import build_backbone
from tasks.bn_calibration import BatchNormCalibration, calibrate, frozen_norms, resolve_norm_policy


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
])
def test_policy_is_resolved_said_and_stored(backbone, init_from, expected, caplog):
    cfg = _cfg(**backbone)
    cfg.init_from = init_from
    with caplog.at_level(logging.INFO, logger="tasks.bn_calibration"):
        callbacks = resolve_norm_policy(cfg)
    assert cfg.backbone.calibrate_bn is expected  # the stored config records what ran
    assert bool(callbacks) is expected
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("backbone: resnet50, ")
    assert f"calibrate_bn={str(expected).lower()}" in lines[0]
