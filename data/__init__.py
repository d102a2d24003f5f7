"""Cerberus data: LightningDataModules per format, transforms, and the synthetic data generator."""

from .classification import ImageFolderDataModule
from .detection import CocoDetectionDataModule
from .errors import DataError
from .segmentation import CocoSegmentationDataModule, MaskDataModule

__all__ = ["CocoDetectionDataModule", "CocoSegmentationDataModule", "DataError", "ImageFolderDataModule",
           "MaskDataModule"]
