from .model import DetectionModel, RCNNHead, load_torchvision_detector, torchvision_state_dict
from .module import DetectionPart, DetectionTask

__all__ = ["DetectionModel", "DetectionPart", "DetectionTask", "RCNNHead", "load_torchvision_detector",
           "torchvision_state_dict"]
