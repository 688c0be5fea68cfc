"""ImageNet's label files and folder layouts, read without unpacking anything.

The devkit (``ILSVRC2012_devkit_t12.tar.gz`` or its folder), Kaggle's ``LOC_synset_mapping.txt``
and ``LOC_val_solution.csv``, and the three layouts :class:`~datamodules.imagenet.
ImageNetDataModule` accepts (see :mod:`datamodules.imagenet`).

The classic devkit bug avoided here: ``ILSVRC2012_validation_ground_truth.txt`` holds
ILSVRC2012_IDs (the devkit's own 1..1000 numbering), not indices into the sorted wnids.
:meth:`Devkit.val_wnids` maps them ID -> wnid through ``meta.mat``.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

import numpy as np

__all__ = [
    "DEVKIT_ARCHIVE",
    "DEVKIT_FOLDER",
    "DOWNLOAD_PAGE",
    "KAGGLE_FOLDER",
    "SYNSET_MAPPING",
    "TRAIN_ARCHIVE",
    "VAL_ARCHIVE",
    "VAL_NUMBER",
    "VAL_SOLUTION",
    "Devkit",
    "ImageNetLayout",
    "detect_layout",
    "parse_meta_mat",
    "read_devkit",
    "read_synset_mapping",
    "read_val_solution",
    "val_number",
]

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
#: The number in a validation image's name, which the ground truth files key their labels by.
VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)")


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
            match = VAL_NUMBER.fullmatch(row["ImageId"].strip())
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
    """Which of the accepted layouts ``data_dir`` holds, checked in the documented order."""
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


def val_number(path: str) -> int:
    """The number in a validation image's name ``ILSVRC2012_val_<number>.JPEG``."""
    match = VAL_NUMBER.search(PurePosixPath(path).name)
    if match is None:
        raise ValueError(
            f"{path}: a flat val/ folder must hold ILSVRC2012_val_<number>.JPEG files, which is "
            "how the ground truth identifies them"
        )
    return int(match.group(1))
