"""Reading image files with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | Path) -> Image.Image:
    """Decode fully (so truncation is caught here, not as a shape error later) and convert to RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise DataError(f"image file {path} does not exist; restore it or remove it from the dataset") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read image {path}: {err}. The file is truncated, corrupt or not an image; "
            "re-export or re-download it, or delete it from the dataset."
        ) from err
