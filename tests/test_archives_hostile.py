"""Hostile and damaged ImageNet archives, written byte for byte by the tests.

A member name must never place a file outside the folder it belongs to (whatever path is
derived from it), a damaged archive must fail with one ValueError that names it, the official
archives are checked against their published md5, and nothing half-extracted is left behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from pathlib import Path

import pytest
from helpers.cli import run_cli
from helpers.data import (
    jpeg_bytes,
    make_archives,
    make_tar,
    tar_bytes,
    val_files,
    val_solution_text,
)

from datamodules import ImageNetDataModule
from datamodules import imagenet as imagenet_module
from datamodules.archives import safe_folder_name, verify_md5

TRAIN = "ILSVRC2012_img_train.tar"
VAL = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
# torchvision's ARCHIVE_META (pytorch/vision, torchvision/datasets/imagenet.py), written out here
# so that a typo in the module's constants fails a test.
PUBLISHED_MD5 = {
    TRAIN: "1d675b47d978889d74fa0da5fadfb00e",
    VAL: "29b22e2961454d5413ddabcf34fc5622",
    DEVKIT: "fa75699e90414af021442c21a62c3abf",
}


def make_dm(root: Path, **kwargs: object) -> ImageNetDataModule:
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("cache_dir", str(root.parent / "cache"))
    return ImageNetDataModule(str(root), **kwargs)  # type: ignore[arg-type]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_nothing_left(root: Path, split: str) -> None:
    assert not (root / split).exists(), f"{split}/ exists after a failed extraction"
    assert not list(root.glob(".*partial*")), list(root.glob(".*partial*"))


def file_member_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar whose members may have names ``make_tar`` would never write (``.``, ``..``)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------------------- escapes
@pytest.mark.parametrize("member", ["...tar", "./...tar", "..tar", "n01\\x.tar"])
def test_train_class_tar_stem_cannot_escape_train_folder(tmp_path: Path, member: str) -> None:
    """'...tar' has the stem '..': unpacked, its files would land in data_dir itself."""
    root = tmp_path / "imagenet"
    hostile = tar_bytes({DEVKIT: b"not the devkit", "evil.JPEG": jpeg_bytes()})
    make_archives(root, train_extra={member: hostile})
    (root / "notes.txt").write_bytes(b"the user's own file\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as caught:
        make_dm(root, verify_archives=False).prepare_data()
    message = str(caught.value)
    assert TRAIN in message and repr(member) in message and "folder name" in message
    assert "\n" not in message
    assert snapshot(tmp_path) == before  # the devkit and every other file byte for byte
    assert_nothing_left(root, "train")


@pytest.mark.parametrize("where", ["train", "inner", "val"])
def test_file_member_named_dot_is_a_clear_error(tmp_path: Path, where: str) -> None:
    root = tmp_path / "imagenet"
    make_archives(root)
    if where == "train":
        file_member_tar(root / TRAIN, [(".", b"x")])
    elif where == "inner":
        inner = file_member_tar(tmp_path / "inner.tar", [(".", jpeg_bytes())])
        make_tar(root / TRAIN, {"n01440764.tar": inner.read_bytes()})
    else:
        file_member_tar(root / VAL, [(".", jpeg_bytes())])
    before = snapshot(root)
    with pytest.raises(ValueError, match=r"cannot extract ILSVRC2012_img_(train|val)\.tar \(") as e:
        make_dm(root, verify_archives=False).prepare_data()
    message = str(e.value)
    assert "'.'" in message and "expected" in message
    if where == "inner":
        assert "inner tar 'n01440764.tar'" in message
    after = snapshot(root)
    assert {k: after.get(k) for k in before} == before
    if where == "val":  # the train archive was fine and is unpacked; nothing else was written
        assert {k for k in after if k not in before} == {k for k in after if k.startswith("train/")}
    else:
        assert after == before
    assert_nothing_left(root, "val" if where == "val" else "train")


@pytest.mark.parametrize("wnid", ["..", ".", "n01440764/sub", "C:x", "a\\b"])
def test_val_class_folder_from_label_file_cannot_escape(tmp_path: Path, wnid: str) -> None:
    """The val archive is sorted into <wnid>/ folders whose names come from a label file."""
    root = tmp_path / "imagenet"
    make_tar(root / VAL, val_files())
    lines = val_solution_text().splitlines()
    header, first = lines[0], lines[1].split(",")
    lines[1] = f"{first[0]},{wnid} 1 2 3 4"
    assert header == "ImageId,PredictionString"
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as caught:
        make_dm(root, verify_archives=False).prepare_data()
    message = str(caught.value)
    assert VAL in message and "LOC_val_solution.csv" in message and repr(wnid) in message
    assert snapshot(tmp_path) == before
    assert_nothing_left(root, "val")


def test_safe_folder_name_accepts_plain_names_only() -> None:
    assert safe_folder_name("n01440764", "a.tar", "x") == "n01440764"
    assert safe_folder_name("...", "a.tar", "x") == "..."  # an odd but harmless name
    for bad in ("", ".", "..", "a/b", "/", "a\\b", "C:", "c:x", "a\0b"):
        with pytest.raises(ValueError, match=r"refusing to extract a\.tar: x gives the folder"):
            safe_folder_name(bad, "a.tar", "x")


def test_stale_partial_symlink_is_not_followed(tmp_path: Path) -> None:
    """A '.train.partial' left pointing elsewhere must not carry the extraction there."""
    root = tmp_path / "imagenet"
    make_archives(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / ".train.partial").symlink_to(elsewhere, target_is_directory=True)
    make_dm(root, verify_archives=False).prepare_data()
    assert list(elsewhere.iterdir()) == []
    assert (root / "train").is_dir() and not (root / "train").is_symlink()
    assert len(list((root / "train").rglob("*.JPEG"))) == 9
    assert_nothing_left(root, "no-such-split")


# ---------------------------------------------------------------------------- damaged archives
def _val_tar_bytes() -> bytes:
    return tar_bytes(val_files())


def _cut_after_member(data: bytes, count: int) -> bytes:
    """``data`` cut right after the payload of member ``count`` (at a header boundary)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmembers()[count - 1]
    end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return data[:end]


DAMAGED = {
    "empty": (lambda: b"", "the file is empty"),
    "not a tar": (lambda: b"<html>404 Not Found</html>\n" * 40, "not a readable tar archive"),
    "short text": (lambda: b"hello", "not a readable tar archive"),
    "cut inside a file's data": (lambda: _val_tar_bytes()[:900], "truncated"),
    "cut inside a header": (lambda: _val_tar_bytes()[:2000], "truncated"),
    "cut at a header boundary": (lambda: _cut_after_member(_val_tar_bytes(), 3), "truncated"),
    "garbled gzip": (lambda: b"\x1f\x8b\x08\x00" + b"\xff" * 600, "not a readable tar archive"),
    "zero blocks only": (lambda: b"\0" * 10240, "holds no files"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_val_archive_is_named_in_one_clear_error(tmp_path: Path, case: str) -> None:
    root = tmp_path / "imagenet"
    make_archives(root)
    make_data, what = DAMAGED[case]
    (root / VAL).write_bytes(make_data())
    dm = make_dm(root, verify_archives=False)
    with pytest.raises(ValueError) as caught:
        dm.prepare_data()
    message = str(caught.value)
    expected_start = f"cannot extract {VAL} ({root / VAL}): "
    assert message.startswith(expected_start), message
    assert what in message and "; expected " in message and "\n" not in message
    assert (root / "train").is_dir()  # train was fine and stays
    assert_nothing_left(root, "val")


def test_truncated_train_archive_names_outer_and_inner_tar(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    make_archives(root)
    data = (root / TRAIN).read_bytes()
    (root / TRAIN).write_bytes(data[: len(data) // 2])  # inside the second class tar
    with pytest.raises(ValueError) as caught:
        make_dm(root, verify_archives=False).prepare_data()
    message = str(caught.value)
    assert message.startswith(f"cannot extract {TRAIN} ({root / TRAIN})"), message
    assert "truncated" in message and "; expected " in message
    assert_nothing_left(root, "train")


def test_complete_archive_without_padding_is_not_called_truncated(tmp_path: Path) -> None:
    """Only the end-of-archive block matters, not the padding to a full record after it."""
    root = tmp_path / "imagenet"
    make_archives(root)
    data = _val_tar_bytes()
    cut = _cut_after_member(data, len(val_files())) + b"\0" * tarfile.BLOCKSIZE
    assert len(cut) < len(data)
    (root / VAL).write_bytes(cut)
    make_dm(root, verify_archives=False).prepare_data()
    assert len(list((root / "val").rglob("*.JPEG"))) == len(val_files())


# ---------------------------------------------------------------------------- md5
@pytest.mark.parametrize("bad", [DEVKIT, VAL, TRAIN])
def test_official_archive_with_wrong_md5_is_refused(tmp_path: Path, bad: str) -> None:
    """Checked smallest first: the devkit, then val, then train."""
    root = tmp_path / "imagenet"
    make_archives(root)
    for earlier in [DEVKIT, VAL, TRAIN][: [DEVKIT, VAL, TRAIN].index(bad)]:
        (root / earlier).unlink()
    actual = hashlib.md5((root / bad).read_bytes()).hexdigest()
    before = snapshot(root)
    with pytest.raises(ValueError) as caught:
        make_dm(root).prepare_data()
    message = str(caught.value)
    assert message.startswith(f"{bad} ({root / bad}) has md5 {actual}, expected "), message
    assert PUBLISHED_MD5[bad] in message and "verify_archives=False" in message
    assert "\n" not in message
    assert snapshot(root) == before  # nothing extracted, no stamp written
    assert_nothing_left(root, "train")
    assert_nothing_left(root, "val")


def test_verify_archives_false_extracts_unofficial_archives(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    make_archives(root)
    make_dm(root, verify_archives=False).prepare_data()
    assert len(list((root / "train").rglob("*.JPEG"))) == 9
    assert len(list((root / "val").rglob("*.JPEG"))) == len(val_files())
    assert not list(root.glob(".*md5-verified"))  # nothing was checked, so nothing is recorded
    with pytest.raises(TypeError, match=r"verify_archives must be True or False, got 'no'"):
        make_dm(root, verify_archives="no")


def test_verified_archives_are_extracted_and_not_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With md5s that match (the tiny archives' own), extraction goes ahead and is stamped."""
    root = tmp_path / "imagenet"
    make_archives(root)
    for name in (TRAIN, VAL, DEVKIT):
        digest = hashlib.md5((root / name).read_bytes()).hexdigest()
        monkeypatch.setitem(imagenet_module.ARCHIVE_MD5, name, digest)
    make_dm(root).prepare_data()
    assert len(list((root / "val").rglob("*.JPEG"))) == len(val_files())
    assert sorted(p.name for p in root.glob(".*.md5-verified")) == sorted(
        f".{n}.md5-verified" for n in (DEVKIT, TRAIN, VAL)
    )
    # Same size and mtime, different bytes: a stamp that is trusted means no second hash.
    archive = root / VAL
    stat = archive.stat()
    data = bytearray(archive.read_bytes())
    data[-1] ^= 0xFF  # in the end-of-archive padding: still a valid tar
    archive.write_bytes(bytes(data))
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for split in ("train", "val"):
        os.rename(root / split, tmp_path / f"old-{split}")
    make_dm(root).prepare_data()
    assert (root / "val").is_dir()
    # Touched: hashed again, and the changed bytes are caught.
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    os.rename(root / "val", tmp_path / "old-val-2")
    with pytest.raises(ValueError, match=rf"{re.escape(VAL)} .* has md5 .*verify_archives=False"):
        make_dm(root).prepare_data()
    assert_nothing_left(root, "val")


def test_verify_md5_stamp_is_keyed_by_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    path.write_bytes(b"abc")
    good = hashlib.md5(b"abc").hexdigest()
    verify_md5(path, good, what="w", remedy="r")
    stamp = tmp_path / ".a.tar.md5-verified"
    assert stamp.is_file()
    stat = path.stat()
    path.write_bytes(b"abd")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify_md5(path, good, what="w", remedy="r")  # trusted: not hashed again
    path.write_bytes(b"abdd")  # size changed
    with pytest.raises(ValueError, match=r"^a\.tar \(.*a\.tar\) has md5 [0-9a-f]{32}, expected"):
        verify_md5(path, good, what="w", remedy="r")
    # A stamp for another md5 does not vouch for this one.
    path.write_bytes(b"abc")
    verify_md5(path, good, what="w", remedy="r")
    with pytest.raises(ValueError, match=r"expected 0{32} \(w\): .*; r$"):
        verify_md5(path, "0" * 32, what="w", remedy="r")


def test_verify_archives_is_a_cli_option(tmp_path: Path) -> None:
    result = run_cli(
        "fit",
        "--data=ImageNetDataModule",
        f"--data.data_dir={tmp_path}",
        "--data.verify_archives=false",
        "--print_config",
        cwd=tmp_path,
    )
    assert "verify_archives: false" in result.stdout
    help_text = run_cli(
        "fit", "--data=ImageNetDataModule", "--data.help=ImageNetDataModule", cwd=tmp_path
    ).stdout
    assert "--data.verify_archives {true,false}" in help_text and "published md5" in help_text
