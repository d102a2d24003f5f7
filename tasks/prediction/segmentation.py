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

from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD
from data.transforms import segmentation_transforms

from ..drawing import save_png
from ..segmentation.visualize import BACKGROUND_NAMES, overlay_mask
from .base import Predictor, prepare_image
from .inputs import output_names


def pad_batch(images: list[Tensor], divisor: int) -> Tensor:
    """(3, H_i, W_i) images -> (B, 3, H, W), H and W the largest rounded up to a multiple of `divisor`, padded with
    0 at the bottom / right as the training collate does (0 is the mean colour after normalization)."""
    d = max(divisor, 1)
    h = -(-max(x.shape[-2] for x in images) // d) * d
    w = -(-max(x.shape[-1] for x in images) // d) * d
    return torch.stack([F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2])) for x in images])


class SegmentationPredictor(Predictor):
    """The run's eval transform (normalize with its mean / std, short side to `eval_size` if it had one); the
    batch padded to a multiple of `size_divisibility`; each output cropped back and, when the image was resized,
    its probabilities resized (bilinear) to the size on disk before the argmax."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        d = self.data_cfg
        transform = segmentation_transforms(False, int(d.get("image_size") or 512), eval_size=d.get("eval_size"),
                                            mean=d.get("mean") or IMAGENET_MEAN, std=d.get("std") or IMAGENET_STD)
        self.prepare = partial(prepare_image, transform=transform, keep_original=self.options.overlay)
        self.divisor = int(d.get("size_divisibility") or 32)
        names = self.loaded.class_names
        self.skip = [k for k, n in enumerate(names) if n.lower() in BACKGROUND_NAMES]  # not painted
        self.png_names = output_names(self.files.names)
        self.count = 0

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[Tensor]:
        images = [x["image"] for x in items]
        probs = self.loaded.module.predict_step(pad_batch(images, self.divisor).to(device), 0)
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
