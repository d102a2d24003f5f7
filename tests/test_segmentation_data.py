"""Semantic segmentation data on PNGs and json the tests write: mask folders, COCO instances painted into masks,
joint transforms, padding collate, bad inputs, and the synthetic set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from backbones.catalog import IMAGENET_MEAN
from data import CocoSegmentationDataModule, DataError, MaskDataModule
from data.coco import load_coco
from data.masks import coco_mask
from data.preprocessing import Preprocessing
from data.segmentation import collate
from data.synthetic import segmentation_image, synthetic_segmentation
from data.transforms import segmentation_transforms

SIZES = {"a": (20, 24), "b": (16, 28), "c": (18, 18)}  # stem -> (height, width)


def pattern(stem: str) -> np.ndarray:
    """A (H, W) mask with values 0, 1, 2 in diagonal stripes (offset per stem) and an ignored 3x3 corner."""
    h, w = SIZES[stem]
    ys, xs = np.mgrid[:h, :w]
    mask = ((xs + ys) // 3 + "abc".index(stem)) % 3
    mask[:3, :3] = 255
    return mask.astype(np.uint8)


def image_of(mask: np.ndarray, stem: str) -> np.ndarray:
    """RGB whose red channel is 40 x the mask value (200 where ignored) and green tells the stem apart."""
    red = np.where(mask == 255, 200, mask.astype(np.int64) * 40).astype(np.uint8)
    return np.stack([red, np.full_like(red, 30 * (1 + "abc".index(stem))), np.zeros_like(red)], -1)


def save(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_masks(root: Path, splits=("train", "val"), classes: str | None = "background\ncat\ndog\n") -> Path:
    """`root/<split>/images/{a.png, b.bmp, c.png}` + `root/<split>/masks/{a,b,c}.png` + `root/classes.txt`."""
    for split in splits:
        for stem in SIZES:
            mask = pattern(stem)
            save(image_of(mask, stem), root / split / "images" / f"{stem}.{'bmp' if stem == 'b' else 'png'}")
            save(mask, root / split / "masks" / f"{stem}.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def masks_dm(root: Path | None, **kw) -> MaskDataModule:
    kw = {"image_size": 32, "batch_size": 3, "num_workers": 0, **kw}
    return MaskDataModule(str(root) if root else None, **kw)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_masks(tmp_path / "ds")


def red_as_mask(image: torch.Tensor) -> torch.Tensor:
    """Undo `image_of` on a transformed image (pixel / 255: the pipeline does not normalise): the mask it was drawn
    from."""
    red = (image[0] * 255).round().long()
    return torch.where(red == 200, 255, red // 40)


# --- mask folders ----------------------------------------------------------------------------------------------

def test_mask_folder_items_pair_by_stem_and_keep_values(folder):
    module = masks_dm(folder)
    module.setup("fit")
    assert module.class_names == ["background", "cat", "dog"] and module.ignore_index == 255
    val = module.val_dataloader().dataset
    assert [(i.name, m.name) for i, m in val.index.samples] == [("a.png", "a.png"), ("b.bmp", "b.png"),
                                                                 ("c.png", "c.png")]
    for k, stem in enumerate("abc"):
        image, mask = val[k]
        assert image.dtype == torch.float32 and image.shape == (3, *SIZES[stem])  # eval: native size
        assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(pattern(stem)).long())
        assert torch.equal(red_as_mask(image), mask)
        assert round(float(image[1, 0, 0]) * 255) == 30 * (1 + k)  # the image of this stem, not another one
    assert sorted(torch.unique(mask).tolist()) == [0, 1, 2, 255]


def test_test_split_used_when_present_else_val(tmp_path):
    root = make_masks(tmp_path / "ds")
    module = masks_dm(root)
    module.setup("test")
    assert module.test_dataloader().dataset.index.split_dir == root / "val"
    make_masks(root, splits=("test",))
    module = masks_dm(root)
    module.setup("test")
    assert module.test_dataloader().dataset.index.split_dir == root / "test"


def test_classes_argument_wins_over_the_file(folder):
    assert masks_dm(folder, classes=["bg", "x", "y", "z"]).class_names == ["bg", "x", "y", "z"]
    (folder / "classes.txt").unlink()
    module = masks_dm(folder, classes=["bg", "x", "y"])
    module.setup("fit")
    assert module.class_names == ["bg", "x", "y"]


def test_eval_size_and_batches_padded_to_32(folder):
    module = masks_dm(folder, batch_size=3)
    module.setup("fit")
    images, masks = next(iter(module.val_dataloader()))
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 32, 32) and masks.dtype == torch.int64
    assert (masks[1, 16:] == 255).all() and (masks[1, :, 28:] == 255).all()
    mean_colour = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)  # 0 once the model normalises it
    assert torch.allclose(images[1, :, 16:], mean_colour.expand(3, 16, 32))
    assert torch.equal(masks[1, :16, :28], torch.from_numpy(pattern("b")).long())
    images, masks = next(iter(masks_dm(folder, eval_size=36).val_dataloader()))
    assert images.shape == (3, 3, 64, 64)  # short sides 36: a 36x43, b 36x63, c 36x36 -> padded to 64
    assert set(torch.unique(masks).tolist()) == {0, 1, 2, 255}


def test_train_batches_are_square_crops(folder):
    torch.manual_seed(0)
    images, masks = next(iter(masks_dm(folder, augment={"scale": [0.5, 2.0]}).train_dataloader()))
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 32, 32)
    assert set(torch.unique(masks).tolist()) <= {0, 1, 2, 255}


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "train" / "masks" / "b.png").unlink(),
     r"images without a mask: .*train/images/b.bmp \(1 in all\) with no file of the same name in .*train/masks; "
     r"add a mask"),
    (lambda root: (root / "val" / "images" / "c.png").unlink(),
     r"masks without an image: .*val/masks/c.png \(1 in all\) with no file of the same name in .*val/images; "
     r"rename the mask"),
    (lambda root: (root / "classes.txt").unlink(),
     r"class list .*ds/classes.txt does not exist; write one class name per line .* or pass data.classes="),
    (lambda root: (root / "classes.txt").write_text("background\n\ndog\n"),
     r"classes.txt: line 2 is blank"),
    (lambda root: save(pattern("a"), root / "train" / "masks" / "a.jpg"),
     r".*train/masks/a.jpg and .*train/masks/a.png have the same name|"
     r".*train/masks/a.png and .*train/masks/a.jpg have the same name"),
    (lambda root: [p.unlink() for p in (root / "val" / "masks").iterdir()] and (root / "val" / "masks").rmdir(),
     r"masks folder .*val/masks does not exist; a segmentation split needs images/ and masks/"),
], ids=["image-without-mask", "mask-without-image", "no-classes-file", "blank-class", "same-stem", "no-masks-dir"])
def test_pairing_and_class_problems_found_at_setup(folder, damage, message):
    damage(folder)
    with pytest.raises(DataError, match=message):
        masks_dm(folder).setup("fit")


def test_too_many_classes_for_the_ignore_value(folder):
    with pytest.raises(DataError, match=r"data.classes lists 4 classes but pixel value 3 means ignore"):
        masks_dm(folder, classes=list("abcd"), ignore_index=3).setup("fit")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((20, 25), np.uint8), r"mask .*train/masks/a.png is 25x20 but its image .*train/images/a.png is 24x20; "
                                   r"a mask must have its image's size"),
    (np.where(np.eye(20, 24, dtype=bool), 9, np.where(pattern("a") == 2, 7, pattern("a"))).astype(np.uint8),
     r"mask .*train/masks/a.png has pixel values \[7, 9\] but there are 3 classes \(values 0..2\) and 255 means "
     r"ignore; fix the mask"),
    (np.zeros((20, 24, 3), np.uint8), r"mask .*train/masks/a.png is a RGB image \(3 channels\); a mask must be a "
                                      r"single-channel PNG"),
], ids=["size", "values", "rgb"])
def test_mask_problems_found_at_setup_and_when_loaded_name_the_file(folder, bad, message):
    save(bad, folder / "train" / "masks" / "a.png")
    with pytest.raises(DataError, match=message):
        masks_dm(folder).setup("fit")  # every mask is decoded at setup: the run stops before the first step
    with pytest.raises(DataError, match=message):
        masks_dm(folder).dataset("train", train=False)[0]  # and when an item is loaded


def test_palette_and_16_bit_masks_read_as_indices(folder):
    palette = Image.fromarray(pattern("a")).convert("P")  # P: pixel values are palette indices
    palette.save(folder / "train" / "masks" / "a.png")
    Image.fromarray(pattern("b").astype(np.uint16)).save(folder / "train" / "masks" / "b.png")
    module = masks_dm(folder)
    assert Image.open(folder / "train" / "masks" / "b.png").mode.startswith("I")
    for k, stem in enumerate("ab"):
        assert torch.equal(module.dataset("train", train=False)[k][1], torch.from_numpy(pattern(stem)).long())


def test_root_required_without_synthetic():
    with pytest.raises(DataError, match=r"data.root is not set: pass data.root="):
        MaskDataModule()


# --- transforms and collate ---------------------------------------------------------------------------------------

def blocks(height: int, width: int, cell: int = 8) -> np.ndarray:
    """Mask of `cell`-pixel squares with values 0, 1, 2, 255 in turn."""
    ys, xs = np.mgrid[:height, :width]
    return np.array([0, 1, 2, 255], np.uint8)[(ys // cell + 2 * (xs // cell)) % 4]


def transform_pair(mask: np.ndarray, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    tf = segmentation_transforms(kw.pop("train", True), kw.pop("image_size"), photometric=0.0, **kw)
    image, out = tf(Image.fromarray(image_of(mask, "a")), tv_tensors.Mask(torch.from_numpy(mask)))
    assert image.dtype == torch.float32 and out.dtype == torch.int64 and out.shape == image.shape[1:]
    return image, out


@pytest.mark.parametrize("seed", range(6))
def test_crop_flip_and_padding_keep_image_and_mask_aligned(seed):
    torch.manual_seed(seed)
    mask = blocks(24, 40)
    # scale 1 x the native short side: no resampling, so alignment must be exact
    image, out = transform_pair(mask, image_size=32, scale=(1.0, 1.0), hflip=0.5)
    assert image.shape == (3, 32, 32)
    padded = (image == 0).all(0)  # padding: black image, ignored mask
    assert padded.sum() == 8 * 32 and (out[padded] == 255).all()  # 24 rows of image, 8 of padding
    assert torch.equal(red_as_mask(image)[~padded], out[~padded])
    # what is kept is a window of the mask or of its mirror image
    rows = (~padded).any(1).nonzero().squeeze(1)
    kept = out[rows].numpy()
    windows = [m[:, x:x + 32] for m in (mask, mask[:, ::-1]) for x in range(40 - 32 + 1)]
    assert any(np.array_equal(kept, w) for w in windows)


def test_resize_uses_nearest_for_masks():
    torch.manual_seed(0)
    mask = blocks(32, 32)
    image, out = transform_pair(mask, image_size=32, scale=(2.0, 2.0), hflip=0.0)  # short side 64, crop 32
    up = torch.from_numpy(mask).long().repeat_interleave(2, 0).repeat_interleave(2, 1)  # nearest x2
    offsets = [(y, x) for y in range(33) for x in range(33) if torch.equal(out, up[y:y + 32, x:x + 32])]
    assert offsets, "the mask is not a window of the nearest-neighbour upscaled mask"
    # the bilinear image agrees with the mask away from the cell edges
    inner = torch.zeros(64, 64, dtype=torch.bool)
    for y in range(0, 64, 16):
        for x in range(0, 64, 16):
            inner[y + 2:y + 14, x + 2:x + 14] = True
    y, x = offsets[0]
    inner = inner[y:y + 32, x:x + 32]
    assert inner.sum() > 400 and torch.equal(red_as_mask(image)[inner], out[inner])


def test_eval_transform_resizes_only_when_asked():
    mask = blocks(24, 40)
    image, out = transform_pair(mask, train=False, image_size=16)
    assert image.shape == (3, 24, 40) and torch.equal(out, torch.from_numpy(mask).long())
    image, out = transform_pair(mask, train=False, image_size=16, eval_size=12)
    assert image.shape == (3, 12, 20) and set(torch.unique(out).tolist()) == {0, 1, 2, 255}


def test_photometric_changes_the_image_only():
    torch.manual_seed(0)
    mask = blocks(32, 32)
    tf = segmentation_transforms(True, 32, scale=(1.0, 1.0), hflip=0.0, photometric=1.0)
    image, out = tf(Image.fromarray(image_of(mask, "a")), tv_tensors.Mask(torch.from_numpy(mask)))
    assert torch.equal(out, torch.from_numpy(mask).long()) and not torch.equal(red_as_mask(image), out)


def test_collate_pads_to_a_multiple_with_ignore():
    a = (torch.ones(3, 30, 40), torch.zeros(30, 40, dtype=torch.int64))
    b = (torch.full((3, 50, 20), 2.0), torch.ones(50, 20, dtype=torch.int64))
    black = Preprocessing("segmentation", mean=(0.0, 0.0, 0.0), mask_pad_value=255)
    images, masks = collate([a, b], black)
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64) and masks.dtype == torch.int64
    assert images[0, :, :30, :40].eq(1).all() and images[0].sum() == 3 * 30 * 40
    assert masks[0, :30, :40].eq(0).all() and (masks[0] == 255).sum() == 64 * 64 - 30 * 40
    assert masks[1, :50, :20].eq(1).all() and (masks[1] == 255).sum() == 64 * 64 - 50 * 20
    images, masks = collate([a, b], Preprocessing("segmentation", size_divisibility=1, mask_pad_value=7))
    assert images.shape == (2, 3, 50, 40) and masks[0, 30:].eq(7).all() and masks[1, :, 20:].eq(7).all()
    # images are padded with the mean colour of the record (0 once the model normalises it)
    assert torch.allclose(images[1, :, 0, 39], torch.tensor(IMAGENET_MEAN))


def divisor(module, size_divisibility: int):
    """The data module with the record of a backbone whose size_divisibility is `size_divisibility`."""
    module.use_preprocessing(dataclasses.replace(module.record, size_divisibility=size_divisibility))
    return module


def test_loader_pads_with_the_datamodule_ignore_index(folder):
    (folder / "train" / "masks" / "a.png").write_bytes((folder / "train" / "masks" / "c.png").read_bytes())
    module = divisor(masks_dm(folder, classes=["a", "b", "c"], ignore_index=255), 1)
    _, masks = next(iter(module.val_dataloader()))
    assert masks.shape == (3, 20, 28)
    module = divisor(masks_dm(folder, ignore_index=255), 64)
    assert next(iter(module.val_dataloader()))[1].shape == (3, 64, 64)


# --- COCO instances -> semantic masks ---------------------------------------------------------------------------

# unsorted ids: labels follow the id order, cat 1, dog 2, fox 3
CATEGORIES = [{"id": 12, "name": "fox"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """COCO polygon of the pixels [y0:y1, x0:x1] (pycocotools fills up to, not including, x1 / y1)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def uncompressed(m: np.ndarray) -> dict:
    """Uncompressed RLE (column-major run lengths starting with a run of zeros), as in COCO's crowd annotations."""
    flat = m.flatten(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(m.shape), "counts": np.diff(np.concatenate([[0], edges])).tolist()}


def compressed(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def seg_annotations() -> list[dict]:
    """Image 1 (24x20): a small fox polygon listed before the large cat polygon under it, and a dog as compressed
    RLE. Image 2 (16x12): a dog as uncompressed RLE, and a crowd of cats over part of it."""
    return [
        {"id": 1, "image_id": 1, "category_id": 12, "bbox": [6, 4, 4, 4], "segmentation": rect(6, 4, 10, 8)},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 2, 14, 10], "segmentation": rect(2, 2, 16, 12)},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [18, 14, 4, 5],
         "segmentation": compressed(box_mask(20, 24, 18, 14, 22, 19))},
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [1, 1, 10, 8],
         "segmentation": uncompressed(box_mask(12, 16, 1, 1, 11, 9))},
        {"id": 5, "image_id": 2, "category_id": 3, "bbox": [8, 5, 7, 6], "iscrowd": 1,
         "segmentation": uncompressed(box_mask(12, 16, 8, 5, 15, 11))},
    ]


def expected_masks() -> dict[int, np.ndarray]:
    one = np.zeros((20, 24), np.int64)
    one[2:12, 2:16] = 1  # cat, painted first (larger)
    one[4:8, 6:10] = 3  # fox on top
    one[14:19, 18:22] = 2  # dog
    two = np.zeros((12, 16), np.int64)
    two[1:9, 1:11] = 2  # dog (80 px) before the crowd (42 px)
    two[5:11, 8:15] = 255
    return {1: one, 2: two}


def write_coco(root: Path, split: str, anns: list[dict] | None = None) -> Path:
    sizes = {1: (24, 20), 2: (16, 12)}  # id -> (width, height)
    for iid, (w, h) in sizes.items():
        save(np.full((h, w, 3), 50 * iid, np.uint8), root / split / f"{iid}.png")
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in sizes.items()]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "categories": CATEGORIES,
                                "annotations": seg_annotations() if anns is None else anns}))
    return path


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        write_coco(tmp_path / "coco", split)
    return tmp_path / "coco"


def coco_dm(root: Path | None, **kw) -> CocoSegmentationDataModule:
    kw = {"image_size": 32, "batch_size": 2, "num_workers": 0, **kw}
    return CocoSegmentationDataModule(str(root) if root else None, **kw)


def test_coco_polygons_rles_and_crowds_become_masks(coco):
    module = coco_dm(coco)
    module.setup("fit")
    assert module.class_names == ["background", "cat", "dog", "fox"] and module.category_ids == [0, 3, 7, 12]
    val = module.val_dataloader().dataset
    for k, (iid, expected) in enumerate(expected_masks().items()):
        image, mask = val[k]
        assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(expected))
        assert image.shape == (3, *expected.shape) and round(float(image[0, 0, 0]) * 255) == 50 * iid
    images, masks = next(iter(module.val_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks[1, 12:].eq(255).all()
    # test falls back to val
    assert module.source.annotation_file("test") == coco / "annotations" / "instances_val.json"


def test_coco_mask_with_another_ignore_value(coco):
    index = load_coco(coco / "annotations" / "instances_train.json", coco / "train", segmentation=True)
    assert [len(rec.segmentations) for rec in index.images] == [3, 2]
    mask = coco_mask(index.images[1], num_classes=4, ignore_index=100)
    expected = expected_masks()[2]
    assert mask.dtype == np.uint8 and np.array_equal(mask, np.where(expected == 255, 100, expected))


def test_detection_loading_keeps_no_segmentation(coco):
    index = load_coco(coco / "annotations" / "instances_train.json", coco / "train")
    assert all(rec.segmentations == () for rec in index.images)
    assert index.images[0].labels.tolist() == [3, 1, 2]  # unchanged detection labels


def test_coco_explicit_paths(tmp_path, coco):
    module = coco_dm(None, train_images=str(coco / "train"),
                     train_annotations=str(coco / "annotations/instances_train.json"),
                     val_images=str(coco / "val"), val_annotations=str(coco / "annotations/instances_val.json"))
    module.setup("validate")
    assert module.class_names == ["background", "cat", "dog", "fox"] and len(module.val_dataloader().dataset) == 2


def edit_anns(root: Path, **changes) -> None:
    anns = seg_annotations()
    anns[1] = {**anns[1], **changes}
    anns[1] = {k: v for k, v in anns[1].items() if v is not None}
    write_coco(root, "train", anns)


@pytest.mark.parametrize("changes, message", [
    ({"segmentation": None}, r"instances_train.json: annotation 2 \(image id 1\): segmentation is missing or empty; "
                             r"masks \(task=segmentation, task=instance_segmentation\) need every annotation's "
                             r"\"segmentation\""),
    ({"segmentation": []}, r"annotation 2 \(image id 1\): segmentation is missing or empty"),
    ({"segmentation": [[1, 2, 3, 4, 5]]}, r"annotation 2 \(image id 1\): polygon \[1, 2, 3, 4, 5\] has 5 coordinates"),
    ({"segmentation": [[1, 2, 3, 4]]}, r"annotation 2 \(image id 1\): polygon \[1, 2, 3, 4\] has 4 coordinates; "
                                       r"a polygon needs 3\+ \(x, y\) points"),
    ({"segmentation": {"size": [10, 10], "counts": "abc"}},
     r"annotation 2 \(image id 1\): RLE size \[10, 10\] is not the image's \[height, width\] = \[20, 24\]"),
    ({"segmentation": {"size": [20, 24], "counts": [3, 4]}},
     r"annotation 2 \(image id 1\): uncompressed RLE counts do not add up to 20 x 24 = 480 pixels"),
    ({"segmentation": "x"}, r"annotation 2 \(image id 1\): segmentation x is neither polygons"),
    ({"category_id": 99}, r"annotation 2 \(image id 1\) has category_id 99, which is not in \"categories\""),
], ids=["missing", "empty", "odd", "two-points", "rle-size", "rle-counts", "string", "unknown-category"])
def test_coco_bad_segmentation_names_annotation_and_fix(coco, changes, message):
    edit_anns(coco, **changes)
    with pytest.raises(DataError, match=message):
        coco_dm(coco).setup("fit")


def test_coco_missing_image_file(coco):
    (coco / "val" / "2.png").unlink()
    with pytest.raises(DataError, match=r"instances_val.json: image file .*val/2.png \(image id 2\) does not exist"):
        coco_dm(coco).setup("fit")


def test_coco_detection_ignores_segmentation_problems(coco):
    edit_anns(coco, segmentation=None)
    assert len(load_coco(coco / "annotations" / "instances_train.json", coco / "train").images) == 2


def test_coco_on_the_synthetic_detection_set():
    module = coco_dm(None, synthetic={"num_classes": 2, "train_images": 4, "val_images": 3, "test_images": 2,
                                      "image_size": 32, "seed": 3})
    module.prepare_data()
    module.setup("fit")
    assert module.class_names == ["background", "circle", "triangle"]
    values = set()
    for _, mask in module.val_dataloader().dataset:
        values |= set(torch.unique(mask).tolist())
    assert values <= {0, 1, 2} and len(values) > 1


# --- synthetic set -------------------------------------------------------------------------------------------------

def check_drawn(img: np.ndarray, mask: np.ndarray, max_objects: int) -> None:
    """Mask > 0 exactly where a shape's flat, bright colour shows, one class per colour."""
    shown = mask > 0
    colours = {tuple(c) for c in img[shown]}
    assert 1 <= len(colours) <= max_objects and all(max(c) == 255 for c in colours)
    assert not colours & {tuple(c) for c in img[~shown]}  # no background pixel has an object's colour
    for c in colours:
        assert len(np.unique(mask[(img == c).all(-1)])) == 1


def test_synthetic_image_mask_match_what_is_drawn():
    rng = np.random.default_rng(5)
    for _ in range(20):
        img, mask = segmentation_image(rng, num_classes=4, size=48, max_objects=4)
        img, mask = np.asarray(img), np.asarray(mask)
        assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 1, 2, 3, 4}
        check_drawn(img, mask, 4)


def test_synthetic_segmentation_layout_written_once(isolated_cache):
    kw = dict(num_classes=2, train_images=5, val_images=3, test_images=2, image_size=32, max_objects=3, seed=1)
    root = synthetic_segmentation(**kw)
    assert root.parent == isolated_cache / "synthetic"
    assert (root / "classes.txt").read_text().splitlines() == ["background", "circle", "triangle"]
    for split, count in {"train": 5, "val": 3, "test": 2}.items():
        names = [f"{i:05d}.png" for i in range(count)]
        assert sorted(p.name for p in (root / split / "images").iterdir()) == names
        assert sorted(p.name for p in (root / split / "masks").iterdir()) == names
        for name in names:
            mask = Image.open(root / split / "masks" / name)
            assert mask.mode == "L" and mask.size == (32, 32)
            check_drawn(np.asarray(Image.open(root / split / "images" / name)), np.asarray(mask), 3)
    (root / "marker").touch()
    assert synthetic_segmentation(**kw) == root and (root / "marker").exists()  # cached: not rewritten
    assert synthetic_segmentation(**{**kw, "seed": 2}) != root
    with pytest.raises(ValueError, match=r"num_classes must be in 1..8"):
        synthetic_segmentation(num_classes=9)


def test_synthetic_datamodule(isolated_cache):
    module = MaskDataModule(synthetic={"num_classes": 3, "train_images": 4, "val_images": 2, "test_images": 2,
                                       "image_size": 32}, image_size=32, batch_size=2, num_workers=0)
    module.prepare_data()
    assert module.root.parent == isolated_cache / "synthetic"
    assert module.class_names == ["background", "circle", "triangle", "square"]
    module.setup("fit")
    images, masks = next(iter(module.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    assert set(torch.unique(masks).tolist()) <= {0, 1, 2, 3, 255}


def test_batches_from_a_worker(folder):
    module = divisor(masks_dm(folder, batch_size=2, num_workers=1), 8)
    module.setup("validate")
    assert [tuple(m.shape) for _, m in module.val_dataloader()] == [(2, 24, 32), (1, 24, 24)]
