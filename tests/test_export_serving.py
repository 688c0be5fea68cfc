"""An exported ONNX file served as a server would: onnxruntime, PIL and NumPy, the file and its
``.classes.json`` and nothing else, on real photographs, gives what ``predict`` gives on the
checkpoint (issue 20, section 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.modules import make_trainer
from PIL import Image
from sklearn.datasets import load_sample_images

from datamodules import ImageFolderDataModule
from lit_classifiers import ClassifierModule
from lit_classifiers.callbacks import PREPROCESSING_KEY
from lit_classifiers.cli import main
from lit_classifiers.export import ExportError, export_checkpoint

CLASSES = ["china", "flower"]
CROP = 32


def _tiles(photo: np.ndarray, count: int, seed: int) -> list[Image.Image]:
    """Non-square tiles of a photograph, so the server's resize and crop both matter."""
    rng = np.random.default_rng(seed)
    height, width = photo.shape[:2]
    tiles = []
    for _ in range(count):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        tiles.append(Image.fromarray(photo[top : top + h, left : left + w]))
    return tiles


@pytest.fixture(scope="module")
def photo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four steps of resnet20 on tiles of scikit-learn's two photographs, and the checkpoint."""
    root = tmp_path_factory.mktemp("photos")
    photos = load_sample_images().images
    for split, count, seed in (("train", 8, 0), ("val", 3, 1)):
        for name, photo in zip(CLASSES, photos, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, tile in enumerate(_tiles(photo, count, seed)):
                tile.save(folder / f"{i}.jpg", quality=90)
    served = root / "serve"
    served.mkdir()
    for name, photo in zip(CLASSES, photos, strict=True):
        for i, tile in enumerate(_tiles(photo, 3, seed=2)):
            tile.save(served / f"{name}{i}.jpg", quality=90)
    torch.manual_seed(0)
    datamodule = ImageFolderDataModule(
        str(root), image_size=CROP, batch_size=8, num_workers=0, mean=(0.4, 0.45, 0.5)
    )
    module = ClassifierModule("resnet20", num_classes=2, lr=0.01)
    make_trainer(max_steps=4, max_epochs=2, limit_val_batches=0).fit(module, datamodule=datamodule)
    checkpoint = root / "model.ckpt"
    # A checkpoint written by a trainer, as ModelCheckpoint writes them.
    module.trainer.save_checkpoint(checkpoint)
    return checkpoint, served


def _predicted_by_the_checkpoint(checkpoint: Path, folder: Path) -> dict[str, np.ndarray]:
    """``predict``'s probabilities, through the datamodule's own predict loader."""
    module = ClassifierModule.load_from_checkpoint(checkpoint)
    datamodule = ImageFolderDataModule(
        str(checkpoint.parent), image_size=CROP, mean=(0.4, 0.45, 0.5), predict_dir=str(folder)
    )
    batches = make_trainer().predict(module, datamodule=datamodule)
    return {
        Path(path).name: probs.numpy()
        for batch in batches
        for path, probs in zip(batch["paths"], batch["probs"], strict=True)
    }


def _server_input(path: Path, spec: dict) -> np.ndarray:
    """One image as the sidecar says: resize the shorter side, centre crop; uint8 (H, W, C)."""
    resize, crop = spec["resize"]["shortest_edge"], spec["crop"]
    assert spec["resize"]["interpolation"] == "bilinear"
    image = Image.open(path).convert("RGB" if spec["channel_order"] == "RGB" else "L")
    width, height = image.size
    scale = resize / min(width, height)
    size = (resize, int(height * scale)) if width <= height else (int(width * scale), resize)
    image = image.resize(size, Image.Resampling.BILINEAR)
    top = round((image.height - crop["height"]) / 2)
    left = round((image.width - crop["width"]) / 2)
    image = image.crop((left, top, left + crop["width"], top + crop["height"]))
    return np.asarray(image, dtype=np.uint8).reshape(crop["height"], crop["width"], -1)


def _serve(model: Path, images: list[Path]) -> np.ndarray:
    """Class probabilities from the file and its sidecar alone."""
    sidecar = json.loads(model.with_name(model.name + ".classes.json").read_text())
    spec = sidecar["preprocessing"]
    batch = np.stack([_server_input(path, spec) for path in images])  # (N, H, W, C) uint8
    if not spec["included"]:
        mean, std = np.array(spec["mean"]), np.array(spec["std"])
        batch = (batch * spec["rescale_factor"] - mean) / std
        batch = batch.transpose(0, 3, 1, 2).astype(np.float32)
    import onnxruntime  # here: only the (slow) serving tests need it

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {sidecar["input"]["name"]: batch})
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# slow: end to end: ONNX export (~5 s of imports) and onnxruntime on real photographs
@pytest.mark.slow
@pytest.mark.parametrize("preprocessing", ["included", "none"])
def test_onnx_file_and_sidecar_alone_predict_as_the_checkpoint(
    photo_checkpoint: tuple[Path, Path], tmp_path: Path, preprocessing: str
) -> None:
    checkpoint, served = photo_checkpoint
    model = tmp_path / "served.onnx"
    result = export_checkpoint(checkpoint, model, "onnx", preprocessing=preprocessing)
    included = preprocessing == "included"
    assert result.input_shape == (
        ("batch", CROP, CROP, 3) if included else ("batch", 3, CROP, CROP)
    )

    sidecar = json.loads(result.classes_file.read_text())
    spec = sidecar["preprocessing"]
    assert sidecar["class_names"] == CLASSES
    assert sidecar["input"]["dtype"] == ("uint8" if included else "float32")
    assert spec["included"] is included
    assert spec["mean"] == pytest.approx([0.4, 0.45, 0.5])  # the datamodule's, not ImageNet's
    assert spec["resize"]["shortest_edge"] == round(CROP * 256 / 224) == 37
    assert (spec["crop"]["height"], spec["channel_order"]) == (CROP, "RGB")

    expected = _predicted_by_the_checkpoint(checkpoint, served)
    names = sorted(expected)
    got = _serve(model, [served / name for name in names])
    want = np.stack([expected[name] for name in names])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    # Not a constant answer: the images give different probabilities.
    assert np.ptp(want[:, 0]) > 1e-3


def test_checkpoint_records_the_evaluation_input(photo_checkpoint: tuple[Path, Path]) -> None:
    checkpoint, _ = photo_checkpoint
    recorded = torch.load(checkpoint, weights_only=True)[PREPROCESSING_KEY]
    assert recorded["input_size"] == [3, CROP, CROP]
    assert recorded["std"] == pytest.approx([0.229, 0.224, 0.225])  # ImageNet's default std
    assert recorded["rescale_factor"] == pytest.approx(1 / 255)


def test_included_preprocessing_needs_a_recorded_normalisation(
    photo_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, _ = photo_checkpoint
    old = torch.load(checkpoint, weights_only=True)
    del old[PREPROCESSING_KEY]  # as a checkpoint saved before the record existed
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ExportError, match=r"old\.ckpt does not record its input normalisation"):
        export_checkpoint(tmp_path / "old.ckpt", tmp_path / "m.onnx", preprocessing="included")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.ckpt"]


def test_export_refuses_an_image_size_beyond_memory_in_one_line(
    photo_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _ = photo_checkpoint
    args = ["export", "--ckpt_path", str(checkpoint), "--format", "torchscript"]
    assert main([*args, "--image-size", "100000", "--output", str(tmp_path / "m.pt")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[0]
    assert re.search(r"--image-size 100000 cannot be exported on this machine: .* GiB", error)
    assert not list(tmp_path.iterdir())
