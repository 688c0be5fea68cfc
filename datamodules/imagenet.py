"""ImageNet (ILSVRC2012 classification) in whichever layout the user has it.

Layouts found in ``data_dir``, in this order:

1. Kaggle's tree: ``ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG`` and a flat
   ``ILSVRC/Data/CLS-LOC/val/``, labelled by ``LOC_val_solution.csv`` and named by
   ``LOC_synset_mapping.txt`` (both next to ``ILSVRC/``).
2. ``train/<wnid>/*.JPEG`` with ``val/<wnid>/*.JPEG`` (the usual prepared layout), or with a flat
   ``val/`` labelled from the devkit (``ILSVRC2012_devkit_t12.tar.gz`` or its extracted folder)
   or from Kaggle's ``LOC_val_solution.csv``.
3. The original archives ``ILSVRC2012_img_train.tar``, ``ILSVRC2012_img_val.tar`` and the devkit:
   ``prepare_data`` (rank 0, once) turns them into layout 2 with class folders for val.

Class indices follow torchvision (sorted WordNet ids), so torchvision's pretrained weights line
up; class names are the first name of each synset, from ``meta.mat`` or
``LOC_synset_mapping.txt`` (ImageNet has a few duplicates, e.g. two "crane"s and two "maillot"s;
the wnids in :attr:`ImageNetDataModule.wnids` are unique).

The classic devkit bug avoided here: ``ILSVRC2012_validation_ground_truth.txt`` holds
ILSVRC2012_IDs (the devkit's own 1..1000 numbering), not indices into the sorted wnids. They
are mapped ID -> wnid through ``meta.mat`` and only then to the sorted index.

The label files are read in :mod:`datamodules.imagenet_files` and the archives unpacked in
:mod:`datamodules.imagenet_archives`; their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from filelock import FileLock, Timeout
from lightning.pytorch.utilities import rank_zero_warn

from datamodules.base import DecodeDevice, FileImageDataModule
from datamodules.files import class_tree_samples, index_images, list_class_dirs
from datamodules.imagenet_archives import (
    ARCHIVE_MD5,
    prepare_train_archive,
    prepare_val_archive,
    verify_archive,
)
from datamodules.imagenet_files import (
    DEVKIT_ARCHIVE,
    DEVKIT_FOLDER,
    DOWNLOAD_PAGE,
    KAGGLE_FOLDER,
    SYNSET_MAPPING,
    TRAIN_ARCHIVE,
    VAL_ARCHIVE,
    VAL_SOLUTION,
    Devkit,
    ImageNetLayout,
    detect_layout,
    parse_meta_mat,
    read_devkit,
    read_synset_mapping,
    read_val_solution,
    val_number,
)
from datamodules.info import DatasetInfo
from datamodules.splits import check_split_size, resolve_split_size, stratified_split

__all__ = [
    "ARCHIVE_MD5",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Devkit",
    "ImageNetDataModule",
    "ImageNetLayout",
    "detect_layout",
    "parse_meta_mat",
    "read_devkit",
    "read_synset_mapping",
    "read_val_solution",
]

#: In ``data_dir``, held while the archives are extracted: nodes sharing the folder (Lightning
#: calls ``prepare_data`` once per node) extract them once, one after the other.
PREPARE_LOCK = ".lit_classifiers_prepare.lock"

# torchvision's constants (measured on the ImageNet training set); using them keeps
# torchvision's pretrained weights valid.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- datamodule
@contextlib.contextmanager
def _announced_wait(lock: FileLock) -> Iterator[None]:
    """Hold ``lock``, saying once (on stderr) that this process waits when another holds it:
    unpacking ImageNet takes many minutes, which would otherwise pass in silence."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"waiting for {lock.lock_file}: another process is unpacking the ImageNet archives "
            "beside it; this one continues when that has finished",
            file=sys.stderr,
            flush=True,
        )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class ImageNetDataModule(FileImageDataModule):
    """ImageNet-1k classification from any of the layouts in :mod:`datamodules.imagenet`.

    The official validation set is the evaluation set: it is ``test``, and also ``val`` unless
    ``val_split`` holds out a seeded, stratified part of train for model selection.

    Args:
        data_dir: The ImageNet folder (see the module docstring for the accepted layouts).
        image_size: Training and evaluation crop side (224; 227 for the paper's AlexNet).
        eval_resize: Shorter side before the evaluation centre crop; default ``image_size *
            256 / 224``.
        min_scale: Smallest crop area fraction of RandomResizedCrop (torchvision: 0.08); only
            for ``train_augment="inception"``.
        val_split: Hold-out from train used as ``val`` (an int count or a float fraction);
            0 validates on the official validation set.
        on_bad_image: ``"error"`` raises on an undecodable file naming it; ``"skip"`` drops
            such files with a warning that counts them.
        cache_dir: Where file-index caches go; default ``$LIT_CLASSIFIERS_CACHE/index``, else
            ``$XDG_CACHE_HOME/lit_classifiers/index`` or ``~/.cache/lit_classifiers/index``
            (never inside ``data_dir``).
        verify_archives: Check the published md5 of ``ILSVRC2012_img_train.tar``,
            ``ILSVRC2012_img_val.tar`` and ``ILSVRC2012_devkit_t12.tar.gz`` before
            ``prepare_data`` extracts them (minutes for the 138 GB train archive; a success is
            remembered in a ``.<archive>.md5-verified`` stamp next to it until the file
            changes). ``False`` skips the check, e.g. for archives you repacked yourself.
        train_augment: Training crop preset: ``"inception"`` (RandomResizedCrop + flip,
            torchvision's recipe), ``"alexnet"``, ``"vgg"``, ``"vgg_fixed_256"``,
            ``"vgg_fixed_384"`` or ``"resnet"`` (the papers' rescale-and-crop with PCA colour
            lighting); see :mod:`datamodules.augment`.
        train_policy: ``None``, ``"randaugment"``, ``"trivialaugment"`` or ``"autoaugment"``,
            applied to the crop.
        random_erasing: Probability of RandomErasing (filled with the ImageNet mean colour).
        decode_device: Where training images are decoded: ``"worker"`` (the DataLoader
            workers), ``"cuda"`` (nvJPEG on the training GPU; ``train_augment="inception"``
            only), ``"auto"`` or ``"cpu"`` (for testing); see :class:`FileImageDataModule`.
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
        val_split: int | float = 0,
        on_bad_image: Literal["error", "skip"] = "error",
        cache_dir: str | None = None,
        verify_archives: bool = True,
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
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"ImageNet data_dir={data_dir!r} is not a folder")
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
            erase_fill=IMAGENET_MEAN,
        )
        self.val_split = check_split_size(val_split, "val_split")  # its size is checked in setup
        if not isinstance(verify_archives, bool):
            raise TypeError(f"verify_archives must be True or False, got {verify_archives!r}")
        self.verify_archives = verify_archives
        self._layout: ImageNetLayout | None = None
        self._wnids: tuple[str, ...] | None = None
        self._wnids_source = ""
        self.save_hyperparameters()

    # ------------------------------------------------------------------ facts
    @property
    def layout(self) -> ImageNetLayout:
        """Where the images are, detected on first use.

        Detected again by :meth:`prepare_data`, which turns archives into folders, and by
        :meth:`setup`, which may run after another process's ``prepare_data`` did (DDP ranks
        other than the first never run it themselves).
        """
        if self._layout is None:
            self._layout = detect_layout(self.data_dir)
        return self._layout

    @property
    def wnids(self) -> list[str]:
        """Class WordNet ids in label order (sorted, as torchvision), listed once."""
        if self._wnids is None:
            self._wnids, self._wnids_source = self._list_wnids()
        return list(self._wnids)

    def _list_wnids(self) -> tuple[tuple[str, ...], str]:
        """(the wnids, where they were read) from the train class folders, else the devkit."""
        layout = self.layout
        if layout.train_dir.is_dir():
            wnids = list_class_dirs(layout.train_dir)
            if not wnids:
                raise ValueError(f"{layout.train_dir} has no class folders (expected <wnid>/)")
            return tuple(wnids), f"the class folders of {layout.train_dir}"
        devkit = self._devkit
        if devkit is None:
            raise FileNotFoundError(
                f"{layout.root} has ImageNet archives but no {DEVKIT_ARCHIVE}; it is needed to "
                f"label the validation images (get it from {DOWNLOAD_PAGE})"
            )
        return tuple(sorted(devkit.names)), f"the leaf synsets of {devkit.source}"

    def _resolve_info(self) -> DatasetInfo:
        wnids = self.wnids
        table = self._name_table
        if table is None:
            names = wnids
        else:
            table_names, source = table
            missing = [w for w in wnids if w not in table_names]
            if missing:
                raise ValueError(f"{source} has no entry for the class folder(s) {missing[:5]}")
            names = [table_names[w][0] for w in wnids]
        return DatasetInfo(
            name="imagenet",
            class_names=tuple(names),
            in_channels=3,
            image_size=self._image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    @cached_property
    def _devkit(self) -> Devkit | None:
        for name in (DEVKIT_ARCHIVE, DEVKIT_FOLDER):
            candidate = self._label_file(name)
            if candidate is not None:
                return read_devkit(candidate)
        return None

    def _label_file(self, name: str) -> Path | None:
        """``name`` in ``data_dir``, or in the Kaggle download root when ``data_dir`` points
        into Kaggle's tree (``.../ILSVRC/Data/CLS-LOC``), where the LOC_* files live."""
        root = Path(self.data_dir).resolve()
        folders = [root]
        if root.parts[-3:] == KAGGLE_FOLDER.parts:
            folders.append(root.parents[2])
        return next((f / name for f in folders if (f / name).exists()), None)

    @cached_property
    def _name_table(self) -> tuple[dict[str, tuple[str, ...]], Path] | None:
        if self._devkit is not None:
            return self._devkit.names, self._devkit.source
        mapping = self._label_file(SYNSET_MAPPING)
        if mapping is not None:
            return read_synset_mapping(mapping), mapping
        rank_zero_warn(
            f"no {DEVKIT_ARCHIVE} or {SYNSET_MAPPING} in {self.data_dir}: class names are the "
            "WordNet ids. Put either file there for human-readable names."
        )
        return None

    def _val_labels(self) -> tuple[dict[int, str], str]:
        """Labels for a flat val folder: the devkit's ground truth, else Kaggle's solution."""
        devkit = self._devkit
        if devkit is not None and devkit.val_ids:
            return devkit.val_wnids(), str(devkit.source)
        solution = self._label_file(VAL_SOLUTION)
        if solution is not None:
            return read_val_solution(solution), str(solution)
        raise FileNotFoundError(
            f"the validation images in {self.layout.val_dir} are not in class folders, and there "
            f"is nothing to label them with: put {DEVKIT_ARCHIVE} (from {DOWNLOAD_PAGE}) or "
            f"Kaggle's {VAL_SOLUTION} in {self.data_dir}"
        )

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Unpack the original archives into ``train/`` and ``val/`` once, then index them.

        Lightning runs this on one process per node before ``setup``; indexing here means every
        rank's ``setup`` reads the index cache instead of listing 1.33M files.
        """
        self._layout = None  # detected afresh: an earlier run may have unpacked the archives
        layout = self.layout
        if layout.kind != "kaggle" and self._archives_to_extract(layout) != (False, False):
            # Lightning prepares once per node; nodes sharing this folder take turns, and one
            # that waited finds the folders the first made (its extraction would remove them).
            lock = layout.root / PREPARE_LOCK
            try:
                with _announced_wait(FileLock(lock)):
                    self._layout = None
                    self._extract_archives(self.layout)
            finally:
                # No stray file: whoever holds the deleted lock next finds the folders made (or
                # the archive's error again).
                lock.unlink(missing_ok=True)
            self._layout = None  # archives are folders now
            layout = self.layout
        for folder in (layout.train_dir, layout.val_dir):
            if folder.is_dir():
                index_images(folder, self._cache_dirs())

    @staticmethod
    def _archives_to_extract(layout: ImageNetLayout) -> tuple[bool, bool]:
        """Whether the train and the val archive are there without their folder."""
        train = not layout.train_dir.is_dir() and (layout.root / TRAIN_ARCHIVE).is_file()
        val = not layout.val_dir.is_dir() and (layout.root / VAL_ARCHIVE).is_file()
        return train, val

    def _extract_archives(self, layout: ImageNetLayout) -> None:
        """Verify, then extract, the archives whose folder is missing (holding PREPARE_LOCK)."""
        root = layout.root
        train, val = self._archives_to_extract(layout)
        if self.verify_archives and (train or val):
            # All of them before extracting any and the smallest first, so a bad devkit or
            # val archive is found in seconds, not after the hour spent on train.
            wanted = [DEVKIT_ARCHIVE] + [VAL_ARCHIVE] * val + [TRAIN_ARCHIVE] * train
            for name in wanted:
                if (root / name).is_file():
                    verify_archive(root / name)
        if train:
            prepare_train_archive(root / TRAIN_ARCHIVE, layout.train_dir)
        if val:
            labels, source = self._val_labels()
            prepare_val_archive(root / VAL_ARCHIVE, layout.val_dir, labels, source)

    # ------------------------------------------------------------------ splits
    def _val_samples(
        self, layout: ImageNetLayout, wnids: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        if not layout.val_dir.is_dir():
            raise FileNotFoundError(
                f"ImageNet validation images not found: {layout.val_dir} (or {VAL_ARCHIVE} in "
                f"{layout.root}, unpacked by prepare_data())"
            )
        index = index_images(layout.val_dir, self._cache_dirs())
        position = {wnid: i for i, wnid in enumerate(wnids)}
        val_classes = list_class_dirs(layout.val_dir)
        if val_classes:
            loose = [p for p in index.paths.tolist() if b"/" not in p]
            if loose:
                raise ValueError(
                    f"{layout.val_dir} mixes class folders with loose images such as "
                    f"{layout.val_dir / os.fsdecode(loose[0])}; use one or the other"
                )
            unknown = sorted(set(val_classes) - set(position))
            if unknown:
                raise ValueError(
                    f"{layout.val_dir} has class folders that train does not: {unknown[:5]}"
                )
            paths, labels = class_tree_samples(index, val_classes, "ImageNet val")
            remap = np.array([position[w] for w in val_classes], dtype=np.int64)
            return paths, remap[labels]

        if len(index) == 0:
            raise ValueError(f"no validation images in {layout.val_dir}")
        table, source = self._val_labels()
        labels = np.empty(len(index), dtype=np.int64)
        for i, rel in enumerate(index.paths.tolist()):
            name = os.fsdecode(rel)
            number = val_number(str(layout.val_dir / name))
            wnid = table.get(number)
            if wnid is None:
                raise ValueError(f"{layout.val_dir / name} has no label in {source}")
            if wnid not in position:
                raise ValueError(
                    f"{source} labels {layout.val_dir / name} as {wnid}, which is not a class "
                    f"folder in {layout.train_dir}"
                )
            labels[i] = position[wnid]
        return index.paths, labels

    def _build_datasets(self) -> None:
        self._layout = None  # another process's prepare_data may have unpacked the archives
        layout = self.layout
        if layout.kind == "archives" or (
            not layout.val_dir.is_dir() and (layout.root / VAL_ARCHIVE).is_file()
        ):
            raise FileNotFoundError(
                f"ImageNet archives in {layout.root} are not unpacked yet; call prepare_data() "
                "first (the Trainer does) to extract them into train/ and val/"
            )
        wnids = self.wnids
        found = list_class_dirs(layout.train_dir)
        if found != wnids:
            # The classes were read before (from the devkit, or from folders that changed since):
            # the labels handed to the model would not be these folders'.
            missing = sorted(set(wnids) - set(found))[:5]
            extra = sorted(set(found) - set(wnids))[:5]
            raise ValueError(
                f"{layout.train_dir} has {len(found)} class folders but {len(wnids)} classes were "
                f"read from {self._wnids_source} (missing folders {missing}, folders not among "
                f"the classes {extra}); every class needs its folder, and a datamodule made "
                "after the data changed reads it afresh"
            )
        train_index = index_images(layout.train_dir, self._cache_dirs())
        train_paths, train_labels = class_tree_samples(train_index, wnids, "ImageNet train")
        val_paths, val_labels = self._val_samples(layout, wnids)

        holdout = resolve_split_size(self.val_split, len(train_paths))
        kept, held = stratified_split(train_labels, holdout, self.seed)
        train_root = train_index.root
        self.train_dataset = self._file_dataset(
            train_root, train_paths[kept], train_labels[kept], train=True
        )
        self.test_dataset = self._file_dataset(
            layout.val_dir.resolve(), val_paths, val_labels, train=False
        )
        if holdout:
            self.val_dataset = self._file_dataset(
                train_root, train_paths[held], train_labels[held], train=False
            )
        else:
            self.val_dataset = self.test_dataset
