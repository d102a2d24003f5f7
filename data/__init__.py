"""Cerberus data: LightningDataModules per format, transforms, and the synthetic data generator."""

from .classification import ImageFolderDataModule
from .detection import CocoDetectionDataModule
from .errors import DataError

__all__ = ["CocoDetectionDataModule", "DataError", "ImageFolderDataModule"]
