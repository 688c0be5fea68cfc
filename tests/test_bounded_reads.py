"""A huge file among the images (``truncate -s 3G train/cat/big.jpg``) is refused after reading
its header, in one line naming it, by every reader: training, encoded crops, evaluation, prepare.
The files are sparse, so the tests write and read almost nothing."""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.datasets import FileImageDataset
from datamodules.decoding import ImageDecodeError, read_image_file
from datamodules.eval_views import ExactCenterCrop
from datamodules.prepare import FileSamples
from datamodules.transforms import RandomResizedCropDecode

GIB = 1 << 30


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def sparse_file(path: Path, head: bytes, size: int) -> Path:
    path.write_bytes(head)
    os.truncate(path, size)  # a hole: nothing written, reads as zeros
    return path


def train_crop(path: Path) -> object:
    return RandomResizedCropDecode(8)(str(path))


def encoded_crop(path: Path) -> object:
    return RandomResizedCropDecode(8).encode(str(path))


def eval_crop(path: Path) -> object:
    return ExactCenterCrop(8, 8)(str(path))


def prepared_sample(path: Path) -> object:
    dataset = FileImageDataset(path.parent, np.array([os.fsencode(path.name)]), np.array([0]), None)
    return FileSamples(dataset)(0)


READERS: dict[str, Callable[[Path], object]] = {
    "training crop": train_crop,
    "encoded crop": encoded_crop,
    "evaluation crop": eval_crop,
    "prepare": prepared_sample,
    "read_image_file": lambda path: read_image_file(path),
}


@pytest.mark.parametrize("reader", list(READERS), ids=list(READERS))
@pytest.mark.parametrize("head", ["an 8x8 JPEG", "zeros"])
def test_a_gigabyte_file_is_refused_in_one_line_without_reading_it(
    tmp_path: Path, reader: str, head: str
) -> None:
    folder = tmp_path / "train" / "cat"
    folder.mkdir(parents=True)
    big = sparse_file(folder / "big.jpg", tiny_jpeg() if head == "an 8x8 JPEG" else b"", GIB)
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError) as caught:
            READERS[reader](big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith(f"cannot decode image file {big}: ") and "\n" not in message
    if head == "an 8x8 JPEG":  # the header is an image's: the size is what is wrong
        assert f"it is {GIB:,} bytes, more than a 8x8 JPEG image can take" in message
    else:
        assert "not an image in a format PIL can read" in message
    assert peak < 32 << 20  # the file was not read (1 GiB would be)


def test_the_same_image_with_a_little_metadata_is_read(tmp_path: Path) -> None:
    # a file above the small-file size that its header allows: read and decoded as before
    data = tiny_jpeg()
    largest = (16 << 20) + 8 * 8 * 3 * 4  # 16 MiB and 4 bytes per sample of 8x8 RGB
    path = sparse_file(tmp_path / "padded.jpg", data, largest)
    assert read_image_file(path)[: len(data)] == data
    with pytest.raises(ImageDecodeError, match="more than a 8x8 JPEG image can take"):
        read_image_file(sparse_file(tmp_path / "more.jpg", data, largest + 1))
    image = Image.new("RGB", (2400, 2400))  # 4 bytes x 3 samples x 5.76 Mpx: 69 MB allowed
    buf = io.BytesIO()
    image.save(buf, "JPEG")
    big_image = sparse_file(tmp_path / "photo.jpg", buf.getvalue(), 64 << 20)
    assert train_crop(big_image).shape == (3, 8, 8)  # type: ignore[attr-defined]
