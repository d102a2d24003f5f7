"""Reading image files with errors that name the file; 16-bit and float images converted to 8 bit correctly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError, Problems

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # PIL's convert("RGB") clips these to 255: white


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def high_bit_scale(img: Image.Image, arr: np.ndarray) -> tuple[float, float, str]:
    """(offset, divisor, how) taking a 16-bit / 32-bit / float grayscale image to 0..1: 16-bit by its type range
    (value / 65535, as torchvision's decode_image + ToDtype(scale=True)), 32-bit integers in 0..65535 likewise,
    floats in 0..1 as they are, anything else by its own min..max."""
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
        return 0.0, 65535.0, "value / 257"
    if img.mode == "F" and lo >= 0 and hi <= 1:
        return 0.0, 1.0, "value x 255"
    return lo, max(hi - lo, 1e-12), f"its own range {lo:g}..{hi:g} to 0..255"


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any PIL image; 16-bit, 32-bit and float grayscale are scaled to 8 bit (see `high_bit_scale`), not
    clipped at 255 as `Image.convert` does (which turns a 16-bit picture white)."""
    if img.mode not in HIGH_BIT_MODES:
        return img.convert("RGB")
    arr = np.asarray(img, dtype=np.float64)
    offset, divisor, _ = high_bit_scale(img, arr)
    gray = np.clip(np.rint((arr - offset) / divisor * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def load_rgb(path: str | Path, notes: Problems | None = None) -> Image.Image:
    """Decode fully (so truncation is caught here, not as a shape error later) and convert to RGB (`to_rgb`).
    `notes` (data.check) is told when an image was 16-bit / 32-bit / float and how it was scaled."""
    try:
        with Image.open(path) as img:
            img.load()
            if notes is not None and img.mode in HIGH_BIT_MODES:
                how = high_bit_scale(img, np.asarray(img))[2]
                notes.note("high bit depth", f"{path} has more than 8 bits per pixel (grayscale mode {img.mode}); "
                                             f"it is read as 8-bit grayscale by {how}")
            return to_rgb(img)
    except FileNotFoundError as err:
        raise DataError(f"image file {path} does not exist; restore it or remove it from the dataset") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read image {path}: {err}. The file is truncated, corrupt or not an image; "
            "re-export or re-download it, or delete it from the dataset."
        ) from err


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header (nothing decoded), or None when it cannot be read (the loaders
    report unreadable files when they decode them)."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError):
        return None


def sample_sizes(paths: Sequence[Path], limit: int = 200) -> list[tuple[int, int]]:
    """Header sizes of up to `limit` files spread evenly over `paths` (cheap: a few ms for 200 files)."""
    step = max(1, len(paths) // limit)
    return [s for p in paths[::step][:limit] if (s := header_size(p)) is not None]
