"""Lightning datamodules for image classification: STL-10, ImageNet, own image folders, digits.

Every datamodule yields ``(images, labels)`` with uint8 images and normalises them on the
accelerator; see :class:`ImageClassificationDataModule` for the shared arguments and properties.
What a datamodule serves (classes, channels, size, normalisation) is its :class:`DatasetInfo`,
which Lightning code reads through :func:`dataset_info`.
"""

from datamodules.base import ImageClassificationDataModule
from datamodules.digits import DigitsDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.imagenet import ImageNetDataModule
from datamodules.info import DatasetInfo, dataset_info
from datamodules.stl10 import STL10DataModule
from datamodules.streaming import StreamingDataModule

__all__ = [
    "DatasetInfo",
    "DigitsDataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "STL10DataModule",
    "StreamingDataModule",
    "dataset_info",
]
