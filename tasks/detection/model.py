"""Faster R-CNN and Mask R-CNN (torchvision's) over any Cerberus body: backbone + FPN, or a single-level backbone.
`RCNNHead` is the head; `DetectionModel` puts it on a body as a one-head `MultiHeadModel`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from backbones import Backbone
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

from ..multihead import MultiHeadModel, migrate_keys
from .roi_align import SparseMultiScaleRoIAlign


class RCNNHead(nn.Module):
    """torchvision's Faster R-CNN (RPN + RoI heads, and its transform) whose feature-map names, widths and anchor
    levels come from `body.output_shape()`; `MultiHeadModel` runs the transform, the body, then this head.

    Args:
        body: backbone + neck. With several levels they must share one width (an FPN); a plain backbone
            is used through its single deepest level.
        num_classes: object classes K, without background (the detector predicts K + 1).
        anchor_sizes: one tuple of sizes per level; default `8 * stride` per level (32..512 on p2..p6, as torchvision),
            and (32, 64, 128, 256, 512) on a single level.
        aspect_ratios: anchor height/width ratios, the same on every level.
        roi_levels: levels RoIAlign pools from; default every level with stride <= 32 (p2..p5), as torchvision.
        roi_output_size, roi_sampling_ratio: RoIAlign's output side and sampling points per bin.
        roi_align: `sparse` (the same RoIAlign as a sparse matrix on CPU, several times faster; see roi_align.py)
            or `torchvision` (its kernel everywhere).
        representation_size: width of the two-layer box head.
        masks: add Mask R-CNN's mask branch (torchvision's `MaskRCNN`): RoIAlign at `mask_roi_output_size` (14) on
            the same levels, `mask_layers` 3x3 convs of `mask_channels`, a 2x deconv and one 28x28 logit map per
            class (initialised as detectron2's, near 0: every first mask loss about log 2); eval outputs then carry
            "masks" (M, 1, H, W) probabilities in the image's pixels.
        mean, std: the input normalisation (the preprocessing record's, i.e. the weights' statistics), done by
            torchvision's transform.
        detector_kwargs: `min_size`, `max_size`, `rpn_*`, `box_*`, passed to torchvision's FasterRCNN with its
            defaults; a list `min_size` samples one per training batch (multi-scale training), the last one in eval.

    forward(feats: {level: (B, C, h, w)}, images: the transform's ImageList, targets: list of {"boxes": (N, 4) xyxy,
    "labels": (N,)[, "masks"]} (resized by the transform) | None, original_sizes: [(H, W)] of the input images)
    -> training: dict of losses; eval: list of {"boxes": (M, 4), "scores": (M,), "labels": (M,)} per image,
    in the input images' pixel coordinates.
    """

    kind = "detection"

    def __init__(
        self,
        body: Backbone,
        num_classes: int,
        *,
        anchor_sizes: Sequence[Sequence[int]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        roi_levels: Sequence[str] | None = None,
        roi_output_size: int = 7,
        roi_sampling_ratio: int = 2,
        roi_align: str = "sparse",
        representation_size: int = 1024,
        masks: bool = False,
        mask_roi_output_size: int = 14,
        mask_layers: int = 4,
        mask_channels: int = 256,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **detector_kwargs,
    ) -> None:
        super().__init__()
        shapes = body.output_shape()
        widths = {spec.channels for spec in shapes.values()}
        if len(widths) > 1:
            raise ValueError(
                f"{'Mask' if masks else 'Faster'} R-CNN needs feature maps of one width, but the body returns "
                f"{dict(shapes)}; "
                "use neck=fpn, or a single level (backbone.out_levels=[c5])"
            )
        levels = list(shapes)
        if anchor_sizes is None:
            # one size per level (8 x stride: 32..512 on p2..p6) as torchvision's FPN models; a single level gets all
            # five, as torchvision's own single-feature-map example (8 x 32 = 256 px alone would miss small objects)
            anchor_sizes = ([(8 * shapes[lvl].stride,) for lvl in levels] if len(levels) > 1
                            else [(32, 64, 128, 256, 512)])
        if len(anchor_sizes) != len(levels):
            raise ValueError(f"anchor_sizes has {len(anchor_sizes)} entries for {len(levels)} levels {levels}")
        if roi_levels is None:
            roi_levels = [lvl for lvl in levels if shapes[lvl].stride <= 32] or levels[-1:]
        unknown = [lvl for lvl in roi_levels if lvl not in shapes]
        if unknown:
            raise ValueError(f"roi_levels {unknown} are not among the body's levels {levels}")
        width = widths.pop()
        body.out_channels = width  # the one attribute torchvision's FasterRCNN reads from its backbone
        anchors = AnchorGenerator(tuple(tuple(s) for s in anchor_sizes), (tuple(aspect_ratios),) * len(levels))
        poolers = {"sparse": SparseMultiScaleRoIAlign, "torchvision": MultiScaleRoIAlign}
        if roi_align not in poolers:
            raise ValueError(f"roi_align must be one of {', '.join(poolers)} (got {roi_align!r})")
        pooler = poolers[roi_align](list(roi_levels), roi_output_size, roi_sampling_ratio)
        # torchvision's own head classes, so its fasterrcnn_resnet50_fpn state dicts keep their key names
        box_head = TwoMLPHead(width * roi_output_size**2, representation_size)
        predictor = FastRCNNPredictor(representation_size, num_classes + 1)
        if isinstance(detector_kwargs.get("min_size"), Sequence):
            detector_kwargs["min_size"] = tuple(detector_kwargs["min_size"])
        detector_cls = FasterRCNN
        if masks:  # torchvision's mask branch classes too: maskrcnn_resnet50_fpn state dicts keep their key names
            detector_cls = MaskRCNN
            mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1)
            # detectron2's init of the mask logits (normal, std 0.001): torchvision's kaiming init gives logits of
            # magnitude ~10 on a random-init body's FPN maps, first mask losses of 5-130 instead of log 2 = 0.69,
            # whose gradients then pull the shared body (README, Instance segmentation)
            nn.init.normal_(mask_predictor.mask_fcn_logits.weight, std=0.001)
            nn.init.zeros_(mask_predictor.mask_fcn_logits.bias)
            detector_kwargs.update(
                mask_roi_pool=poolers[roi_align](list(roi_levels), mask_roi_output_size, roi_sampling_ratio),
                mask_head=MaskRCNNHeads(width, [mask_channels] * mask_layers, 1), mask_predictor=mask_predictor)
        # torchvision builds (and initialises, in this order) the RPN and RoI heads; the body stays the model's
        detector = detector_cls(
            body, rpn_anchor_generator=anchors, box_roi_pool=pooler, box_head=box_head, box_predictor=predictor,
            image_mean=list(mean), image_std=list(std), **detector_kwargs,
        )
        self.transform, self.rpn, self.roi_heads = detector.transform, detector.rpn, detector.roi_heads
        self.num_classes = num_classes

    @property
    def masks(self) -> bool:
        """Whether the head has Mask R-CNN's mask branch (the task module then logs mask metrics and draws masks)."""
        return bool(self.roi_heads.has_mask())

    def forward(self, feats: dict[str, Tensor], images: ImageList, targets: list[dict[str, Tensor]] | None,
                original_sizes: list[tuple[int, int]]) -> Any:
        """As torchvision's `GeneralizedRCNN.forward` after the backbone."""
        proposals, proposal_losses = self.rpn(images, feats, targets)
        detections, detector_losses = self.roi_heads(feats, proposals, images.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}  # torchvision's order: the sum is the same float
        return self.transform.postprocess(detections, images.image_sizes, original_sizes)


def DetectionModel(body: Backbone, num_classes: int, *, mean: Sequence[float] = IMAGENET_MEAN,  # noqa: N802
                   std: Sequence[float] = IMAGENET_STD, **options: Any) -> MultiHeadModel:
    """The detector (`task=detection`, and with `masks=True` `task=instance_segmentation`): `body` and one `RCNNHead`
    named "detection" (`options`: the head's). forward(images: list of (3, H, W) in [0, 1], targets | None) ->
    {"detection": losses in training, detections in eval}."""
    return MultiHeadModel(body, {"detection": RCNNHead(body, num_classes, mean=mean, std=std, **options)},
                          mean=mean, std=std)


def load_torchvision_detector(model: MultiHeadModel, state_dict: dict[str, Tensor], strict: bool = True):
    """Load a state dict of torchvision's `fasterrcnn_resnet50_fpn` (or any torchvision FasterRCNN with the
    same backbone; `maskrcnn_resnet50_fpn` into a model with `masks=True`) into a Cerberus `DetectionModel` built
    with `backbone=resnet50 neck=fpn`.

    torchvision's `backbone.body.*`, `backbone.fpn.*` are the body's `body.*`, `fpn.*`; `rpn.*`, `roi_heads.*` the
    detection head's.
    """
    return model.load_state_dict(migrate_keys({f"detector.{key}": value for key, value in state_dict.items()}),
                                 strict=strict)


def torchvision_state_dict(model: MultiHeadModel) -> dict[str, Tensor]:
    """The inverse of `load_torchvision_detector`: the detector's state dict under torchvision's key names."""
    renames = {"body.": "backbone.", "heads.detection.": ""}
    out = {}
    for key, value in model.state_dict().items():
        old = next(p for p in renames if key.startswith(p))
        out[renames[old] + key[len(old):]] = value
    return out
