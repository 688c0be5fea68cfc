"""Nothing read outside its folder, nothing written into the user's data, nothing of the user's
overwritten: the image-index cache, ``prepare``'s output folder and the streamed labels."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.data import backdate, png_bytes, write

from datamodules import ImageFolderDataModule
from datamodules.files import index_images

CLASSES = ["cat", "dog"]


def image_folder(root: Path, per_class: int = 3) -> Path:
    """``root/train/<class>/img<k>.png``, tiny images of different colours."""
    for c, name in enumerate(CLASSES):
        for k in range(per_class):
            write(
                root / "train" / name / f"img{k}.png",
                png_bytes(color=(40 * k, 90 * c, 7), size=(12, 10)),
            )
    backdate(root)  # so that an index cache written now is trusted at once
    return root


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` (and ``root`` itself) with its mode and mtime."""
    entries = [root, *sorted(root.rglob("*"))]
    return [(str(p.relative_to(root)), p.lstat().st_mode, p.lstat().st_mtime_ns) for p in entries]


@pytest.fixture()
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("LIT_CLASSIFIERS_CACHE", str(cache))
    return cache


# ------------------------------------------------------------------------------- index cache
def test_fit_on_a_read_only_dataset_writes_nothing_into_it(
    tmp_path: Path, user_cache: Path
) -> None:
    from helpers.modules import TinyNet, make_trainer, sgd

    from lit_classifiers.module import ClassifierModule

    data = image_folder(tmp_path / "photos")
    folders = [data, *(p for p in data.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)  # r-x: what a shared, read-only mount gives
    before = snapshot(data)
    try:
        data_module = ImageFolderDataModule(
            str(data), image_size=8, batch_size=2, num_workers=0, val_split=2
        )
        model = ClassifierModule(TinyNet(num_classes=2), num_classes=2, optimizer=sgd)
        make_trainer(fast_dev_run=True).fit(model, datamodule=data_module)
        assert snapshot(data) == before  # (as root the chmod stops nothing: this check does)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    # The listing was cached in the user's cache folder and is used from there.
    assert len(list((user_cache / "index").glob("index-*.npz"))) == 1
    assert index_images(data / "train", [user_cache / "index"]).from_cache


def _hostile_cache(cache_file: Path, root: Path, hostile: bytes) -> None:
    """Rewrite a cache written by ``index_images`` so that it also lists ``hostile``, with
    timestamps that make it look fresh."""
    with np.load(cache_file, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["paths"] = np.sort(np.append(arrays["paths"], np.array([hostile], dtype=np.bytes_)))
    arrays["scan_started_ns"] = np.array(time.time_ns())
    cache_file.unlink()
    with open(cache_file, "wb") as handle:
        np.savez(handle, **arrays)


def _secret(tmp_path: Path) -> bytes:
    secret = png_bytes(color=(1, 2, 3), size=(5, 7))
    write(tmp_path / "secret" / "private.png", secret)
    return secret


def test_a_cache_listing_a_path_outside_its_folder_is_not_trusted(tmp_path: Path) -> None:
    _secret(tmp_path)
    data = image_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    first = index_images(data / "train", [cache])
    (cache_file,) = cache.glob("index-*.npz")
    for hostile in (b"cat/../../../secret/private.png", b"/" + os.fsencode(tmp_path) + b"/x.png"):
        _hostile_cache(cache_file, (data / "train").resolve(), hostile)
        again = index_images(data / "train", [cache])
        assert not again.from_cache  # listed afresh, and the planted entry is gone
        assert again.paths.tolist() == first.paths.tolist()


def test_prepare_never_packs_a_file_outside_the_data(tmp_path: Path, user_cache: Path) -> None:
    pytest.importorskip("litdata")
    from datamodules.files import _cache_file
    from datamodules.prepare import convert_datamodule

    secret = _secret(tmp_path)
    data = image_folder(tmp_path / "photos")
    train = (data / "train").resolve()
    hostile = b"cat/../../../secret/private.png"
    # A cache shipped inside the dataset, where the old default looked for it ...
    shipped = _cache_file(data / ".lit_classifiers_cache", train)
    index_images(train, [shipped.parent])
    _hostile_cache(shipped, train, hostile)
    # ... and one planted in the cache folder that is really used.
    index_images(train, [user_cache / "index"])
    _hostile_cache(_cache_file(user_cache / "index", train), train, hostile)

    source = ImageFolderDataModule(str(data), num_workers=0, val_split=2)
    out = convert_datamodule(source, tmp_path / "lit", num_workers=1, progress=False)
    chunks = b"".join(p.read_bytes() for p in out.rglob("*.bin"))
    assert (
        chunks.count(png_bytes(color=(0, 0, 7), size=(12, 10))) == 1
    )  # an image of the data is there
    assert secret not in chunks
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["count"] == 4


# ------------------------------------------------------------------------------- prepare output
def test_prepare_refuses_a_dataset_json_it_did_not_write(tmp_path: Path, user_cache: Path) -> None:
    pytest.importorskip("litdata")
    from datamodules.prepare import convert_datamodule

    data = image_folder(tmp_path / "photos")
    out = tmp_path / "lit"
    mine = write(out / "dataset.json", b'{"my": "notes"}\n')
    source = ImageFolderDataModule(str(data), num_workers=0, val_split=2)
    with pytest.raises(FileExistsError, match=r"lit/dataset.json exists and was not written by"):
        convert_datamodule(source, out, num_workers=1, progress=False)
    assert mine.read_bytes() == b'{"my": "notes"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json"]

    # prepare's own dataset.json is replaced; a link planted where it writes its temporary file
    # is not written through.
    mine.unlink()
    convert_datamodule(source, out, num_workers=1, progress=False)
    victim = write(tmp_path / "victim.txt", b"keep me")
    (out / f".dataset.json.partial-{os.getpid()}").symlink_to(victim)
    convert_datamodule(source, out, num_workers=1, progress=False, overwrite=True)
    assert victim.read_bytes() == b"keep me"
    assert json.loads((out / "dataset.json").read_text())["class_names"] == CLASSES


# ------------------------------------------------------------------------------- archives
def test_links_planted_beside_an_archive_are_not_written_through(tmp_path: Path) -> None:
    """The md5 stamp and a download are written to fresh temporary names, never through a
    link planted at the name an earlier version used."""
    import hashlib

    from datamodules.archives import download_url, verify_md5

    victim = write(tmp_path / "victim.txt", b"keep me")
    archive = write(tmp_path / "data" / "a.tar", b"abc")
    (archive.parent / f".a.tar.md5-verified.{os.getpid()}.tmp").symlink_to(victim)
    verify_md5(archive, hashlib.md5(b"abc").hexdigest(), what="w", remedy="r")
    assert json.loads((archive.parent / ".a.tar.md5-verified").read_text())["md5"]
    assert victim.read_bytes() == b"keep me"

    dest = tmp_path / "data" / "b.tar"
    (dest.parent / "b.tar.part").symlink_to(victim)
    download_url(archive.as_uri(), dest, md5=hashlib.md5(b"abc").hexdigest())
    assert not dest.is_symlink() and dest.read_bytes() == b"abc"
    assert victim.read_bytes() == b"keep me"
