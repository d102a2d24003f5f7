"""Bad data that used to train silently (issue 10, item 4): each case is an error naming the file or field and
the fix, or a counted and reported skip, both when training sets up and in `python -m data.check`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from data import CocoDetectionDataModule, CocoSegmentationDataModule, DataError, ImageFolderDataModule, MaskDataModule
from data.check import main
from data.imagefolder import ImageFolderDataset
from data.splits import drops_last
from data.synthetic import synthetic_detection
from data.transforms import segmentation_transforms

READ_WARNINGS = "training would run, but read the warnings first"
FIX_ERRORS = "fix the errors before training"


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="data")


def png(path: Path, width: int = 32, height: int = 32, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


def check(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """`python -m data.check argv` in-process: (exit code, report)."""
    code = main(list(argv))
    return code, capsys.readouterr().out


# ImageFolder ------------------------------------------------------------------------------------------------------

def folder(root: Path, per_class: int = 2) -> Path:
    """train and val, classes a and b, `per_class` 32 px images each."""
    for split in ("train", "val"):
        for name in ("a", "b"):
            for i in range(per_class):
                png(root / split / name / f"{i}.png", value=40 * i)
    return root


def folder_dm(root: Path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), **{"image_size": 32, "batch_size": 2, "num_workers": 0, **kw})


def gradient16(path: Path) -> np.ndarray:
    """A 16-bit grayscale PNG (mode I;16) whose columns run from 0 to 65535."""
    values = np.linspace(0, 65535, 64).round().astype(np.uint16)[None].repeat(8, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    return values


def test_case1_16_bit_gradient_loads_as_a_gradient_not_white(tmp_path, capsys):
    root = folder(tmp_path / "ds")
    values = gradient16(root / "train" / "a" / "deep.png")
    module = folder_dm(root)
    module.setup("fit")
    index = module._index("train")
    image, _ = ImageFolderDataset(index)[[p.name for p, _ in index.samples].index("deep.png")]
    arr = np.asarray(image)
    assert image.mode == "RGB" and (arr[..., 0] == arr[..., 2]).all()  # gray
    assert np.abs(arr[0, :, 0].astype(int) - values[0] / 257).max() <= 0.5  # value / 257, not clipped at 255
    assert (np.diff(arr[0, :, 0].astype(int)) >= 0).all() and arr.min() == 0 and arr.max() == 255
    code, out = check(capsys, "data=imagefolder", f"data.root={root}", "data.image_size=32")
    assert code == 0, out
    assert f"{root}/train/a/deep.png has more than 8 bits per pixel (grayscale mode I;16); it is read as 8-bit " \
           "grayscale by value / 257" in out
    assert "0 errors, 0 warnings, 1 note: ready to train" in out


def test_case1_32_bit_and_float_images_are_scaled_too(tmp_path):
    root = folder(tmp_path / "ds")
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None].repeat(4, 0)
    Image.fromarray((ramp * 65535).astype(np.int32)).save(root / "train" / "a" / "int32.tif")  # mode I
    Image.fromarray(ramp).save(root / "train" / "a" / "float.tif")  # mode F, values 0..1
    index = folder_dm(root)._index("train")
    names = [p.name for p, _ in index.samples]
    for name in ("int32.tif", "float.tif"):
        arr = np.asarray(ImageFolderDataset(index)[names.index(name)][0])[0, :, 0].astype(int)
        assert np.abs(arr - ramp[0] * 255).max() <= 1, name


def test_case2_images_in_sub_folders_are_included_and_counted(tmp_path, caplog, capsys):
    """torchvision's ImageFolder walks sub-folders of a class folder, so Cerberus includes them too, and says so."""
    root = folder(tmp_path / "ds")
    png(root / "train" / "a" / "more" / "x.png")
    png(root / "train" / "a" / "more" / "deeper" / "y.png")
    module = folder_dm(root)
    module.setup("fit")
    samples = module._index("train").samples
    assert len(samples) == 6 and sum(label == 0 for _, label in samples) == 4
    assert f"{root}/train: 2 of 6 images are in sub-folders of their class folder (e.g. {root}/train/a/more/x.png); " \
           "they are included in that class, as torchvision's ImageFolder does" in caplog.text
    code, out = check(capsys, "data=imagefolder", f"data.root={root}", "data.image_size=32")
    assert code == 0, out
    assert f"{root}/train/a/more/deeper/y.png is in a sub-folder of its class folder; included" in out
    assert out.count("│ a ") == 1 and "│ a     │            4 │" in out  # 4 train images of class a


def test_case2_files_in_sub_folders_of_mask_folders_are_counted(tmp_path, caplog, capsys):
    root = masks(tmp_path / "ds")
    png(root / "train" / "images" / "old" / "z.png")
    module = masks_dm(root)
    module.setup("fit")
    assert len(module._index("train").samples) == 2
    assert f"{root}/train/images: ignored 1 files in sub-folders, e.g. {root}/train/images/old/z.png; images are " \
           "paired by file name" in caplog.text
    code, out = check(capsys, "task=segmentation", "data=masks", f"data.root={root}")
    assert code == 0 and f"ignored {root}/train/images/old/z.png: in a sub-folder" in out and READ_WARNINGS in out


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_case3_broken_symbolic_links_are_counted(tmp_path, caplog, capsys):
    root = folder(tmp_path / "ds")
    (root / "train" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "train" / "b" / "gone.png").symlink_to(tmp_path / "nowhere2.png")
    module = folder_dm(root)
    module.setup("fit")
    assert len(module._index("train").samples) == 4
    assert f"{root}/train: skipped 2 broken symbolic links (the file linked to does not exist), e.g. " \
           f"{root}/train/a/gone.png -> {tmp_path}/nowhere.png" in caplog.text
    code, out = check(capsys, "data=imagefolder", f"data.root={root}", "data.image_size=32")
    assert code == 0
    assert f"skipped {root}/train/b/gone.png -> {tmp_path}/nowhere2.png: a broken symbolic link" in out
    assert "WARNING broken link (2)" in out and f"0 errors, 2 warnings: {READ_WARNINGS}" in out


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_case3_broken_links_in_mask_folders_are_counted(tmp_path, caplog):
    root = masks(tmp_path / "ds")
    (root / "val" / "masks" / "lost.png").symlink_to(tmp_path / "nowhere.png")
    masks_dm(root).setup("fit")
    assert f"{root}/val/masks: skipped 1 broken symbolic link" in caplog.text


# COCO -------------------------------------------------------------------------------------------------------------

SIZES = {1: (40, 30), 2: (32, 48), 3: (36, 36)}  # image id -> (width, height)


def ann(aid: int, iid: int, bbox: list[float]) -> dict:
    return {"id": aid, "image_id": iid, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}


GOOD = [ann(1, 1, [2, 3, 10, 8]), ann(2, 2, [4, 4, 20, 30]), ann(3, 3, [10, 10, 6, 6])]


def coco(root: Path, train: list[dict] | None = None, val: list[dict] | None = None,
         images: list[dict] | None = None) -> Path:
    """root/annotations/instances_{train,val}.json + root/{train,val}/<id>.png; one category "thing"."""
    for split, anns in (("train", GOOD if train is None else train), ("val", GOOD if val is None else val)):
        for iid, (w, h) in SIZES.items():
            png(root / split / f"{iid}.png", w, h)
        listed = images or [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in SIZES.items()]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": listed, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return root


def coco_dm(root: Path, **kw) -> CocoDetectionDataModule:
    return CocoDetectionDataModule(str(root), batch_size=2, num_workers=0, **kw)


def coco_check(capsys: pytest.CaptureFixture, root: Path, *extra: str) -> tuple[int, str]:
    return check(capsys, "task=detection", "data=coco", f"data.root={root}", "task.model.min_size=[32]", *extra)


def test_case4_train_json_without_annotations(tmp_path, capsys):
    root = coco(tmp_path / "coco", train=[])
    message = f"{root}/annotations/instances_train.json has \"annotations\": []: a model trained on it learns that " \
              "there are no objects (detection AP 0). Add the objects' annotations, or point data.train_annotations " \
              "(or data.root) at the annotated file"
    with pytest.raises(DataError) as err:
        coco_dm(root).setup("fit")
    assert str(err.value) == message
    code, out = coco_check(capsys, root)
    assert code == 1 and message in out and FIX_ERRORS in out


def test_case4_boxes_all_dropped_is_no_annotations_either(tmp_path):
    root = coco(tmp_path / "coco", train=[ann(1, 1, [30, 20, 20, 20])])  # outside the 40x30 image
    with pytest.raises(DataError, match=r"instances_train.json has no usable object \(none of its 1 annotations is a "
                                        r"non-crowd box that passed\)"):
        coco_dm(root, drop_bad_boxes=True).setup("fit")


def test_case5_val_json_without_annotations(tmp_path, capsys):
    root = coco(tmp_path / "coco", val=[])
    message = f"{root}/annotations/instances_val.json has \"annotations\": []: every val metric would be undefined " \
              "(COCO AP -1) and the best checkpoint would be chosen on -1. Add the objects' annotations, or point " \
              "data.val_annotations (or data.root) at the annotated file"
    with pytest.raises(DataError) as err:
        coco_dm(root).setup("fit")
    assert str(err.value) == message
    with pytest.raises(DataError, match=r"every test metric would be undefined \(COCO AP -1\)"):
        coco_dm(root).setup("test")  # no test split: the test runs on val
    code, out = coco_check(capsys, root)
    assert code == 1 and message in out



def test_case5_coco_segmentation_val_without_annotations(tmp_path):
    polygons = [{**a, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
                for a in GOOD for x, y, w, h in [a["bbox"]]]
    root = coco(tmp_path / "coco", train=polygons, val=[])
    with pytest.raises(DataError, match=r"instances_val.json has \"annotations\": \[\]: every val metric would be "
                                        r"measured on background alone and the best checkpoint would be chosen on it"):
        CocoSegmentationDataModule(str(root), batch_size=2, num_workers=0).setup("fit")

def test_case5_synthetic_splits_always_hold_an_object():
    """Seed 0 draws 4 empty val images at these settings: the generator redraws one so val has an object."""
    root = synthetic_detection(num_classes=2, train_images=8, val_images=4, test_images=4, image_size=64)
    for split in ("train", "val", "test"):
        assert json.loads((root / "annotations" / f"instances_{split}.json").read_text())["annotations"], split


def test_case6_two_image_ids_with_one_file_name(tmp_path, capsys):
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in SIZES.items()]
    images.append({"id": 9, "file_name": "1.png", "width": 40, "height": 30})
    root = coco(tmp_path / "coco", images=images)
    message = "instances_train.json: image ids 1 and 9 both have file_name '1.png'; list each image once"
    with pytest.raises(DataError, match=message):
        coco_dm(root).setup("fit")
    code, out = coco_check(capsys, root)
    assert code == 1 and message in out and "ERROR duplicate file (2)" in out  # train and val


def test_case7_boxes_under_one_pixel(tmp_path, capsys, caplog):
    root = coco(tmp_path / "coco", train=[*GOOD, ann(4, 1, [5, 5, 0.01, 0.01])])
    message = "instances_train.json: annotation 4 (image id 1): bbox [5, 5, 0.01, 0.01] is 0.01 x 0.01 px; a box " \
              "under 1 px in width or height is not an object a detector can learn (an annotation slip); fix the " \
              "box, or pass data.drop_bad_boxes=true to drop such boxes"
    with pytest.raises(DataError) as err:
        coco_dm(root).setup("fit")
    assert message in str(err.value)
    module = coco_dm(root, drop_bad_boxes=True)
    module.setup("fit")
    assert sum(len(rec.boxes) for rec in module.source.index("train").images) == 3
    assert "dropped 1 bad boxes from" in caplog.text and "bbox [5, 5, 0.01, 0.01] is 0.01 x 0.01 px" in caplog.text
    code, out = coco_check(capsys, root)
    assert code == 1 and message in out


def xyxy_boxes() -> list[dict]:
    """10 boxes written as [x1, y1, x2, y2]: 6 of them reach past their image when read as [x, y, w, h]."""
    corners = [(1, [20, 10, 38, 28]), (1, [2, 3, 30, 25]), (1, [12, 4, 36, 26]), (2, [10, 20, 30, 46]),
               (2, [1, 1, 6, 8]), (2, [8, 12, 28, 40]), (3, [18, 2, 34, 20]), (3, [2, 2, 9, 9]),
               (3, [10, 15, 30, 33]), (3, [4, 8, 10, 16])]
    return [ann(k + 1, iid, box) for k, (iid, box) in enumerate(corners)]


def test_case8_boxes_in_xyxy_are_named_even_with_drop_bad_boxes(tmp_path, capsys):
    root = coco(tmp_path / "coco", train=xyxy_boxes())
    message = "instances_train.json: 6 of 10 boxes lie outside their image as [x, y, width, height] but 10 fit it " \
              "as corners (e.g. annotation 1: bbox [20, 10, 38, 28] on a 40x30 image): these look like [x1, y1, x2, " \
              "y2]; COCO bbox is [x, y, width, height]. Convert each with [x1, y1, x2 - x1, y2 - y1]"
    for drop in (False, True):  # drop_bad_boxes would keep 4 wrong boxes: it must not hide this
        with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            coco_dm(root, drop_bad_boxes=drop).setup("fit")
    code, out = coco_check(capsys, root, "data.drop_bad_boxes=true")
    assert code == 1 and message in out and "ERROR xyxy boxes (1)" in out


def test_case8_a_correct_file_is_not_taken_for_xyxy(tmp_path):
    root = coco(tmp_path / "coco", train=[*GOOD, ann(4, 1, [30, 20, 20, 20])])  # one box off the image
    with pytest.raises(DataError, match=r"annotation 4 \(image id 1\): bbox \[30, 20, 20, 20\] \(x, y, w, h\) lies "
                                        r"outside the 40x30 image; fix the box"):
        coco_dm(root).setup("fit")


# masks ------------------------------------------------------------------------------------------------------------

def masks(root: Path, train: dict[str, np.ndarray] | None = None, ext: str = ".png") -> Path:
    """classes bg, fg; 32x32 images; masks: train a, b and val c with a labelled square (or `train`)."""
    square = np.zeros((32, 32), np.uint8)
    square[8:20, 8:20] = 1
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("bg\nfg\n")
    for split, named in (("train", train or {"a": square, "b": square}), ("val", {"c": square})):
        for stem, mask in named.items():
            png(root / split / "images" / f"{stem}.png", mask.shape[1], mask.shape[0])
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / split / "masks" / f"{stem}{ext}")
    return root


def masks_dm(root: Path, **kw) -> MaskDataModule:
    return MaskDataModule(str(root), **{"batch_size": 2, "num_workers": 0, **kw})


def test_case9_masks_without_a_labelled_pixel(tmp_path, caplog, capsys):
    ignored = np.full((32, 32), 255, np.uint8)
    root = masks(tmp_path / "ds", train={"a": np.zeros((32, 32), np.uint8), "b": ignored, "d": ignored})
    masks_dm(root).setup("fit")
    assert f"2 of 3 masks in {root}/train/masks have only the ignore value 255 (e.g. b.png, d.png): they contribute " \
           "no loss" in caplog.text
    code, out = check(capsys, "task=segmentation", "data=masks", f"data.root={root}")
    assert code == 0 and f"mask {root}/train/masks/d.png has only the ignore value 255" in out and READ_WARNINGS in out


def test_case9_a_split_without_a_labelled_pixel_is_an_error(tmp_path, capsys):
    ignored = np.full((32, 32), 255, np.uint8)
    root = masks(tmp_path / "ds", train={"a": ignored, "b": ignored})
    message = f"every mask in {root}/train/masks (2) has only the ignore value 255: no pixel is labelled, so there " \
              "is nothing to learn or measure (the loss is NaN)"
    with pytest.raises(DataError) as err:
        masks_dm(root).setup("fit")
    assert message in str(err.value) and "set data.ignore_index to a value the masks do not use" in str(err.value)
    code, out = check(capsys, "task=segmentation", "data=masks", f"data.root={root}")
    assert code == 1 and message in out


def test_case10_jpeg_masks_are_refused_as_lossy(tmp_path, capsys):
    root = masks(tmp_path / "ds", ext=".jpg")
    with pytest.raises(DataError, match=r"mask .*train/masks/a.jpg is a JPEG: JPEG compression is lossy and changes "
                                        r"pixel values near every edge \(this one has values \[0, 1.*\]\), so class "
                                        r"indices are not kept; save masks as PNG \(lossless\)"):
        masks_dm(root).setup("fit")
    disguised = masks(tmp_path / "png", ext=".png")  # a JPEG under a .png name: found by PIL's format
    Image.open(disguised / "val" / "masks" / "c.png").save(disguised / "val" / "masks" / "c.png", format="JPEG")
    with pytest.raises(DataError, match=r"val/masks/c.png is a JPEG: JPEG compression is lossy"):
        masks_dm(disguised).setup("validate")
    code, out = check(capsys, "task=segmentation", "data=masks", f"data.root={root}")
    assert code == 1 and "ERROR jpeg mask (3)" in out and f"mask {root}/val/masks/c.jpg is a JPEG" in out


# sizes ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda root: folder_dm(folder(root), image_size=7), r"data.image_size=7 is too small: the backbones' deepest "
                                                         r"feature map has stride 32, so images need at least 32 px"),
    (lambda root: folder_dm(folder(root), image_size=-3), r"data.image_size=-3 is too small"),
    (lambda root: folder_dm(folder(root), image_size="big"), r"data.image_size='big' is not a whole number of pixels"),
    (lambda root: masks_dm(masks(root), image_size=7), r"data.image_size=7 is too small"),
    (lambda root: masks_dm(masks(root), eval_size=16), r"data.eval_size=16 is too small"),
], ids=["imagefolder", "negative", "not-a-number", "masks", "eval-size"])
def test_case11_image_size_is_validated(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        make(tmp_path / "ds")


def test_case11_image_size_in_data_check(tmp_path, capsys):
    code, out = check(capsys, "data=imagefolder", f"data.root={folder(tmp_path / 'ds')}", "data.image_size=7")
    assert code == 1 and "data.image_size=7 is too small" in out


def test_case12_only_a_last_batch_of_one_is_dropped(tmp_path, caplog, capsys):
    assert not drops_last(60, 32) and drops_last(65, 32) and not drops_last(32, 32) and not drops_last(33, 64)
    assert drops_last(65, 16, world_size=2)  # 33 per process: 2 x 16 + 1
    root = folder(tmp_path / "ds", per_class=3)  # 6 train images
    loader = folder_dm(root, batch_size=4).train_dataloader()
    assert not loader.drop_last and len(loader) == 2  # 4 + 2: every image trains
    assert "left out" not in caplog.text
    loader = folder_dm(root, batch_size=5).train_dataloader()
    assert loader.drop_last and len(loader) == 1
    assert "1 of 6 training images is left out of each epoch (a different one each time: the data is shuffled): " \
           "with data.batch_size=5 the last batch would hold a single image" in caplog.text
    code, out = check(capsys, "data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=5")
    assert code == 0 and "NOTE last batch (1)" in out and "1 of 6 training images is left out" in out


def segmentation_pair(size: int) -> tuple[Image.Image, tv_tensors.Mask]:
    ys, xs = np.mgrid[:size, :size]
    mask = ((xs // 8 + ys // 8) % 2).astype(np.uint8)
    return Image.fromarray(np.stack([mask * 200] * 3, -1)), tv_tensors.Mask(torch.from_numpy(mask))


def test_case13_training_jitters_around_each_images_own_size():
    """No eval_size: the base is the image's own size, so 128 px data trains around 128 px (not 512)."""
    tf = segmentation_transforms(True, 64, scale=(1.0, 1.0), hflip=0.0, photometric=0.0)
    image, mask = tf(*segmentation_pair(128))
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert ((image[0] > 0).long() == mask).all()  # a window of the native image, not resized
    edges = (mask[0, :-1] != mask[0, 1:]).nonzero().flatten()
    assert (edges.diff() == 8).all()  # native cell width: no rescale
    tf = segmentation_transforms(True, 64, eval_size=64, scale=(1.0, 1.0), hflip=0.0, photometric=0.0)
    image, mask = tf(*segmentation_pair(128))  # a base size: resized to 64, then the crop is the whole image
    edges = (mask[0, :-1] != mask[0, 1:]).nonzero().flatten()
    assert image.shape == (3, 64, 64) and len(edges) == 15 and (edges.diff() == 4).all()  # 8 px cells halved
    image, mask = segmentation_transforms(False, None, eval_size=64)(*segmentation_pair(128))
    assert image.shape == (3, 64, 64)  # eval at the same base size


def test_case13_synthetic_default_scale_is_unchanged():
    """On the synthetic set (64 px images, data.image_size 64, scale 0.75-1.5) the native scale jitter draws
    exactly what the former RandomResize(48, 96) drew."""
    pair = segmentation_pair(64)
    torch.manual_seed(3)
    new = [segmentation_transforms(True, 64, scale=(0.75, 1.5), photometric=0.0)(*pair) for _ in range(4)]
    torch.manual_seed(3)
    old_tf = v2.Compose([v2.ToImage(), v2.RandomResize(48, 96, antialias=True),
                         v2.RandomCrop(64, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
                         v2.RandomHorizontalFlip(0.5)])
    old = [old_tf(*pair) for _ in range(4)]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(new, old))


def test_case13_masks_crop_and_eval_at_the_datas_own_size(tmp_path, caplog):
    root = masks(tmp_path / "ds")
    for split in ("train", "val"):  # 64 px images and masks
        for image in (root / split / "images").iterdir():
            png(image, 64, 64)
            Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / split / "masks" / image.name)
    module = masks_dm(root)  # data.image_size=null: crops of the data's own size
    module.setup("fit")
    assert module.crop_size == 64 and "data.image_size=null: training crops of 64 px" in caplog.text
    images, _ = next(iter(module.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and next(iter(module.val_dataloader()))[0].shape == (1, 3, 64, 64)
    assert "is 8x" not in caplog.text
    masks_dm(root, image_size=512).setup("fit")
    assert "data.image_size=512 (the training crop) is 8x the median short side of the train images (64 px, from 2 " \
           "images), the scale training is jittered around: most of each crop is padding" in caplog.text
    masks_dm(root, eval_size=256).setup("fit")
    assert "data.eval_size=256 is 4x the median short side of the train images (64 px, from 2 images): images " \
           "are upscaled about 4x for training and evaluation; data.eval_size=null" in caplog.text


def test_case13_size_far_from_the_data_is_said_for_every_task(tmp_path, caplog, capsys):
    root = folder(tmp_path / "ds")  # 32 px images
    folder_dm(root, image_size=224).setup("fit")
    assert "data.image_size=224 is 7x the median short side of the train images (32 px, from 4 images): every image " \
           "is upscaled about 7x for training and evaluation; data.image_size=32 trains at the data's own size" \
           in caplog.text
    coco_dm(coco(tmp_path / "coco"), model_min_size=[480, 800]).setup("fit")
    assert "task.model.min_size=[480, 800] resizes the short side of every image to 800 px for evaluation, 25x the " \
           "median short side of the train images (32 px, from 3 images)" in caplog.text
    code, out = check(capsys, "task=segmentation", "data=masks", f"data.root={masks(tmp_path / 'm')}",
                      "data.image_size=512")
    assert code == 0 and "data.image_size=512 (the training crop) is 16x" in out and READ_WARNINGS in out
    code, out = check(capsys, "task=detection", "data=coco", f"data.root={tmp_path / 'coco'}")
    assert code == 0 and "task.model.min_size=[112, 128, 144] resizes the short side of every image to 144 px " \
                         "for evaluation, 4.5x" in out

