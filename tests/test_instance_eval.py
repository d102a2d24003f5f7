"""Instance segmentation data and evaluation: COCO polygons / compressed / uncompressed RLE decoded as masks that
travel with their boxes; mask AP equal to pycocotools' COCOeval (iouType "segm"), also over two processes; the
synthetic set's modal masks; masks in the results json and in the drawings."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_detection_eval import evaluate_on_two_processes

from data.coco import load_coco
from data.detection import CocoDetectionDataset
from data.masks import instance_masks
from data.synthetic import synthetic_detection
from data.transforms import detection_transforms
from tasks.detection.evaluation import COCO_KEYS, SEGM_PREFIX, CocoMetrics, to_coco_results
from tasks.detection.module import without_crowd
from tasks.detection.visualize import class_color, draw_detections

CATEGORY_IDS = [4, 9]  # non-contiguous: label i + 1 is CATEGORY_IDS[i]
STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}
W, H = 260, 220


def _polygon(rng: np.random.Generator) -> list[float]:
    """A random convex-ish polygon (6 points round a centre) of a small, medium or large object."""
    radius = float(rng.choice([rng.uniform(5, 8), rng.uniform(20, 28), rng.uniform(82, 95)]))
    cx, cy = rng.uniform(radius, W - radius), rng.uniform(radius, H - radius)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 6))
    radii = radius * rng.uniform(0.6, 1.0, 6)
    return [round(float(v), 2) for a, r in zip(angles, radii) for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def _compressed(rle: dict) -> dict:
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's crowd format: column-major run lengths starting with a run of zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [H, W], "counts": counts}


def make_coco(seed: int = 0, num_images: int = 10) -> dict:
    """Objects as polygons, compressed RLE or (crowd regions) uncompressed RLE; `area` and `bbox` are the mask's,
    as in COCO; the last image has no annotations."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + 3 * i, "file_name": f"{i}.png", "width": W, "height": H} for i in range(num_images)]
    annotations = []
    for img in images[:-1]:
        for _ in range(rng.integers(1, 6)):
            poly = _polygon(rng)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], H, W))
            crowd = int(rng.random() < 0.1)
            if crowd:
                segm = _uncompressed(mask_utils.decode(rle))
            else:
                segm = [poly] if rng.random() < 0.5 else _compressed(rle)
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"],
                                "category_id": int(rng.choice(CATEGORY_IDS)), "segmentation": segm,
                                "area": float(mask_utils.area(rle)),
                                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "iscrowd": crowd})
    categories = [{"id": c, "name": f"shape{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_dataset(root: Path, coco: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for img in coco["images"]:
        Image.new("RGB", (img["width"], img["height"]), (90, 90, 90)).save(root / img["file_name"])
    path = root / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def dataset_targets(root: Path, coco: dict) -> list[dict]:
    """What the data module yields per image (the real loading path): boxes, labels, iscrowd, area, masks."""
    path = write_dataset(root, coco)
    ds = CocoDetectionDataset(load_coco(path, root, segmentation=True), masks=True)
    return [ds[i][1] for i in range(len(ds))]


def make_preds(targets: list[dict], seed: int = 0) -> list[dict]:
    """Each GT mask (85% of them) shifted by a few pixels and a little grown or shrunk, as (M, 1, H, W)
    probabilities; a tenth with the wrong label; false positives; random scores; the first image gets none."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    preds = []
    for i, t in enumerate(targets):
        masks, labels = [], []
        for mask, label in zip(t["masks"], t["labels"].tolist()):
            if rng.random() > 0.85:
                continue
            dy, dx = rng.integers(-1, 2, 2)
            m = torch.roll(mask.float(), shifts=(int(dy), int(dx)), dims=(0, 1))
            if rng.random() < 0.3:  # grow by one pixel
                m = torch.nn.functional.max_pool2d(m[None, None], 3, 1, 1)[0, 0]
            masks.append(m)
            labels.append(label if rng.random() > 0.1 else int(rng.integers(1, len(CATEGORY_IDS) + 1)))
        for _ in range(rng.integers(0, 3)):  # false positives: random blobs
            blob = torch.zeros(H, W)
            y, x = rng.integers(0, H - 12), rng.integers(0, W - 12)
            blob[y:y + int(rng.integers(4, 12)), x:x + int(rng.integers(4, 12))] = 1
            masks.append(blob)
            labels.append(int(rng.integers(1, len(CATEGORY_IDS) + 1)))
        n = 0 if i == 0 else len(masks)
        stack = torch.stack(masks)[:n] if n else torch.zeros(0, H, W)
        # a probability map: 0.9 inside, 0.2 outside, so binarising at 0.5 gives the mask back
        probs = (0.2 + 0.7 * stack)[:, None]
        boxes = torch.tensor([mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8))))
                              for m in stack], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        preds.append({"boxes": boxes, "scores": torch.rand(n, generator=gen), "labels": torch.tensor(labels[:n],
                                                                                                 dtype=torch.int64),
                      "masks": probs})
    return preds


def coco_eval(coco: dict, results: list[dict], tmp_path: Path, iou_type: str) -> dict[str, float]:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: float(evaluator.stats[i]) for key, i in STATS_INDEX.items()}


def evaluate(preds: list[dict], targets: list[dict], batch_size: int = 3, **kwargs) -> dict[str, float]:
    metric = CocoMetrics(masks=True, **kwargs)
    for i in range(0, len(preds), batch_size):
        metric.update(preds[i:i + batch_size], targets[i:i + batch_size])
    return {key: float(value) for key, value in metric.compute().items()}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[dict, list[dict], list[dict]]:
    coco = make_coco()
    targets = dataset_targets(tmp_path_factory.mktemp("instances"), coco)
    return coco, targets, make_preds(targets)


def test_masks_decode_polygons_and_both_rles_in_json_order(case, tmp_path: Path) -> None:
    coco, targets, _ = case
    kinds = {type(a["segmentation"]["counts"]).__name__ if isinstance(a["segmentation"], dict) else "polygon"
             for a in coco["annotations"]}
    assert kinds == {"polygon", "str", "list"}  # every COCO mask format is in the case
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(path))
    for img, target in zip(coco["images"], targets):
        anns = reference.loadAnns(reference.getAnnIds(imgIds=[img["id"]]))
        assert target["masks"].shape == (len(anns), H, W) and target["masks"].dtype == torch.uint8
        for mask, ann in zip(target["masks"], anns):
            assert np.array_equal(mask.numpy(), reference.annToMask(ann))
        assert target["iscrowd"].tolist() == [a["iscrowd"] for a in anns]


def test_masks_follow_their_boxes_through_the_training_transforms(case, tmp_path: Path) -> None:
    coco, _, _ = case
    path = write_dataset(tmp_path, coco)
    index = load_coco(path, tmp_path, segmentation=True)
    flip = detection_transforms(True, hflip=1.0, photometric=0.0)
    (plain, flipped) = (CocoDetectionDataset(index, masks=True)[1][1], CocoDetectionDataset(index, flip, True)[1][1])
    assert torch.equal(flipped["masks"], plain["masks"].flip(-1))
    assert torch.allclose(flipped["boxes"][:, [0, 2]], W - plain["boxes"][:, [2, 0]])
    # crowd regions stay in the target (the evaluator needs them) and leave training with their masks
    crowded = next(t for t in (CocoDetectionDataset(index, masks=True)[i][1] for i in range(len(index.images)))
                   if t["iscrowd"].any())
    kept = without_crowd(crowded)
    assert len(kept["masks"]) == len(kept["boxes"]) == int((crowded["iscrowd"] == 0).sum())


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_mask_and_box_ap_match_cocoeval(case, backend: str, tmp_path: Path) -> None:
    coco, targets, preds = case
    results = to_coco_results(preds, [img["id"] for img in coco["images"]], CATEGORY_IDS)
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)  # json-ready compressed RLE
    # as detectron2 does: for mask AP the results carry no box, so COCOeval sizes detections by mask area
    expected_segm = coco_eval(coco, [{k: v for k, v in r.items() if k != "bbox"} for r in results], tmp_path,
                              "segm")
    expected_bbox = coco_eval(coco, [{k: v for k, v in r.items() if k != "segmentation"} for r in results],
                              tmp_path, "bbox")
    got = evaluate(preds, targets, backend=backend)
    assert list(got) == list(COCO_KEYS) + [SEGM_PREFIX + k for k in COCO_KEYS]
    assert 0.2 < expected_segm["AP"] < 0.9 and min(expected_segm.values()) > 0  # every number means something
    assert {k.removeprefix(SEGM_PREFIX): v for k, v in got.items() if k.startswith(SEGM_PREFIX)} == \
        pytest.approx(expected_segm, abs=1e-6)
    assert {k: v for k, v in got.items() if not k.startswith(SEGM_PREFIX)} == pytest.approx(expected_bbox, abs=1e-6)


def test_mask_ap_sees_the_masks_not_the_boxes(case) -> None:
    """Masks moved inside unchanged boxes: box AP stays, mask AP drops."""
    _, targets, preds = case
    moved = [{**p, "masks": torch.roll(p["masks"], shifts=(6, 6), dims=(2, 3))} for p in preds]
    before, after = evaluate(preds, targets), evaluate(moved, targets)
    assert after["AP"] == before["AP"] and after["segm/AP"] < before["segm/AP"] - 0.1


@pytest.mark.slow  # ~13 s: each process imports torch, torchvision and Lightning
def test_ddp_two_processes_match_one(case, tmp_path: Path) -> None:
    _, targets, preds = case
    # 9 images over 2 ranks: rank 1 ends with a repeat of image 0; the masks travel as RLE tuples
    expected = evaluate(preds[:9], targets[:9])
    assert evaluate_on_two_processes(preds[:9], targets[:9], tmp_path, masks=True) == [expected, expected]


def test_synthetic_modal_masks(tmp_path: Path) -> None:
    """The instance set: the detection set's images, each object's mask what shows of it (no two overlap), its box
    and area those of the mask."""
    sizes = dict(num_classes=3, train_images=6, val_images=2, test_images=2, image_size=64, max_objects=4, seed=3)
    boxes_root, masks_root = synthetic_detection(**sizes), synthetic_detection(**sizes, visible_masks=True)
    assert boxes_root != masks_root
    for name in ("00000.png", "00005.png"):
        assert np.array_equal(np.asarray(Image.open(boxes_root / "train" / name)),
                              np.asarray(Image.open(masks_root / "train" / name)))
    index = load_coco(masks_root / "annotations" / "instances_train.json", masks_root / "train", segmentation=True)
    overlapping = 0
    for rec in index.images:
        masks = instance_masks(rec)
        assert (masks.sum(0) <= 1).all()  # modal: each pixel shows one object at most
        for mask, box, area in zip(masks, rec.boxes, rec.area):
            ys, xs = np.nonzero(mask)
            assert area == len(xs) > 0
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        whole = load_coco(boxes_root / "annotations" / "instances_train.json", boxes_root / "train",
                          segmentation=True).images[index.images.index(rec)]
        overlapping += int(instance_masks(whole).sum(0).max() > 1)
    assert overlapping  # the case has shapes covering others, where whole polygons would overlap


def test_drawn_masks_take_their_class_colour() -> None:
    image = torch.full((3, 80, 80), 0.5)
    mask = torch.zeros(1, 1, 80, 80)
    mask[..., 20:70, 20:70] = 0.9
    pred = {"boxes": torch.tensor([[20.0, 20.0, 70.0, 70.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([2]), "masks": mask}
    out = draw_detections(image, pred, None, ["a", "b"], score_threshold=0.3).float()
    inside, outside = out[:, 60, 45], out[:, 75, 75]  # below the label, and outside the box
    expected = 0.55 * 128 + 0.45 * torch.tensor(class_color(2), dtype=torch.float32)
    assert torch.allclose(inside, expected, atol=1.5) and outside.tolist() == [128, 128, 128]

