"""predict.py explain=gradcam: a Grad-CAM heat map per image (`tasks/explain.py`) over the model's input, written
to explanations/<name>.png with the class it explains (a detector: with the box it explains)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from backbones.errors import ConfigError

from ..drawing import to_uint8
from ..explain import detection_grad_cam, grad_cam
from ..pictures import caption, class_color, draw_boxes, heatmap
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


def write_detection_explanation(module: Any, image: Tensor, name: str, out_dir: Path, class_names: Sequence[str],
                                fixed: int | None, level: str | None = None) -> None:
    """Grad-CAM of the best detection in `image` ((3, H, W) in [0, 1]), of class `fixed` (an index into
    `class_names`) when given, with its box and "class score (level)"; without such a detection the image is
    written with a caption that says so."""
    explained = detection_grad_cam(module.model, image, None if fixed is None else fixed + 1, level)
    picture = to_uint8(image).permute(1, 2, 0).numpy()
    if explained is None:
        wanted = "" if fixed is None else f"{class_names[fixed]} "
        save_picture(caption(picture, f"Grad-CAM: no {wanted}detection to explain"), out_dir / "explanations" / name)
        return
    drawn = heatmap(picture, explained.cam.cpu().numpy())
    scale = drawn.shape[1] / picture.shape[1]  # heatmap enlarges small images; the box follows
    label = class_names[explained.label - 1] if 1 <= explained.label <= len(class_names) else str(explained.label)
    drawn = draw_boxes(drawn, explained.box.cpu().numpy()[None] * scale, [class_color(explained.label)],
                       [f"{label} {explained.score:.2f}"])
    save_picture(caption(drawn, f"Grad-CAM: {label} {explained.score:.2f} (level {explained.level})"),
                 out_dir / "explanations" / name)


__all__ = ["explained_class", "write_detection_explanation", "write_explanations"]
