"""Cerberus data: LightningDataModules per format, transforms, and the synthetic data generator."""

from .classification import ImageFolderDataModule
from .errors import DataError

__all__ = ["DataError", "ImageFolderDataModule"]
