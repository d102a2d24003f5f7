"""ImageFolder loading on PNG/JPEG files the tests write, the bad inputs, and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_imagefolder, write_png
from PIL import Image

from data import DataError, ImageFolderDataModule
from data.imagefolder import ImageFolderDataset, scan_split
from data.synthetic import synthetic_classification


def dm(root: Path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), image_size=32, batch_size=4, num_workers=0, **kw)


def test_reads_imagefolder(imagefolder):
    module = dm(imagefolder)
    module.setup("fit")
    assert module.class_names == ["cat", "dog", "fox"]
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}
    val = [lbl for _, lbls in module.val_dataloader() for lbl in lbls.tolist()]
    assert sorted(val) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_test_split_used_when_present_else_val(imagefolder):
    module = dm(imagefolder)
    module.setup("test")
    assert module._index("test").split_dir.name == "val"
    make_imagefolder(imagefolder, per_class=2, splits=("test",))
    module = dm(imagefolder)
    module.setup("test")
    assert module._index("test").split_dir.name == "test"
    assert len(module._index("test").samples) == 6


def test_grayscale_rgba_and_jpeg_become_rgb(tmp_path):
    root = tmp_path / "ds"
    write_png(root / "train" / "a" / "gray.png", mode="L")
    write_png(root / "train" / "a" / "rgba.png", mode="RGBA")
    (root / "train" / "b").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "train" / "b" / "x.jpg")
    index = scan_split(root / "train")
    items = [ImageFolderDataset(index)[i] for i in range(len(index.samples))]
    assert [img.mode for img, _ in items] == ["RGB", "RGB", "RGB"]
    assert [label for _, label in items] == [0, 0, 1]


def test_missing_split_names_path(imagefolder):
    module = dm(imagefolder / "nope")
    with pytest.raises(DataError, match=r"nope/train does not exist"):
        module.setup("fit")


def test_empty_split_names_path(tmp_path):
    (tmp_path / "ds" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"ds/train has no class folders; put images in .*/<class name>/"):
        dm(tmp_path / "ds").setup("fit")


def test_class_folder_without_images(imagefolder):
    (imagefolder / "train" / "empty").mkdir()
    (imagefolder / "train" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder .*train/empty has no images"):
        dm(imagefolder).setup("fit")


def test_val_class_unknown_to_train(imagefolder):
    write_png(imagefolder / "val" / "wolf" / "0.png")
    with pytest.raises(DataError, match=r"val has class folders \['wolf'\] that the train split does not have"):
        dm(imagefolder).setup("fit")


def test_non_image_files_are_reported_not_silently_dropped(imagefolder, caplog):
    (imagefolder / "train" / "cat" / "readme.txt").write_text("x")
    index = scan_split(imagefolder / "train")
    assert len(index.samples) == 9
    assert "ignored 1 files that are not images" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_image_names_file(imagefolder, damage):
    path = imagefolder / "train" / "dog" / "1.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"this is not a png")
    module = dm(imagefolder)
    module.setup("fit")
    ds = module.train_dataloader().dataset
    i = [p for p, _ in ds.index.samples].index(path)
    with pytest.raises(DataError, match=rf"cannot read image {path}: .*re-export .* or delete it"):
        ds[i]


def test_truncated_jpeg_is_caught(tmp_path):
    path = tmp_path / "ds" / "train" / "a" / "x.jpg"
    path.parent.mkdir(parents=True)
    Image.effect_noise((64, 64), 50).convert("RGB").save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-400])
    ds = ImageFolderDataset(scan_split(tmp_path / "ds" / "train"))
    with pytest.raises(DataError, match="truncated"):
        ds[0]


def test_error_from_a_worker_reaches_the_user(imagefolder):
    (imagefolder / "train" / "fox" / "0.png").write_bytes(b"junk")
    module = ImageFolderDataModule(str(imagefolder), image_size=32, batch_size=9, num_workers=1)
    module.setup("fit")
    with pytest.raises(DataError, match=r"fox/0.png"):
        next(iter(module.train_dataloader()))


def test_root_required_without_synthetic():
    with pytest.raises(DataError, match="data.root is not set"):
        ImageFolderDataModule(None)


def test_synthetic_generator_writes_an_imagefolder_once(isolated_cache):
    kw = dict(num_classes=4, train_per_class=3, val_per_class=2, test_per_class=1, image_size=40, seed=3)
    root = synthetic_classification(**kw)
    assert root.is_relative_to(isolated_cache)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["circle", "square", "star", "triangle"]
    assert len(list(root.glob("val/*/*.png"))) == 8 and len(list(root.glob("test/*/*.png"))) == 4
    assert Image.open(next(root.glob("train/circle/*.png"))).size == (40, 40)
    stamp = (root / "train" / "circle" / "00000.png").stat().st_mtime_ns
    assert synthetic_classification(**kw) == root  # cached: not rewritten
    assert (root / "train" / "circle" / "00000.png").stat().st_mtime_ns == stamp
    assert synthetic_classification(**{**kw, "seed": 4}) != root  # different settings, different folder


def test_synthetic_datamodule_generates_on_prepare():
    module = ImageFolderDataModule(None, image_size=32, batch_size=4, num_workers=0,
                                   synthetic=dict(num_classes=3, train_per_class=4, val_per_class=2,
                                                  test_per_class=2, image_size=32))
    module.prepare_data()
    assert module.class_names == ["circle", "square", "triangle"]  # folder names, sorted
