"""Every config group option composes, resolves and instantiates; the CLI explains bad choices."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, run_train
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from backbones import BACKBONES, NECKS
from backbones.hydra_configs import compose_config, register_configs
from tasks.hardware import fit_to_hardware

GROUPS = ["task", "backbone", "neck", "data", "trainer", "logger", "optim", "scheduler", "callbacks", "experiment"]


@pytest.fixture(scope="module")
def hydra_ctx():
    """Hydra's config loader, to list each group's options."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
    return loader


def compose_resolved(overrides: list[str], tmp_path: Path):
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert cfg.trainer.default_root_dir == str(tmp_path)
    return cfg


def options(loader, group: str) -> list[str]:
    return loader.get_group_options(group)


def test_groups_exist(hydra_ctx):
    for group in GROUPS:
        assert options(hydra_ctx, group), group
    assert set(options(hydra_ctx, "backbone")) == set(BACKBONES.names())
    assert set(options(hydra_ctx, "neck")) == set(NECKS.names())


def test_every_option_composes(hydra_ctx, tmp_path):
    for group in GROUPS:
        for option in options(hydra_ctx, group):
            extra = ["backbone.model_name=resnet26d"] if (group, option) == ("backbone", "timm") else []
            extra += ["data.root=/somewhere"] if (group, option) == ("data", "imagefolder") else []
            cfg = compose_resolved([f"{group}={option}", *extra], tmp_path)
            assert cfg.task.name == (option if group == "task" else cfg.task.name)
            assert cfg.data._target_.startswith("data.")


def test_default_config(hydra_ctx, tmp_path):
    cfg = compose_resolved([], tmp_path)
    assert cfg.backbone.name == "resnet18" and cfg.neck.name == "none"
    assert cfg.data.synthetic.num_classes == 6 and cfg.data.root is None
    assert cfg.logger._target_ == "tasks.loggers.wandb_logger" and cfg.logger.mode == "auto"
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle"])
def test_optimizer_and_scheduler_partials(hydra_ctx, tmp_path, optim, scheduler):
    cfg = compose_resolved([f"optim={optim}", f"scheduler={scheduler}"], tmp_path)
    opt = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(2))])
    sched = instantiate(cfg.scheduler)(opt, total_steps=10)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] > 0


def test_trainer_callbacks_and_loggers_instantiate(hydra_ctx, tmp_path):
    for trainer in options(hydra_ctx, "trainer"):
        for logger in ["csv", "tensorboard", "wandb"]:
            cfg = compose_resolved([f"trainer={trainer}", f"logger={logger}", "logger.mode=offline"
                                    if logger == "wandb" else "trainer.max_epochs=1"], tmp_path)
            callbacks = [instantiate(c) for c in cfg.callbacks.values()]
            fit_to_hardware(cfg.trainer)
            t = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate(cfg.logger))
            assert isinstance(t, L.Trainer)
    ddp = compose_resolved(["trainer=ddp"], tmp_path).trainer
    assert ddp.strategy == "ddp" and ddp.sync_batchnorm is True


def test_detection_task_defaults_and_overrides(hydra_ctx, tmp_path):
    cfg = compose_resolved(["task=detection"], tmp_path)
    assert cfg.neck.name == "fpn" and cfg.data.synthetic.num_classes >= 2
    assert cfg.backbone.norm == "frozen_bn" and cfg.backbone.freeze_at == 2  # detectron2 / MMDetection defaults
    cfg = compose_resolved(["task=detection", "backbone=resnext50_32x4d", "backbone.norm=bn", "backbone.freeze_at=0",
                            "neck.out_channels=128"], tmp_path)
    assert (cfg.backbone.name, cfg.backbone.norm, cfg.backbone.freeze_at) == ("resnext50_32x4d", "bn", 0)
    assert cfg.neck.out_channels == 128
    cfg = compose_resolved(["task=detection", "data=coco", "data.root=/coco"], tmp_path)
    assert cfg.data.root == "/coco" and cfg.data.synthetic is None


def test_experiment_presets(hydra_ctx, tmp_path):
    cfg = compose_resolved(["experiment=finetune_resnet50"], tmp_path)
    assert cfg.backbone.name == "resnet50" and cfg.task.module.backbone_lr_mult == 0.1 and "AdamW" in cfg.optim._target_
    cfg = compose_resolved(["experiment=detection_torchvision"], tmp_path)
    assert cfg.task.name == "detection" and cfg.backbone.name == "resnet50" and cfg.task.model.min_size == 800
    cfg = compose_resolved(["experiment=instance_segmentation_torchvision"], tmp_path)
    assert cfg.task.name == "instance_segmentation" and cfg.task.model.min_size == 800 and cfg.task.model.masks
    assert cfg.task.model.mask_channels == 256 and cfg.data.masks and cfg.optim.lr == 0.02
    cfg = compose_resolved(["experiment=cls_fpn"], tmp_path)
    assert cfg.neck.name == "fpn" and list(cfg.task.model.in_features) == ["p2", "p3", "p4", "p5"]


def test_help_lists_groups_and_every_backbone(tmp_path):
    proc = run_train("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for group in GROUPS:
        assert f"{group}:" in proc.stdout
    for name in BACKBONES.names():
        assert name in proc.stdout


def test_unknown_backbone_fails_before_any_work(tmp_path):
    proc = run_train("backbone=nope", cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr
    assert "backbone=nope is not a known backbone" in err
    assert all(name in err for name in ["resnet18", "resnext101_64x4d", "wide_resnet101_2", "resnetv2_50"])
    assert not (tmp_path / "outputs").exists()  # no run directory, no data generated


def test_timm_entry_needs_a_model_name(tmp_path):
    proc = run_train("backbone=timm", cwd=tmp_path)
    assert proc.returncode != 0
    assert "backbone.model_name" in proc.stderr
