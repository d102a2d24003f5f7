"""Every mask of a split decoded once when training sets up (in threads; PNG decoding releases the GIL), so a
bad mask stops the run before the first step instead of mid-epoch, and masks without a labelled pixel are
counted (`report_unlabelled`)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import RAISE, DataError, Problems
from .images import header_size
from .masks import MaskIndex, check_pair, report_unlabelled

log = logging.getLogger("data")


def _check(pair: tuple[Path, Path], num_classes: int, ignore_index: int) -> tuple[Problems, bool]:
    """(the pair's problems, whether its mask has no labelled pixel); the image is measured from its header."""
    image_path, mask_path = pair
    local = Problems(strict=False)
    mask = check_pair(mask_path, image_path, header_size(image_path), num_classes, ignore_index, local)
    return local, mask is not None and mask.size > 0 and bool((mask == ignore_index).all())


def scan_masks(index: MaskIndex, num_classes: int, ignore_index: int, workers: int = 1,
               problems: Problems = RAISE) -> None:
    """Check every mask of `index` (readable, not JPEG, single-channel, its image's size, class values) and
    report masks that are all `ignore_index`. Strict `problems`: raise the first error, saying how many
    more there are."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda pair: _check(pair, num_classes, ignore_index), index.samples))
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
