from .weighting import (
    WEIGHTING_METHODS,
    DynamicWeightAverage,
    EqualWeighting,
    LossWeighting,
    UncertaintyWeighting,
    build_weighting,
)

__all__ = [
    "WEIGHTING_METHODS",
    "DynamicWeightAverage",
    "EqualWeighting",
    "LossWeighting",
    "UncertaintyWeighting",
    "build_weighting",
]
