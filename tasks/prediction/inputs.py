"""The prediction loader's dataset: each file read (`files.read_rgb`) and prepared in the DataLoader's workers;
unreadable files become `Failure`s that are reported and counted, never dropped silently."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from .files import Failure, ImageFiles, list_images, output_names, read_rgb

__all__ = ["Failure", "ImageDataset", "ImageFiles", "list_images", "output_names", "read_rgb", "split_failures"]


class ImageDataset(Dataset):
    """Item i: `{"index": i, **prepare(PIL image)}`, or a `Failure` naming the file when it cannot be read."""

    def __init__(self, files: ImageFiles, prepare: Callable[[Image.Image], dict[str, Any]]) -> None:
        self.files, self.prepare = files, prepare

    def __len__(self) -> int:
        return len(self.files.paths)

    def __getitem__(self, i: int) -> dict[str, Any] | Failure:
        try:
            image = read_rgb(self.files.paths[i])
        except Exception as err:  # noqa: BLE001 - any decoder error means "unreadable": report it, go on
            return Failure(i, self.files.names[i], f"{type(err).__name__}: {err}")
        return {"index": i, **self.prepare(image)}


def split_failures(items: list[dict[str, Any] | Failure]) -> tuple[list[dict[str, Any]], list[Failure]]:
    """DataLoader collate: the readable items (as a list; each task batches them itself) and the failures."""
    return [x for x in items if not isinstance(x, Failure)], [x for x in items if isinstance(x, Failure)]
