"""The weightings that need each head's gradient on the shared body: PCGrad (the projection against a hand
computation, the task module's backward putting the projected sum on the body and plain gradients on the heads, a
joint run) and GradNorm (its weights' gradients by hand, their renormalisation, a joint run that moves them)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_ok, run_train
from test_multitask_train import TINY, _last, _rows, joint_module, target

from tasks.multitask import PCGrad, build_weighting
from tasks.multitask.surgery import pcgrad

HEADS = ("segmentation", "classification")


def test_conflicting_gradients_are_projected_off_each_other():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1 < 0
    # g1 - (-1 / |g2|^2) g2 = [0.5, 0.5]; g2 - (-1 / |g1|^2) g1 = [0, 1]
    torch.testing.assert_close(pcgrad([g1, g2]), torch.tensor([0.5, 1.5]))
    agree = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(pcgrad([g1, agree]), torch.tensor([2.0, 1.0]))  # no conflict: the plain sum
    torch.testing.assert_close(pcgrad([g1, torch.zeros(2)]), g1)  # a zero gradient projects nothing
    torch.testing.assert_close(pcgrad([g2]), g2)


def test_three_heads_follow_the_random_order():
    """g1 against g2 and g3, each order by hand: the generator picks one of the two results."""
    g = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([-1.0, 0.0, 1.0])]

    def project(i, order):
        p = g[i].clone()
        for j in order:
            dot = float(p.dot(g[j]))
            if dot < 0:
                p -= dot / float(g[j].dot(g[j])) * g[j]
        return p
    # g2 . g3 = 1 > 0: g2 and g3 are projected off g1 only
    rest = project(1, [0]) + project(2, [0])
    options = {tuple((project(0, [1, 2]) + rest).tolist()), tuple((project(0, [2, 1]) + rest).tolist())}
    seen = {tuple(pcgrad(g, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert seen == options and len(options) == 2  # the order matters, and both are taken


def test_backward_puts_the_projected_sum_on_the_body_and_plain_gradients_on_the_heads():
    module = joint_module(HEADS, weighting={"method": "pcgrad"})
    reference = joint_module(HEADS, weighting={"method": "pcgrad"})
    reference.load_state_dict(module.state_dict())
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [target({"segmentation": True, "classification": True}) for _ in range(2)]

    module.train()
    out = module.training_step((tuple(images), tuple(targets)), 0)
    torch.manual_seed(5)  # the projection's random order
    module.backward(out["loss"] * 0.5)  # as mixed precision or gradient accumulation scales it

    reference.train()
    reference.training_step((tuple(images), tuple(targets)), 0)
    head_losses, total = reference._surgery  # each head's weighted loss, with its graph, and their sum
    body = [p for p in reference.model.body.parameters() if p.requires_grad]
    flat = []
    for head_loss in head_losses.values():
        grads = torch.autograd.grad(head_loss, body, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, body)]))
    torch.manual_seed(5)
    expected = 0.5 * pcgrad(flat)
    got = torch.cat([p.grad.flatten() for p in module.model.body.parameters() if p.requires_grad])
    torch.testing.assert_close(got, expected)
    plain = 0.5 * torch.cat([g.flatten() for g in torch.autograd.grad(total, body, retain_graph=True)])
    assert not torch.allclose(got, plain)  # the heads conflict on this step: surgery changed something
    for name in HEADS:  # a head's own parameters: its plain gradient
        head, ref_head = module.model.heads[name], reference.model.heads[name]
        grads = torch.autograd.grad(total, list(ref_head.parameters()), retain_graph=True)
        for p, g in zip(head.parameters(), grads):
            torch.testing.assert_close(p.grad, 0.5 * g)


def test_one_labelled_head_takes_the_plain_backward():
    module = joint_module(HEADS, weighting={"method": "pcgrad"})
    module.train()
    out = module.training_step((tuple(torch.rand(3, 64, 64) for _ in range(2)),
                                tuple(target({"segmentation": False, "classification": True}) for _ in range(2))), 0)
    assert module._surgery is None  # one labelled head: nothing to project
    module.backward(out["loss"])
    assert all(p.grad is not None for p in module.model.body.parameters() if p.requires_grad)


def test_pcgrad_is_a_weighting_method_with_equal_s_weights():
    method = build_weighting("pcgrad", list(HEADS), weights={"segmentation": 2.0})
    assert isinstance(method, PCGrad) and method.surgery
    total, weights = method({"segmentation": torch.tensor(1.0), "classification": torch.tensor(3.0)})
    assert float(total) == 5.0 and float(weights["segmentation"]) == 2.0


def test_a_joint_run_with_pcgrad(tmp_path):
    proc = run_train(*TINY, "task.heads=[segmentation,classification]", "task.module.weighting.method=pcgrad",
                     "hydra.run.dir=run", cwd=tmp_path)
    assert_ok(proc)
    rows = _rows(tmp_path / "run")
    assert _last(rows, "test/segmentation/mIoU") >= 0 and _last(rows, "test/classification/mAP") >= 0
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("bad", [{"segmentation": -1.0}])
def test_pcgrad_takes_equal_s_weight_checks(bad):
    with pytest.raises(ValueError, match="finite and >= 0"):
        build_weighting("pcgrad", list(HEADS), weights=bad)


def test_gradnorm_weight_gradients_against_the_hand_formula():
    method = build_weighting("gradnorm", list(HEADS), alpha=1.5)
    # first step: L(0) = (2, 1); then (1, 0.8): rates 0.5 and 0.8, relative 0.5 / 0.65 and 0.8 / 0.65
    method({"segmentation": torch.tensor(2.0), "classification": torch.tensor(1.0)})
    total, weights = method({"segmentation": torch.tensor(1.0), "classification": torch.tensor(0.8)})
    assert float(total.detach()) == pytest.approx(1.8) and float(weights["segmentation"]) == 1.0
    grads = {"segmentation": torch.tensor([3.0, 4.0]), "classification": torch.tensor([1.0, 0.0])}  # G = 5, 1
    body, own = method.surgery_gradients(grads)
    torch.testing.assert_close(body, torch.tensor([4.0, 4.0]))  # the model's gradient: the plain sum
    mean = 3.0
    targets = [mean * (0.5 / 0.65) ** 1.5, mean * (0.8 / 0.65) ** 1.5]  # 2.03, 4.10
    expected = [math.copysign(5.0, 5.0 - targets[0]) / 1.0, math.copysign(1.0, 1.0 - targets[1]) / 1.0]
    assert [p is method.weights[h] for (p, _), h in zip(own, HEADS)] == [True, True]
    assert [float(g) for _, g in own] == pytest.approx(expected)  # +5: segmentation down, -1: classification up


def test_gradnorm_weights_stay_positive_and_sum_to_the_number_of_heads():
    method = build_weighting("gradnorm", list(HEADS))
    with torch.no_grad():
        method.weights["segmentation"].fill_(3.0)
        method.weights["classification"].fill_(-1.0)
    _, weights = method({"segmentation": torch.tensor(1.0), "classification": torch.tensor(1.0)})
    assert sum(float(w) for w in weights.values()) == pytest.approx(2.0) and min(map(float, weights.values())) > 0


def test_a_joint_run_with_gradnorm_moves_the_weights(tmp_path):
    proc = run_train(*TINY, "task.heads=[segmentation,classification]", "task.module.weighting.method=gradnorm",
                     "trainer.max_epochs=2", "hydra.run.dir=run", cwd=tmp_path)
    assert_ok(proc)
    rows = _rows(tmp_path / "run")
    weights = [float(r["train/segmentation/weight"]) for r in rows if r.get("train/segmentation/weight")]
    assert len(weights) > 2 and weights[-1] != weights[0]


@pytest.mark.parametrize("lr_mult", [0, -1.0, float("nan")])
def test_a_weighting_lr_mult_that_would_drop_the_weights_is_named_with_the_fix(lr_mult):
    with pytest.raises(ValueError, match=r"task.module.weighting.lr_mult=.*must be > 0"):
        joint_module(HEADS, weighting={"method": "gradnorm", "lr_mult": lr_mult})
    with pytest.raises(ValueError, match=r"task.module.weighting.alpha=-1.*>= 0"):
        build_weighting("gradnorm", list(HEADS), alpha=-1.0)
