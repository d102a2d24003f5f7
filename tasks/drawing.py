"""What every task's prediction pictures share: uint8 conversion, PNG files, the run-dir + W&B destination."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import Tensor


def to_uint8(image: Tensor) -> Tensor:
    """(3, H, W) float in [0, 1] (or uint8) -> uint8 on the CPU."""
    image = image.detach().cpu()
    return image if image.dtype == torch.uint8 else (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def save_png(grid: Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) uint8 image to `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # PIL rather than torchvision.io, whose image encoders are deprecated from 0.29
    Image.fromarray(grid.detach().cpu().permute(1, 2, 0).numpy()).save(path)
    return path


@rank_zero_only
def publish_validation_grid(module: L.LightningModule, grid: Tensor, caption: str) -> Path:
    """Save (3, H, W) uint8 `grid` as `<run dir>/val_predictions/epochNNN.png` and log it to W&B as
    `val/predictions`, so each validation's pictures sit next to its metrics."""
    out = Path(module.trainer.default_root_dir) / "val_predictions" / f"epoch{module.current_epoch:03d}.png"
    save_png(grid, out)
    for logger in module.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image("val/predictions", [grid.permute(1, 2, 0).numpy()], step=module.global_step,
                             caption=[f"epoch {module.current_epoch}: {caption}"])
    return out
