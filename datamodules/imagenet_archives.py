"""Unpacking the original ILSVRC2012 archives into the folder layout, once and completely.

The train tar holds one ``<wnid>.tar`` per class, streamed straight into ``train/<wnid>/``; the
flat val tar is sorted into ``val/<wnid>/`` by its labels in the same pass. Everything lands in
a hidden sibling that is renamed into place only when complete, so an interrupted run never
leaves a ``train/`` that looks finished. Member names are checked by
:func:`~datamodules.archives.extract_tar` and :func:`~datamodules.archives.safe_folder_name`.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from datamodules.archives import extract_tar, safe_folder_name, verify_md5
from datamodules.imagenet_files import (
    DEVKIT_ARCHIVE,
    DOWNLOAD_PAGE,
    TRAIN_ARCHIVE,
    VAL_ARCHIVE,
    VAL_NUMBER,
)

__all__ = ["ARCHIVE_MD5", "prepare_train_archive", "prepare_val_archive", "verify_archive"]

# The published md5 of each official archive, as in torchvision's ARCHIVE_META
# (pytorch/vision, torchvision/datasets/imagenet.py; the same values in torchvision 0.29.1).
ARCHIVE_MD5 = {
    TRAIN_ARCHIVE: "1d675b47d978889d74fa0da5fadfb00e",
    VAL_ARCHIVE: "29b22e2961454d5413ddabcf34fc5622",
    DEVKIT_ARCHIVE: "fa75699e90414af021442c21a62c3abf",
}


def verify_archive(archive: Path) -> None:
    """Check an official archive against its published md5 (see :data:`ARCHIVE_MD5`)."""
    verify_md5(
        archive,
        ARCHIVE_MD5[archive.name],
        what=f"the published md5 of the official {archive.name}",
        remedy=(
            f"download it again from {DOWNLOAD_PAGE}, or pass verify_archives=False "
            "(--data.verify_archives=false on the command line) to extract it unchecked"
        ),
    )


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


@contextmanager
def _extracting_into(target: Path) -> Iterator[Path]:
    """A fresh hidden sibling of ``target`` to extract into, renamed to ``target`` when the block
    completes and removed whatever happens, so ``target`` only ever appears whole."""
    partial = _fresh_partial(target)
    try:
        yield partial
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _check_written(written: int, label: str, expected: str) -> None:
    if written == 0:
        raise ValueError(f"cannot extract {label}: it holds no files; expected {expected}")


def prepare_train_archive(archive: Path, target: Path) -> None:
    """Unpack the train tar (one ``<wnid>.tar`` per class) into ``target/<wnid>/``.

    Inner tars are streamed out of the outer one, never written to disk; everything lands in a
    hidden sibling that is renamed into place only when complete.
    """
    label = _describe(archive)

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

    with _extracting_into(target) as partial:
        written = extract_tar(
            archive,
            partial,
            on_member=unpack_class,
            desc=f"Extracting {archive.name}",
            archive_name=label,
        )
        _check_written(written, label, "one <wnid>.tar per class")


def prepare_val_archive(archive: Path, target: Path, labels: dict[int, str], source: str) -> None:
    """Unpack the flat val tar straight into ``target/<wnid>/`` using ``labels``."""
    label = _describe(archive)

    def into_class_folder(name: str) -> str:
        base = PurePosixPath(name.replace("\\", "/")).name
        match = VAL_NUMBER.search(base)
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

    with _extracting_into(target) as partial:
        written = extract_tar(
            archive,
            partial,
            rename=into_class_folder,
            desc=f"Extracting {archive.name}",
            archive_name=label,
        )
        _check_written(written, label, "the flat ILSVRC2012_val_<number>.JPEG images")
