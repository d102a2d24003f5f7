"""A COCO dataset on disk, shared by the detection and the segmentation data modules: where each split's images and
instances json are (COCO's layout under a root, or explicit paths per split; the synthetic set generated on first
use), and each split read and validated once (`load_coco`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .coco import CocoIndex, check_annotated, load_coco
from .errors import DataError
from .flip_check import CHECK_IMAGES
from .kinds import synthetic_detection_kind
from .splits import SPLITS


class CocoSource:
    """COCO layout `root/annotations/instances_<split>.json` + images in `root/<split>/`, or explicit paths per split
    (which win over the layout); without a test split, the test split is val.

    Args:
        root: dataset folder; `None` with no explicit paths and `synthetic` set means "generate the synthetic set".
        train_images, train_annotations, val_images, ..., test_annotations: explicit paths per split.
        drop_bad_boxes: drop boxes outside the image or under 1 px (counted in a warning) instead of failing.
        synthetic: arguments of `data.kinds.synthetic_detection_kind`: `kind` (shapes, thin, imbalance, similar,
            small, glyphs; default shapes, `data.synthetic.synthetic_detection`) and its options.
        segmentation: keep and require each annotation's polygons / RLE.
    """

    def __init__(self, root: str | None = None, *, train_images: str | None = None,
                 train_annotations: str | None = None, val_images: str | None = None,
                 val_annotations: str | None = None, test_images: str | None = None,
                 test_annotations: str | None = None, drop_bad_boxes: bool = False,
                 synthetic: Mapping[str, Any] | None = None, segmentation: bool = False) -> None:
        given = {"train": (train_images, train_annotations), "val": (val_images, val_annotations),
                 "test": (test_images, test_annotations)}
        self.explicit = {s: tuple(Path(p).expanduser() if p else None for p in given[s]) for s in SPLITS}
        self.root = Path(root).expanduser() if root is not None else None
        any_explicit = any(p for ps in self.explicit.values() for p in ps)
        self.synthetic = dict(synthetic) if synthetic is not None and root is None and not any_explicit else None
        if self.root is None and self.synthetic is None:
            missing = [f"data.{s}_{kind}" for s in ("train", "val")
                       for kind, p in zip(("images", "annotations"), self.explicit[s]) if p is None]
            if missing:
                raise DataError(f"data.root is not set and {', '.join(missing)} are missing: pass "
                                "data.root=/path/to/coco (annotations/instances_train.json, train/, val/) or "
                                "the images folder and annotation json of each split")
        self.drop_bad_boxes = drop_bad_boxes
        self.segmentation = segmentation
        self._splits: dict[str, CocoIndex] = {}

    def prepare(self) -> None:
        """Generate the synthetic set on first use (idempotent)."""
        if self.root is None and self.synthetic is not None:
            self.root = synthetic_detection_kind(**self.synthetic)

    def paths(self, split: str) -> tuple[Path, Path]:
        """(images folder, annotation json) of `split`."""
        self.prepare()
        images, annotations = self.explicit[split]
        if self.root is not None:
            images = images or self.root / split
            annotations = annotations or self.root / "annotations" / f"instances_{split}.json"
        if split == "test" and not any(self.explicit["test"]) and not (annotations and annotations.exists()):
            return self.paths("val")  # no test split: test on val, as documented
        if images is None or annotations is None:
            raise DataError(f"the {split} split needs data.{split}_images and data.{split}_annotations (or data.root)")
        return images, annotations

    def annotation_file(self, split: str) -> Path:
        """The json of `split` (train / val / test; test falls back to val), e.g. for COCO evaluation."""
        return self.paths(split)[1]

    def index(self, split: str) -> CocoIndex:
        """The validated split (read once); a split without objects stops here (`check_annotated`)."""
        if split not in self._splits:
            images, annotations = self.paths(split)
            categories = None if split == "train" else self.index("train").category_ids
            # a sample of the train images keeps its polygons / RLE for the detection flip check
            index = load_coco(annotations, images, category_ids=categories, drop_bad_boxes=self.drop_bad_boxes,
                              segmentation=self.segmentation,
                              sample_segmentations=CHECK_IMAGES if split == "train" else 0)
            check_annotated(index, split, segmentation=self.segmentation)
            self._splits[split] = index
        return self._splits[split]

    def train_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every train image, from the json (nothing read from disk)."""
        return [(rec.width, rec.height) for rec in self.index("train").images]
