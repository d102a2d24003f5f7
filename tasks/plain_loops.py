"""The hand-written loops `benchmark.py --recipes` measures Cerberus' recipes against, written the way a practitioner
writes one without a framework, on the same files and scored with Cerberus' own metrics on the same test images.

- segmentation: segmentation-models-pytorch's `Unet` on the same encoder, inputs in [0, 1], cross-entropy, AdamW
  lr 1e-3 wd 1e-4, one-cycle, batch 16, no augmentation.
- detection: torchvision's `fasterrcnn_resnet50_fpn(weights=None)` construction on the same ResNet (trainable
  BatchNorm and every layer trainable, as torchvision builds it without pretrained weights) and every detector
  default (2000 / 1000 proposals, 512 sampled RoIs, a 1024-wide box head) in torchvision's reference recipe: SGD
  lr 0.02 x batch / 16, momentum 0.9, wd 1e-4, linear warm-up over the first epoch (at most 1000 steps), lr / 10 at
  16 / 26 and 22 / 26 of the epochs, batch 4, no augmentation. One setting differs from torchvision's defaults:
  `min_size` / `max_size` are the images' own size rather than 800 / 1333 px, which would upsample the 128 px kinds
  6x (about 6x the time per step on a CPU: 20 s against 3.4 s per batch of 4 at ResNet-18 on the 2-core machine);
  `min_size=800, max_size=1333` gives the literal defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from data.images import load_rgb


def _image(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1] (`load_rgb`: decoded fully, any mode to RGB)."""
    return torch.from_numpy(np.asarray(load_rgb(path)).copy()).permute(2, 0, 1).float() / 255


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask-folder split in memory: images (N, 3, H, W) float in [0, 1], masks (N, H, W) int64 (one size: the
    synthetic kinds' images all have the set's size)."""
    names = sorted((root / split / "images").glob("*.png"))
    masks = np.stack([np.asarray(Image.open(root / split / "masks" / p.name)) for p in names])
    return torch.stack([_image(p) for p in names]), torch.from_numpy(masks.astype(np.int64))


def plain_segmentation(root: Path, epochs: int, encoder: str = "resnet18", batch_size: int = 16, lr: float = 1e-3,
                       weight_decay: float = 1e-4, seed: int = 42) -> float:
    """The plain loop's test mIoU (the same `SegmentationMetrics` as Cerberus' `test/mIoU`)."""
    import segmentation_models_pytorch as smp

    from .segmentation.metrics import SegmentationMetrics

    torch.manual_seed(seed)
    classes = (root / "classes.txt").read_text().split()
    images, masks = read_split(root, "train")
    model = smp.Unet(encoder, encoder_weights=None, classes=len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = -(-len(images) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(steps):
            index = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(images[index]), masks[index], ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    metric = SegmentationMetrics(len(classes))
    test_images, test_masks = read_split(root, "test")
    with torch.inference_mode():
        for i in range(0, len(test_images), batch_size):
            metric.update(model(test_images[i:i + batch_size]), test_masks[i:i + batch_size])
    return float(metric.compute()["mIoU"])


def read_coco_split(root: Path, split: str) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[str]]:
    """`root/annotations/instances_<split>.json` + `root/<split>/` in memory (read and validated by `load_coco`, the
    labels 1..K as Cerberus numbers them): images (3, H, W) in [0, 1], one torchvision target each (boxes (N, 4)
    xyxy, labels, iscrowd, area, image_id), and the class names."""
    from data.coco import load_coco

    index = load_coco(root / "annotations" / f"instances_{split}.json", root / split)
    images = [_image(rec.path) for rec in index.images]
    targets = [{"boxes": torch.from_numpy(rec.boxes), "labels": torch.from_numpy(rec.labels),
                "iscrowd": torch.from_numpy(rec.iscrowd), "area": torch.from_numpy(rec.area),
                "image_id": rec.image_id} for rec in index.images]
    return images, targets, index.class_names


def torchvision_faster_rcnn(backbone: str, num_classes: int, min_size: int, max_size: int) -> nn.Module:
    """`fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`'s construction on the ResNet `backbone`
    (trainable BatchNorm, all five stages trainable), `num_classes` including background, torchvision's detector
    defaults except the resize."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    body = resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5)
    return FasterRCNN(body, num_classes=num_classes, min_size=min_size, max_size=max_size)


def plain_detection(root: Path, epochs: int, backbone: str = "resnet18", batch_size: int = 4, seed: int = 42,
                    min_size: int | None = None, max_size: int | None = None) -> float:
    """The plain torchvision loop's test AP (Cerberus' `CocoMetrics`, COCOeval's AP@[.5:.95]); `min_size` /
    `max_size` default to the training images' largest side."""
    from .detection.evaluation import CocoMetrics

    torch.manual_seed(seed)
    images, targets, classes = read_coco_split(root, "train")
    side = max(max(i.shape[1:]) for i in images)
    model = torchvision_faster_rcnn(backbone, len(classes) + 1, min_size or side, max_size or side)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02 * batch_size / 16, momentum=0.9, weight_decay=1e-4)
    steps = -(-len(images) // batch_size)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=min(1000, steps - 1))
    milestones = sorted({max(1, round(epochs * f)) for f in (16 / 26, 22 / 26)})
    decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator).tolist()
        for i in range(steps):
            index = order[i * batch_size:(i + 1) * batch_size]
            losses = model([images[j] for j in index], [{k: targets[j][k] for k in ("boxes", "labels")}
                                                        for j in index])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"plain detection loop: loss {float(loss)} at epoch {epoch} step {i}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if epoch == 0:
                warmup.step()
        decay.step()
    model.eval()
    metric = CocoMetrics()
    test_images, test_targets, _ = read_coco_split(root, "test")
    with torch.inference_mode():
        for i in range(0, len(test_images), batch_size):
            metric.update(model(test_images[i:i + batch_size]), test_targets[i:i + batch_size])
    return float(metric.compute()["AP"])
