from .model import SegmentationModel
from .module import SegmentationTask

__all__ = ["SegmentationModel", "SegmentationTask"]
