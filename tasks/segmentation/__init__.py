from .model import SegmentationModel, SemanticFPNModel, UnetModel
from .module import SegmentationTask

__all__ = ["SegmentationModel", "SegmentationTask", "SemanticFPNModel", "UnetModel"]
