"""Class names that mean "background": not painted in overlays, not checked for a handedness. No torch here (the
ONNX prediction path imports it)."""

from __future__ import annotations

from collections.abc import Sequence

BACKGROUND_NAMES = ("background", "_background_", "bg", "__background__")


def background_classes(class_names: Sequence[str]) -> list[int]:
    """The indices of the classes named like background."""
    return [k for k, n in enumerate(class_names) if n.lower() in BACKGROUND_NAMES]
