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

The classic devkit bug this module avoids: ``ILSVRC2012_validation_ground_truth.txt`` holds
ILSVRC2012_IDs (the devkit's own 1..1000 numbering), not indices into the sorted wnids. They
are mapped ID -> wnid through ``meta.mat`` and only then to the sorted index.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import IO, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from datamodules.archives import extract_tar, safe_folder_name, verify_md5
from datamodules.base import FileImageDataModule
from datamodules.files import class_tree_samples, index_images, list_class_dirs
from datamodules.splits import resolve_split_size, stratified_split

__all__ = [
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

# torchvision's constants (measured on the ImageNet training set); using them keeps
# torchvision's pretrained weights valid.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_FOLDER = "ILSVRC2012_devkit_t12"
META_MEMBER = f"{DEVKIT_FOLDER}/data/meta.mat"
VAL_GROUND_TRUTH_MEMBER = f"{DEVKIT_FOLDER}/data/ILSVRC2012_validation_ground_truth.txt"
KAGGLE_FOLDER = Path("ILSVRC", "Data", "CLS-LOC")
SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"
DOWNLOAD_PAGE = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"
# The published md5 of each official archive, as in torchvision's ARCHIVE_META
# (pytorch/vision, torchvision/datasets/imagenet.py; the same values in torchvision 0.29.1).
ARCHIVE_MD5 = {
    TRAIN_ARCHIVE: "1d675b47d978889d74fa0da5fadfb00e",
    VAL_ARCHIVE: "29b22e2961454d5413ddabcf34fc5622",
    DEVKIT_ARCHIVE: "fa75699e90414af021442c21a62c3abf",
}

_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)")


# ---------------------------------------------------------------------------- label files
@dataclass(frozen=True)
class Devkit:
    """What the devkit says: the 1,000 leaf synsets and the validation ground truth."""

    source: Path
    wnids_by_id: dict[int, str]  # ILSVRC2012_ID -> wnid, leaf synsets only
    names: dict[str, tuple[str, ...]]  # wnid -> synonyms, first is the class name
    val_ids: tuple[int, ...]  # ILSVRC2012_ID of ILSVRC2012_val_{k+1:08d}

    def val_wnids(self) -> dict[int, str]:
        """Validation image number (1-based, as in its file name) -> wnid."""
        labels: dict[int, str] = {}
        for number, ilsvrc_id in enumerate(self.val_ids, start=1):
            if ilsvrc_id not in self.wnids_by_id:
                raise ValueError(
                    f"{self.source}: validation ground truth line {number} is ILSVRC2012_ID "
                    f"{ilsvrc_id}, which is not one of the leaf synsets in meta.mat"
                )
            labels[number] = self.wnids_by_id[ilsvrc_id]
        return labels


def _scalar(value: object) -> object:
    array = np.asarray(value)
    return array.item() if array.size == 1 else array


def parse_meta_mat(
    fileobj: IO[bytes], source: str | Path
) -> tuple[dict[int, str], dict[str, tuple[str, ...]]]:
    """(ILSVRC2012_ID -> wnid, wnid -> names) for the leaf synsets of a devkit ``meta.mat``.

    ``meta.mat`` lists 1,860 synsets of the WordNet hierarchy; the 1,000 classes are the leaves
    (``num_children == 0``).
    """
    import scipy.io  # deferred: only devkit users pay for importing scipy

    try:
        synsets = np.atleast_1d(scipy.io.loadmat(fileobj, squeeze_me=True)["synsets"]).ravel()
        fields = {
            name: synsets[name] for name in ("ILSVRC2012_ID", "WNID", "words", "num_children")
        }
    except (KeyError, ValueError, TypeError, OSError) as err:
        raise ValueError(
            f"{source} is not a devkit meta.mat (expected a 'synsets' struct array with fields "
            f"ILSVRC2012_ID, WNID, words, num_children): {err}"
        ) from err
    wnids_by_id: dict[int, str] = {}
    names: dict[str, tuple[str, ...]] = {}
    for ilsvrc_id, wnid, words, children in zip(*fields.values(), strict=True):
        if int(_scalar(children)) != 0:  # type: ignore[call-overload]
            continue
        wnid = str(_scalar(wnid))
        wnids_by_id[int(_scalar(ilsvrc_id))] = wnid  # type: ignore[call-overload]
        names[wnid] = tuple(w.strip() for w in str(_scalar(words)).split(","))
    if not wnids_by_id:
        raise ValueError(f"{source} lists no leaf synsets (num_children == 0)")
    return wnids_by_id, names


def _parse_ground_truth(text: str, source: str) -> tuple[int, ...]:
    try:
        return tuple(int(line) for line in text.split())
    except ValueError as err:
        raise ValueError(f"{source}: expected one ILSVRC2012_ID per line ({err})") from err


def read_devkit(path: str | Path) -> Devkit:
    """Read ``ILSVRC2012_devkit_t12.tar.gz`` (without extracting it) or its extracted folder."""
    path = Path(path)
    if path.is_dir():
        meta_file = path / "data" / "meta.mat"
        truth_file = path / "data" / "ILSVRC2012_validation_ground_truth.txt"
        if not meta_file.is_file():
            raise FileNotFoundError(f"devkit file not found: {meta_file}")
        with open(meta_file, "rb") as f:
            wnids_by_id, names = parse_meta_mat(f, meta_file)
        truth = truth_file.read_text() if truth_file.is_file() else ""
        return Devkit(path, wnids_by_id, names, _parse_ground_truth(truth, str(truth_file)))
    if not path.is_file():
        raise FileNotFoundError(f"devkit not found: {path}")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            if META_MEMBER not in members:
                raise ValueError(
                    f"{path} has no member {META_MEMBER}; is it the ILSVRC2012 devkit?"
                )
            meta = tar.extractfile(members[META_MEMBER]).read()  # type: ignore[union-attr]
            truth = b""
            if VAL_GROUND_TRUTH_MEMBER in members:
                truth = tar.extractfile(members[VAL_GROUND_TRUTH_MEMBER]).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"cannot read devkit archive {path}: {err}") from err
    wnids_by_id, names = parse_meta_mat(io.BytesIO(meta), f"{path}:{META_MEMBER}")
    truth_source = f"{path}:{VAL_GROUND_TRUTH_MEMBER}"
    return Devkit(path, wnids_by_id, names, _parse_ground_truth(truth.decode(), truth_source))


def read_synset_mapping(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Kaggle's ``LOC_synset_mapping.txt``: lines ``n01440764 tench, Tinca tinca``."""
    names: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, words = line.strip().partition(" ")
        if not wnid.startswith("n") or not words:
            raise ValueError(f"{path} line {number}: expected '<wnid> <names>', got {line!r}")
        names[wnid] = tuple(w.strip() for w in words.split(","))
    return names


def read_val_solution(path: str | Path) -> dict[int, str]:
    """Kaggle's ``LOC_val_solution.csv``: image number -> wnid (first token of the boxes)."""
    labels: dict[int, str] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(
            reader.fieldnames
        ):
            raise ValueError(f"{path}: expected the columns ImageId,PredictionString")
        for row in reader:
            match = _VAL_NUMBER.fullmatch(row["ImageId"].strip())
            tokens = (row["PredictionString"] or "").split()
            if match is None or not tokens:
                raise ValueError(f"{path}: cannot read the row {row}")
            labels[int(match.group(1))] = tokens[0]
    return labels


# ---------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class ImageNetLayout:
    """Where the images and label files of one copy of ImageNet are."""

    kind: Literal["kaggle", "folders", "archives"]
    root: Path  # data_dir: where devkit, LOC_* files and archives are looked for
    train_dir: Path
    val_dir: Path


def detect_layout(data_dir: str | Path) -> ImageNetLayout:
    root = Path(data_dir)
    kaggle = root / KAGGLE_FOLDER
    if (kaggle / "train").is_dir():
        return ImageNetLayout("kaggle", root, kaggle / "train", kaggle / "val")
    if (root / "train").is_dir():
        return ImageNetLayout("folders", root, root / "train", root / "val")
    if (root / TRAIN_ARCHIVE).is_file() or (root / VAL_ARCHIVE).is_file():
        return ImageNetLayout("archives", root, root / "train", root / "val")
    raise FileNotFoundError(
        f"no ImageNet found in {root}. Expected one of: train/<wnid>/*.JPEG with val/<wnid>/ or "
        f"a flat val/ (labelled by {DEVKIT_ARCHIVE} or {VAL_SOLUTION}); Kaggle's "
        f"{KAGGLE_FOLDER}/train with {SYNSET_MAPPING} and {VAL_SOLUTION}; or the archives "
        f"{TRAIN_ARCHIVE}, {VAL_ARCHIVE} and {DEVKIT_ARCHIVE} (from {DOWNLOAD_PAGE})"
    )


def _val_number(path: str) -> int:
    match = _VAL_NUMBER.search(PurePosixPath(path).name)
    if match is None:
        raise ValueError(
            f"{path}: a flat val/ folder must hold ILSVRC2012_val_<number>.JPEG files, which is "
            "how the ground truth identifies them"
        )
    return int(match.group(1))


def _describe(archive: Path) -> str:
    return f"{archive.name} ({archive})"


def _fresh_partial(target: Path) -> Path:
    """An empty hidden sibling of ``target`` to extract into, renamed into place when complete.

    Whatever an earlier run left under that name is removed first, including a symlink, which
    would otherwise carry the extraction to wherever it points.
    """
    partial = target.with_name(f".{target.name}.partial")
    if partial.is_symlink() or partial.is_file():
        partial.unlink()
    elif partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    return partial


def _prepare_train_archive(archive: Path, target: Path) -> None:
    """Unpack the train tar (one ``<wnid>.tar`` per class) into ``target/<wnid>/``.

    Inner tars are streamed out of the outer one, never written to disk; everything lands in a
    hidden sibling that is renamed into place only when complete.
    """
    label = _describe(archive)
    partial = _fresh_partial(target)

    def unpack_class(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bool:
        name = PurePosixPath(member.name)
        if len(name.parts) != 1 or name.suffix.lower() != ".tar":
            raise ValueError(
                f"refusing to extract {label}: unexpected member {member.name!r}; the train "
                "archive holds one <wnid>.tar per class"
            )
        # The class folder comes from the member's stem: '...tar' would otherwise unpack into
        # partial/.., i.e. data_dir itself.
        folder = safe_folder_name(name.stem, label, f"member {member.name!r}")
        inner = tar.extractfile(member)
        assert inner is not None
        with inner:
            extract_tar(inner, partial / folder, archive_name=f"{label}, inner tar {member.name!r}")
        return True

    try:
        written = extract_tar(
            archive,
            partial,
            on_member=unpack_class,
            desc=f"Extracting {archive.name}",
            archive_name=label,
        )
        if written == 0:
            raise ValueError(
                f"cannot extract {label}: it holds no files; expected one <wnid>.tar per class"
            )
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _prepare_val_archive(archive: Path, target: Path, labels: dict[int, str], source: str) -> None:
    """Unpack the flat val tar straight into ``target/<wnid>/`` using ``labels``."""
    label = _describe(archive)
    partial = _fresh_partial(target)

    def into_class_folder(name: str) -> str:
        base = PurePosixPath(name.replace("\\", "/")).name
        match = _VAL_NUMBER.search(base)
        if match is None:
            raise ValueError(
                f"cannot extract {label}: unexpected member {name!r}; expected flat "
                "ILSVRC2012_val_<number>.JPEG files"
            )
        number = int(match.group(1))
        if number not in labels:
            raise ValueError(f"cannot extract {label}: no label for member {name!r} in {source}")
        # The wnid comes from a label file, not from us: it must be one plain folder name.
        wnid = safe_folder_name(labels[number], label, f"{source}'s label for member {name!r}")
        return f"{wnid}/{base}"

    try:
        written = extract_tar(
            archive,
            partial,
            rename=into_class_folder,
            desc=f"Extracting {archive.name}",
            archive_name=label,
        )
        if written == 0:
            raise ValueError(
                f"cannot extract {label}: it holds no files; expected the flat "
                "ILSVRC2012_val_<number>.JPEG images"
            )
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# ---------------------------------------------------------------------------- datamodule
class ImageNetDataModule(FileImageDataModule):
    """ImageNet-1k classification from any of the layouts in :mod:`datamodules.imagenet`.

    The official validation set is the evaluation set: it is ``test``, and also ``val`` unless
    ``val_split`` holds out a seeded, stratified part of train for model selection.

    Args:
        data_dir: The ImageNet folder (see the module docstring for the accepted layouts).
        image_size: Training and evaluation crop side (224; 227 for the paper's AlexNet).
        eval_resize: Shorter side before the evaluation centre crop; default ``image_size *
            256 / 224``.
        min_scale: Smallest crop area fraction of RandomResizedCrop (torchvision: 0.08).
        val_split: Hold-out from train used as ``val`` (an int count or a float fraction);
            0 validates on the official validation set.
        on_bad_image: ``"error"`` raises on an undecodable file naming it; ``"skip"`` drops
            such files with a warning that counts them.
        cache_dir: Where file-index caches go; default ``data_dir/.lit_classifiers_cache``, or
            ``~/.cache/lit_classifiers`` when ``data_dir`` is read-only.
        verify_archives: Check the published md5 of ``ILSVRC2012_img_train.tar``,
            ``ILSVRC2012_img_val.tar`` and ``ILSVRC2012_devkit_t12.tar.gz`` before
            ``prepare_data`` extracts them (minutes for the 138 GB train archive; a success is
            remembered in a ``.<archive>.md5-verified`` stamp next to it until the file
            changes). ``False`` skips the check, e.g. for archives you repacked yourself.
        batch_size, num_workers, pin_memory, persistent_workers, seed, predict_dir: see
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
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        seed: int = 0,
        predict_dir: str | None = None,
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
        )
        resolve_split_size(val_split, 2**62)  # type check; the size is checked in setup
        self.val_split = val_split
        if not isinstance(verify_archives, bool):
            raise TypeError(f"verify_archives must be True or False, got {verify_archives!r}")
        self.verify_archives = verify_archives
        self.save_hyperparameters()

    # ------------------------------------------------------------------ facts
    @property
    def layout(self) -> ImageNetLayout:
        return detect_layout(self.data_dir)

    @property
    def mean(self) -> tuple[float, ...]:
        return IMAGENET_MEAN

    @property
    def std(self) -> tuple[float, ...]:
        return IMAGENET_STD

    @property
    def wnids(self) -> list[str]:
        """Class WordNet ids in label order (sorted, as torchvision)."""
        layout = self.layout
        if layout.train_dir.is_dir():
            wnids = list_class_dirs(layout.train_dir)
            if not wnids:
                raise ValueError(f"{layout.train_dir} has no class folders (expected <wnid>/)")
            return wnids
        devkit = self._devkit
        if devkit is None:
            raise FileNotFoundError(
                f"{layout.root} has ImageNet archives but no {DEVKIT_ARCHIVE}; it is needed to "
                f"label the validation images (get it from {DOWNLOAD_PAGE})"
            )
        return sorted(devkit.names)

    @property
    def class_names(self) -> list[str]:
        wnids = self.wnids
        table = self._name_table
        if table is None:
            return wnids
        names, source = table
        missing = [w for w in wnids if w not in names]
        if missing:
            raise ValueError(f"{source} has no entry for the class folder(s) {missing[:5]}")
        return [names[w][0] for w in wnids]

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
        layout = self.layout
        if layout.kind != "kaggle":
            root = layout.root
            train = not layout.train_dir.is_dir() and (root / TRAIN_ARCHIVE).is_file()
            val = not layout.val_dir.is_dir() and (root / VAL_ARCHIVE).is_file()
            if self.verify_archives and (train or val):
                # All of them before extracting any and the smallest first, so a bad devkit or
                # val archive is found in seconds, not after the hour spent on train.
                wanted = [DEVKIT_ARCHIVE] + [VAL_ARCHIVE] * val + [TRAIN_ARCHIVE] * train
                for name in wanted:
                    if (root / name).is_file():
                        self._verify_archive(root / name)
            if train:
                _prepare_train_archive(root / TRAIN_ARCHIVE, layout.train_dir)
            if val:
                labels, source = self._val_labels()
                _prepare_val_archive(root / VAL_ARCHIVE, layout.val_dir, labels, source)
            layout = self.layout
        for folder in (layout.train_dir, layout.val_dir):
            if folder.is_dir():
                index_images(folder, self._cache_dirs())

    @staticmethod
    def _verify_archive(archive: Path) -> None:
        verify_md5(
            archive,
            ARCHIVE_MD5[archive.name],
            what=f"the published md5 of the official {archive.name}",
            remedy=(
                f"download it again from {DOWNLOAD_PAGE}, or pass verify_archives=False "
                "(--data.verify_archives=false on the command line) to extract it unchecked"
            ),
        )

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
            number = _val_number(str(layout.val_dir / name))
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
        layout = self.layout
        if layout.kind == "archives" or (
            not layout.val_dir.is_dir() and (layout.root / VAL_ARCHIVE).is_file()
        ):
            raise FileNotFoundError(
                f"ImageNet archives in {layout.root} are not unpacked yet; call prepare_data() "
                "first (the Trainer does) to extract them into train/ and val/"
            )
        wnids = self.wnids
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
