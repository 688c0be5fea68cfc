"""scikit-learn's bundled handwritten digits: real data that trains on a fresh machine, offline.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 scans (UCI "optdigits", values 0..16) inside
the scikit-learn wheel, so the README's first command needs no download and no GPU. The scans
are upscaled once (bilinear, default 32x32) so the small ResNets have room for their strides,
then kept in memory as one uint8 tensor.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from datamodules.base import ImageClassificationDataModule, check_image_size
from datamodules.datasets import ArrayImageDataset
from datamodules.info import DatasetInfo
from datamodules.splits import check_split_size, resolve_split_size, stratified_split

__all__ = ["DigitsDataModule"]


class _DigitsData:
    """The upscaled images, labels and seeded split indices (built once per datamodule)."""

    def __init__(self, image_size: int, val_split: int | float, test_split: int | float, seed: int):
        from sklearn.datasets import load_digits  # deferred: importing sklearn costs ~1 s

        digits = load_digits()
        raw = torch.from_numpy(digits.images).float().mul_(255 / 16).unsqueeze(1)
        if image_size != raw.shape[-1]:
            raw = F.interpolate(raw, size=(image_size, image_size), mode="bilinear")
        self.images = raw.round_().clamp_(0, 255).to(torch.uint8)
        self.labels = digits.target.astype(np.int64)

        total = len(self.labels)
        n_test = resolve_split_size(test_split, total, "test_split")
        rest, self.test_indices = stratified_split(self.labels, n_test, seed)
        n_val = resolve_split_size(val_split, len(rest), "val_split")
        kept, held = stratified_split(self.labels[rest], n_val, seed + 1)
        self.train_indices, self.val_indices = rest[kept], rest[held]

        train = self.images[torch.from_numpy(self.train_indices)].double().div_(255)
        self.mean = (float(train.mean()),)
        self.std = (float(train.std(correction=0)),)


class DigitsDataModule(ImageClassificationDataModule):
    """Handwritten digits 0-9 (1,797 scans), with a seeded stratified train/val/test split.

    Args:
        image_size: Side the 8x8 scans are upscaled to (once, up front).
        val_split: Validation images, as a count or a fraction of what the test split leaves.
        test_split: Test images, as a count or a fraction of all 1,797.
        augment: Small random affine jitter (rotation, shift, scale) for training; digits are
            not mirror-symmetric, so there is no flip.
        batch_size, num_workers, pin_memory, persistent_workers, seed, predict_dir,
            eval_protocol: see
            :class:`ImageClassificationDataModule`. ``num_workers=None`` means 0 here: the data
            is one in-memory tensor, and worker start-up would cost more than it saves.

    ``mean``/``std`` are measured on the training split itself (it takes milliseconds).
    """

    def __init__(
        self,
        image_size: int = 32,
        val_split: int | float = 0.15,
        test_split: int | float = 0.15,
        augment: bool = True,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        predict_dir: str | None = None,
        eval_protocol: str = "center",
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            seed=seed,
            predict_dir=predict_dir,
            eval_protocol=eval_protocol,
        )
        check_image_size(image_size, batch_size=batch_size)
        self._image_size = image_size
        self.val_split = check_split_size(val_split, "val_split")
        self.test_split = check_split_size(test_split, "test_split")
        self.augment = augment
        self.train_transform = (
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)) if augment else None
        )
        self.eval_transform = None  # the images are stored at their final size
        self.save_hyperparameters()

    def _default_num_workers(self) -> int:
        return 0

    @cached_property
    def data(self) -> _DigitsData:
        return _DigitsData(self._image_size, self.val_split, self.test_split, self.seed)

    def _resolve_info(self) -> DatasetInfo:
        data = self.data  # mean and std are measured on the training split
        return DatasetInfo(
            name="digits",
            class_names=tuple(str(digit) for digit in range(10)),
            in_channels=1,
            image_size=self._image_size,
            mean=data.mean,
            std=data.std,
        )

    @property
    def eval_resize_size(self) -> int:
        return self._image_size

    def _build_datasets(self) -> None:
        data = self.data
        self.train_dataset = ArrayImageDataset(
            data.images, data.labels, data.train_indices, self.train_transform
        )
        self.val_dataset = ArrayImageDataset(
            data.images, data.labels, data.val_indices, self.eval_transform
        )
        self.test_dataset = ArrayImageDataset(
            data.images, data.labels, data.test_indices, self.eval_transform
        )
