"""The module that is exported: a trained `MultiHeadModel` with plain tensor inputs and a flat tuple of named
outputs, the preprocessing that the model does itself (normalisation; for R-CNN heads also the resize, the padding
and the post-processing with NMS) inside the graph.

Inputs (RGB in [0, 1], float32):
  - without an R-CNN head: "images" (N, 3, H, W), N, H and W dynamic (segmentation: H and W multiples of the
    record's `size_divisibility`, as the predictor pads them);
  - with one (detection, instance segmentation, joint runs with such a head): "image" (3, H, W), H and W dynamic, one
    image per call: torchvision's R-CNN loops over the images of a batch in Python, which tracing unrolls.

Outputs, per head (prefixed "<head>." in a model with several heads): classification "logits" (N, K);
segmentation "logits" (N, K, H, W) (with an R-CNN head (1, K, H, W) at the image's size); detection "boxes" (n, 4)
xyxy in the input's pixels, "labels" (n,) int64 in 1..K, "scores" (n,) and, for instance segmentation, "masks"
(n, 1, H, W) probabilities; n may be 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..multihead import MultiHeadModel

DETECTION_OUTPUTS = ("boxes", "labels", "scores")
THRESHOLD_BUFFER = "score_thresh"  # the R-CNN's box score threshold, a buffer while exporting (`open_thresholds`)


class ExportGraph(nn.Module):
    """`model` (eval mode) as `forward(images or image) -> tuple of tensors` named by `output_names`."""

    def __init__(self, model: MultiHeadModel) -> None:
        super().__init__()
        self.model = model
        self.rcnn = model.rcnn_name is not None
        self.output_names: list[str] = []
        several = len(model.heads) > 1
        for name, head in model.heads.items():
            prefix = f"{name}." if several else ""
            if head.kind == "detection":
                masks = ("masks",) if head.roi_heads.has_mask() else ()
                self.output_names += [prefix + o for o in (*DETECTION_OUTPUTS, *masks)]
            else:
                self.output_names.append(prefix + "logits")

    @property
    def input_name(self) -> str:
        return "image" if self.rcnn else "images"

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model([images] if self.rcnn else images)
        flat: list[Tensor] = []
        for name, head in self.model.heads.items():
            out = outputs[name]
            if head.kind == "detection":
                detections = out[0]
                flat += [detections[k] for k in DETECTION_OUTPUTS]
                if "masks" in detections:
                    flat.append(detections["masks"])
            elif self.rcnn and head.kind == "segmentation":
                flat.append(out[0][None])  # the per-image list of one image -> (1, K, H, W)
            else:
                flat.append(out)
        return tuple(flat)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The legacy ONNX exporter's dynamic axes of every input and output."""
        axes: dict[str, dict[int, str]] = {self.input_name: ({1: "height", 2: "width"} if self.rcnn
                                                             else {0: "batch", 2: "height", 3: "width"})}
        for name in self.output_names:
            leaf = name.rsplit(".", 1)[-1]
            if leaf in (*DETECTION_OUTPUTS, "masks"):
                axes[name] = {0: "detections", **({2: "height", 3: "width"} if leaf == "masks" else {})}
            elif self.rcnn:  # segmentation at the image's size
                axes[name] = {2: "height", 3: "width"}
            else:
                axes[name] = {0: "batch", **({2: "height", 3: "width"} if self._is_dense(name) else {})}
        return axes

    def _is_dense(self, output: str) -> bool:
        head = output.rsplit(".", 1)[0] if "." in output else next(iter(self.model.heads))
        return self.model.heads[head].kind == "segmentation"


@contextmanager
def open_thresholds(graph: ExportGraph) -> Iterator[dict[str, float]]:
    """While tracing, every R-CNN head's box score threshold is a buffer set to -1 (every box passes), so the trace
    follows the path with detections, and torchvision's `batched_nms` is one without a branch on the number of boxes
    (its early return on none, traced, would answer "no detections" for every image). Yields {buffer name in the
    graph's state dict: the real threshold}, which the exporter writes back into the file; the model is restored
    afterwards."""
    import torchvision.ops.boxes as box_ops

    real: dict[str, float] = {}
    model = getattr(graph, "model", None)  # any traceable module works; only a Cerberus model has R-CNN heads
    heads = [(name, head.roi_heads) for name, head in (model.heads.items() if model is not None else ())
             if head.kind == "detection"]
    for name, roi_heads in heads:
        real[f"model.heads.{name}.roi_heads.{THRESHOLD_BUFFER}"] = float(roi_heads.score_thresh)
        del roi_heads.score_thresh
        roi_heads.register_buffer(THRESHOLD_BUFFER, torch.tensor(-1.0), persistent=True)
    original_nms = box_ops.batched_nms
    box_ops.batched_nms = _batched_nms  # torchvision's detection code calls it through the module
    try:
        yield real
    finally:
        box_ops.batched_nms = original_nms
        for (_, roi_heads), value in zip(heads, real.values()):
            del roi_heads._buffers[THRESHOLD_BUFFER]
            roi_heads.score_thresh = value


def _batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's `batched_nms` (its coordinate trick: boxes of different classes offset apart) without its early
    return on no boxes, and with a maximum that is defined for none: one traced path, right for any number of boxes
    (an early model or a random one can have none at all while it is traced)."""
    import torchvision

    max_coordinate = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)
