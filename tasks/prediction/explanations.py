"""predict.py explain=gradcam: a Grad-CAM heat map per image (`tasks/explain.py`) over the model's input, written
to explanations/<name>.png with the class it explains."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from backbones.errors import ConfigError

from ..drawing import to_uint8
from ..explain import grad_cam
from ..pictures import caption, heatmap
from .outputs import save_picture


def explained_class(class_names: Sequence[str], name: str | None) -> int | None:
    """The index of `explain_class` (None: each image's predicted class); ConfigError naming the choices."""
    if name is None:
        return None
    if name not in class_names:
        raise ConfigError(f"explain_class={name} is not a class of this model; use one of {', '.join(class_names)}")
    return list(class_names).index(name)


def write_explanations(module: Any, images: Tensor, predicted: Sequence[int], sizes: Sequence[tuple[int, int]],
                       names: Sequence[str], out_dir: Path, class_names: Sequence[str], fixed: int | None,
                       level: str | None = None) -> None:
    """Grad-CAM of `images` ((B, 3, H, W) model input) for `fixed` or each image's `predicted` class; the maps are
    cropped to each image's (h, w) in `sizes` (its extent in a padded batch)."""
    targets = [fixed if fixed is not None else int(p) for p in predicted]
    cams = grad_cam(module.model, images, targets, level=level).cpu()
    for image, cam, (h, w), name, target in zip(images, cams, sizes, names, targets):
        picture = heatmap(to_uint8(image[:, :h, :w]).permute(1, 2, 0).numpy(), cam[:h, :w].numpy())
        save_picture(caption(picture, f"Grad-CAM: {class_names[target]}"), out_dir / "explanations" / name)


__all__ = ["explained_class", "write_explanations"]
