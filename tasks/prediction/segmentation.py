"""Segmentation predictions: a class-index mask PNG per image, the size of the image on disk, and an overlay."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor

from .base import Predictor, prepare_image
from .explanations import explained_class, write_explanations
from .files import output_names
from .outputs import finish_segmentation, unpainted, write_mask


class SegmentationPredictor(Predictor):
    """The eval transform of the checkpoint's preprocessing record (short side to its `size` if it has one; the model
    normalises); the batch padded as in training (`Preprocessing.pad_images`: the mean colour, to a multiple of
    `size_divisibility`); each output cropped back and, when the image was resized, its probabilities resized
    (bilinear) to the size on disk before the argmax."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = self.loaded.preprocessing
        self.prepare = partial(prepare_image, transform=self.record.eval_transform(),
                               keep_original=self.options.overlay)
        self.png_names = output_names(self.files.names)
        self.explained = explained_class(self.loaded.class_names, self.options.explain_class)
        self.count = 0

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[Tensor]:
        images = [x["image"] for x in items]
        batch = self.record.pad_images(images).to(device)
        probs = self.loaded.module.predict_step(batch, 0)
        if self.options.explain:
            write_explanations(self.loaded.module, batch, [_main_class(p.argmax(0), unpainted(self.loaded.class_names))
                                                          for p in probs],
                               [i.shape[-2:] for i in images], [self.png_names[x["index"]] for x in items],
                               self.out_dir, self.loaded.class_names, self.explained,
                               self.options.explain_level)
        masks = []
        for p, image, item in zip(probs, images, items):
            p = p[:, : image.shape[-2], : image.shape[-1]]
            if tuple(p.shape[-2:]) != tuple(item["size"]):
                p = F.interpolate(p[None], size=item["size"], mode="bilinear", align_corners=False)[0]
            masks.append(p.argmax(0).to(torch.uint8).cpu())
        return masks

    def write(self, item: dict[str, Any], mask: Tensor) -> None:
        original = item["original"].permute(1, 2, 0).numpy() if self.options.overlay else None
        write_mask(self.out_dir, self.png_names[item["index"]], mask.numpy(), original, self.loaded.class_names)
        self.count += 1

    def finish(self, console: Console) -> list[Path]:
        written = finish_segmentation(self.out_dir, self.count, self.loaded.class_names, self.options.overlay,
                                      console)
        return written + ([self.out_dir / "explanations"] if self.options.explain else [])


def _main_class(mask: Tensor, background: list[int]) -> int:
    """The most frequent class of a predicted (H, W) mask that is not background (else the most frequent)."""
    counts = torch.bincount(mask.flatten())
    if background and len(counts) > max(background):
        foreground = counts.clone()
        foreground[background] = 0
        if foreground.any():
            return int(foreground.argmax())
    return int(counts.argmax())
