"""``decode_device``: training crops drawn in the workers and decoded after the batch transfer.

The ``"cpu"`` path is the ``"cuda"`` path decoding on the CPU, so it runs everywhere; it must give
the default ``"worker"`` path's batches pixel for pixel, and its errors.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from helpers.cli import Case, assert_one_line_error, run_each
from helpers.data import truncated_jpeg_bytes, write
from helpers.modules import make_trainer
from PIL import Image

from datamodules import ImageFolderDataModule
from datamodules.decoding import ImageDecodeError
from datamodules.transforms import EncodedCrop
from lit_classifiers import ClassifierModule

CLASSES = ["cat", "dog", "emu"]
PER_CLASS = 3


def gradient_jpeg(k: int, size: tuple[int, int] = (80, 60)) -> bytes:
    """A smooth JPEG that looks different under every crop and flip (unlike a flat colour)."""
    width, height = size
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    rgb = np.stack(
        [255 * x * np.ones_like(y), 255 * y * np.ones_like(x), 127 + 120 * np.sin(6 * x + y + k)],
        axis=-1,
    )
    buf = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_tree(root: Path) -> Path:
    for split in ("train", "val"):
        for label, name in enumerate(CLASSES):
            for k in range(PER_CLASS):
                write(root / split / name / f"{k}.jpg", gradient_jpeg(3 * label + k))
    return root


def make_dm(root: Path, decode_device: str, **kwargs: object) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("batch_size", len(CLASSES) * PER_CLASS)
    kwargs.setdefault("cache_dir", str(root / ".cache"))
    return ImageFolderDataModule(str(root), decode_device=decode_device, **kwargs)  # type: ignore[arg-type]


def first_batch(dm: ImageFolderDataModule, seed: int = 0) -> list:
    torch.manual_seed(seed)
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_cpu_decoding_gives_the_worker_batch_pixel_for_pixel(
    tmp_path: Path, num_workers: int
) -> None:
    make_tree(tmp_path)
    worker = make_dm(tmp_path, "worker", num_workers=num_workers)
    device = make_dm(tmp_path, "cpu", num_workers=num_workers)

    encoded = first_batch(device)
    crops, labels = encoded
    assert isinstance(crops, list) and all(isinstance(c, EncodedCrop) for c in crops)
    assert len(crops) == len(labels) == len(CLASSES) * PER_CLASS
    assert any(c.flip for c in crops) and not all(c.flip for c in crops)

    expected = worker.on_after_batch_transfer(first_batch(worker), 0)
    got = device.on_after_batch_transfer(encoded, 0)
    assert got[0].dtype == torch.float32 and got[0].shape == (9, 3, 32, 32)
    assert torch.equal(got[1], expected[1])
    assert torch.equal(got[0], expected[0])
    # The crops matter: another seed gives other pixels, so equality above is not trivial.
    other = worker.on_after_batch_transfer(first_batch(worker, seed=1), 0)
    assert not torch.equal(other[0], expected[0])


def test_evaluation_loaders_still_decode_in_the_workers(tmp_path: Path) -> None:
    make_tree(tmp_path)
    dm = make_dm(tmp_path, "cpu")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (9, 3, 32, 32)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_auto_decodes_in_the_workers_without_cuda(tmp_path: Path) -> None:
    make_tree(tmp_path)
    dm = make_dm(tmp_path, "auto")
    images, _ = first_batch(dm)
    if torch.cuda.is_available():
        assert all(isinstance(c, EncodedCrop) for c in images)
    else:
        assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8
    vgg = make_dm(tmp_path, "auto", train_augment="vgg", min_scale=0.08)
    assert isinstance(first_batch(vgg)[0], torch.Tensor)  # nothing to encode: workers decode


class _SeenBatches(pl.Callback):
    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.images.append(batch[0])


@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")
def test_a_fast_dev_run_fit_trains_on_cpu_decoded_batches(tmp_path: Path) -> None:
    make_tree(tmp_path)
    dm = make_dm(tmp_path, "cpu", batch_size=4)
    model = ClassifierModule("resnet20", num_classes=len(CLASSES), class_names=CLASSES)
    seen = _SeenBatches()
    trainer = make_trainer(fast_dev_run=True, callbacks=[seen])
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    assert type(trainer.train_dataloader.collate_fn).__name__ == "EncodedCollate"
    (images,) = seen.images
    assert images.dtype == torch.float32 and images.shape == (4, 3, 32, 32)
    assert images.min() < -0.5 and images.max() > 1.0  # decoded and normalised


def test_the_command_line_takes_the_option(tmp_path: Path) -> None:
    make_tree(tmp_path / "data")
    args = [
        "fit",
        "--model.backbone=resnet20",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={tmp_path / 'data'}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.fast_dev_run=1",
        "--trainer.enable_progress_bar=false",
    ]
    fitted, refused = run_each(
        [
            Case([*args, "--data.decode_device=cpu"], tmp_path),
            Case([*args, "--data.decode_device=sideways"], tmp_path),
        ],
        tmp_path / "io",
    )
    assert fitted.returncode == 0 and "`Trainer.fit` stopped" in fitted.stderr, fitted.stderr
    assert_one_line_error(refused, r"decode_device.*sideways")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_one_line_error_at_setup(tmp_path: Path) -> None:
    make_tree(tmp_path)
    dm = make_dm(tmp_path, "cuda")
    with pytest.raises(
        ValueError, match=r"^decode_device='cuda' .*use decode_device='worker'"
    ) as e:
        dm.setup("fit")
    assert "\n" not in str(e.value)
    make_dm(tmp_path, "cuda").setup("validate")  # only training crops decode on the device


def test_a_preset_that_cannot_be_encoded_is_a_one_line_error_at_setup(tmp_path: Path) -> None:
    make_tree(tmp_path)
    for kwargs in ({"train_augment": "vgg"}, {"train_policy": "randaugment"}):
        dm = make_dm(tmp_path, "cpu", **kwargs)
        with pytest.raises(ValueError, match=r"decode_device='cpu' .*train_augment=") as e:
            dm.setup("fit")
        assert "train_augment='inception'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^decode_device must be one of .*got 'gpu'$"):
        make_dm(tmp_path, "gpu")  # at construction


def _with_truncated_file(root: Path) -> Path:
    """A JPEG cut in its image data: its header reads, so it fails only when decoded (the
    helpers' ``truncated_jpeg_bytes`` is cut in its header, which ``encode`` already rejects)."""
    make_tree(root)
    data = gradient_jpeg(0)
    return write(root / "train" / "dog" / "cut.jpg", data[: len(data) // 2])


def _decode_error(dm: ImageFolderDataModule) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        for batch in dm.train_dataloader():
            dm.on_after_batch_transfer(batch, 0)
    return caught.value.summary


@pytest.mark.parametrize("cut_in", ["data", "header"])
def test_a_truncated_file_fails_with_the_worker_paths_error(tmp_path: Path, cut_in: str) -> None:
    bad = _with_truncated_file(tmp_path)
    if cut_in == "header":
        write(bad, truncated_jpeg_bytes())
    expected = _decode_error(make_dm(tmp_path, "worker"))
    assert expected.startswith(f"cannot decode image file {bad}: ")
    assert expected.endswith("or set on_bad_image='skip' to leave undecodable images out")
    assert _decode_error(make_dm(tmp_path, "cpu")) == expected
    assert _decode_error(make_dm(tmp_path, "cpu", num_workers=1)) == expected


def _skip_warnings(dm: ImageFolderDataModule) -> tuple[list[str], list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = dm.on_after_batch_transfer(first_batch(dm), 0)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return [re.sub(r"\(\d+ skipped so far", "(N skipped so far", m) for m in messages], batch


@pytest.mark.parametrize("cut_in", ["data", "header"])
def test_skip_leaves_a_truncated_file_out_of_its_batch(tmp_path: Path, cut_in: str) -> None:
    bad = _with_truncated_file(tmp_path)
    if cut_in == "header":
        write(bad, truncated_jpeg_bytes())
    expected, (worker_images, worker_labels) = _skip_warnings(
        make_dm(tmp_path, "worker", on_bad_image="skip", batch_size=10)
    )
    messages, (images, labels) = _skip_warnings(
        make_dm(tmp_path, "cpu", on_bad_image="skip", batch_size=10)
    )
    assert messages == expected and len(messages) == 1
    assert f"cannot decode image file {bad}: " in messages[0]
    assert images.shape == (9, 3, 32, 32) and sorted(labels.tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    assert torch.equal(labels, worker_labels)  # the same order, less the bad file
    if cut_in == "header":  # neither path drew a crop for it, so the rest draw the same crops
        assert torch.equal(images, worker_images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_decoding_is_close_to_the_worker_batch(tmp_path: Path) -> None:
    make_tree(tmp_path)
    worker = make_dm(tmp_path, "worker", pin_memory=False)
    device = make_dm(tmp_path, "cuda", pin_memory=False)
    device.setup("fit")
    expected = worker.on_after_batch_transfer(first_batch(worker), 0)
    crops, labels = first_batch(device)
    images, got_labels = device.on_after_batch_transfer([crops, labels.cuda()], 0)
    assert images.device.type == "cuda" and images.dtype == torch.float32
    assert torch.equal(got_labels.cpu(), expected[1])
    # nvJPEG and the float resize on the GPU differ from libjpeg-turbo by a few grey levels.
    torch.testing.assert_close(images.cpu(), expected[0], atol=0.15, rtol=0)
