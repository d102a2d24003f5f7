from .model import DetectionModel, load_torchvision_detector
from .module import DetectionTask

__all__ = ["DetectionModel", "DetectionTask", "load_torchvision_detector"]
