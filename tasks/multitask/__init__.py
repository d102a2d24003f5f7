from .model import HEAD_NAMES, MultiTaskModel, build_head
from .module import MultiTaskTask, joint_parts
from .weighting import (
    WEIGHTING_METHODS,
    DynamicWeightAverage,
    EqualWeighting,
    GradNorm,
    LossWeighting,
    PCGrad,
    UncertaintyWeighting,
    build_weighting,
)

__all__ = [
    "HEAD_NAMES",
    "WEIGHTING_METHODS",
    "DynamicWeightAverage",
    "EqualWeighting",
    "GradNorm",
    "LossWeighting",
    "MultiTaskModel",
    "MultiTaskTask",
    "PCGrad",
    "UncertaintyWeighting",
    "build_head",
    "build_weighting",
    "joint_parts",
]
