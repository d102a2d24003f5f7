"""Detection evaluation and drawing: COCO metrics agree with pycocotools' COCOeval, also synced over two
processes; COCO results export; drawn boxes have the right colours."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchmetrics import MetricCollection

from tasks.detection.evaluation import COCO_KEYS, CocoMetrics, to_coco_results
from tasks.detection.visualize import (
    GT_COLOR,
    class_color,
    detection_grid,
    draw_detections,
)
from tasks.drawing import save_png

CATEGORY_IDS = [3, 7, 12]  # non-contiguous on purpose: label i + 1 is CATEGORY_IDS[i]
STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}
IMAGE_SIZE = 320


def make_coco(seed: int = 0, num_images: int = 12) -> dict:
    """GT json: non-contiguous image and category ids, small/medium/large boxes whose `area` (as for a mask)
    is below the box area, crowd boxes, and one image (the last) without annotations."""
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + 7 * i, "file_name": f"{i}.png", "width": IMAGE_SIZE, "height": IMAGE_SIZE}
              for i in range(num_images)]
    annotations = []
    for img in images[:-1]:
        for _ in range(rng.integers(2, 7)):
            side = float(rng.choice([rng.uniform(8, 45), rng.uniform(45, 120), rng.uniform(120, 200)]))
            w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, IMAGE_SIZE - w), rng.uniform(0, IMAGE_SIZE - h)
            annotations.append({
                "id": len(annotations) + 1, "image_id": img["id"], "category_id": int(rng.choice(CATEGORY_IDS)),
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": round(w * h * rng.uniform(0.6, 1.0), 2), "iscrowd": int(rng.random() < 0.1),
            })
    categories = [{"id": c, "name": f"shape{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def targets_from_coco(coco: dict) -> list[dict]:
    """What the data module yields per image: xyxy float32 boxes, contiguous labels, iscrowd, area, image_id."""
    label_of = {c: i + 1 for i, c in enumerate(CATEGORY_IDS)}
    targets = []
    for img in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        targets.append({
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
            "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([a["iscrowd"] for a in anns], dtype=torch.int64),
            "area": torch.tensor([a["area"] for a in anns], dtype=torch.float32),
            "image_id": img["id"],
        })
    return targets


def make_preds(targets: list[dict], seed: int = 0) -> list[dict]:
    """Jittered GT boxes (a tenth with a wrong label), false positives, random scores; image 0 gets none."""
    gen = torch.Generator().manual_seed(seed)
    num_classes = len(CATEGORY_IDS)
    preds = []
    for i, t in enumerate(targets):
        found = torch.rand(len(t["boxes"]), generator=gen) < 0.85
        hits, labels = t["boxes"][found], t["labels"][found]
        wh = (hits[:, 2:] - hits[:, :2]).repeat(1, 2)
        hits = hits + 0.1 * wh * torch.randn(hits.shape, generator=gen)
        wrong = torch.rand(len(labels), generator=gen) < 0.1
        labels = torch.where(wrong, torch.randint(1, num_classes + 1, labels.shape, generator=gen), labels)
        xy = torch.rand(int(torch.randint(0, 5, (1,), generator=gen)), 2, generator=gen) * 250
        false_pos = torch.cat([xy, xy + 10 + torch.rand(len(xy), 2, generator=gen) * 60], dim=1)
        boxes = torch.cat([hits, false_pos]).clamp(0, IMAGE_SIZE)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = torch.cat([labels, torch.randint(1, num_classes + 1, (len(xy),), generator=gen)])
        n = 0 if i == 0 else len(boxes)
        preds.append({"boxes": boxes[:n], "scores": torch.rand(n, generator=gen), "labels": labels[:n]})
    return preds


def coco_eval_stats(coco: dict, preds: list[dict], tmp_path: Path) -> dict[str, float]:
    """The reference: pycocotools' COCOeval on the json file and the exported results."""
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    results = to_coco_results(preds, [img["id"] for img in coco["images"]], CATEGORY_IDS)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: float(evaluator.stats[i]) for key, i in STATS_INDEX.items()}


def evaluate(preds: list[dict], targets: list[dict], batch_size: int = 4, **kwargs) -> dict[str, float]:
    metric = CocoMetrics(**kwargs)
    for i in range(0, len(preds), batch_size):
        metric.update(preds[i:i + batch_size], targets[i:i + batch_size])
    return {key: float(value) for key, value in metric.compute().items()}


@pytest.fixture(scope="module")
def case() -> tuple[dict, list[dict], list[dict]]:
    coco = make_coco()
    targets = targets_from_coco(coco)
    return coco, targets, make_preds(targets)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_matches_pycocotools(case, backend: str, tmp_path: Path) -> None:
    coco, targets, preds = case
    expected = coco_eval_stats(coco, preds, tmp_path)
    got = evaluate(preds, targets, backend=backend)
    assert list(got) == list(COCO_KEYS) == list(STATS_INDEX)
    assert 0.1 < expected["AP"] < 0.9 and min(expected.values()) > 0  # a case where every number means something
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("drop, changed", [("area", ["APs", "APm"]), ("iscrowd", ["AP", "AR100"])])
def test_case_depends_on_area_and_crowd(case, drop: str, changed: list[str]) -> None:
    """The agreement above would catch a metric that ignored the json's area or the crowd flags."""
    _, targets, preds = case
    full = evaluate(preds, targets)
    partial = evaluate(preds, [{k: v for k, v in t.items() if k != drop} for t in targets])
    assert all(abs(full[k] - partial[k]) > 1e-3 for k in changed)


def test_repeated_and_shuffled_images_count_once(case) -> None:
    """DistributedSampler repeats images to fill the last batch and interleaves the ranks' images."""
    _, targets, preds = case
    order = [5, 0, 11, 3, 3, 7, 1, 10, 2, 9, 4, 6, 8, 0, 5]
    assert evaluate([preds[i] for i in order], [targets[i] for i in order]) == evaluate(preds, targets)


def test_empty_predictions_and_targets() -> None:
    box = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
    target = {"boxes": box, "labels": torch.tensor([1]), "iscrowd": torch.tensor([0]),
              "area": torch.tensor([2000.0]), "image_id": 1}
    empty_target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                    "iscrowd": torch.zeros(0, dtype=torch.int64), "area": torch.zeros(0), "image_id": 2}
    no_pred = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    hit = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    missed = evaluate([no_pred, no_pred], [target, empty_target])
    assert missed == {k: (-1.0 if k in ("APs", "APl") else 0.0) for k in COCO_KEYS}  # no small/large GT: -1
    assert evaluate([hit, no_pred], [target, empty_target])["AP"] == pytest.approx(1.0)
    false_pos = {**hit, "scores": torch.tensor([0.5])}  # on the image without GT, below the true positive
    assert evaluate([hit, false_pos], [target, empty_target])["AP"] == pytest.approx(1.0)
    assert evaluate([false_pos, {**hit, "scores": torch.tensor([0.95])}], [target, empty_target])["AP"] == 0.5
    assert set(evaluate([hit], [empty_target]).values()) == {-1.0}  # no ground truth at all: COCO's -1


def test_update_accepts_the_data_contract() -> None:
    """BoundingBoxes from transforms v2, int image ids, float32/int64 tensors; works in a MetricCollection."""
    from torchvision import tv_tensors

    boxes = tv_tensors.BoundingBoxes([[4.0, 4.0, 40.0, 40.0]], format="XYXY", canvas_size=(64, 64))
    target = {"boxes": boxes, "labels": torch.tensor([2]), "iscrowd": torch.tensor([0]),
              "area": torch.tensor([1296.0]), "image_id": 7}
    pred = {"boxes": boxes.clone(), "scores": torch.tensor([0.5]), "labels": torch.tensor([2])}
    metrics = MetricCollection({"coco": CocoMetrics()}).clone(prefix="val/")
    metrics.update([pred], [target])
    result = metrics.compute()
    assert sorted(result) == sorted(f"val/{k}" for k in COCO_KEYS)
    assert result["val/APm"].dtype == torch.float32 and result["val/APm"].shape == () and result["val/APm"] == 1.0
    assert type(metrics["coco"].groundtruth_box[0]) is torch.Tensor  # no tv_tensor subclass in the DDP state


def test_to_coco_results() -> None:
    pred = {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.0, 0.0, 5.0, 5.0]]),
            "scores": torch.tensor([0.75, 0.5]), "labels": torch.tensor([3, 1])}
    assert to_coco_results([pred], [42], CATEGORY_IDS) == [
        {"image_id": 42, "category_id": 12, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.75},
        {"image_id": 42, "category_id": 3, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5},
    ]
    with pytest.raises(ValueError, match=r"labels \[0\] are outside 1..3"):
        to_coco_results([{**pred, "labels": torch.tensor([0, 1])}], [42], CATEGORY_IDS)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One rank: DistributedSampler's share of the images of `out_dir/case.pt` (repeats pad the last), synced
    compute()."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        preds, targets, kwargs = torch.load(Path(out_dir) / "case.pt", weights_only=False)
        order = list(range(len(targets)))
        order += order[: -len(order) % world_size]
        mine = order[rank::world_size]
        result = evaluate([preds[i] for i in mine], [targets[i] for i in mine], batch_size=2, **kwargs)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def evaluate_on_two_processes(preds: list[dict], targets: list[dict], tmp_path: Path, **kwargs) -> list[dict]:
    """What each of 2 gloo processes computes for the case, sharing it as DistributedSampler would."""
    torch.save((preds, targets, kwargs), tmp_path / "case.pt")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow  # ~13 s: each process imports torch, torchvision and Lightning
def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    targets = targets_from_coco(make_coco(num_images=13))  # 13 images over 2 ranks: the sampler repeats one
    preds = make_preds(targets)
    expected = evaluate(preds, targets)
    assert evaluate_on_two_processes(preds, targets, tmp_path) == [expected, expected]


def test_draw_detections_colours() -> None:
    image = torch.full((3, 64, 64), 0.5)
    target = {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([1])}
    pred = {"boxes": torch.tensor([[34.0, 34.0, 60.0, 60.0], [34.0, 4.0, 60.0, 28.0]]),
            "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([2, 1])}
    out = draw_detections(image, pred, target, ["circle", "square"], score_threshold=0.3)
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    pixel = lambda y, x: tuple(out[:, y, x].tolist())  # noqa: E731
    assert pixel(28, 16) == GT_COLOR  # GT bottom edge
    assert pixel(60, 47) == pixel(59, 47) == class_color(2)  # prediction bottom edge, 2 px wide
    assert pixel(28, 47) == (128, 128, 128)  # the prediction below the score threshold is not drawn
    assert pixel(16, 16) == (128, 128, 128)  # inside the GT box: untouched
    assert (out[:, 36:50, 36:60] == 0).all(dim=0).any()  # the black label text "square 0.90"


def test_detection_grid_upscales_and_saves(tmp_path: Path) -> None:
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    preds = [{"boxes": torch.tensor([[10.0, 10.0, 42.0, 42.0]]), "scores": torch.tensor([0.8]),
              "labels": torch.tensor([1])}] * 2
    grid = detection_grid(images, preds, targets, ["circle"], upscale_to=128)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 + 128 + 2, 2 + 2 * (128 + 2))
    assert tuple(grid[:, 2 + 16, 2 + 40].tolist()) == GT_COLOR  # GT top edge, at twice the size
    assert tuple(grid[:, 2 + 84, 2 + 60].tolist()) == class_color(1)  # prediction bottom edge (y 42 -> 84)
    path = save_png(grid, tmp_path / "grids" / "val.png")
    assert np.asarray(Image.open(path)).shape == (132, 262, 3)
