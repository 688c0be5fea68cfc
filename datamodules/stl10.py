"""STL-10 from the official binary release, memory-mapped.

On disk (``stl10_binary/``, from http://ai.stanford.edu/~acoates/stl10/): ``*_X.bin`` are packed
uint8 images of 3 x 96 x 96 = 27,648 bytes each, one channel plane after another (R, G, B), each
plane stored column-major; ``*_y.bin`` hold one uint8 label per image, 1..10; ``class_names.txt``
names them in label order; ``fold_indices.txt`` has one line per fold of the official protocol,
each 1,000 space-separated 0-based indices into the training set.

Images are never read whole: every split is a view into an ``np.memmap`` that each process opens
for itself (``unlabeled_X.bin`` alone is 2.76 GB), so workers share the OS page cache.

Run ``python -m datamodules.stl10 DATA_DIR`` to recompute the normalisation constants.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules.archives import download_url, extract_tar, md5sum, offline_hint
from datamodules.augment import ARRAY_PRESETS, TrainAugment
from datamodules.base import ImageClassificationDataModule, check_image_size
from datamodules.datasets import ArrayImageDataset
from datamodules.info import DatasetInfo
from datamodules.splits import resolve_split_size, stratified_split

__all__ = [
    "STL10_CLASSES",
    "STL10_MEAN",
    "STL10_STD",
    "STL10DataModule",
    "STL10Images",
    "compute_mean_std",
    "read_stl10_labels",
]

STL10_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
ARCHIVE_NAME = "stl10_binary.tar.gz"
FOLDER_NAME = "stl10_binary"
IMAGE_SHAPE = (3, 96, 96)
IMAGE_BYTES = 3 * 96 * 96  # 27,648
NUM_FOLDS = 10
TRAIN_IMAGES = 5000  # in the official release's train_X.bin
FOLD_IMAGES = 1000  # in each official fold
STL10_CLASSES = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)  # fmt: skip

# Per-channel mean and standard deviation of the 5,000 STL-10 training images, in [0, 1] units:
# the mean and the population standard deviation over all 5,000 x 96 x 96 pixels of each
# channel (not the average of per-image deviations, which gives the smaller ~0.224 that also
# circulates). Neither the STL-10 paper nor its web page publishes them; these are the values
# that circulate in public PyTorch code's per-dataset statistics tables (next to CIFAR-10's
# 0.4914/0.2470). They were not recomputed in this repository because its CI has no copy of
# STL-10: `compute_mean_std(data_dir)` or `python -m datamodules.stl10 DATA_DIR` recomputes them
# from a real copy.
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)


class STL10Images:
    """The images of one ``*_X.bin`` file, memory-mapped and read one image at a time.

    The map is opened lazily in each process and dropped when pickled, so DataLoader workers
    (forked or spawned) and DDP processes each map the file rather than receive a copy of it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"STL-10 image file not found: {self.path}")
        size = self.path.stat().st_size
        if size == 0 or size % IMAGE_BYTES:
            raise ValueError(
                f"{self.path} has {size} bytes, which is not a positive multiple of {IMAGE_BYTES} "
                "(one 3x96x96 uint8 image); the file is truncated or not an STL-10 image file"
            )
        self.count = size // IMAGE_BYTES
        self._array: np.memmap | None = None

    @property
    def array(self) -> np.memmap:
        """``(N, 3, 96, 96)`` as stored: the last two axes are (column, row)."""
        if self._array is None:
            self._array = np.memmap(
                self.path, dtype=np.uint8, mode="r", shape=(self.count, *IMAGE_SHAPE)
            )
        return self._array

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        # column-major planes -> row-major (C, H, W); the copy is one 27 KB image
        return np.ascontiguousarray(self.array[index].transpose(0, 2, 1))

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "count": self.count, "_array": None}


def read_stl10_labels(path: str | Path, count: int) -> np.ndarray:
    """Labels of a ``*_y.bin`` file as int64 0..9 (they are 1..10 on disk)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STL-10 label file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) != count:
        raise ValueError(
            f"{path} holds {len(raw)} labels but its image file holds {count} images; "
            "the files are truncated or from different splits"
        )
    if len(raw) and (raw.min() < 1 or raw.max() > len(STL10_CLASSES)):
        raise ValueError(f"{path}: labels must be in 1..10, found {raw.min()}..{raw.max()}")
    return raw.astype(np.int64) - 1


def read_fold_indices(path: str | Path, fold: int, train_count: int) -> np.ndarray:
    """The training indices of one fold of the official protocol."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STL-10 fold file not found: {path}")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != NUM_FOLDS:
        raise ValueError(f"{path} has {len(lines)} folds, expected {NUM_FOLDS}")
    try:
        indices = np.array([int(tok) for tok in lines[fold].split()], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: fold {fold} is not a list of integers ({err})") from err
    if len(indices) == 0:
        raise ValueError(f"{path}: fold {fold} is empty")
    if indices.min() < 0 or indices.max() >= train_count:
        raise ValueError(
            f"{path}: fold {fold} must hold indices in [0, {train_count}), found "
            f"{indices.min()}..{indices.max()}"
        )
    return np.sort(indices)


def find_stl10_folder(data_dir: str | Path) -> Path:
    """``data_dir/stl10_binary``, or ``data_dir`` itself when it already holds the files."""
    data_dir = Path(data_dir)
    if (data_dir / "train_X.bin").is_file() and not (data_dir / FOLDER_NAME).is_dir():
        return data_dir
    return data_dir / FOLDER_NAME


def compute_mean_std(
    data_dir: str | Path, split: str = "train", chunk: int = 500
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std (in [0, 1] units) of one split's images.

    Streams the memory map in chunks with float64 sums, so the 2.76 GB unlabeled split can be
    measured in constant memory. This is how ``STL10_MEAN``/``STL10_STD`` are defined.
    """
    images = STL10Images(find_stl10_folder(data_dir) / f"{split}_X.bin")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), chunk):
        block = np.asarray(images.array[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
    pixels = len(images) * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class STL10DataModule(ImageClassificationDataModule):
    """STL-10: 10 classes of 96x96 colour images; 5,000 train, 8,000 test, 100,000 unlabeled.

    Supervised splits: train = the training images (or one official ``fold``) minus a seeded,
    stratified hold-out of ``val_split`` images; validation = that hold-out, with evaluation
    transforms; test = the 8,000 test images. With ``val_split=0`` validation runs on the test
    set (only do that when you do no model selection). The unlabeled images are available
    through :meth:`unlabeled_dataloader` and never enter supervised training.

    Args:
        data_dir: Folder holding ``stl10_binary/`` (or the files themselves), and where
            ``download=True`` puts the archive.
        val_split: Hold-out size, an int count or a float fraction of the training images
            (0.1 = 500 of the 5,000, or 100 of a fold's 1,000).
        fold: One of the 10 official training folds (1,000 images each), or ``None`` for all
            5,000 training images.
        image_size: Side of the images the loaders yield; 96 is the native size.
        augment: ``False`` turns training augmentation off (images are only resized to
            ``image_size``); then ``train_augment``, ``train_policy`` and ``random_erasing``
            must stay at their defaults.
        train_augment: Training crop preset (see :meth:`_make_train_transform`):
            ``"pad_crop"`` (the default), or one of the ImageNet presets of
            :mod:`datamodules.augment` scaled to the 96 px images.
        train_policy: ``None``, ``"randaugment"``, ``"trivialaugment"`` or ``"autoaugment"``.
        random_erasing: Probability of RandomErasing (filled with the STL-10 mean colour).
        download: Fetch the official archive (2.6 GB) in ``prepare_data`` if the files are
            missing.
        batch_size, num_workers, pin_memory, persistent_workers, seed, predict_dir,
            eval_protocol: see
            :class:`ImageClassificationDataModule`.
    """

    url = STL10_URL
    md5 = STL10_MD5

    def __init__(
        self,
        data_dir: str = "data",
        val_split: int | float = 0.1,
        fold: int | None = None,
        image_size: int = 96,
        augment: bool = True,
        train_augment: str = "pad_crop",
        train_policy: str | None = None,
        random_erasing: float = 0.0,
        download: bool = False,
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
        if fold is not None and (
            isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < NUM_FOLDS
        ):
            raise ValueError(f"fold must be None or an int in 0..9, got {fold!r}")
        check_image_size(image_size, batch_size=batch_size, channels=3)
        # Against the official release's sizes, so a hold-out that could never fit fails here;
        # the files themselves are checked in setup.
        resolve_split_size(val_split, FOLD_IMAGES if fold is not None else TRAIN_IMAGES)
        self.data_dir = data_dir
        self.val_split = val_split
        self.fold = fold
        self._image_size = image_size
        self.augment = augment
        self._train_augment = TrainAugment(
            train_augment, train_policy, random_erasing, presets=ARRAY_PRESETS, where="STL-10"
        )
        if not augment and (train_augment, train_policy, random_erasing) != ("pad_crop", None, 0):
            raise ValueError(
                f"augment=False turns training augmentation off, so train_augment="
                f"{train_augment!r}, train_policy={train_policy!r}, random_erasing="
                f"{random_erasing!r} would be ignored; set augment=True or leave them at their "
                "defaults ('pad_crop', None, 0)"
            )
        self.train_augment = train_augment
        self.train_policy = train_policy
        self.random_erasing = random_erasing
        self.download = download
        self.train_transform = self._make_train_transform()
        self.eval_transform = self._make_eval_transform()
        self.save_hyperparameters()

    # ------------------------------------------------------------------ facts
    @property
    def folder(self) -> Path:
        return find_stl10_folder(self.data_dir)

    def _read_class_names(self) -> tuple[str, ...]:
        names_file = self.folder / "class_names.txt"
        if names_file.is_file():
            names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
            if len(names) != len(STL10_CLASSES):
                raise ValueError(
                    f"{names_file} lists {len(names)} class names, expected {len(STL10_CLASSES)}"
                )
            return tuple(names)
        return STL10_CLASSES  # the release's own order, before it is downloaded

    def _resolve_info(self) -> DatasetInfo:
        return DatasetInfo(
            name="stl10",
            class_names=self._read_class_names(),
            in_channels=IMAGE_SHAPE[0],
            image_size=self._image_size,
            mean=STL10_MEAN,
            std=STL10_STD,
        )

    @property
    def eval_resize_size(self) -> int:
        return self._image_size

    # ------------------------------------------------------------------ transforms
    def _make_train_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The ``train_augment`` preset on the stored 96 px images (:mod:`datamodules.augment`).

        ``pad_crop`` (the default): shift by up to 12 px (1/8 of the side, reflect-padded) and
        mirror half the time, then resize to ``image_size`` if that is not 96. The CIFAR recipe
        scaled to 96 px: at this resolution with only 4,500 labelled training images,
        translation and flips help while aggressive scale jitter (ImageNet's 8-100 % crops)
        throws away too much of each small image.

        The ImageNet presets scale with the images: the stored 96 px image stands in for the
        photograph and every pixel number of a preset is multiplied by ``image_size / 224``, so
        the crop keeps the paper's ratio to the rescaled image. At the native 96 px, ``alexnet``
        rescales to 110 (256 x 96/224) and crops 96 from the central 110 square; ``vgg`` draws
        the shorter side S from [110, 219] ([256, 512] x 96/224), ``vgg_fixed_256`` /
        ``vgg_fixed_384`` use S = 110 / 165, ``resnet`` S in [110, 206]; each then crops 96
        (rescale and crop in two steps, as in the papers). ``inception`` is RandomResizedCrop
        (8-100 %, 3/4-4/3) to ``image_size``. Evaluation stays the whole 96 px image.
        """
        if not self.augment:
            if self._image_size == IMAGE_SHAPE[1]:
                return None
            return v2.Resize((self._image_size, self._image_size), antialias=True)
        return self._train_augment.array_transform(self._image_size, IMAGE_SHAPE[1], STL10_MEAN)

    def _make_eval_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if self._image_size == IMAGE_SHAPE[1]:
            return None
        return v2.Resize((self._image_size, self._image_size), antialias=True)

    # ------------------------------------------------------------------ data
    def _files_present(self) -> bool:
        folder = self.folder
        return all(
            (folder / f"{split}_{kind}.bin").is_file()
            for split in ("train", "test")
            for kind in "Xy"
        )

    def prepare_data(self) -> None:
        """Make sure ``stl10_binary/`` exists: extract a local archive or download it (rank 0)."""
        if self._files_present():
            return
        data_dir = Path(self.data_dir)
        archive = data_dir / ARCHIVE_NAME
        target = data_dir / FOLDER_NAME
        if not archive.is_file():
            if not self.download:
                raise FileNotFoundError(
                    f"STL-10 not found in {target}. Pass download=True, or "
                    + offline_hint(self.url, archive, target / "train_X.bin")
                )
            try:
                download_url(self.url, archive, md5=self.md5)
            except OSError as err:  # URLError, timeouts, DNS: typically no network access
                raise FileNotFoundError(
                    f"could not download STL-10 from {self.url} ({err}). "
                    + offline_hint(self.url, archive, target / "train_X.bin")
                ) from err
        else:
            actual = md5sum(archive)
            if actual != self.md5:
                raise ValueError(
                    f"{archive} has md5 {actual}, expected {self.md5}: it is incomplete or not the "
                    f"official STL-10 archive; delete it and download it again from {self.url}"
                )
        self._extract(archive, target)

    @staticmethod
    def _extract(archive: Path, target: Path) -> None:
        # Into a temporary sibling first, renamed when complete: an interrupted extraction
        # never leaves a stl10_binary/ that looks finished.
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            extract_tar(archive, partial, desc=f"Extracting {archive.name}")
            extracted = partial / FOLDER_NAME
            if not (extracted / "train_X.bin").is_file():
                raise ValueError(f"{archive} does not contain {FOLDER_NAME}/train_X.bin")
            if target.exists():
                shutil.rmtree(target)
            os.replace(extracted, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _split_files(self, split: str) -> tuple[STL10Images, np.ndarray]:
        if not self._files_present():
            raise FileNotFoundError(
                f"STL-10 files not found in {self.folder} (expected train_X.bin, train_y.bin, "
                "test_X.bin, test_y.bin). Call prepare_data() (the Trainer does) with "
                f"download=True, or "
                + offline_hint(
                    self.url, Path(self.data_dir) / ARCHIVE_NAME, self.folder / "train_X.bin"
                )
            )
        images = STL10Images(self.folder / f"{split}_X.bin")
        labels = read_stl10_labels(self.folder / f"{split}_y.bin", len(images))
        return images, labels

    def _build_datasets(self) -> None:
        train_images, train_labels = self._split_files("train")
        test_images, test_labels = self._split_files("test")
        names = self._read_class_names()  # validates class_names.txt, which may be new
        if names != self.info.class_names:
            raise ValueError(
                f"{self.folder / 'class_names.txt'} names the classes {list(names)}, but they "
                f"were read earlier as {list(self.info.class_names)} (before the file was "
                "downloaded or changed); make the datamodule again to read them afresh"
            )

        pool = np.arange(len(train_images))
        if self.fold is not None:
            pool = read_fold_indices(self.folder / "fold_indices.txt", self.fold, len(train_images))
        holdout = resolve_split_size(self.val_split, len(pool))
        kept, held = stratified_split(train_labels[pool], holdout, self.seed)

        self.train_dataset = ArrayImageDataset(
            train_images, train_labels, pool[kept], self.train_transform
        )
        self.test_dataset = ArrayImageDataset(test_images, test_labels, None, self.eval_transform)
        if holdout:
            self.val_dataset = ArrayImageDataset(
                train_images, train_labels, pool[held], self.eval_transform
            )
        else:
            self.val_dataset = self.test_dataset

    def unlabeled_dataset(
        self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> ArrayImageDataset:
        """The 100,000 unlabeled images (label -1), memory-mapped; ``transform`` defaults to
        the evaluation transform, since self-supervised methods bring their own augmentation."""
        path = self.folder / "unlabeled_X.bin"
        if not path.is_file():
            raise FileNotFoundError(f"STL-10 unlabeled images not found: {path}")
        return ArrayImageDataset(
            STL10Images(path),
            None,
            None,
            transform if transform is not None else self.eval_transform,
        )

    def unlabeled_dataloader(
        self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> DataLoader:
        """Shuffled batches of ``(images, -1)`` from :meth:`unlabeled_dataset`."""
        return self._loader(self.unlabeled_dataset(transform), shuffle=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Recompute STL-10's normalisation constants.")
    parser.add_argument("data_dir", help="folder holding stl10_binary/ (or its files)")
    parser.add_argument("--split", default="train", choices=["train", "test", "unlabeled"])
    args = parser.parse_args(argv)
    mean, std = compute_mean_std(args.data_dir, args.split)
    print("mean =", tuple(round(m, 4) for m in mean))
    print("std  =", tuple(round(s, 4) for s in std))


if __name__ == "__main__":
    main()
