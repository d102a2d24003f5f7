"""Classification model and task module: shapes, learning, param groups, schedules."""

from __future__ import annotations

import functools

import pytest
import torch

from backbones import build_body
from tasks.classification import ClassificationModel, ClassificationTask
from tasks.schedulers import cosine_warmup, multistep, one_cycle


def model(neck=None, **kw):
    body = build_body({"name": "resnet18", **kw}, neck or {"name": "none"})
    return ClassificationModel(body, num_classes=7, dropout=0.1)


def test_head_pools_coarsest_level_by_default():
    m = model()
    assert m.head.in_features == ["c5"] and m.head.fc.in_features == 512
    assert m(torch.randn(2, 3, 64, 64))["classification"].shape == (2, 7)


def test_head_over_fpn_levels():
    body = build_body({"name": "resnet18"}, {"name": "fpn", "out_channels": 32})
    m = ClassificationModel(body, num_classes=3, in_features=["p2", "p3", "p4", "p5"])
    assert m.head.fc.in_features == 4 * 32
    assert m(torch.randn(2, 3, 64, 64))["classification"].shape == (2, 3)


def test_head_rejects_unknown_levels():
    with pytest.raises(ValueError, match="not among the body's levels"):
        ClassificationModel(build_body({"name": "resnet18"}), 3, in_features=["p3"])


def task(m=None, lr=0.05, mult=1.0, scheduler=None):
    return ClassificationTask(m or model(), functools.partial(torch.optim.SGD, lr=lr, momentum=0.9),
                              scheduler, backbone_lr_mult=mult, class_names=list("abcdefg"), label_smoothing=0.1)


def test_top5_only_with_more_than_five_classes():
    assert set(task().parts["classification"].val_metrics.keys()) == {"val/acc1", "val/acc5"}
    small = ClassificationTask(ClassificationModel(build_body({"name": "resnet18"}), 3),
                               functools.partial(torch.optim.SGD, lr=0.1))
    assert set(small.parts["classification"].val_metrics.keys()) == {"val/acc1"}


def test_learns_a_fixed_batch():
    torch.manual_seed(0)
    t = task(lr=0.02)
    opt = t.configure_optimizers()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 7
    losses = []
    for _ in range(15):
        loss = t.parts["classification"].loss(t(x), y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_backbone_lr_multiplier_and_frozen_params():
    m = model(neck={"name": "fpn", "out_channels": 16}, freeze_at=2)
    t = task(m, lr=0.1, mult=0.1)
    opt = t.configure_optimizers()
    by_lr = {round(g["lr"], 6): g["params"] for g in opt.param_groups}
    backbone = {id(p) for p in m.body.body.parameters() if p.requires_grad}
    head_and_neck = {id(p) for p in list(m.head.fc.parameters()) + list(m.body.fpn.parameters())}
    assert {id(p) for p in by_lr[0.01]} == backbone
    assert {id(p) for p in by_lr[0.1]} == head_and_neck
    assert not any(id(p) in backbone for p in m.body.body.layer1.parameters())  # frozen: not optimised at all


def _lrs(factory, steps=100):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, total_steps=steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warmup_shape():
    lrs = _lrs(functools.partial(cosine_warmup, warmup_ratio=0.1, warmup_start=0.01, min_lr_ratio=0.0))
    assert lrs[0] == pytest.approx(0.01)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 10
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01


def test_multistep_at_fractions():
    lrs = _lrs(functools.partial(multistep, milestones=[0.5, 0.75], gamma=0.1))
    assert lrs[49] == 1.0 and lrs[50] == pytest.approx(0.1) and lrs[75] == pytest.approx(0.01)


def test_one_cycle_peaks_at_configured_lr():
    lrs = _lrs(functools.partial(one_cycle, pct_start=0.3))
    assert max(lrs) == pytest.approx(1.0, rel=1e-3) and lrs[0] == pytest.approx(1 / 25)
