"""The command line of `python -m data.check`: compose the training config, build its DataModule, check, report."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

USAGE = """\
usage: python -m data.check [--limit N] KEY=VALUE ...

Check a dataset before training: the KEY=VALUE overrides are those of train.py, composed into the same config,
so the check reads exactly the data a training run would (layout, explicit paths, classes, test -> val).

  python -m data.check data=imagefolder data.root=/my/data
  python -m data.check task=detection data=coco data.root=/data/coco
  python -m data.check task=detection data=coco data.train_images=/d/img data.train_annotations=/d/train.json \\
      data.val_images=/d/img data.val_annotations=/d/val.json
  python -m data.check task=segmentation data=masks data.root=/my/masks        # or data.classes=[bg,road,car]
  python -m data.check task=segmentation data=coco data.root=/data/coco        # COCO polygons / RLE as masks
  python -m data.check task=detection                                          # the synthetic default (generated)

Every image and mask is decoded. The report lists per split the number of images, the counts per class
(ImageFolder: images; COCO: boxes and images; masks: pixels and images), images without labels, min / median /
max width and height, and every problem with its file, image or annotation id and the fix. Errors (training
would stop): broken or missing files, unpaired images / masks, boxes outside the image or under 1 px, boxes
written as [x1, y1, x2, y2], a train / val / test json without annotations, two image ids with one file_name,
unknown category or image ids, duplicate ids, mask values that are neither a class nor the ignore value,
JPEG masks, mask / image size mismatches, masks that are not single-channel, a split whose masks label no
pixel, bad class lists, data.image_size under 32. Warnings (skipped, or likely wrong): files that are not
images, broken symbolic links, files in sub-folders of mask folders, masks with no labelled pixel, sizes far
from the data's own (data.image_size, data.eval_size, task.model.min_size). Notes: images in sub-folders of a
class folder (included, as torchvision's ImageFolder does), 16-bit images and how they are scaled, images
without labels, a last batch of one image that training leaves out.

  --limit N    show the first N problems of each kind (default 20)
  -h, --help   this text

Exit code: 0 no errors (warnings and notes allowed), 1 errors found, 2 bad command line or config.
"""


def _parse(argv: list[str]) -> tuple[list[str], int] | str:
    """(overrides, limit), or the message of a usage error."""
    overrides, limit = [], 20
    args = iter(argv)
    for arg in args:
        if arg.startswith("--limit"):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            if not value.isdigit():
                return f"--limit needs a number (got {value!r})"
            limit = int(value)
        elif arg.startswith("-"):
            return f"unknown option {arg}"
        else:
            overrides.append(arg)
    return overrides, limit


def _data_error(err: BaseException) -> BaseException | None:
    """The DataError behind `err` (Hydra's instantiate wraps what a constructor raises), if any."""
    from ..errors import DataError

    while err is not None and not isinstance(err, DataError):
        err = err.__cause__ or err.__context__
    return err


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # a report piped to a file or CI log keeps whole paths on one line instead of rich's 80-column default
    out = Console() if sys.stdout.isatty() else Console(width=160)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = 160  # files and pipes: room for the tables, messages are never hard-wrapped
    if not argv or "-h" in argv or "--help" in argv:
        out.print(Text(USAGE))
        return 0 if argv else 2
    parsed = _parse(argv)
    if isinstance(parsed, str):
        out.print(Text(f"{parsed}\n\n{USAGE}"))
        return 2
    overrides, limit = parsed

    # heavy imports after the usage text (fast --help)
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    from backbones.hydra_configs import compose_config

    from ..errors import Problems
    from .report import print_report
    from .scan import check_datamodule, progress_bar

    try:
        cfg = compose_config(overrides)
        dm = instantiate(cfg.data)
    except (HydraException, OmegaConfBaseException) as err:
        if (cause := _data_error(err)) is None:
            out.print(Text(f"config error: {err}\n(run python -m data.check --help)", style="bold red"), soft_wrap=True)
            return 2
        out.print(Text(f"error: {cause}\n1 error, 0 warnings: fix the errors before training", style="bold red"),
                  soft_wrap=True)
        return 1

    err_console = Console(stderr=True)
    problems = Problems(strict=False)
    with err_console.status("preparing the data (the synthetic sets are generated on first use)"):
        dm.prepare_data()
    with progress_bar(err_console) as progress:
        report = check_datamodule(dm, problems, progress, dm.num_workers)
    print_report(report, out, limit)
    return 1 if problems.count("error") else 0
