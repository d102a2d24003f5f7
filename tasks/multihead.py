"""One body (backbone + neck) and a dict of heads: every Cerberus model, single-task runs being the one-head case.

The input stage is chosen by the heads. With an R-CNN head (detection, instance segmentation) the images go through
its torchvision transform (normalise, resize the short side to `min_size`, pad to the size divisibility), as in
torchvision's `GeneralizedRCNN`, and every other head reads the same features: segmentation logits are cropped to
each image's resized extent and brought back to its own size. Without one, the batch tensor is normalised
(`Normalize`) and fed as it is.

Checkpoints of Cerberus before the multi-head model (`fc.*`, `decoder.*`, `detector.backbone.*`, ...) load into it:
their keys are renamed on loading (`LEGACY_PREFIXES`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from backbones import Backbone
from backbones.base import registry_backbone
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD
from data.preprocessing import pad_to_batch

from .normalize import Normalize

# key prefixes of the single-task models before the multi-head model -> where those tensors live now
LEGACY_PREFIXES: dict[str, str] = {
    "detector.backbone.": "body.",
    "detector.rpn.": "heads.detection.rpn.",
    "detector.roi_heads.": "heads.detection.roi_heads.",
    "fc.": "heads.classification.fc.",
    "decoder.": "heads.segmentation.decoder.",
    "segmentation_head.": "heads.segmentation.segmentation_head.",
}


def migrate_keys(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Rename, in place, the keys under `prefix` that a pre-multi-head model wrote (`prefix + "fc.weight"` ->
    `prefix + "heads.classification.fc.weight"`, ...); a state dict of the current layout is left as it is."""
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in LEGACY_PREFIXES.items():
            if rest.startswith(old):
                state[prefix + new + rest[len(old):]] = state.pop(key)
                break
    return state


def _migrate_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    migrate_keys(state_dict, prefix)


class MultiHeadModel(nn.Module):
    """`body` (a Backbone: `forward(x) -> {level: (B, C, H/s, W/s)}`) and `heads`, each an nn.Module with a `kind`
    ("classification", "segmentation", "detection") that reads the levels it needs from `body.output_shape()`.

    Args:
        body: backbone (+ neck), run once per batch for every head.
        heads: name -> head; the name is the head's state-dict prefix (`heads.<name>.`) and its metric prefix in
            joint runs.
        mean, std: the input normalisation (the preprocessing record's) when no head brings its own transform.

    forward(images, targets=None) -> {head name: output}:
        images: (B, 3, H, W) in [0, 1], or a list of (3, H_i, W_i): an R-CNN head's transform resizes and batches
            them, else they are padded to one batch.
        targets: the R-CNN head's list of {"boxes", "labels"[, "masks"]} per image, in training.
        outputs: classification logits (B, K); segmentation logits (B, K, H, W) at the input's size (for a list
            of images, a list of (K, H_i, W_i) at each image's size); detection, in training its dict of
            losses, in eval a list of {"boxes", "scores", "labels"[, "masks"]} per image in its own pixels.
    """

    def __init__(self, body: Backbone, heads: Mapping[str, nn.Module], *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        rcnn = [name for name, head in heads.items() if getattr(head, "transform", None) is not None]
        if len(rcnn) > 1:
            raise ValueError(f"one R-CNN head per model, got {rcnn}")
        self.body = body  # first: parameter order (and so optimizer state) as in the single-task models before
        self.heads = nn.ModuleDict(heads)
        self.rcnn_name = rcnn[0] if rcnn else None
        self.normalize = Normalize(mean, std)
        self.register_load_state_dict_pre_hook(_migrate_hook)

    @property
    def head(self) -> nn.Module:
        """The only head of a one-head model."""
        if len(self.heads) != 1:
            raise AttributeError(f"the model has {len(self.heads)} heads ({', '.join(self.heads)}); pick one by name")
        return next(iter(self.heads.values()))

    def forward(self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None,
                ) -> dict[str, Any]:
        if self.rcnn_name is None:
            if isinstance(images, Tensor):
                x = self.normalize(images)
                feats = self.body(x)
                return {name: head(feats, x) for name, head in self.heads.items()}
            # a list (a joint run's batch): padded with the mean colour (0 once normalised) to one tensor whose
            # sides the body divides; segmentation logits are cropped back to each image
            sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
            mean = self.normalize.mean.flatten().tolist()
            x = self.normalize(pad_to_batch(list(images), registry_backbone(self.body).size_divisibility, mean))
            feats = self.body(x)
            return {name: _per_image(head(feats, x), sizes, sizes) if head.kind == "segmentation" else head(feats, x)
                    for name, head in self.heads.items()}
        rcnn = self.heads[self.rcnn_name]
        # the shapes themselves, not int(): a traced export (ONNX) then rescales boxes to any input size
        original_sizes = [(i.shape[-2], i.shape[-1]) for i in images]
        labelled = None
        if targets is not None and any(t is None for t in targets):  # partial labels: some images have no boxes
            labelled = [i for i, t in enumerate(targets) if t is not None]
            targets = [t if t is not None else _no_objects(images[i]) for i, t in enumerate(targets)]
        image_list, targets = rcnn.transform(list(images), None if targets is None else list(targets))
        x = image_list.tensors
        feats = self.body(x)
        out = {}
        for name, head in self.heads.items():
            if name == self.rcnn_name and labelled is not None:
                out[name] = _labelled_only(head, feats, image_list, targets, labelled)
            elif name == self.rcnn_name:
                out[name] = head(feats, image_list, targets, original_sizes)
            elif head.kind == "segmentation":
                out[name] = _per_image(head(feats, x), image_list.image_sizes, original_sizes)
            else:
                out[name] = head(feats, x)
        return out


def _no_objects(image: Tensor) -> dict[str, Tensor]:
    """A stand-in target for an image without boxes to label (dropped again after the transform)."""
    return {"boxes": image.new_zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64, device=image.device)}


def _labelled_only(head: nn.Module, feats: dict[str, Tensor], images: ImageList, targets: list[dict[str, Tensor]],
                   labelled: list[int]) -> dict[str, Tensor]:
    """The R-CNN losses of the images in `labelled` alone (an image without boxes to label is not a negative);
    with none, a zero that ties in every head parameter (so DDP sees them used)."""
    if not labelled:
        return {"unlabelled": sum((0 * p.sum() for p in head.parameters() if p.requires_grad),
                                  feats[next(iter(feats))].sum() * 0)}
    index = torch.tensor(labelled, device=images.tensors.device)
    subset = ImageList(images.tensors[index], [images.image_sizes[i] for i in labelled])
    return head({k: v[index] for k, v in feats.items()}, subset, [targets[i] for i in labelled], [])


def _per_image(logits: Tensor, resized: Sequence[tuple[int, int]], original: Sequence[tuple[int, int]],
               ) -> list[Tensor]:
    """(B, K, H_pad, W_pad) logits of a padded, resized batch -> per image (K, H_i, W_i) at its own size."""
    out = []
    for map_, (h, w), size in zip(logits, resized, original):
        map_ = map_[:, :h, :w]
        if torch.jit.is_tracing() or tuple(map_.shape[-2:]) != tuple(size):  # traced: for every size (export)
            map_ = F.interpolate(map_[None], size=size, mode="bilinear", align_corners=False)[0]
        out.append(map_)
    return out
