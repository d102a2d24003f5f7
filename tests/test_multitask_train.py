"""Joint training: two and three heads on one body end to end, partial labels masked per head (also under 2-process
CPU DDP), per-head learning rates, the combined checkpoint score."""

from __future__ import annotations

import csv
from functools import partial

import pytest
import torch
from conftest import CPU_DDP, assert_ok, run_train

from backbones import build_body
from tasks.multitask import MultiTaskModel, MultiTaskTask

TINY = ["task=multitask", "logger=csv", "callbacks=minimal", "data.synthetic.train_images=8",
        "data.synthetic.val_images=2", "data.synthetic.test_images=2", "data.synthetic.image_size=64",
        "task.detection.model.min_size=[64]", "task.detection.model.max_size=96", "trainer.max_epochs=1",
        "data.num_workers=0", "data.batch_size=2", "backbone.calibrate_bn_batches=2", "trainer.log_every_n_steps=1"]
SMALL_HEADS = {"detection": {"min_size": 64, "max_size": 64, "representation_size": 16,
                             "rpn_batch_size_per_image": 16, "box_batch_size_per_image": 16},
               "segmentation": {"fpn_channels": 8}, "classification": {"in_features": ["p4", "p5"]}}


def joint_module(heads=("detection", "segmentation", "classification"), detection=None, **module_kw):
    torch.manual_seed(0)
    # frozen BN: an image's features do not depend on the rest of its batch
    body = build_body({"name": "resnet18", "norm": "frozen_bn"}, {"name": "fpn", "out_channels": 16})
    options = {**SMALL_HEADS, "detection": {**SMALL_HEADS["detection"], **(detection or {})}}
    model = MultiTaskModel(body, 2, list(heads), **options)
    return MultiTaskTask(model, partial(torch.optim.SGD, lr=0.01), class_names=["a", "b"], **module_kw)


def target(has: dict[str, bool], box: bool = True) -> dict:
    """One 64 x 64 image's joint target: a class-1 square at (8..40) (or nothing), its mask, class mask, classes."""
    masks = torch.zeros(1 if box else 0, 64, 64, dtype=torch.uint8)
    semantic = torch.zeros(64, 64, dtype=torch.int64)
    if box:
        masks[0, 8:40, 8:40] = 1
        semantic[8:40, 8:40] = 1
    n = int(box)
    return {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]])[:n], "labels": torch.ones(n, dtype=torch.int64),
            "iscrowd": torch.zeros(int(box), dtype=torch.int64), "masks": masks, "semantic": semantic,
            "classes": torch.tensor([float(box), 0.0]), "has": has}


ALL = {"detection": True, "segmentation": True, "classification": True}


def step(module, targets, images=None):
    module.train()
    images = tuple(images if images is not None else (torch.rand(3, 64, 64) for _ in targets))
    torch.manual_seed(3)  # the same RPN / RoI sampling
    out = module.training_step((images, tuple(targets)), 0)
    out["loss"].backward()
    return out


def test_a_head_without_labels_in_the_batch_adds_nothing_but_keeps_its_parameters_in_backward():
    module = joint_module()
    out = step(module, [target({**ALL, "segmentation": False}), target({**ALL, "segmentation": False}, box=False)])
    assert torch.isfinite(out["loss"])
    assert "segmentation/loss" not in out and {"detection/loss", "classification/loss"} <= set(out)
    # equal weighting: the total is the labelled heads' losses alone
    torch.testing.assert_close(out["loss"].detach(), out["detection/loss"] + out["classification/loss"])
    seg = module.model.heads["segmentation"]
    grads = [p.grad for p in seg.parameters()]
    assert all(g is not None for g in grads) and all(float(g.abs().max()) == 0 for g in grads)  # used, zero (DDP)
    det = module.model.heads["detection"].roi_heads.box_predictor.cls_score.weight.grad
    assert det is not None and float(det.abs().max()) > 0


def test_unlabelled_images_are_left_out_of_each_head_loss():
    """Per head, the loss of a batch with an unlabelled image equals the loss of the labelled images alone: the
    segmentation CE over the labelled image's pixels, the multi-label BCE over its classes, and the R-CNN losses
    over the images with boxes (the unlabelled one is not taken as a negative)."""
    module = joint_module(heads=("segmentation", "classification"))
    parts = module.parts
    logits_seg = [torch.randn(3, 64, 64), torch.randn(3, 64, 64)]
    logits_cls = torch.randn(2, 2)
    a, b = target({**ALL, "segmentation": False, "classification": False}), target(ALL, box=False)
    both = {name: part.joint_targets((a, b)) for name, part in parts.items()}
    alone = {name: part.joint_targets((b,)) for name, part in parts.items()}
    seg, cls = parts["segmentation"], parts["classification"]
    torch.testing.assert_close(seg.loss(logits_seg, both["segmentation"])["loss"],
                               seg.loss(logits_seg[1:], alone["segmentation"])["loss"])
    torch.testing.assert_close(cls.loss(logits_cls, both["classification"])["loss"],
                               cls.loss(logits_cls[1:], alone["classification"])["loss"])
    assert seg.labelled(both["segmentation"]) == 1 and cls.labelled(both["classification"]) == 1

    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    # every anchor and proposal sampled: the losses do not depend on the random draws, which the resize of each
    # image in the batch (torchvision draws a size per image) shifts
    everything = {"rpn_batch_size_per_image": 10**6, "box_batch_size_per_image": 10**6}
    with_unlabelled = step(joint_module(("detection",), everything), [target(ALL), target({**ALL, "detection": False})],
                           images)
    labelled_only = step(joint_module(("detection",), everything), [target(ALL)], images[:1])
    for key in ("detection/loss_classifier", "detection/loss_box_reg"):
        torch.testing.assert_close(with_unlabelled[key], labelled_only[key], rtol=1e-4, atol=1e-5)


def test_per_head_learning_rates_and_learned_weights_in_the_optimizer():
    module = joint_module(head_lr_mult={"classification": 10.0}, weighting={"method": "uncertainty"})
    module.trainer = None
    groups = module.param_groups()
    cls_ids = {id(p) for p in module.model.heads["classification"].parameters()}
    boosted = [g for g in groups if g["lr_mult"] == 10.0]
    assert len(boosted) == 1 and {id(p) for p in boosted[0]["params"]} == cls_ids
    learned = [g for g in groups if g.get("weight_decay") == 0.0]  # log-variances are not decayed towards 0
    assert len(learned) == 1 and {id(p) for p in learned[0]["params"]} == {id(p) for p in module.weighting.parameters()}
    assert len(learned[0]["params"]) == 3 and learned[0]["lr_mult"] == 50.0  # the default: weights that move
    slower = joint_module(weighting={"method": "gradnorm", "lr_mult": 1.0})  # task.module.weighting.lr_mult
    slower.trainer = None
    learned = [g for g in slower.param_groups() if g.get("weight_decay") == 0.0]
    assert len(learned) == 1 and learned[0]["lr_mult"] == 1.0 and len(learned[0]["params"]) == 3
    assert sum(len(g["params"]) for g in groups) == len({id(p) for g in groups for p in g["params"]})  # no repeats


def _rows(run_dir):
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _last(rows, key):
    values = [float(r[key]) for r in rows if r.get(key)]
    assert values, f"{key} never logged"
    return values[-1]


def test_three_heads_end_to_end(tmp_path):
    proc = run_train(*TINY, "trainer.max_epochs=2", "task.module.weighting.method=dwa", "hydra.run.dir=run",
                     cwd=tmp_path)
    assert_ok(proc)
    run_dir = tmp_path / "run"
    rows = _rows(run_dir)
    for key in ("test/detection/AP", "test/segmentation/mIoU", "test/classification/mAP", "test/score",
                "val/score", "train/detection/loss_classifier", "train/segmentation/loss", "train/classification/loss"):
        value = _last(rows, key)
        assert value == value, key  # not NaN
    scores = [_last(rows, k) for k in ("test/detection/AP", "test/segmentation/mIoU", "test/classification/mAP")]
    assert _last(rows, "test/score") == pytest.approx(sum(scores) / 3, abs=1e-4)
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert (run_dir / "val_predictions" / "epoch000.png").is_file()
    assert "Test IoU per class (segmentation)" in proc.stdout


def test_two_heads_uncertainty_weighting_and_partial_labels(tmp_path):
    """Instance segmentation and classification, learned (uncertainty) weights, three quarters of the training
    images without their masks-and-boxes label."""
    proc = run_train(*TINY, "task.heads=[instance_segmentation,classification]",
                     "task.module.weighting.method=uncertainty", "data.hide_labels.instance_segmentation=0.75",
                     "hydra.run.dir=run", cwd=tmp_path)
    assert_ok(proc)
    assert "partial labels: instance_segmentation labels hidden on 6 of 8 training images" in proc.stdout + proc.stderr
    rows = _rows(tmp_path / "run")
    assert _last(rows, "test/instance_segmentation/segm/AP") >= 0
    assert 0 < _last(rows, "train/classification/weight") < 1  # 0.5 * exp(-s): learned, not the equal 1
    assert not any(k.startswith("test/segmentation/") for k in rows[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dwa", "pcgrad"])
def test_ddp_two_cpu_processes_with_partial_labels(tmp_path, method):
    """Two processes, batch 1 each, half the images without masks and a quarter without boxes: some steps give a
    process no label at all for a head; no unused-parameter error, no NaN, one set of metrics; DWA's epoch means
    reduced over both processes; PCGrad's surgery backward reaching DDP's gradient hooks (a step whose gradients
    DDP never reduced fails the next forward). An ImageFolder source adds images labelled for classification only."""
    from test_multitask_sources import write_image_folder

    photos = write_image_folder(tmp_path / "photos", {"circle": 2, "square": 2})
    proc = run_train(*TINY, *CPU_DDP, "data.batch_size=1", f"task.module.weighting.method={method}",
                     "data.hide_labels.segmentation=0.5", "data.hide_labels.detection=0.25",
                     f"data.extra_train=[{{kind:imagefolder,root:'{photos}'}}]", "hydra.run.dir=run", cwd=tmp_path,
                     timeout=300)  # about 60 s alone; a DDP hang (gradients never reduced) fails in minutes, not 10
    assert_ok(proc)
    out = proc.stdout + proc.stderr
    assert "All distributed processes registered" in out and "unused parameters" not in out.lower()
    assert "strides do not match" not in out  # surgery's gradients laid out as DDP's buckets expect
    rows = _rows(tmp_path / "run")
    for key in ("test/detection/AP", "test/segmentation/mIoU", "test/classification/mAP"):
        assert _last(rows, key) == _last(rows, key)
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_bad_heads_and_fractions_are_named_with_the_fix(tmp_path):
    proc = run_train("task=multitask", "task.heads=[detection,depth]", cwd=tmp_path)
    assert proc.returncode == 2 and "task.heads=['detection', 'depth']: name each head once" in proc.stderr
    proc = run_train("task=multitask", "data.hide_labels.segmentation=1.5", cwd=tmp_path)
    assert proc.returncode == 2 and "e.g. data.hide_labels.segmentation=0.5" in proc.stderr
