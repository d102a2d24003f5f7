"""`data.augment.enabled=false`: every training augmentation of a task off at once; the training images then come out
as the evaluation transform gives them (tiny synthetic sets in the test cache)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from backbones.hydra_configs import compose_config
from data import DataError
from data.transforms import AUGMENT_OFF, augment_options

SMALL = {
    "classification": ["data.synthetic.train_per_class=2", "data.synthetic.val_per_class=1"],
    "segmentation": ["data.synthetic.train_images=3", "data.synthetic.val_images=1", "data.synthetic.test_images=1"],
    "detection": ["data.synthetic.train_images=3", "data.synthetic.val_images=1", "data.synthetic.test_images=1",
                  "data.synthetic.max_objects=3"],
    "multitask": ["data.synthetic.train_images=3", "data.synthetic.val_images=1", "data.synthetic.test_images=1"],
}


def _same(a, b) -> bool:
    """Equal nested items (tensors, dicts of tensors, tuples)."""
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("task", list(SMALL))
def test_augmentation_off_gives_the_evaluation_images(task, tmp_path):
    cfg = compose_config([f"task={task}", "data.augment.enabled=false", "data.num_workers=0", *SMALL[task]],
                         output_dir=tmp_path)
    module = instantiate(cfg.data)
    module.prepare_data()
    module.setup("fit")
    train, evaluated = module.dataset("train", train=True), module.dataset("train", train=False)
    torch.manual_seed(0)
    for i in range(len(train)):
        assert _same(train[i], evaluated[i]), (task, i)  # no flip, jitter, rescale or crop of its own
    on = instantiate(compose_config([f"task={task}", "data.num_workers=0", *SMALL[task]], output_dir=tmp_path).data)
    on.prepare_data()
    on.setup("fit")
    augmented = on.dataset("train", train=True)
    torch.manual_seed(0)  # with augmentation on, some training image differs from its evaluation form
    assert any(not _same(augmented[i], evaluated[i]) for i in range(len(augmented)) for _ in range(4)), task


def test_the_switch_is_checked_and_keeps_crop_pct():
    assert augment_options({"enabled": False, "hflip": 0.5, "crop_pct": 0.9}, "classification") == (
        False, {**AUGMENT_OFF["classification"], "crop_pct": 0.9})
    assert augment_options({"hflip": 0.2}, "detection") == (True, {"hflip": 0.2})
    with pytest.raises(DataError, match="data.augment.enabled must be true or false"):
        augment_options({"enabled": "sometimes"}, "segmentation")
