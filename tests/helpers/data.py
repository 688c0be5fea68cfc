"""Builders for tiny datasets in the exact on-disk formats the datamodules read.

Everything is written by the tests themselves (no network): STL-10 binaries, ImageNet folder
trees from real JPEG bytes, devkits made with ``scipy.io.savemat``, and tar archives.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# ---------------------------------------------------------------------------- STL-10
STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def stl10_images(count: int, offset: int) -> np.ndarray:
    """Row-major (N, 3, 96, 96) images that differ under transposition, flips and channel swaps."""
    rows = np.arange(96).reshape(96, 1)
    cols = np.arange(96).reshape(1, 96)
    images = np.empty((count, 3, 96, 96), dtype=np.uint8)
    for i in range(count):
        for c in range(3):
            images[i, c] = (rows * 1 + cols * 3 + c * 70 + (offset + i) * 11) % 256
    return images


def write_stl10(
    data_dir: Path,
    n_train: int = 40,
    n_test: int = 20,
    n_unlabeled: int = 10,
    fold_size: int = 20,
) -> dict[str, np.ndarray]:
    """Write ``data_dir/stl10_binary/`` and return the images (row-major) and labels (0..9)."""
    folder = data_dir / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for split, count, offset in (("train", n_train, 0), ("test", n_test, 1000)):
        images = stl10_images(count, offset)
        labels = (np.arange(count) * 7) % 10  # every class, not in index order
        # column-major planes: each channel stored column by column
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    unlabeled = stl10_images(n_unlabeled, 5000)
    (folder / "unlabeled_X.bin").write_bytes(unlabeled.transpose(0, 1, 3, 2).tobytes())
    out["unlabeled_images"] = unlabeled
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    rng = np.random.default_rng(123)
    folds = [np.sort(rng.choice(n_train, fold_size, replace=False)) for _ in range(10)]
    (folder / "fold_indices.txt").write_text(
        "\n".join(" ".join(str(i) for i in fold) for fold in folds) + "\n"
    )
    out["folds"] = np.stack(folds)
    return out


# ---------------------------------------------------------------------------- images
# Distinct colours per class (by sorted wnid position) so tests can check labels from pixels.
CLASS_COLORS = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]


def jpeg_bytes(
    color: tuple[int, int, int] = (220, 20, 20), size: tuple[int, int] = (64, 48)
) -> bytes:
    image = Image.new("RGB", size, color)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def noise_jpeg_bytes(size: tuple[int, int] = (160, 120), mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def cmyk_jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    """A CMYK JPEG of pure red (C=0, M=Y=100 %, K=0), like ImageNet's 22 CMYK files."""
    buf = io.BytesIO()
    Image.new("CMYK", size, (0, 255, 255, 0)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def gray_jpeg_bytes(level: int = 128, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, level).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_bytes(
    color: tuple[int, int, int] = (20, 220, 20), size: tuple[int, int] = (64, 48)
) -> bytes:
    """A palette PNG (to be saved under a ``.JPEG`` name, like n02105855_2933.JPEG)."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).convert("P").save(buf, "PNG")
    return buf.getvalue()


def truncated_jpeg_bytes() -> bytes:
    data = jpeg_bytes(size=(64, 48))
    return data[: len(data) // 2]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def backdate(root: Path, seconds: float = 600) -> None:
    """Age every folder and file so that index caches written now are trusted (not 'racy')."""
    stamp = time.time() - seconds
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (stamp, stamp))
        os.utime(dirpath, (stamp, stamp))


# ---------------------------------------------------------------------------- ImageNet
# Three real wnids; their ILSVRC2012_IDs are deliberately NOT in sorted-wnid order, so code that
# treats the ground truth as sorted indices gets the labels wrong.
WNIDS = ["n01440764", "n02102040", "n03000684"]  # sorted: labels 0, 1, 2
NAMES = {
    "n01440764": "tench, Tinca tinca",
    "n02102040": "English springer, English springer spaniel",
    "n03000684": "chain saw, chainsaw",
}
ILSVRC_IDS = {"n03000684": 1, "n01440764": 2, "n02102040": 3}
# val image k (1-based) -> wnid
VAL_WNIDS = ["n02102040", "n03000684", "n01440764", "n03000684", "n01440764", "n02102040"]


def val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def train_files() -> dict[str, bytes]:
    """``<wnid>/<wnid>_<k>.JPEG`` -> bytes: three per class, coloured by class."""
    files = {}
    for label, wnid in enumerate(WNIDS):
        for k in range(3):
            files[f"{wnid}/{wnid}_{k}.JPEG"] = jpeg_bytes(CLASS_COLORS[label])
    return files


def val_files() -> dict[str, bytes]:
    """Flat ``ILSVRC2012_val_<k>.JPEG`` -> bytes, coloured by their true class."""
    return {
        val_name(k): jpeg_bytes(CLASS_COLORS[WNIDS.index(wnid)])
        for k, wnid in enumerate(VAL_WNIDS, start=1)
    }


#: The fields of each synset in the devkit's meta.mat, in the real file's order.
SYNSET_FIELDS = [
    "ILSVRC2012_ID",
    "WNID",
    "words",
    "gloss",
    "num_children",
    "children",
    "wordnet_height",
    "num_train_images",
]


def synsets_mat(rows: list[tuple]) -> bytes:
    """A devkit ``meta.mat`` holding ``rows`` (one value per :data:`SYNSET_FIELDS`) as its
    'synsets' struct array, numbers as 1x1 doubles like the real file."""
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in SYNSET_FIELDS])
    for i, row in enumerate(rows):
        values = [np.array([[v]], dtype=np.float64) if isinstance(v, int) else v for v in row]
        synsets[i, 0] = tuple(values)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def meta_mat_bytes(include_parent: bool = True, wnids: list[str] | None = None) -> bytes:
    """A devkit ``meta.mat``: a 'synsets' struct array as in the real devkit (leaves + a parent)."""
    rows = []
    for wnid in wnids if wnids is not None else WNIDS:
        rows.append((ILSVRC_IDS[wnid], wnid, NAMES[wnid], "a gloss", 0, np.zeros((1, 0)), 0, 1300))
    if include_parent:
        rows.append((1001, "n00001740", "entity", "the root", 3, np.array([[1, 2, 3]]), 18, 0))
    return synsets_mat(rows)


def add_to_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            add_to_tar(tar, name, data)
    return path


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            add_to_tar(tar, name, data)
    return buf.getvalue()


def make_devkit(path: Path, ground_truth: list[int] | None = None, **meta_kwargs: object) -> Path:
    """``ILSVRC2012_devkit_t12.tar.gz`` with the real member names."""
    truth = ground_truth if ground_truth is not None else [ILSVRC_IDS[w] for w in VAL_WNIDS]
    return make_tar(
        path,
        {
            "ILSVRC2012_devkit_t12/data/meta.mat": meta_mat_bytes(**meta_kwargs),  # type: ignore[arg-type]
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": (
                "\n".join(str(i) for i in truth) + "\n"
            ).encode(),
        },
        mode="w:gz",
    )


def synset_mapping_text() -> str:
    return "".join(f"{w} {NAMES[w]}\n" for w in WNIDS)


def val_solution_text() -> str:
    lines = ["ImageId,PredictionString"]
    for k, wnid in enumerate(VAL_WNIDS, start=1):
        lines.append(f"{val_name(k)[:-5]},{wnid} 1 2 30 40 {wnid} 5 6 20 30 ")
    return "\n".join(lines) + "\n"


def make_folder_layout(root: Path, flat_val: bool = False) -> Path:
    """Layout 1 (``val/<wnid>/``) or, with ``flat_val``, layout 2's flat ``val/``."""
    for rel, data in train_files().items():
        write(root / "train" / rel, data)
    for k, (name, data) in enumerate(val_files().items()):
        rel = name if flat_val else f"{VAL_WNIDS[k]}/{name}"
        write(root / "val" / rel, data)
    return root


def make_kaggle_layout(root: Path) -> Path:
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    for rel, data in train_files().items():
        write(base / "train" / rel, data)
    for name, data in val_files().items():
        write(base / "val" / name, data)
    (base / "test").mkdir()
    write(base / "test" / "ILSVRC2012_test_00000001.JPEG", jpeg_bytes())
    (root / "LOC_synset_mapping.txt").write_text(synset_mapping_text())
    (root / "LOC_val_solution.csv").write_text(val_solution_text())
    return root


def make_archives(root: Path, train_extra: dict[str, bytes] | None = None) -> Path:
    """The original ILSVRC2012 archives: train tar of per-class tars, flat val tar, devkit."""
    per_class: dict[str, dict[str, bytes]] = {}
    for rel, data in train_files().items():
        wnid, name = rel.split("/")
        per_class.setdefault(wnid, {})[name] = data
    outer = {f"{wnid}.tar": tar_bytes(files) for wnid, files in per_class.items()}
    outer.update(train_extra or {})
    make_tar(root / "ILSVRC2012_img_train.tar", outer)
    make_tar(root / "ILSVRC2012_img_val.tar", val_files())
    make_devkit(root / "ILSVRC2012_devkit_t12.tar.gz")
    return root
