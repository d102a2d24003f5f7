"""Multi-task COCO data: one instances json gives boxes, instance masks, a class mask and multi-label targets that
agree with each other, also after the training transforms."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from data.coco import load_coco
from data.errors import DataError
from data.masks import coco_mask
from data.multitask import (
    HEADS,
    MultiTaskCocoDataModule,
    MultiTaskCocoDataset,
    multilabel_target,
    semantic_from_instances,
)
from data.transforms import detection_transforms

# sorted ids 3, 7, 12: labels cat 1, dog 2, fox 3
CATEGORIES = [{"id": 12, "name": "fox"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
SIZES = {1: (48, 40), 2: (32, 36), 3: (40, 32)}  # image id -> (width, height)
K = len(CATEGORIES)


def region(width: int, height: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """(H, W) uint8 mask, 1 inside [x0, x1) x [y0, y1)."""
    m = np.zeros((height, width), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def compressed_rle(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": list(m.shape), "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(m: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = m.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(m.shape), "counts": ([0] if flat[0] else []) + [int(r) for r in runs]}


def ann(aid: int, iid: int, cid: int, segm, mask: np.ndarray, crowd: int = 0) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"id": aid, "image_id": iid, "category_id": cid, "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": float(mask.sum()), "iscrowd": crowd, "segmentation": segm}


def annotations() -> list[dict]:
    """Image 1: a small fox polygon listed before the larger cat polygon it lies on, a dog as compressed RLE, a
    crowd of dogs as uncompressed RLE overlapping the cat; image 2: no objects; image 3: a crowd of foxes only."""
    w, h = SIZES[1]
    cat = [4, 4, 30, 4, 30, 30, 4, 30]  # polygon corners: PIL / pycocotools fill the pixels in between
    fox = [10, 10, 20, 10, 15, 22]
    dog = region(w, h, 34, 6, 46, 20)
    crowd = region(w, h, 24, 26, 44, 38)
    w3, h3 = SIZES[3]
    crowd3 = region(w3, h3, 5, 5, 25, 20)

    def poly_mask(poly: list[int]) -> np.ndarray:
        with warnings.catch_warnings():  # pycocotools' decode under NumPy 2 warns about __array__(copy=...)
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))

    return [
        ann(1, 1, 12, [fox], poly_mask(fox)),
        ann(2, 1, 3, [cat], poly_mask(cat)),
        ann(3, 1, 7, compressed_rle(dog), dog),
        ann(4, 1, 7, uncompressed_rle(crowd), crowd, crowd=1),
        ann(5, 3, 12, uncompressed_rle(crowd3), crowd3, crowd=1),
    ]


def write_coco(root: Path, split: str, anns: list[dict]) -> Path:
    """root/<split>/<id>.png (random pixels, so a flip is visible) + root/annotations/instances_<split>.json."""
    rng = np.random.default_rng(0)
    (root / split).mkdir(parents=True, exist_ok=True)
    for iid, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / split / f"{iid}.png")
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in SIZES.items()]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


def coco_dataset(root: Path) -> Path:
    """`annotations()` as the train and val splits of a COCO folder at `root`."""
    for split in ("train", "val"):
        write_coco(root, split, annotations())
    return root


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    return coco_dataset(tmp_path / "coco")


@pytest.fixture
def boxes_only(tmp_path: Path) -> Path:
    """The same objects without any "segmentation": a detection-only json."""
    anns = [{k: v for k, v in a.items() if k != "segmentation"} for a in annotations()]
    for split in ("train", "val"):
        write_coco(tmp_path / "boxes", split, anns)
    return tmp_path / "boxes"


def index_of(root: Path, split: str = "train", segmentation: bool = True):
    return load_coco(root / "annotations" / f"instances_{split}.json", root / split, segmentation=segmentation)


@pytest.mark.parametrize("ignore_index", [255, 9])
def test_semantic_mask_equals_coco_mask_untransformed(coco, ignore_index):
    index = index_of(coco)
    dataset = MultiTaskCocoDataset(index, ignore_index=ignore_index)
    for i, rec in enumerate(index.images):
        _, target = dataset[i]
        expected = torch.from_numpy(coco_mask(rec, K + 1, ignore_index)).long()
        assert target["semantic"].dtype == torch.int64 and target["semantic"].shape == (rec.height, rec.width)
        assert torch.equal(target["semantic"], expected)
    # the json order put the small fox first: painted last anyway (smaller on top), and the crowd is ignored
    semantic = dataset[0][1]["semantic"]
    assert semantic[15, 15] == 3 and semantic[5, 5] == 1 and semantic[10, 40] == 2
    assert semantic[28, 26] == ignore_index and semantic[0, 0] == 0


def test_semantic_from_instances_ties_keep_the_given_order():
    masks = torch.zeros(3, 4, 6, dtype=torch.uint8)
    masks[0, :, :3] = 1  # 12 px
    masks[1, :, 2:5] = 1  # 12 px, overlaps column 2: the later one wins
    masks[2, 1:3, 1:5] = 1  # 8 px crowd, painted last (smallest)
    semantic = semantic_from_instances(masks, torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1]), ignore_index=7)
    expected = torch.tensor([[1, 1, 2, 2, 2, 0],
                             [1, 7, 7, 7, 7, 0],
                             [1, 7, 7, 7, 7, 0],
                             [1, 1, 2, 2, 2, 0]])
    assert torch.equal(semantic, expected)
    empty = semantic_from_instances(torch.zeros(0, 4, 6, dtype=torch.bool), torch.zeros(0, dtype=torch.int64),
                                    torch.zeros(0, dtype=torch.int64))
    assert torch.equal(empty, torch.zeros(4, 6, dtype=torch.int64))


def test_multilabel_targets_ignore_crowds():
    assert torch.equal(multilabel_target(torch.tensor([2, 2, 1, 3]), torch.tensor([0, 0, 1, 1]), 4),
                       torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.equal(multilabel_target(torch.tensor([3, 1, 1]), torch.tensor([0, 1, 0]), 3),
                       torch.tensor([1.0, 0.0, 1.0]))
    empty = multilabel_target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 5)
    assert empty.dtype == torch.float32 and torch.equal(empty, torch.zeros(5))


def test_dataset_classes_per_image(coco):
    dataset = MultiTaskCocoDataset(index_of(coco))
    # image 1: cat, fox and a dog (the dog crowd adds nothing); image 2: none; image 3: a crowd of foxes only
    expected = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    for i, classes in enumerate(expected):
        target = dataset[i][1]
        assert target["classes"].dtype == torch.float32 and target["classes"].tolist() == classes


def test_flip_keeps_semantic_boxes_and_instance_masks_together(coco):
    index = index_of(coco)
    plain = MultiTaskCocoDataset(index)
    flipped = MultiTaskCocoDataset(index, detection_transforms(True, hflip=1.0, photometric=0.0))
    for i in range(len(index.images)):
        image0, t0 = plain[i]
        image, t = flipped[i]
        width = image.shape[-1]
        assert torch.equal(image, image0.flip(-1))
        assert torch.equal(t["semantic"], t0["semantic"].flip(-1))
        assert torch.equal(t["masks"], t0["masks"].flip(-1))
        mirrored = torch.stack([width - t["boxes"][:, 2], t["boxes"][:, 1], width - t["boxes"][:, 0],
                                t["boxes"][:, 3]], 1)
        assert torch.equal(mirrored, t0["boxes"])
        assert type(t["masks"]) is torch.Tensor and type(t["boxes"]) is torch.Tensor
        sizes = t["masks"].flatten(1).sum(1)
        for j, (mask, label, crowd) in enumerate(zip(t["masks"].bool(), t["labels"], t["iscrowd"])):
            ys, xs = mask.nonzero(as_tuple=True)
            box = t["boxes"][j]
            # the box is the tight box of its mask (all these boxes are)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box.long().tolist())
            if crowd:
                continue
            # pixels a smaller object covers carry that object's label instead
            shown = mask & ~t["masks"][sizes < sizes[j]].bool().any(0)
            assert shown.any() and (t["semantic"][shown] == label).all()


def test_has_flags_with_and_without_masks(coco, boxes_only):
    with_masks = MultiTaskCocoDataset(index_of(coco))
    assert with_masks[0][1]["has"] == dict.fromkeys(HEADS, True)
    module = MultiTaskCocoDataModule(str(boxes_only), batch_size=2, num_workers=0, masks=False)
    module.prepare_data()
    module.setup("fit")
    for split in ("train", "val"):
        for _, target in module.dataset(split, train=split == "train"):
            assert target["has"] == {"detection": True, "instance_segmentation": False, "segmentation": False,
                                     "classification": True}
            assert "masks" not in target and "semantic" not in target
            assert target["classes"].shape == (K,)
    with pytest.raises(DataError, match="segmentation"):  # masks=True requires every annotation's segmentation
        MultiTaskCocoDataModule(str(boxes_only), num_workers=0).setup("fit")


def test_ignore_index_must_be_above_the_labels(coco):
    module = MultiTaskCocoDataModule(str(coco), num_workers=0, ignore_index=2)
    with pytest.raises(DataError, match="ignore"):
        module.setup("fit")


def test_synthetic_datamodule_end_to_end():
    module = MultiTaskCocoDataModule(synthetic=dict(num_classes=3, train_images=6, val_images=2, test_images=2,
                                                    image_size=64, max_objects=4, seed=1, visible_masks=True),
                                     batch_size=2, num_workers=0)
    module.prepare_data()
    module.setup("fit")
    assert module.class_names == ["circle", "triangle", "square"]
    assert module.category_ids == [1, 2, 3] and module.annotation_file("val").is_file()
    images, targets = next(iter(module.train_dataloader()))
    assert len(images) == len(targets) == 2
    for image, target in zip(images, targets):
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        assert set(target) == {"boxes", "labels", "iscrowd", "area", "image_id", "masks", "semantic", "classes",
                               "has"}
        n = len(target["labels"])
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
        assert target["masks"].shape == (n, 64, 64) and target["masks"].dtype == torch.uint8
        assert target["semantic"].shape == (64, 64) and target["semantic"].dtype == torch.int64
        assert target["classes"].shape == (3,) and target["classes"].dtype == torch.float32
        assert target["has"] == dict.fromkeys(HEADS, True)
        # modal masks do not overlap: the class mask is each mask times its label
        painted = (target["masks"].long() * target["labels"][:, None, None]).sum(0)
        assert torch.equal(target["semantic"], painted)
        assert target["classes"].tolist() == [float(k in target["labels"].tolist()) for k in (1, 2, 3)]
    val_images, val_targets = next(iter(module.val_dataloader()))
    assert len(val_images) == 2 and all("semantic" in t for t in val_targets)
