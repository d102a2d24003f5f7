"""COCO detection loading on PNG + json files the tests write, its bad inputs, transforms, and the synthetic set."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision import tv_tensors

from backbones.hydra_configs import compose_config
from data import CocoDetectionDataModule, CocoSegmentationDataModule, DataError
from data.detection import CocoDetectionDataset
from data.synthetic import synthetic_detection
from data.transforms import detection_transforms

CATEGORIES = [{"id": 12, "name": "fox"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]  # unsorted, gaps
SIZES = {1: (40, 30), 2: (32, 48), 3: (36, 36)}  # image id -> (width, height)


def annotations() -> list[dict]:
    """Image 1: a cat and a fox; image 2: a crowd of dogs; image 3: no objects."""
    return [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8], "area": 60.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 12, "bbox": [20, 5, 12, 10], "area": 100.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 32, 20], "area": 500.0, "iscrowd": 1},
    ]


def write_split(image_dir: Path, json_path: Path, anns: list[dict] | None = None) -> Path:
    """PNGs `<id>.png` of SIZES in `image_dir` and their instances json at `json_path`."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for iid, (w, h) in SIZES.items():
        Image.fromarray(np.full((h, w, 3), 40 * iid, np.uint8)).save(image_dir / f"{iid}.png")
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in SIZES.items()]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": annotations() if anns is None else anns,
                                     "categories": CATEGORIES}))
    return json_path


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """root/annotations/instances_{train,val}.json + root/{train,val}/*.png (no test split)."""
    for split in ("train", "val"):
        write_split(tmp_path / "coco" / split, tmp_path / "coco" / "annotations" / f"instances_{split}.json")
    return tmp_path / "coco"


def dm(root: Path | None, **kw) -> CocoDetectionDataModule:
    return CocoDetectionDataModule(str(root) if root else None, batch_size=3, num_workers=0, **kw)


def edit_train(root: Path, **changes) -> Path:
    """Rewrite root's train json with some top-level sections replaced."""
    path = root / "annotations" / "instances_train.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def test_coco_layout_items_labels_crowd_and_negatives(coco):
    module = dm(coco)
    module.prepare_data()
    assert module.class_names == ["cat", "dog", "fox"] and module.category_ids == [3, 7, 12]
    assert module.annotation_file("test") == module.annotation_file("val") == coco / "annotations/instances_val.json"
    module.setup("fit")
    items = {t["image_id"]: (img, t) for img, t in module.val_dataloader().dataset}
    img, t = items[1]
    assert img.shape == (3, 30, 40) and img.dtype == torch.float32 and 0 <= img.min() <= img.max() <= 1
    assert t["boxes"].dtype == torch.float32 and t["boxes"].tolist() == [[2, 3, 12, 11], [20, 5, 32, 15]]
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [1, 3]  # cat = id 3 -> 1, fox = id 12 -> 3
    assert t["area"].dtype == torch.float32 and t["area"].tolist() == [60, 100]
    assert items[2][1]["iscrowd"].tolist() == [1] and items[2][1]["labels"].tolist() == [2]  # crowd kept, flagged
    negative = items[3][1]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)
    assert negative["labels"].dtype == negative["iscrowd"].dtype == torch.int64


def test_explicit_paths_override_the_layout(tmp_path, coco):
    test_json = write_split(tmp_path / "elsewhere" / "imgs", tmp_path / "elsewhere" / "test.json")
    module = dm(None, train_images=str(coco / "train"),
                train_annotations=str(coco / "annotations/instances_train.json"),
                val_images=str(coco / "val"), val_annotations=str(coco / "annotations/instances_val.json"),
                test_images=str(tmp_path / "elsewhere" / "imgs"), test_annotations=str(test_json))
    assert module.annotation_file("test") == test_json
    module.setup("test")
    assert len(module.test_dataloader().dataset) == 3 and module.class_names == ["cat", "dog", "fox"]
    layout = dm(coco, val_annotations=str(test_json), val_images=str(tmp_path / "elsewhere" / "imgs"))
    assert layout.annotation_file("val") == test_json and layout.annotation_file("train").parent == coco / "annotations"


def test_batches_of_variable_size_images(coco):
    module = dm(coco)
    module.setup("fit")
    images, targets = next(iter(module.train_dataloader()))
    assert isinstance(images, tuple) and isinstance(targets, tuple) and len(images) == len(targets) == 3
    assert sorted(tuple(i.shape) for i in images) == [(3, 30, 40), (3, 36, 36), (3, 48, 32)]
    assert sorted(t["image_id"] for t in targets) == [1, 2, 3]


def test_batches_from_a_worker(coco):
    module = CocoDetectionDataModule(str(coco), batch_size=2, num_workers=1)
    module.setup("validate")
    batches = list(module.val_dataloader())
    assert [len(images) for images, _ in batches] == [2, 1]
    assert batches[0][1][0]["boxes"].shape == (2, 4)


def box_image(width: int = 50, height: int = 40, box=(5, 10, 20, 30)) -> Image.Image:
    """Black image with a white rectangle filling `box` (xyxy)."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[box[1]:box[3], box[0]:box[2]] = 255
    return Image.fromarray(arr)


def target(box=(5, 10, 20, 30), size=(40, 50)) -> dict:
    return {"boxes": tv_tensors.BoundingBoxes(torch.tensor([box], dtype=torch.float32), format="XYXY",
                                              canvas_size=size),
            "labels": torch.tensor([2]), "iscrowd": torch.tensor([0]),
            "area": torch.tensor([300.0]), "image_id": 9}


def test_train_flip_moves_boxes_with_the_pixels():
    image, t = detection_transforms(True, hflip=1.0, photometric=0.0)(box_image(), target())
    assert t["boxes"].tolist() == [[30, 10, 45, 30]]  # x -> 50 - x
    x0, y0, x1, y1 = (int(v) for v in t["boxes"][0])
    assert image[:, y0:y1, x0:x1].min() == 1 and image.sum() == 3 * (x1 - x0) * (y1 - y0)
    assert t["labels"].tolist() == [2] and t["area"].tolist() == [300] and t["image_id"] == 9


def test_zoom_out_and_crop_keep_boxes_on_content_and_area_with_boxes():
    torch.manual_seed(0)
    tf = detection_transforms(True, hflip=0.5, photometric=1.0, zoom_out=1.0, max_zoom=3.0, iou_crop=True)
    sizes = set()
    for _ in range(20):
        image, t = tf(box_image(), target())
        sizes.add(tuple(image.shape))
        assert len(t["boxes"]) == len(t["labels"]) == len(t["area"]) == len(t["iscrowd"]) and "box_area" not in t
        for (x0, y0, x1, y1), area in zip(t["boxes"].tolist(), t["area"].tolist()):
            assert area == pytest.approx((x1 - x0) * (y1 - y0), rel=1e-4)  # area equalled the box area
            inside = image[:, round(y0) + 1:round(y1) - 1, round(x0) + 1:round(x1) - 1]
            assert inside.numel() == 0 or inside.mean(0).min() > 0.5  # still the white rectangle
    assert len(sizes) > 5  # the canvas size really varies


def test_eval_transform_changes_nothing_but_dtype():
    image, t = detection_transforms(False, hflip=1.0)(box_image(), target())
    assert t["boxes"].tolist() == [[5, 10, 20, 30]] and image.shape == (3, 40, 50) and image.dtype == torch.float32


@pytest.mark.parametrize("damage, message", [
    (lambda root: edit_train(root).write_text('{"images": [ '), r"instances_train.json is not valid JSON"),
    (lambda root: edit_train(root, annotations=None), r"instances_train.json has no 'annotations' list"),
    (lambda root: (root / "train" / "2.png").unlink(), r"instances_train.json: image file .*train/2.png \(image id 2\) "
                                                       r"does not exist; put the images in"),
    (lambda root: edit_train(root, annotations=[{**annotations()[0], "bbox": [30, 0, 20, 10], "id": 17}]),
     r"instances_train.json: annotation 17 \(image id 1\): bbox \[30, 0, 20, 10\] .* outside the 40x30 image; fix"),
    (lambda root: edit_train(root, annotations=[{**annotations()[0], "bbox": [3, 3, 0, 5], "id": 17}]),
     r"instances_train.json: annotation 17 \(image id 1\): bbox .* zero or negative width/height"),
    (lambda root: edit_train(root, annotations=[{**annotations()[0], "category_id": 99, "id": 17}]),
     r"instances_train.json: annotation 17 \(image id 1\) has category_id 99, which is not in \"categories\""),
    (lambda root: edit_train(root, annotations=[{**annotations()[0], "image_id": 42, "id": 17}]),
     r"instances_train.json: annotation 17 refers to image id 42, which is not in \"images\""),
    (lambda root: edit_train(root, images=[{"id": 1, "file_name": "1.png", "height": 30}]),
     r"instances_train.json: image id 1 needs an integer field 'width'"),
    (lambda root: edit_train(root, annotations=[annotations()[0], {**annotations()[1], "id": 1}]),
     r"instances_train.json: annotation id 1 appears twice"),
], ids=["syntax", "no-annotations", "missing-image", "outside", "degenerate", "unknown-category", "unknown-image",
        "no-width", "duplicate-id"])
def test_bad_input_names_file_id_and_fix(coco, damage, message):
    damage(coco)
    with pytest.raises(DataError, match=message):
        dm(coco).setup("fit")


def test_val_category_unknown_to_train(coco):
    path = coco / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 99, "name": "wolf"})
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances_val.json: annotation 1 \(image id 1\) has category 99 \('wolf'\)"):
        dm(coco).setup("fit")


def test_image_size_disagreeing_with_json(coco):
    Image.new("RGB", (41, 30)).save(coco / "train" / "1.png")
    module = dm(coco)
    module.setup("fit")
    with pytest.raises(DataError, match=r"train/1.png is 41x30 but .*instances_train.json says 40x30 \(image id 1\)"):
        CocoDetectionDataset(module.source.index("train"))[0]


def test_rounding_overshoot_is_clamped(coco):
    edit_train(coco, annotations=[{**annotations()[0], "bbox": [30.2, 0, 10.3, 30.5]}])
    module = dm(coco)
    module.setup("fit")
    assert module.source.index("train").images[0].boxes.tolist() == [[pytest.approx(30.2), 0, 40, 30]]


def test_drop_bad_boxes_drops_and_counts(coco, caplog):
    bad = [{**annotations()[0], "id": 17, "bbox": [30, 0, 20, 10]},
           {**annotations()[0], "id": 18, "bbox": [1, 1, 5, -1]}]
    path = edit_train(coco, annotations=annotations() + bad)
    module = dm(coco, drop_bad_boxes=True)
    module.setup("fit")
    assert sum(len(i.boxes) for i in module.source.index("train").images) == 3
    assert f"dropped 2 bad boxes from {path} (first: annotation 17 (image id 1): bbox [30, 0, 20, 10]" in caplog.text


def test_root_required_without_synthetic():
    with pytest.raises(DataError, match=r"data.root is not set and data.val_images, data.val_annotations are missing"):
        CocoDetectionDataModule(None, train_images="/a", train_annotations="/a.json")


def bright(img: np.ndarray) -> np.ndarray:
    """Shape pixels: `bright_colour` sets one channel to 255, which the dim noisy background never reaches."""
    return img.max(-1) == 255


def test_synthetic_generator_writes_coco_once(isolated_cache):
    kw = dict(num_classes=4, train_images=12, val_images=3, test_images=2, image_size=64, seed=3)
    root = synthetic_detection(**kw)
    assert root.is_relative_to(isolated_cache)
    assert [len(list((root / s).glob("*.png"))) for s in ("train", "val", "test")] == [12, 3, 2]
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "circle"), (2, "triangle"), (3, "square"),
                                                                     (4, "star")]
    per_image = [sum(a["image_id"] == im["id"] for a in data["annotations"]) for im in data["images"]]
    assert max(per_image) <= 4 and 0 in per_image and len(data["annotations"]) > 12
    for ann in data["annotations"]:
        image = next(im for im in data["images"] if im["id"] == ann["image_id"])
        shape = bright(np.asarray(Image.open(root / "train" / image["file_name"])))
        x, y, w, h = ann["bbox"]
        assert 0.1 * 64 <= max(w, h) <= 0.47 * 64 and ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 4
        inside = shape[y:y + h, x:x + w]
        assert inside.mean() > 0.3 and ann["area"] <= w * h  # mostly shape
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; ground truth as detections -> AP 1
        gt = COCO(str(root / "annotations" / "instances_train.json"))
        evaluation = COCOeval(gt, gt.loadRes([{**a, "score": 1.0} for a in data["annotations"]]), "bbox")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert evaluation.stats[0] == 1.0
    stamp = (root / "train" / "00000.png").stat().st_mtime_ns
    assert synthetic_detection(**kw) == root  # cached: not rewritten
    assert (root / "train" / "00000.png").stat().st_mtime_ns == stamp
    assert synthetic_detection(**{**kw, "seed": 4}) != root  # different settings, different folder


def test_synthetic_datamodule_generates_on_prepare():
    module = dm(None, synthetic=dict(num_classes=2, train_images=6, val_images=3, test_images=3, image_size=48))
    module.prepare_data()
    assert module.class_names == ["circle", "triangle"] and module.category_ids == [1, 2]
    assert module.annotation_file("test").name == "instances_test.json"
    module.setup("fit")
    images, targets = next(iter(module.train_dataloader()))
    assert images[0].shape == (3, 48, 48) and all(set(t["labels"].tolist()) <= {1, 2} for t in targets)


@pytest.mark.parametrize("overrides", [["task=detection", "data=coco", "data.root=/x"],
                                       ["task=detection", "data=synthetic_detection"]])
def test_configs_compose_and_instantiate(tmp_path, overrides):
    module = instantiate(compose_config(overrides, output_dir=tmp_path).data)
    assert isinstance(module, CocoDetectionDataModule) and module.augment["hflip"] == 0.5
    assert (module.source.root, module.source.synthetic) == ((Path("/x"), None) if "data=coco" in overrides else
                                               (None, {"kind": "shapes", "num_classes": 3, "train_images": 240,
                                                       "val_images": 60, "test_images": 60, "image_size": 128,
                                                       "max_objects": 4, "seed": 0}))


def test_coco_config_follows_the_task(tmp_path):
    """data=coco is one choice; its task-specific options come from conf/task_data/coco_<task>.yaml."""
    seg = compose_config(["task=segmentation", "data=coco", "data.root=/x"], output_dir=tmp_path).data
    assert seg._target_ == "data.CocoSegmentationDataModule"
    assert set(seg.augment) == {"enabled", "scale", "hflip", "flip_check", "photometric"} and seg.ignore_index == 255
    module = instantiate(seg)
    assert isinstance(module, CocoSegmentationDataModule) and module.source.root == Path("/x")
    det = compose_config(["task=detection", "data=coco", "data.root=/x"], output_dir=tmp_path).data
    assert det._target_ == "data.CocoDetectionDataModule" and "zoom_out" in det.augment and "scale" not in det.augment
