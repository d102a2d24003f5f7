"""The registry as a matrix: every registered backbone x task x {no neck, FPN} takes real optimizer
steps with finite losses through train.py's own composition and loop. Every classification, detection and
segmentation cell (126) and the `INSTANCE_CELLS` of instance segmentation run in every suite run (CI included); the
inner loop can skip them with `-m "not matrix"` except the `INNER_LOOP` cells (every torchvision depth and one timm
model per family, in detection), which carry no marker."""

from __future__ import annotations

import math

import pytest

from backbones.registry import BACKBONES
from tests.matrix import TASKS, cells, run_cell

INNER_LOOP = {("detection", name, "fpn") for name in
              ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",  # every torchvision depth
               "resnetv2_50", "resnet50d", "seresnext50_32x4d", "ecaresnet50d", "resnest50d", "res2net50_26w_4s",
               "timm")} | {("instance_segmentation", "resnet18", "fpn"), ("instance_segmentation", "resnet50", "none")}
# ^ one timm model per family; Mask R-CNN with and without FPN
# Mask R-CNN differs from the detection cells only in the mask branch, which reads the neck's maps (or c5 alone):
# the suite runs it on shallow and deep, torchvision and timm bodies, with and without FPN; all 42 cells were run by
# hand (`python -m tests.matrix --tasks instance_segmentation`, README) to keep CI inside its time budget
INSTANCE_CELLS = {("instance_segmentation", name, neck) for name, neck in
                  (("resnet18", "fpn"), ("resnet50", "none"), ("resnet152", "fpn"), ("resnext101_64x4d", "fpn"),
                   ("resnest50d", "fpn"), ("resnetv2_50", "none"))}


def _params():
    for task, backbone, neck in cells():
        if task == "instance_segmentation" and (task, backbone, neck) not in INSTANCE_CELLS:
            continue
        marks = () if (task, backbone, neck) in INNER_LOOP else (pytest.mark.matrix,)
        yield pytest.param(task, backbone, neck, id=f"{task}-{backbone}-{neck}", marks=marks)


def test_matrix_covers_the_registry():
    names = {backbone for _, backbone, _ in cells()}
    assert names == set(BACKBONES.names()) and len(cells()) == len(TASKS) * 2 * len(names)


# Without a neck the R-CNN box head's first layer reads c5's 2048 x 7 x 7 values: at the default width (1,024) that is
# 103 M weights, 4-5 GB and about 5 s more per cell. Those 23 cells run it 256 wide here to keep CI in its budget; all
# 42 no-neck R-CNN cells were run at the default width by hand (`python -m tests.matrix --tasks detection
# instance_segmentation --necks none`, README), and every cell with FPN runs the default here.
NARROW_NO_NECK = ["task.model.representation_size=256"]


@pytest.mark.parametrize("task, backbone, neck", list(_params()))
def test_cell_trains(task, backbone, neck):
    extra = NARROW_NO_NECK if task in ("detection", "instance_segmentation") and neck == "none" else []
    cell = run_cell(task, backbone, neck, steps=3, extra=extra)
    assert not cell.error, cell.error
    assert len(cell.losses) == 3 and cell.finite, cell.losses
    # a random-init model starts near chance (detection about 3-8): tens or thousands mean its activations blew up
    assert cell.losses[0] < 20, (cell.losses, cell.terms[0])
    # a few steps from random init at the task's learning-rate warm-up: no blow-up
    assert max(cell.losses) < 20 * cell.losses[0] and not math.isnan(cell.seconds_per_step), cell.losses


def test_fit_mode_reports_the_test_metric(tmp_path):
    """`python -m tests.matrix --fit` runs train.py as a user would and reads the test metric back (here a tiny run;
    the real use is the task's whole default run per backbone)."""
    from tests.matrix import fit_cell

    cell = fit_cell("classification", "resnet18", "none", extra=[
        "data.synthetic.num_classes=3", "data.synthetic.train_per_class=8", "data.synthetic.val_per_class=4",
        "data.synthetic.test_per_class=4", "data.synthetic.image_size=32", "data.image_size=32",
        "data.num_workers=0", "trainer.max_epochs=1"], cwd=str(tmp_path))
    assert not cell.error and 0 <= cell.metric <= 1 and cell.seconds > 0, cell
