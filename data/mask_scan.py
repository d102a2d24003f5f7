"""Every mask of a split decoded once when training sets up (in threads; PNG decoding releases the GIL), so a
bad mask stops the run before the first step instead of mid-epoch, masks without a labelled pixel are
counted (`report_unlabelled`), and on the way, at no second read, the labelled pixels of each class are summed
(`PixelCounts`, for `task.module.loss.class_weights: auto`) and the flip check's sample of masks is kept (`keep`)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RAISE, DataError, Problems
from .flip_check import at_most_side
from .images import header_size
from .masks import MaskIndex, check_pair, report_unlabelled
from .sampling import spread

log = logging.getLogger("data")


@dataclass
class PixelCounts:
    """Labelled pixels of a split's masks: `pixels[c]` of class c, and `image_pixels[c]` of the masks in which
    class c occurs (median-frequency balancing's denominator); (K,) int64 each. Pixels of `ignore_index` (and
    values that are not a class) count in neither."""

    pixels: np.ndarray
    image_pixels: np.ndarray
    masks: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> PixelCounts:
        return cls(np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64))

    def add(self, counts: np.ndarray) -> None:
        """Add one mask's (K,) class counts."""
        self.pixels += counts
        self.image_pixels += np.where(counts > 0, counts.sum(), 0)
        self.masks += 1


@dataclass
class MaskScan:
    """One read of a split's masks: their labelled pixels per class, and the masks kept on the way (`scan_masks`'s
    `keep`: spread over the split, in order, each `shrunk`)."""

    counts: PixelCounts
    kept: list[np.ndarray] = field(default_factory=list)


def shrunk(mask: np.ndarray) -> np.ndarray:
    """`mask` subsampled (nearest) to at most `flip_check.MAX_SIDE` px a side, as the flip check measures it (which
    leaves a mask that small as it is); a copy, so the full mask is not held."""
    return np.ascontiguousarray(at_most_side(mask))


def class_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) int64 pixels of each class 0..K-1 in the (H, W) `mask`."""
    if mask.dtype in (np.uint8, np.uint16):  # at most 65536 bins: count every value in one pass, keep the classes'
        return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes].astype(np.int64)
    values = mask[(mask >= 0) & (mask < num_classes)]  # wider masks: an ignore value of 2**31 must not size the bins
    return np.bincount(values.astype(np.int64), minlength=num_classes)


def _check(pair: tuple[Path, Path], num_classes: int, ignore_index: int,
           keep: bool) -> tuple[Problems, bool, np.ndarray | None, np.ndarray | None]:
    """(the pair's problems, whether its mask has no labelled pixel, its (K,) class counts or None when it could
    not be read, with `keep` the mask `shrunk` (else None)); the image is measured from its header."""
    image_path, mask_path = pair
    local = Problems(strict=False)
    mask = check_pair(mask_path, image_path, header_size(image_path), num_classes, ignore_index, local)
    counts = None if mask is None else class_counts(mask, num_classes)
    kept = shrunk(mask) if keep and mask is not None else None
    return local, mask is not None and mask.size > 0 and bool((mask == ignore_index).all()), counts, kept


def scan_masks(index: MaskIndex, num_classes: int, ignore_index: int, workers: int = 1,
               problems: Problems = RAISE, keep: int = 0) -> MaskScan:
    """Check every mask of `index` (readable, not JPEG, single-channel, its image's size, class values) and
    report masks that are all `ignore_index`. Strict `problems`: raise the first error, saying how many
    more there are. Returns the labelled pixels per class of the masks that could be read and up to `keep` of
    them (`spread` over the split, `shrunk`): the flip check's sample, so it reads no mask again."""
    start = time.perf_counter()
    totals, results = PixelCounts.zeros(num_classes), []
    wanted = spread(len(index.samples), keep)
    kept: dict[int, np.ndarray] = {}
    chosen = set(wanted.tolist())
    with ThreadPoolExecutor(max(1, workers)) as pool:
        checked = pool.map(lambda item: _check(item[1], num_classes, ignore_index, item[0] in chosen),
                           enumerate(index.samples))
        for i, (local, empty, counts, small) in enumerate(checked):
            results.append((local, empty))  # summed as they come: no (masks, K) table is held
            if counts is not None:
                totals.add(counts)
            if small is not None:
                kept[i] = small
    found = Problems(strict=False)
    for local, _ in results:
        found.extend(local)
    errors = [p for p in found.found if p.severity == "error"]
    if errors and problems.strict:
        n = len(errors) - 1
        more = f" ({n} more mask problem{'s' * (n > 1)} in {index.split_dir}: `python -m data.check` with the " \
               "same data options lists them all)" if n else ""
        raise DataError(errors[0].message + more)
    for problem in found.found:  # strict: only warnings and notes are left, and they are logged
        getattr(problems, problem.severity)(problem.kind, problem.message)
    unlabelled = [mask for (_, mask), (_, empty) in zip(index.samples, results) if empty]
    report_unlabelled(index.split_dir / "masks", unlabelled, len(index.samples), ignore_index, problems)
    n = len(index.samples)
    log.info("checked %d mask%s of %s in %.1f s", n, "s" * (n != 1), index.split_dir, time.perf_counter() - start)
    return MaskScan(totals, [kept[i] for i in wanted.tolist() if i in kept])
