"""Which files to predict on, and reading them: unreadable files become `Failure`s that are reported and counted,
never dropped silently. No torch here: predict.py on an exported model (tasks/runtime/) reads files with it too."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from data.images import IMAGE_EXTENSIONS, is_image_file, to_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFiles:
    """The images to predict on: absolute paths and the names they are reported and written under (relative to
    the input directory, or the file name for a single file)."""

    paths: list[Path]
    names: list[str]
    root: Path


def list_images(input_path: str | Path) -> ImageFiles:
    """A file, or every image under a directory (recursively, sorted; others are skipped with a warning)."""
    path = Path(input_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; pass an image file or a directory of images")
    if path.is_file():  # named explicitly: tried whatever its extension
        return ImageFiles([path.resolve()], [path.name], path.resolve().parent)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    images = [p for p in files if is_image_file(p)]
    others = [p.relative_to(path).as_posix() for p in files if not is_image_file(p)]
    if others:
        shown = ", ".join(others[:10]) + (", ..." if len(others) > 10 else "")
        log.warning("skipped %d file(s) under %s that are not images (by extension): %s", len(others), path, shown)
    if not images:
        raise FileNotFoundError(f"no image files under {path} (looked for {', '.join(IMAGE_EXTENSIONS)}); pass "
                                "input= an image file or a directory that holds images")
    return ImageFiles([p.resolve() for p in images], [p.relative_to(path).as_posix() for p in images],
                      path.resolve())


def output_names(names: Sequence[str], suffix: str = ".png") -> list[str]:
    """Relative output file names: the input's with `suffix`; where two inputs would collide (a.jpg, a.png) the
    later keeps its own extension too (a.jpg.png)."""
    out, seen = [], set()
    for name in names:
        candidate = str(Path(name).with_suffix(suffix))
        if candidate in seen:
            candidate = name + suffix
        seen.add(candidate)
        out.append(candidate)
    return out


@dataclass
class Failure:
    index: int
    name: str
    reason: str


def read_rgb(path: Path) -> Image.Image:
    """Decode fully, so truncation is caught here rather than in the model; grey, palette, RGBA, 16-bit -> RGB
    exactly as training reads them (`data.images.to_rgb`)."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def default_output(ckpt: Path) -> Path:
    """predictions/<run dir>_<ckpt stem> for a checkpoint inside a run's checkpoints/ folder, else
    predictions/<ckpt stem>, under the current directory."""
    ckpt = ckpt.resolve()
    run = f"{ckpt.parent.parent.name}_" if ckpt.parent.name == "checkpoints" else ""
    return Path("predictions") / f"{run}{ckpt.stem}"


def progress_columns() -> tuple[Any, ...]:
    """The progress bar of predict.py: label, bar, done / total, elapsed, remaining."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (TextColumn("Predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("•"),
            TimeRemainingColumn())


def summarize(console: Any, written: Sequence[Path], failures: Sequence[Failure], done: int, total: int,
              out_dir: Path) -> dict[str, int]:
    """Print the unreadable files, what was written and the counts; RuntimeError when no file could be read."""
    if failures:
        console.print(f"[bold yellow]{len(failures)} unreadable file(s) skipped:[/] "
                      + ", ".join(f.name for f in sorted(failures, key=lambda f: f.index)), soft_wrap=True)
    for path in written:
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    console.print(f"{done} image(s) predicted, {len(failures)} unreadable; output: {out_dir.resolve()}",
                  soft_wrap=True, highlight=False)
    if not done:
        raise RuntimeError(f"none of the {total} input file(s) could be read; see the warnings above")
    return {"images": done, "failed": len(failures)}
