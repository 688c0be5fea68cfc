"""File names that are not UTF-8, 16-bit PNGs and undecodable files read in a worker process.

Everything runs on real files written here; the CLI runs through its `main` on tiny data.
"""

from __future__ import annotations

import csv
import io
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from helpers.cli import run_cli
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from datamodules import ImageFolderDataModule
from datamodules.datasets import FileImageDataset
from datamodules.decoding import ImageDecodeError, decode_crop
from datamodules.files import display_name
from datamodules.transforms import CenterCropDecode
from lit_classifiers import ClassifierModule
from lit_classifiers.callbacks import confusion_matrix_figure, misclassified_figure
from lit_classifiers.predictions import PredictionCSVWriter, PredictionWriteError, readable_text

LATIN1_CLASS = b"caf\xe9"  # "café" in Latin-1: not valid UTF-8
CLASS_FOLDERS = [LATIN1_CLASS, b"cat", b"dog"]
CLASS_NAMES = ["caf\\xe9", "cat", "dog"]  # display_name of each, in label (sorted) order
COLORS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]


def require_bytes_names(folder: Path) -> None:
    """Skip where the file system refuses names that are not UTF-8 (APFS, some network FSs)."""
    probe = os.path.join(os.fsencode(folder), b"probe\xff")
    try:
        os.mkdir(probe)
    except OSError as error:
        pytest.skip(f"the file system under {folder} refuses non-UTF-8 file names: {error}")
    os.rmdir(probe)


def write_image(path: bytes, color: tuple[int, int, int], seed: int) -> None:
    """A 12x12 image of ``color`` plus noise, as PNG or JPEG by the name's extension."""
    noise = np.random.default_rng(seed).integers(-20, 20, (12, 12, 3))
    pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG" if path.endswith(b".jpg") else "PNG")
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def make_tree(root: Path, per_class: int = 6) -> Path:
    for label, folder in enumerate(CLASS_FOLDERS):
        directory = os.path.join(os.fsencode(root), b"train", folder)
        os.makedirs(directory)
        for k in range(per_class):
            name = b"%d.%s" % (k, b"jpg" if k % 2 else b"png")
            write_image(os.path.join(directory, name), COLORS[label], seed=10 * label + k)
    return root


# ------------------------------------------------------------------------- the naming rule
def test_display_name_and_readable_text_follow_one_rule() -> None:
    cases = {
        b"caf\xe9": "caf\\xe9",
        "caf\udce9": "caf\\xe9",  # os.fsdecode(b"caf\xe9")
        "café": "café",  # valid text is left alone
        "caf\u00e9".encode(): "café",
        "x\ud800": "x\\ud800",  # a lone surrogate that no byte stands for
    }
    for name, expected in cases.items():
        assert display_name(name) == expected
        assert readable_text(name) == expected
        expected.encode("utf-8")  # storable anywhere
    assert os.fsdecode(b"caf\xe9") == "caf\udce9"


# ------------------------------------------------------------------------- non-UTF-8 class folder
def test_image_folder_reads_a_non_utf8_class_folder_by_its_bytes(tmp_path: Path) -> None:
    require_bytes_names(tmp_path)
    make_tree(tmp_path)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=8, num_workers=0, val_split=3, cache_dir=str(tmp_path / "c")
    )
    assert dm.class_names == CLASS_NAMES
    dm.setup()
    datasets = (dm.train_dataset, dm.val_dataset)
    assert sum(len(d) for d in datasets) == 18
    for dataset in datasets:
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert os.fsencode(dataset.path(i)).split(b"/")[-2] == CLASS_FOLDERS[label]
            assert int(image.float().mean(dim=(1, 2)).argmax()) == label
    again = ImageFolderDataModule(
        str(tmp_path), image_size=8, num_workers=0, val_split=3, cache_dir=str(tmp_path / "c")
    )
    again.setup()  # from the index cache this time
    assert again.train_dataset.paths.tolist() == dm.train_dataset.paths.tolist()


def test_class_names_that_would_read_the_same_are_refused(tmp_path: Path) -> None:
    require_bytes_names(tmp_path)
    for folder in (b"caf\xe9", b"caf\\xe9"):  # the second one literally holds a backslash
        directory = os.path.join(os.fsencode(tmp_path), b"train", folder)
        os.makedirs(directory)
        write_image(os.path.join(directory, b"0.png"), COLORS[0], seed=0)
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, num_workers=0)
    clashing = ["caf\\xe9"]
    with pytest.raises(ValueError, match=re.escape(f"class folders {clashing} differ only")):
        dm.class_names  # noqa: B018


def test_figures_draw_non_utf8_and_dollar_class_names() -> None:
    # names as an older checkpoint may hold them (surrogate escapes), and "$" that matplotlib
    # would otherwise parse as (here invalid) mathtext
    names = ["caf\udce9", "$\\frac$", "plain"]
    figure = confusion_matrix_figure(torch.tensor([[2, 1, 0], [0, 3, 0], [1, 0, 1]]), names)
    FigureCanvasAgg(figure).draw()
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert labels == ["caf\\xe9", "\\$\\frac\\$", "plain"]  # "\$" is drawn as "$"
    grid = misclassified_figure(torch.rand(2, 3, 8, 8), names[:2], names[1:])
    FigureCanvasAgg(grid).draw()
    captions = [text.get_text() for text in grid.axes[0].texts]
    assert captions == ["true: caf\\xe9\npred: \\$\\frac\\$", "true: \\$\\frac\\$\npred: plain"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny ``lit-classifiers fit`` on a tree with a non-UTF-8 class folder."""
    cwd = tmp_path_factory.mktemp("fit")
    require_bytes_names(cwd)
    data = make_tree(cwd / "data")
    run_cli(
        "fit",
        "--model.backbone=resnet20",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={data}",
        "--data.image_size=8",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--data.val_split=6",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        cwd=cwd,
    )
    return cwd


def run_dir(cwd: Path) -> Path:
    (found,) = (cwd / "runs" / "imagefolder-resnet20").glob("version_*")
    return found


def test_fit_with_a_non_utf8_class_folder_logs_the_confusion_matrix_and_saves(fitted: Path):
    directory = run_dir(fitted)
    checkpoint = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["hyper_parameters"]["class_names"] == CLASS_NAMES
    assert len(list((directory / "checkpoints").glob("epoch*.ckpt"))) == 1
    for name in ("config.yaml", "hparams.yaml"):
        text = (directory / name).read_bytes().decode("utf-8")  # strict: valid UTF-8
        yaml.safe_load(text)
    hparams = yaml.safe_load((directory / "hparams.yaml").read_text(encoding="utf-8"))
    assert hparams["class_names"] == CLASS_NAMES
    events = EventAccumulator(str(directory), size_guidance={"images": 0})
    events.Reload()
    assert "val/confusion_matrix" in events.Tags()["images"]
    (image,) = events.Images("val/confusion_matrix")
    assert image.width > 100 and image.height > 100


def test_predict_writes_a_row_for_a_non_utf8_file_name(fitted: Path, tmp_path: Path) -> None:
    directory = run_dir(fitted)
    photos = os.path.join(os.fsencode(tmp_path), b"photos")
    os.makedirs(os.path.join(photos, b"nested\xff"))
    names = [b"a.png", b"caf\xe9.jpg", b"nested\xff/\xfe.png"]
    for k, name in enumerate(names):
        write_image(os.path.join(photos, name), COLORS[k], seed=k)
    out = tmp_path / "predictions.csv"
    run_cli(
        "predict",
        "--config",
        directory / "config.yaml",
        "--ckpt_path",
        directory / "checkpoints" / "last.ckpt",
        f"--data.predict_dir={os.fsdecode(photos)}",
        f"--predictions.output_path={out}",
        cwd=tmp_path,
    )
    assert not out.with_name(out.name + ".partial").exists()
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))
    assert rows[0] == ["file", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    prefix = display_name(photos) + "/"
    assert sorted(row[0] for row in rows[1:]) == [prefix + display_name(n) for n in names]
    for row in rows[1:]:
        assert sorted(row[1::2]) == CLASS_NAMES
        assert sum(float(p) for p in row[2::2]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("blocker", ["target_is_a_folder", "parent_is_a_file"])
def test_a_failed_csv_write_leaves_no_partial_file_and_names_the_file(
    tmp_path: Path, blocker: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(os.fsencode(photos / "a.png"), COLORS[0], seed=0)
    if blocker == "target_is_a_folder":  # written, then the final rename fails
        target = tmp_path / "out.csv"
        (target / "inside").mkdir(parents=True)
    else:  # the folder for it cannot be made
        (tmp_path / "file").write_text("not a folder")
        target = tmp_path / "file" / "out.csv"
    for label, folder in enumerate(("x", "y")):
        (tmp_path / "train" / folder).mkdir(parents=True)
        for k in range(2):
            write_image(os.fsencode(tmp_path / "train" / folder / f"{k}.png"), COLORS[label], k)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=8, num_workers=0, val_split=2, predict_dir=str(photos)
    )
    model = ClassifierModule("resnet20", num_classes=2, class_names=["x", "y"])
    writer = PredictionCSVWriter(str(target))
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PredictionWriteError, match=re.escape(f"1 predictions to {target}: ")):
            trainer.predict(model, datamodule=dm, return_predictions=False)
    assert not target.with_name("out.csv.partial").exists()
    assert writer.written_path is None


# ------------------------------------------------------------------------- 16-bit images
RAMP = np.concatenate(
    [[0, 1, 255, 256, 257, 32767, 32768, 65279, 65280, 65535], np.linspace(0, 65535, 54)]
).astype(np.uint16)  # 64 values, the edges of each 8-bit step included


def png_bytes_16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of ``values`` ((H, W) grey or (H, W, 3|4) colour), written byte by byte:
    PIL cannot write 48/64-bit PNGs."""
    height, width = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    color_type = {1: 0, 3: 2, 4: 6}[channels]  # grey, RGB, RGBA
    rows = values.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def sixteen_bit_files(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """name -> (file, the 8-bit RGB each pixel must decode to)."""
    grey = RAMP.reshape(8, 8)
    colour = np.stack([grey, 65535 - grey, np.full_like(grey, 32768)], axis=-1)
    alpha = np.concatenate([colour, np.full_like(grey, 65535)[..., None]], axis=-1)
    files: dict[str, tuple[Path, np.ndarray]] = {}
    for name, data, values in (
        ("grey16.png", png_bytes_16(grey), grey),
        ("rgb48.png", png_bytes_16(colour), colour),
        ("rgba64.png", png_bytes_16(alpha), colour),
    ):
        (folder / name).write_bytes(data)
        files[name] = (folder / name, values)
    for name, array in (  # PIL's own 16-bit writers: modes I;16, I;16B and I (32-bit)
        ("grey16_pil.png", grey),
        ("grey16_big.tif", grey.astype(">u2")),
        ("grey32.tif", grey.astype(np.int32)),
    ):
        Image.fromarray(array).save(folder / name)
        files[name] = (folder / name, grey)
    expected = {}
    for name, (path, values) in files.items():
        eight = (values.astype(np.int64) >> 8).astype(np.uint8)
        rgb = np.repeat(eight[..., None], 3, axis=-1) if eight.ndim == 2 else eight
        expected[name] = (path, rgb)
    return expected


def test_pil_opens_the_16_bit_files_in_the_modes_handled(tmp_path: Path) -> None:
    files = sixteen_bit_files(tmp_path)
    modes = {name: Image.open(path).mode for name, (path, _) in files.items()}
    assert modes == {
        "grey16.png": "I;16",
        "rgb48.png": "RGB",  # PIL keeps the high byte of each channel itself
        "rgba64.png": "RGBA",
        "grey16_pil.png": "I;16",
        "grey16_big.tif": "I;16B",
        "grey32.tif": "I",
    }


def test_16_bit_images_decode_to_their_high_byte(tmp_path: Path) -> None:
    for name, (path, rgb) in sixteen_bit_files(tmp_path).items():
        luma = np.asarray(Image.fromarray(rgb).convert("L"))  # PIL's RGB -> L weights
        for mode, expected in (("RGB", rgb.transpose(2, 0, 1)), ("L", luma[None])):
            image = decode_crop(str(path), lambda im: (0, 0, *im.size), (8, 8), mode)
            difference = np.abs(image.numpy().astype(int) - expected.astype(int))
            assert difference.max() <= 1, (name, mode, image.numpy(), expected)
    # the grey ramp really spans the range: not all white, as convert("RGB") would make it
    grey = decode_crop(str(tmp_path / "grey16.png"), lambda im: (0, 0, *im.size), (8, 8), "L")
    assert grey.min() == 0 and grey.max() == 255 and grey.flatten()[6] == 128  # 32768 >> 8


def test_datamodule_eval_transform_scales_16_bit_files(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / "train" / folder).mkdir(parents=True)
        files = sixteen_bit_files(tmp_path / "train" / folder)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=8, eval_resize=8, num_workers=0, val_split=4, cache_dir=None
    )
    dm.setup()
    assert isinstance(dm.eval_transform, CenterCropDecode)
    for i in range(len(dm.val_dataset)):
        image, _ = dm.val_dataset[i]
        _, expected = files[os.path.basename(dm.val_dataset.path(i))]
        assert np.abs(image.numpy().astype(int) - expected.transpose(2, 0, 1)).max() <= 1


# ------------------------------------------------------------------------- worker errors
def test_undecodable_file_in_a_worker_keeps_a_one_line_message(tmp_path: Path) -> None:
    require_bytes_names(tmp_path)
    name = b"bad\xff.png"
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n truncated")
    dataset = FileImageDataset(tmp_path, np.array([name]), np.array([0]), CenterCropDecode(8))
    shown = f"{tmp_path}/bad\\xff.png"

    with pytest.raises(ImageDecodeError) as in_process:
        dataset[0]
    message = str(in_process.value)
    assert "\n" not in message and in_process.value.summary == message
    assert message.startswith(f"cannot decode image file {shown}: ")
    assert message.endswith("or set on_bad_image='skip' to leave undecodable images out")

    with pytest.raises(ImageDecodeError) as from_worker:
        next(iter(DataLoader(dataset, num_workers=1)))
    wrapped = str(from_worker.value)
    assert wrapped.startswith(
        "Caught ImageDecodeError in DataLoader worker process 0.\nOriginal Traceback"
    )
    assert wrapped.rstrip().splitlines()[-1] == f"datamodules.decoding.ImageDecodeError: {message}"
    assert from_worker.value.summary == message
    message.encode("utf-8")  # the non-UTF-8 name is shown escaped, printable anywhere
