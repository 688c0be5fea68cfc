"""The shared pieces: splits, tar safety, the file index cache, decoding, base-class behaviour."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import (
    backdate,
    cmyk_jpeg_bytes,
    gray_jpeg_bytes,
    jpeg_bytes,
    png_bytes,
    truncated_jpeg_bytes,
    write,
)
from PIL import Image

import datamodules
from datamodules import files as files_module
from datamodules.archives import extract_tar, safe_member_path
from datamodules.base import default_num_workers
from datamodules.decoding import ImageDecodeError, decode_crop
from datamodules.files import class_tree_samples, index_images
from datamodules.splits import check_split_size, resolve_split_size, stratified_split
from datamodules.transforms import CenterCropDecode, RandomResizedCropDecode


def test_package_exports() -> None:
    datamodule_names = {
        "ImageClassificationDataModule",
        "STL10DataModule",
        "ImageNetDataModule",
        "ImageFolderDataModule",
        "DigitsDataModule",
        "StreamingDataModule",
    }
    assert set(datamodules.__all__) == datamodule_names | {"DatasetInfo", "dataset_info"}
    for name in datamodule_names:
        assert issubclass(getattr(datamodules, name), datamodules.ImageClassificationDataModule)


def test_default_num_workers() -> None:
    assert 1 <= default_num_workers() <= 8


# ---------------------------------------------------------------------------- splits
def test_resolve_split_size() -> None:
    assert resolve_split_size(500, 5000) == 500
    assert resolve_split_size(0.1, 5000) == 500
    assert resolve_split_size(0, 10) == 0
    for bad in (True, -1, 10, 1.0, -0.1, "5"):
        with pytest.raises(ValueError, match="val_split"):
            resolve_split_size(bad, 10)  # type: ignore[arg-type]


def test_check_split_size_needs_no_data(tmp_path: Path) -> None:
    assert check_split_size(10**9) == 10**9 and check_split_size(0.25) == 0.25
    for bad in (True, -1, 1.0, -0.1, "5", float("nan"), None):
        with pytest.raises(ValueError, match="test_split"):
            check_split_size(bad, "test_split")  # type: ignore[arg-type]
    # every datamodule checks its split sizes when it is built, before any data is read
    from datamodules import DigitsDataModule, ImageFolderDataModule, ImageNetDataModule

    with pytest.raises(ValueError, match=r"test_split=1\.5 must be a fraction"):
        DigitsDataModule(test_split=1.5)
    with pytest.raises(ValueError, match=r"val_split=-3 must be a count >= 0"):
        DigitsDataModule(val_split=-3)
    with pytest.raises(ValueError, match="val_split must be an int .* got True"):
        ImageNetDataModule(str(tmp_path), val_split=True)
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match=r"val_split=2\.0 must be a fraction"):
        ImageFolderDataModule(str(tmp_path), val_split=2.0)


def test_stratified_split_proportions_and_determinism() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_split(labels, 10, seed=3)
    assert np.bincount(labels[held]).tolist() == [5, 3, 2]
    assert len(kept) == 90 and not set(kept) & set(held)
    np.testing.assert_array_equal(held, stratified_split(labels, 10, seed=3)[1])
    assert not np.array_equal(held, stratified_split(labels, 10, seed=4)[1])
    # largest remainder: the total is exact even when quotas are fractional
    _, held = stratified_split(labels, 7, seed=0)
    assert len(held) == 7


def test_stratified_split_keeps_every_class_in_training() -> None:
    labels = np.array([0, 0, 0, 0, 1, 2])
    kept, held = stratified_split(labels, 3, seed=0)
    assert set(labels[kept]) == {0, 1, 2} and len(held) == 3
    with pytest.raises(ValueError, match="keep one image of each"):
        stratified_split(labels, 4, seed=0)


# ---------------------------------------------------------------------------- archives
def _tar_with(members: list[tarfile.TarInfo], path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "C:/x"])
def test_safe_member_path_refuses_escapes(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="would land outside"):
        safe_member_path(tmp_path, name, "a.tar")
    assert safe_member_path(tmp_path, "a/./b.jpg", "a.tar") == tmp_path / "a" / "b.jpg"


def test_extract_tar_refuses_links(tmp_path: Path) -> None:
    link = tarfile.TarInfo("evil")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = _tar_with([link], tmp_path / "a.tar")
    with pytest.raises(ValueError, match="'evil' is a link"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "evil").exists()


def test_extract_tar_writes_files(tmp_path: Path) -> None:
    info = tarfile.TarInfo("d/e/f.bin")
    info.size = 5
    folder = tarfile.TarInfo("d")
    folder.type = tarfile.DIRTYPE
    archive = _tar_with([folder, info], tmp_path / "a.tar")
    assert extract_tar(archive, tmp_path / "out", desc="test") == 1
    assert (tmp_path / "out" / "d" / "e" / "f.bin").read_bytes() == b"xxxxx"


# ---------------------------------------------------------------------------- index cache
def _tree(root: Path) -> Path:
    for cls in ("a", "b"):
        for k in range(2):
            write(root / cls / f"{k}.jpg", b"jpeg")
    write(root / "b" / "nested" / "deep.PNG", b"png")
    write(root / "a" / "notes.txt", b"not an image")
    write(root / "a" / "._0.jpg", b"macOS debris")
    backdate(root)
    return root


def test_index_lists_images_sorted_and_recursive(tmp_path: Path) -> None:
    index = index_images(_tree(tmp_path / "t"))
    assert index.paths.tolist() == [
        b"a/0.jpg",
        b"a/1.jpg",
        b"b/0.jpg",
        b"b/1.jpg",
        b"b/nested/deep.PNG",
    ]
    paths, labels = class_tree_samples(index, ["a", "b"], "train")
    assert labels.tolist() == [0, 0, 1, 1, 1] and len(paths) == 5


def test_index_cache_hit_and_invalidation(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    cache = [tmp_path / "cache"]
    assert not index_images(root, cache).from_cache
    hit = index_images(root, cache)
    assert hit.from_cache and len(hit) == 5

    # a file added to a nested folder: that folder's mtime changes
    write(root / "b" / "nested" / "new.jpg", b"jpeg")
    again = index_images(root, cache)
    assert not again.from_cache and b"b/nested/new.jpg" in again.paths.tolist()
    backdate(root)
    index_images(root, cache)
    assert index_images(root, cache).from_cache

    # a new class folder whose parent mtime is restored (e.g. rsync -t): the count catches it
    stamp = os.stat(root).st_mtime_ns
    write(root / "c" / "0.jpg", b"jpeg")
    os.utime(root, ns=(stamp, stamp))
    backdate(root / "c")
    again = index_images(root, cache)
    assert not again.from_cache and b"c/0.jpg" in again.paths.tolist()

    # a removed file
    backdate(root)
    index_images(root, cache)
    (root / "a" / "1.jpg").unlink()
    assert b"a/1.jpg" not in index_images(root, cache).paths.tolist()


def test_recently_modified_folders_are_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "t"
    write(root / "a" / "0.jpg", b"jpeg")  # mtimes are "now": a coarse clock could hide changes
    cache = [tmp_path / "cache"]
    index_images(root, cache)
    assert not index_images(root, cache).from_cache


def test_interrupted_cache_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    root = _tree(tmp_path / "t")
    cache_dir = tmp_path / "cache"

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(files_module.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        index_images(root, [cache_dir])
    assert list(cache_dir.iterdir()) == []  # neither a cache nor a temp file
    monkeypatch.undo()
    assert not index_images(root, [cache_dir]).from_cache
    assert index_images(root, [cache_dir]).from_cache


def test_corrupt_cache_is_rebuilt_and_unwritable_dir_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    cache_dir = tmp_path / "cache"
    index_images(root, [cache_dir])
    (cache_file,) = cache_dir.iterdir()
    cache_file.write_bytes(b"garbage")
    assert not index_images(root, [cache_dir]).from_cache
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    index_images(root, [blocked, tmp_path / "fallback"])
    assert index_images(root, [tmp_path / "fallback"]).from_cache


def test_index_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected an image folder"):
        index_images(tmp_path / "missing")


# ---------------------------------------------------------------------------- decoding
def test_decode_quirks(tmp_path: Path) -> None:
    center = CenterCropDecode(16, 16)
    cmyk = center(str(write(tmp_path / "c.JPEG", cmyk_jpeg_bytes())))
    gray = center(str(write(tmp_path / "g.JPEG", gray_jpeg_bytes(90))))
    png = center(str(write(tmp_path / "p.JPEG", png_bytes((20, 220, 20)))))
    assert [t.shape for t in (cmyk, gray, png)] == [(3, 16, 16)] * 3
    assert cmyk[0].float().mean() > 200 and cmyk[1:].float().mean() < 40
    assert torch.equal(gray[0], gray[1]) and abs(gray.float().mean() - 90) < 3
    assert png[1].float().mean() > 200
    gray_l = CenterCropDecode(16, 16, mode="L")(str(tmp_path / "g.JPEG"))
    assert gray_l.shape == (1, 16, 16)


def test_decode_errors_name_the_file(tmp_path: Path) -> None:
    center = CenterCropDecode(16)
    for name, data in (("t.JPEG", truncated_jpeg_bytes()), ("z.JPEG", b""), ("x.JPEG", b"<html>")):
        path = write(tmp_path / name, data)
        with pytest.raises(ImageDecodeError, match=f"cannot decode image file {path}"):
            center(str(path))
    with pytest.raises(FileNotFoundError):
        center(str(tmp_path / "missing.JPEG"))


def test_center_crop_geometry_and_draft_downscaling(tmp_path: Path) -> None:
    # left half red, right half blue; 800x400 so draft() decodes at 1/4 scale for a 32 px crop
    image = Image.new("RGB", (800, 400), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 400, 400))
    path = tmp_path / "half.jpg"
    image.save(path, quality=95)
    out = CenterCropDecode(32, 64)(str(path))
    assert out.shape == (3, 32, 32)
    assert out[0, :, :12].float().mean() > 200 and out[2, :, 20:].float().mean() > 200

    seen = []
    original_draft = Image.Image.draft

    def spy(self, mode, size):
        seen.append(size)
        return original_draft(self, mode, size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image.Image, "draft", spy)
        mp.setattr("PIL.JpegImagePlugin.JpegImageFile.draft", spy, raising=False)
        decode_crop(str(path), lambda im: (0, 0, 800, 400), (100, 50))
    assert seen  # a crop 8x the output size is decoded at reduced scale


def test_random_resized_crop_decode(tmp_path: Path) -> None:
    path = str(write(tmp_path / "a.jpg", jpeg_bytes(size=(120, 90))))
    crop = RandomResizedCropDecode(24)
    torch.manual_seed(0)
    outs = [crop(path) for _ in range(4)]
    assert all(o.shape == (3, 24, 24) and o.dtype == torch.uint8 for o in outs)
    assert "RandomResizedCropDecode(size=24" in repr(crop)


def test_predict_dataloader_yields_images_and_sorted_paths(tmp_path: Path) -> None:
    from datamodules import DigitsDataModule

    predict = tmp_path / "predict"
    write(predict / "b.png", png_bytes())
    write(predict / "a" / "z.jpg", jpeg_bytes())
    write(predict / "readme.txt", b"no")
    dm = DigitsDataModule(predict_dir=str(predict), batch_size=8)
    images, paths = next(iter(dm.predict_dataloader()))
    assert images.shape == (2, 1, 32, 32) and images.dtype == torch.uint8
    assert paths == [str((predict / "a" / "z.jpg").resolve()), str((predict / "b.png").resolve())]
    with pytest.raises(ValueError, match="set predict_dir"):
        DigitsDataModule().predict_dataloader()
    with pytest.raises(FileNotFoundError, match="predict_dir"):
        DigitsDataModule(predict_dir=str(tmp_path / "missing"))
