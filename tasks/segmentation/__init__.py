from .model import FPNSemanticHead, SegmentationModel, SemanticFPNModel, UnetHead, UnetModel, segmentation_head
from .module import SegmentationPart, SegmentationTask

__all__ = ["FPNSemanticHead", "SegmentationModel", "SegmentationPart", "SegmentationTask", "SemanticFPNModel",
           "UnetHead", "UnetModel", "segmentation_head"]
