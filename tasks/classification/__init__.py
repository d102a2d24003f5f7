from .model import ClassificationHead, ClassificationModel
from .module import ClassificationPart, ClassificationTask

__all__ = ["ClassificationHead", "ClassificationModel", "ClassificationPart", "ClassificationTask"]
