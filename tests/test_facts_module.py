"""ClassifierModule and the CLI checked against what they must compute or write, worked out
here by hand rather than read back from the code under test."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.cli import run_cli, run_dirs
from helpers.modules import (
    CLASS_NAMES,
    NUM_CLASSES,
    TinyDataModule,
    TinyNet,
    make_tensors,
    make_trainer,
    sgd,
)
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lit_classifiers import ClassifierModule


# ---------------------------------------------------------------------------- 2. class names
def trained_on(names: list[str], tmp_path: Path) -> Path:
    """A checkpoint of a model fitted on a datamodule whose classes are ``names``."""
    data = TinyDataModule()
    data.class_names = list(names)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    trainer = make_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert model.class_names == names  # taken from the data it was fitted on
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("stage", ["fit", "validate", "test"])
def test_a_model_trained_on_other_class_names_is_refused(stage: str, tmp_path: Path) -> None:
    checkpoint = trained_on(CLASS_NAMES, tmp_path)
    model = ClassifierModule.load_from_checkpoint(checkpoint, backbone=TinyNet(), optimizer=sgd)
    assert model.class_names == CLASS_NAMES
    other = TinyDataModule()  # same number of classes, other names: class0 ... class4
    assert other.num_classes == NUM_CLASSES and other.class_names != CLASS_NAMES
    trainer = make_trainer(max_steps=1, limit_val_batches=1, limit_test_batches=1)
    with pytest.raises(ValueError, match="class_names") as error:
        getattr(trainer, stage)(model, datamodule=other)
    assert re.search(r"\bant\b", str(error.value)) and re.search(r"\bclass0\b", str(error.value))


def test_a_model_with_the_same_class_names_is_accepted(tmp_path: Path) -> None:
    checkpoint = trained_on(CLASS_NAMES, tmp_path)
    model = ClassifierModule.load_from_checkpoint(checkpoint, backbone=TinyNet(), optimizer=sgd)
    same = TinyDataModule()
    same.class_names = list(CLASS_NAMES)
    (metrics,) = make_trainer(limit_val_batches=1).validate(model, datamodule=same, verbose=False)
    assert "val/acc1" in metrics


def test_class_names_given_to_the_model_must_match_the_datamodule() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="differ"):
        make_trainer(limit_val_batches=1).validate(model, datamodule=TinyDataModule())


# ---------------------------------------------------------------------------- 7. metrics by hand
def test_logged_accuracy_and_loss_equal_those_computed_by_hand() -> None:
    """On 37 fixed samples of 8 classes in batches of 4 (the last holds 1), val/acc1, val/acc5
    and val/loss are the per-sample averages computed here from the model's own logits."""
    torch.manual_seed(4)
    model = ClassifierModule(TinyNet(num_classes=8), num_classes=8)
    images, labels = make_tensors(37, num_classes=8)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    top1 = (logits.argmax(dim=1) == labels).double()
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(dim=1).double()
    losses = F.cross_entropy(logits.double(), labels, reduction="none")
    # The data must tell a right metric from a wrong one: neither 0 nor 1, and the mean over
    # batches (a common mistake) differs from the mean over samples.
    for hits in (top1, top5):
        assert 0 < hits.mean() < 1
        batch_means = torch.stack([chunk.mean() for chunk in hits.split(4)]).mean()
        assert abs(batch_means - hits.mean()) > 0.02

    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    (metrics,) = make_trainer().validate(model, loader, verbose=False)
    assert metrics["val/acc1"] == pytest.approx(top1.mean().item(), abs=1e-6)
    assert metrics["val/acc5"] == pytest.approx(top5.mean().item(), abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(losses.mean().item(), rel=1e-5)


# ---------------------------------------------------------------------------- 5. predict output
def test_predict_writes_its_csv_into_the_run_folder(fitted_run: Path, tmp_path: Path) -> None:
    (fit_dir,) = run_dirs(fitted_run)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        Image.new("L", (8, 8), color=60 * k).save(photos / f"p{k}.png")
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli(
        "predict",
        "--config",
        fit_dir / "config.yaml",
        "--ckpt_path",
        fit_dir / "checkpoints" / "last.ckpt",
        "--data.predict_dir",
        photos,
        cwd=work,
    )
    (run_dir,) = run_dirs(work)
    written = run_dir / "predictions.csv"
    assert written.is_file(), sorted(p.relative_to(work) for p in work.rglob("*"))
    assert not (work / "predictions.csv").exists()
    assert [p.name for p in work.iterdir()] == ["runs"]  # nothing else in the working folder
    assert not any(fit_dir.rglob("predictions.csv"))  # nor in the fitted run's folder
    rows = list(csv.reader(written.open()))
    assert sorted(Path(row[0]).name for row in rows[1:]) == ["p0.png", "p1.png", "p2.png"]
    (said,) = [line for line in result.stdout.splitlines() if line.startswith("wrote ")]
    assert said.startswith("wrote 3 predictions to ")
    assert (work / said.removeprefix("wrote 3 predictions to ")).resolve() == written.resolve()
