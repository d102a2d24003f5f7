"""Segmentation predictions: a class-index mask PNG per image, the size of the image on disk, and an overlay."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from torch import Tensor

from ..drawing import save_png
from ..segmentation.visualize import BACKGROUND_NAMES, overlay_mask
from .base import Predictor, prepare_image
from .inputs import output_names


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
        names = self.loaded.class_names
        self.skip = [k for k, n in enumerate(names) if n.lower() in BACKGROUND_NAMES]  # not painted
        self.png_names = output_names(self.files.names)
        self.count = 0

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[Tensor]:
        images = [x["image"] for x in items]
        probs = self.loaded.module.predict_step(self.record.pad_images(images).to(device), 0)
        masks = []
        for p, image, item in zip(probs, images, items):
            p = p[:, : image.shape[-2], : image.shape[-1]]
            if tuple(p.shape[-2:]) != tuple(item["size"]):
                p = F.interpolate(p[None], size=item["size"], mode="bilinear", align_corners=False)[0]
            masks.append(p.argmax(0).to(torch.uint8).cpu())
        return masks

    def write(self, item: dict[str, Any], mask: Tensor) -> None:
        name = self.png_names[item["index"]]
        path = self.out_dir / "masks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.numpy().astype(np.uint8)).save(path)  # 2-D uint8: mode "L"
        if self.options.overlay:
            overlay = overlay_mask(item["original"], mask.long(), len(self.loaded.class_names), self.skip)
            save_png(overlay, self.out_dir / "overlays" / name)
        self.count += 1

    def finish(self, console: Console) -> list[Path]:
        legend = ", ".join(f"{k} {n}" for k, n in enumerate(self.loaded.class_names))
        console.print(f"{self.count} mask(s): pixel value k is class k ({legend})", highlight=False, soft_wrap=True)
        return [self.out_dir / "masks"] + ([self.out_dir / "overlays"] if self.options.overlay else [])
