from .model import ClassificationModel
from .module import ClassificationTask

__all__ = ["ClassificationModel", "ClassificationTask"]
