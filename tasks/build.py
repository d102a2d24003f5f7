"""Config -> objects: the model and the task module, shared by train.py and the other entry points."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from backbones import build_body
from backbones.base import registry_backbone
from data.preprocessing import Preprocessing

from .base import TaskModule
from .init_from import init_from


def build_model(cfg: DictConfig, num_classes: int) -> tuple[nn.Module, Preprocessing]:
    """backbone (+ neck) from the registry, the preprocessing record of the run and that body, then the task's head
    sized by `num_classes` and normalising its input with the record's statistics."""
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    neck = OmegaConf.to_container(cfg.neck, resolve=True)
    body = build_body(backbone, neck)
    record = Preprocessing.from_config(cfg, registry_backbone(body).size_divisibility)
    model = instantiate(cfg.task.model, body=body, num_classes=num_classes, mean=list(record.mean),
                        std=list(record.std))
    return model, record


def build_task(cfg: DictConfig, class_names: Sequence[str], category_ids: Sequence[int] | None = None) -> TaskModule:
    """The task's LightningModule, carrying the resolved config, class names (and the dataset's category ids,
    if it has them) and the preprocessing record into its checkpoints."""
    model, preprocessing = build_model(cfg, len(class_names))
    if cfg.get("init_from"):  # another run's checkpoint: backbone + neck, and the head where shapes match
        init_from(model, cfg.init_from, partial=bool(cfg.get("init_from_partial", False)),
                  backbone_name=cfg.backbone.name)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    # a partial, so the objects and the stored config below are passed as they are, not re-instantiated
    module_cls = instantiate(cfg.task.module, _partial_=True)
    return module_cls(
        model=model,
        optimizer=instantiate(cfg.optim),
        scheduler=scheduler,
        class_names=list(class_names),
        category_ids=list(category_ids) if category_ids is not None else None,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        preprocessing=preprocessing.to_dict(),
    )
