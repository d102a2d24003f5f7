"""predict.py's body: checkpoint -> model, files -> batches -> the task's output files, with a progress bar."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader

from backbones.errors import ConfigError

from ..restore import LoadedCheckpoint, load_checkpoint
from .arguments import check_arguments
from .base import PredictOptions, Predictor
from .classification import ClassificationPredictor
from .detection import DetectionPredictor
from .files import default_output, progress_columns, summarize
from .inputs import Failure, ImageDataset, ImageFiles, list_images, split_failures
from .multitask import MultitaskPredictor
from .segmentation import SegmentationPredictor

log = logging.getLogger(__name__)

PREDICTORS: dict[str, type[Predictor]] = {"classification": ClassificationPredictor,
                                          "detection": DetectionPredictor, "segmentation": SegmentationPredictor,
                                          "instance_segmentation": DetectionPredictor, "multitask": MultitaskPredictor}


def resolve_device(name: str) -> torch.device:
    """"auto": the GPU when there is one, else the CPU; otherwise any torch device string ("cpu", "cuda:1")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name} is not a device: use auto, cpu, cuda or cuda:<index>") from err
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no GPU torch can use"
        raise ConfigError(f"device={name}: this machine has {have}; use device=auto or device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: MPS is not available here; use device=auto or device=cpu")
    return device


def _options(cfg: DictConfig) -> PredictOptions:
    formats = [cfg.formats] if isinstance(cfg.formats, str) else list(cfg.formats)
    return PredictOptions(topk=int(cfg.topk), formats=tuple(formats), score_threshold=float(cfg.score_threshold),
                          overlay=bool(cfg.overlay), explain=cfg.get("explain"), explain_class=cfg.get("explain_class"),
                          explain_level=cfg.get("explain_level"))


def build_predictor(loaded: LoadedCheckpoint, files: ImageFiles, out_dir: Path, options: PredictOptions) -> Predictor:
    if loaded.task not in PREDICTORS:
        raise ValueError(f"{loaded.path}: no predictor for task {loaded.task!r}; known: {', '.join(PREDICTORS)}")
    return PREDICTORS[loaded.task](loaded, files, out_dir, options)


def predict(cfg: DictConfig) -> dict[str, int]:
    """Run the checkpoint `cfg.ckpt` on `cfg.input`; returns {"images": written, "failed": unreadable}."""
    check_arguments(cfg)
    options = _options(cfg)
    files = list_images(cfg.input)  # before the model: a wrong path or device fails at once
    device = resolve_device(str(cfg.device))
    loaded = load_checkpoint(cfg.ckpt)
    if options.explain and loaded.task == "multitask":
        raise ConfigError(f"explain={options.explain} is built for one-head checkpoints (classification, segmentation, "
                          f"detection, instance_segmentation), not {loaded.task}")
    module = loaded.module.to(device)
    if getattr(module, "channels_last", False):
        module.model.to(memory_format=torch.channels_last)
    out_dir = Path(cfg.output) if cfg.get("output") else default_output(loaded.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = build_predictor(loaded, files, out_dir, options)

    workers = min(4, os.cpu_count() or 1) if cfg.num_workers is None else int(cfg.num_workers)
    loader = DataLoader(ImageDataset(files, predictor.prepare), batch_size=int(cfg.batch_size),
                        num_workers=workers, collate_fn=split_failures, pin_memory=device.type == "cuda")
    console = Console()
    console.print(f"{loaded.task} checkpoint {loaded.path} ({loaded.config.backbone.name}, "
                  f"{len(loaded.class_names)} classes) on {len(files.paths)} image(s), device {device}",
                  soft_wrap=True, highlight=False)
    failures: list[Failure] = []
    done = 0
    with Progress(*progress_columns(), console=console) as progress, torch.inference_mode():
        bar = progress.add_task("predict", total=len(files.paths))
        for items, failed in loader:
            for f in failed:
                log.warning("cannot read %s (skipped): %s", f.name, f.reason)
            failures += failed
            if items:
                for item, output in zip(items, predictor.forward(items, device)):
                    predictor.write(item, output)
                done += len(items)
            progress.advance(bar, len(items) + len(failed))

    written = predictor.finish(console) if done else []
    return summarize(console, written, failures, done, len(files.paths), out_dir)
