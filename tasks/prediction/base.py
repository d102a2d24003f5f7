"""What each task's predictor provides: eval preprocessing, a batched forward pass, and its output files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich.console import Console
from torchvision.transforms.v2 import functional as TF

from ..restore import LoadedCheckpoint
from .files import ImageFiles


@dataclass
class PredictOptions:
    """The task-specific options of predict.py (conf/predict.yaml)."""

    topk: int = 5
    formats: tuple[str, ...] = ("csv", "json")
    score_threshold: float = 0.3
    overlay: bool = True
    explain: str | None = None  # "gradcam": explanations/<name>.png (one-head checkpoints)
    explain_class: str | None = None  # the class to explain; None: each image's predicted class
    explain_level: str | None = None  # the body level Grad-CAM reads; None: the coarsest the head reads (a detector:
    # the level the box's RoI was pooled from)


def prepare_image(image: Image.Image, transform: Callable, keep_original: bool) -> dict[str, Any]:
    """PIL image -> {"image": model input, "size": (H, W) on disk[, "original": (3, H, W) uint8]}; runs in the
    DataLoader's workers, so it is a module-level function (picklable)."""
    item = {"image": transform(image), "size": (image.height, image.width)}
    if keep_original:
        item["original"] = TF.pil_to_tensor(image)
    return item


class Predictor:
    """Subclasses set `prepare` (PIL image -> item dict) and implement `forward` and `write`; `finish` writes the
    files that gather all images and returns what was written."""

    prepare: Callable[[Image.Image], dict[str, Any]]

    def __init__(self, loaded: LoadedCheckpoint, files: ImageFiles, out_dir: Path, options: PredictOptions) -> None:
        self.loaded, self.files, self.out_dir, self.options = loaded, files, out_dir, options

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[Any]:
        """One batch of items -> one output per item, on the CPU."""
        raise NotImplementedError

    def write(self, item: dict[str, Any], output: Any) -> None:
        """Record one image's output (per-image files are written here)."""
        raise NotImplementedError

    def finish(self, console: Console) -> list[Path]:
        """Write the files that gather every image, print a summary; the paths written (files or folders)."""
        raise NotImplementedError

    def name(self, item: dict[str, Any]) -> str:
        return self.files.names[item["index"]]
