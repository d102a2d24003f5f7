"""The preprocessing record: input statistics from the weights, the model normalising its own [0, 1] input, and
the data pipelines, the padding and checkpoint rebuilding all reading the one record."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from backbones import build_body
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD
from backbones.hydra_configs import compose_config
from backbones.weights import backbone_input_stats
from data.preprocessing import Preprocessing
from tasks.build import build_task
from tasks.classification.model import ClassificationModel
from tasks.restore import without_weight_sources

HALF = (0.5, 0.5, 0.5)


@pytest.mark.parametrize(("backbone", "expected"), [
    ({"name": "resnetv2_50", "weights": "timm"}, (HALF, HALF)),  # timm's default resnetv2_50 weights: 0.5 / 0.5
    ({"name": "resnet50d", "weights": "timm"}, (IMAGENET_MEAN, IMAGENET_STD)),
    ({"name": "resnet50", "weights": "IMAGENET1K_V2"}, (IMAGENET_MEAN, IMAGENET_STD)),  # torchvision's transform
    ({"name": "timm", "model_name": "inception_v3", "weights": "timm"}, (HALF, HALF)),
    ({"name": "resnetv2_50", "weights": None}, (IMAGENET_MEAN, IMAGENET_STD)),  # random init
    ({"name": "resnetv2_50", "weights": "/nowhere/w.pth"}, (IMAGENET_MEAN, IMAGENET_STD)),  # a file says nothing
    ({"name": "resnetv2_50", "weights": "timm", "mean": [0.1, 0.2, 0.3]}, ((0.1, 0.2, 0.3), HALF)),  # override
])
def test_input_statistics_belong_to_the_weights(backbone, expected):
    """Read from timm's pretrained cfg / torchvision's weights metadata: nothing is downloaded."""
    assert backbone_input_stats(backbone) == expected


def test_every_task_model_normalises_with_the_record(tmp_path):
    """`backbone.mean` / `.std` (or the weights') reach the record stored in the checkpoint and the model's first
    layer (detection: torchvision's transform); the buffers stay out of the state dict."""
    stats = ["backbone.mean=[0.1,0.2,0.3]", "backbone.std=[0.3,0.2,0.1]"]
    for task in ("classification", "segmentation", "detection"):
        cfg = compose_config([f"task={task}", "backbone=resnet18", *stats], output_dir=tmp_path)
        module = build_task(cfg, ["a", "b"])
        assert module.preprocessing.mean == (0.1, 0.2, 0.3) and module.preprocessing.std == (0.3, 0.2, 0.1)
        assert module.hparams["preprocessing"]["mean"] == [0.1, 0.2, 0.3]
        model = module.model
        if task == "detection":
            assert model.head.transform.image_mean == [0.1, 0.2, 0.3]
            assert model.head.transform.image_std == [0.3, 0.2, 0.1]
        else:
            assert model.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
            assert not any("normalize" in k for k in model.state_dict())


def test_the_model_normalises_its_input():
    """model(x) on RGB in [0, 1] is the same network without normalisation on (x - mean) / std."""
    torch.manual_seed(0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
    ours = ClassificationModel(build_body({"name": "resnet18"}), 4, mean=mean, std=std).eval()
    plain = ClassificationModel(build_body({"name": "resnet18"}), 4, mean=(0, 0, 0), std=(1, 1, 1)).eval()
    plain.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = plain((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        torch.testing.assert_close(ours(x), expected)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_data_pipelines_give_images_in_0_1_and_pad_with_the_mean_colour(task, tmp_path):
    """No normalisation in the data: batches are RGB in [0, 1]; segmentation pads to the record's size_divisibility
    with its mean colour (0 after the model's normalisation)."""
    from hydra.utils import instantiate

    cfg = compose_config([f"task={task}", "data.synthetic.seed=3"], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.data.num_workers = 0
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    record = Preprocessing.from_config(cfg, 64)
    datamodule.use_preprocessing(record)
    datamodule.setup("fit")
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        images = next(iter(loader))[0]
        assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.5
    if task == "segmentation":  # the synthetic set is 64 px: crops of 64, eval at 64 -> no padding; pad 40 px items
        from data.segmentation import collate

        item = (torch.rand(3, 40, 40), torch.zeros(40, 40, dtype=torch.int64))
        images, masks = collate([item], record)
        assert images.shape[-2:] == (64, 64) and masks[0, 50, 50] == 255
        assert images[0, :, 50, 50].tolist() == pytest.approx(list(IMAGENET_MEAN))


def test_rebuilding_without_the_weights_keeps_their_statistics():
    """Checkpoints rebuild with backbone.weights=null (their state dict replaces the weights); the statistics those
    weights brought stay, from the stored record or else from the config."""
    cfg = OmegaConf.create({"backbone": {"name": "resnetv2_50", "weights": "timm", "mean": None, "std": None},
                            "init_from": None, "data": {}})
    rebuilt = without_weight_sources(cfg)
    assert rebuilt.backbone.weights is None and tuple(rebuilt.backbone.mean) == HALF
    assert backbone_input_stats(rebuilt.backbone) == (HALF, HALF)
    stored = without_weight_sources(cfg, ((0.1, 0.1, 0.1), (0.2, 0.2, 0.2)))
    assert tuple(stored.backbone.mean) == (0.1, 0.1, 0.1)


def test_run_configs_from_before_the_move_keep_their_data_statistics():
    """A stored config whose backbone has no `mean` key (runs before the statistics moved) uses its data.mean."""
    cfg = OmegaConf.create({"task": {"name": "classification"}, "backbone": {"name": "resnet18", "weights": None},
                            "data": {"image_size": 64, "mean": [0.2, 0.2, 0.2], "std": [0.4, 0.4, 0.4]}})
    record = Preprocessing.from_config(cfg)
    assert record.mean == (0.2, 0.2, 0.2) and record.std == (0.4, 0.4, 0.4) and record.crop_pct == 0.875
