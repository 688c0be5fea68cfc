"""The user's own images: ``train/<class>/...`` with optional ``val/`` and ``test/`` beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from datamodules.base import DecodeDevice, FileImageDataModule
from datamodules.files import (
    IMAGE_EXTENSIONS,
    class_tree_samples,
    display_name,
    index_images,
    list_class_dirs,
)
from datamodules.imagenet import IMAGENET_MEAN, IMAGENET_STD
from datamodules.info import DatasetInfo
from datamodules.splits import check_split_size, resolve_split_size, stratified_split

__all__ = ["ImageFolderDataModule"]


class ImageFolderDataModule(FileImageDataModule):
    """Images in class folders, torchvision ``ImageFolder`` style.

    ``data_dir/train/<class>/**/<image>`` is required; classes are the sorted folder names.
    ``data_dir/val/`` and ``data_dir/test/``, when present, must have the same class folders.
    Without ``val/``, a seeded stratified ``val_split`` of train is the validation set.

    A folder name that is not valid UTF-8 (e.g. Latin-1 ``b"caf\\xe9"``) is found and read by its
    exact bytes, while its class name is its readable form from
    :func:`~datamodules.files.display_name` (``"caf\\\\xe9"``), which checkpoints, YAML files,
    TensorBoard and CSV files can all store.

    Args:
        data_dir: The folder holding ``train/`` (and optionally ``val/``, ``test/``).
        image_size: Training and evaluation crop side.
        eval_resize: Shorter side before the evaluation centre crop; default ``image_size *
            256 / 224``.
        min_scale: Smallest crop area fraction of RandomResizedCrop (``train_augment=
            "inception"`` only).
        val_split: Hold-out from train when there is no ``val/`` (int count or float fraction).
        mean, std: Per-channel normalisation in [0, 1] units. Default: ImageNet's, which is
            right when fine-tuning ImageNet-pretrained weights, the common case for own data.
        on_bad_image: ``"error"`` or ``"skip"`` (with a warning counting the skips).
        cache_dir: Where file-index caches go (see :class:`ImageNetDataModule`).
        train_augment, train_policy, random_erasing: Training augmentation, as for
            :class:`ImageNetDataModule` (see :mod:`datamodules.augment`); erased regions are
            filled with ``mean``.
        decode_device: Where training images are decoded, as for :class:`ImageNetDataModule`.
        batch_size, num_workers, pin_memory, persistent_workers, seed, predict_dir,
            eval_protocol: see
            :class:`ImageClassificationDataModule`.
    """

    def __init__(
        self,
        data_dir: str,
        image_size: int = 224,
        eval_resize: int | None = None,
        min_scale: float = 0.08,
        val_split: int | float = 0.1,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        on_bad_image: Literal["error", "skip"] = "error",
        cache_dir: str | None = None,
        train_augment: str = "inception",
        train_policy: str | None = None,
        random_erasing: float = 0.0,
        decode_device: DecodeDevice = "worker",
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        predict_dir: str | None = None,
        eval_protocol: str = "center",
    ) -> None:
        train_dir = Path(data_dir) / "train"
        if not train_dir.is_dir():
            raise FileNotFoundError(
                f"expected training images in {train_dir}/<class>/ (data_dir={data_dir!r})"
            )
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and (len(value) != 3 or any(v < 0 for v in value)):
                raise ValueError(f"{name} must be 3 non-negative floats (R, G, B), got {value!r}")
        if std is not None and any(v == 0 for v in std):
            raise ValueError(f"std must be positive, got {std!r}")
        # Known before the base class builds the training transform, whose erasing paints it.
        resolved_mean = tuple(float(v) for v in mean) if mean is not None else IMAGENET_MEAN
        super().__init__(
            data_dir=data_dir,
            image_size=image_size,
            eval_resize=eval_resize,
            min_scale=min_scale,
            on_bad_image=on_bad_image,
            cache_dir=cache_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            seed=seed,
            predict_dir=predict_dir,
            eval_protocol=eval_protocol,
            train_augment=train_augment,
            train_policy=train_policy,
            random_erasing=random_erasing,
            decode_device=decode_device,
            erase_fill=resolved_mean,
        )
        self.val_split = check_split_size(val_split, "val_split")  # its size is checked in setup
        self._mean = resolved_mean
        self._std = tuple(float(v) for v in std) if std is not None else IMAGENET_STD
        self._folders: list[str] | None = None
        self.save_hyperparameters()

    def _resolve_info(self) -> DatasetInfo:
        # Class names are the folders' names as valid UTF-8 text, in label order.
        return DatasetInfo(
            name="imagefolder",
            class_names=tuple(display_name(folder) for folder in self._class_folders()),
            in_channels=3,
            image_size=self._image_size,
            mean=self._mean,
            std=self._std,
        )

    def _class_folders(self) -> list[str]:
        """The class folders' exact names (``os.fsdecode`` form), in label order, listed once:
        the labels of every split are positions in this one list."""
        if self._folders is None:
            self._folders = self._list_class_folders()
        return list(self._folders)

    def _list_class_folders(self) -> list[str]:
        train_dir = Path(self.data_dir) / "train"
        shown = display_name(os.fspath(train_dir))
        folders = list_class_dirs(train_dir)
        if not folders:
            raise ValueError(f"{shown} has no class folders; expected {shown}/<class>/")
        names = [display_name(folder) for folder in folders]
        if len(set(names)) != len(names):
            # e.g. b"caf\xe9" beside a folder literally named "caf\xe9"
            clashing = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(
                f"{shown}: class folders {clashing} differ only in bytes that are not UTF-8, "
                "so their class names would be the same; rename one of them"
            )
        return folders

    def _missing_split_message(self, name: str) -> str:
        folder = display_name(os.fspath(Path(self.data_dir) / name))
        return f"no {name} split: create {folder}/<class>/ with images"

    def _split_samples(self, split: str, classes: list[str]) -> tuple[Path, np.ndarray, np.ndarray]:
        folder = Path(self.data_dir) / split
        found = list_class_dirs(folder)
        missing = [display_name(c) for c in sorted(set(classes) - set(found))]
        extra = [display_name(c) for c in sorted(set(found) - set(classes))]
        if split == "train" and found != classes:
            # The labels the model was given are positions in the list read before.
            raise ValueError(
                f"{display_name(os.fspath(folder))}: the class folders changed after the "
                f"classes were read (now {len(found)} folders, {len(classes)} classes; gone "
                f"{missing}, new {extra}); make a new datamodule to read them afresh"
            )
        if found != classes:
            train_dir = display_name(os.fspath(Path(self.data_dir) / "train"))
            raise ValueError(
                f"{display_name(os.fspath(folder))} has different class folders than {train_dir}: "
                f"missing {missing}, not in train {extra}; every split needs the same classes"
            )
        index = index_images(folder, self._cache_dirs())
        if len(index) == 0:
            raise ValueError(
                f"no image files in {display_name(os.fspath(folder))} (expected extensions "
                f"{sorted(IMAGE_EXTENSIONS)})"
            )
        paths, labels = class_tree_samples(index, classes, display_name(os.fspath(folder)))
        return index.root, paths, labels

    def _build_datasets(self) -> None:
        classes = self._class_folders()
        train_root, train_paths, train_labels = self._split_samples("train", classes)
        root = Path(self.data_dir)
        if (root / "val").is_dir():
            val_root, val_paths, val_labels = self._split_samples("val", classes)
            self.val_dataset = self._file_dataset(val_root, val_paths, val_labels, train=False)
        else:
            holdout = resolve_split_size(self.val_split, len(train_paths))
            if holdout == 0:
                raise ValueError(
                    f"there is no {root / 'val'} folder and val_split={self.val_split!r} holds "
                    "nothing out: add val/ or set val_split > 0"
                )
            kept, held = stratified_split(train_labels, holdout, self.seed)
            self.val_dataset = self._file_dataset(
                train_root, train_paths[held], train_labels[held], train=False
            )
            train_paths, train_labels = train_paths[kept], train_labels[kept]
        self.train_dataset = self._file_dataset(train_root, train_paths, train_labels, train=True)
        if (root / "test").is_dir():
            test_root, test_paths, test_labels = self._split_samples("test", classes)
            self.test_dataset = self._file_dataset(test_root, test_paths, test_labels, train=False)
