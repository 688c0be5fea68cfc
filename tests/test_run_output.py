"""What a person sees of a run: per-step scalars on a short epoch, one line per epoch in a pipe,
and a confusion matrix whose rows are the true classes (issues 20 section 2, 22 item 16)."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers.cli import CONFIGS, scalars
from helpers.modules import TinyNet, make_loader, make_trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_classifiers import ClassifierModule
from lit_classifiers.callbacks import (
    ClassifierTensorBoard,
    EpochSummary,
    confusion_matrix_figure,
    progress_defaults,
    step_log_interval,
)


# ------------------------------------------------------------------------------ step scalars
@pytest.mark.parametrize(
    ("batches", "chosen", "expected"),
    [
        (15, 50, 1),  # Lightning's default on a short epoch: every step
        (45, 50, 2),  # the digits recipe: 22 points per epoch
        (400, 50, 20),
        (5005, 50, 50),  # ImageNet at 256: never sparser than Lightning's default
        (15, 5, 5),  # a value the user chose is kept
        (15, 100, 100),
        (float("inf"), 50, 50),  # an iterable without a length
    ],
)
def test_step_log_interval(batches: float, chosen: int, expected: int) -> None:
    assert step_log_interval(batches, chosen) == expected


def test_a_short_epoch_logs_the_loss_and_rate_at_every_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ClassifierModule(TinyNet(), num_classes=5)
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    trainer = make_trainer(logger=logger, max_epochs=2, limit_val_batches=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, make_loader(37, batch_size=4))  # 10 batches per epoch
    assert not [w for w in caught if "logging interval" in str(w.message)]  # Lightning's
    points = scalars(Path(logger.log_dir))
    # Lightning's default interval of 50 would give no point at all in these 20 steps.
    assert len(points["train/loss"]) == 20
    assert len(points["train/lr"]) == 20


# --------------------------------------------------------------------------- one line an epoch
def test_epoch_summary_prints_one_line_per_epoch_with_metrics_and_time() -> None:
    torch.manual_seed(0)
    out = io.StringIO()
    module = ClassifierModule(TinyNet(), num_classes=5)
    trainer = make_trainer(max_epochs=3, callbacks=[EpochSummary(out)], limit_val_batches=2)
    trainer.fit(module, make_loader(16, batch_size=4), make_loader(8, batch_size=4))
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    number = r"-?[\d.]+(e[+-]\d+)?"
    assert "train/acc1" not in out.getvalue()  # logged after the line: it would be stale
    for line in lines:
        fields = rf"  train/loss {number}  train/lr {number}  val/acc1 {number}  val/acc5 {number}"
        assert re.search(rf"{fields}  val/loss {number}  {number} s$", line), line


def test_progress_defaults_keep_the_bar_in_a_terminal_only(tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_defaults(Terminal()) == {}
    piped = progress_defaults(io.StringIO())
    assert piped["enable_progress_bar"] is False
    assert [type(c) for c in piped["callbacks"]] == [EpochSummary]


# slow: the console script as a real process with its output to a pipe (the README's quick start,
# run once for this test and test_cli.py's)
@pytest.mark.slow
def test_a_piped_fit_prints_one_line_per_epoch_and_no_noise(readme_quickstart_run: Path) -> None:
    """The real command with its output to a pipe (as under CI, nohup or SLURM), warnings
    shown as a user's shell has them: the warnings of its imports are part of what one sees."""
    folder = readme_quickstart_run
    stdout, stderr = ((folder / name).read_text() for name in ("stdout", "stderr"))
    assert (folder / "returncode").read_text() == "0", stderr[-3000:]
    epochs = yaml.safe_load((CONFIGS / "digits" / "resnet20.yaml").read_text())["trainer"][
        "max_epochs"
    ]
    output = stdout + stderr
    assert "`Trainer.fit` stopped" in output
    assert "litlogger" not in output and "Tip:" not in output  # no advertisement
    assert "LeafSpec" not in output  # no deprecation noise of Lightning's imports
    lines = stdout.splitlines()
    printed = [line for line in lines if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in printed] == [
        f"epoch {k}/{epochs}" for k in range(1, epochs + 1)
    ]
    assert all("val/acc1" in line and line.endswith(" s") for line in printed)
    assert "it/s" not in output  # no progress bar
    assert len(lines) < 40, stdout  # the model summary and the epochs, not ~360 lines


# ---------------------------------------------------------------------------- confusion matrix
class PredictsItsPixel(nn.Module):
    """Predicts the class written in each image's first pixel, so predictions are known."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.unused = nn.Linear(1, 1)  # a parameter, as the module expects of a network

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), self.num_classes).float()


# Counts with rows the true class and columns the prediction; its transpose differs.
EXPECTED = torch.tensor([[2, 1, 0], [0, 3, 0], [1, 0, 0]])


def _known_batch() -> tuple[Tensor, Tensor]:
    pairs = [(t, p) for t in range(3) for p in range(3) for _ in range(int(EXPECTED[t, p]))]
    targets = torch.tensor([t for t, _ in pairs])
    images = torch.zeros(len(pairs), 3, 4, 4)
    images[:, 0, 0, 0] = torch.tensor([float(p) for _, p in pairs])
    return images, targets


def test_confusion_matrix_rows_are_the_true_classes(tmp_path: Path) -> None:
    images, targets = _known_batch()
    module = ClassifierModule(PredictsItsPixel(3), num_classes=3, class_names=["a", "b", "c"])
    figures = ClassifierTensorBoard()
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    trainer = make_trainer(logger=logger, callbacks=[figures])
    trainer.validate(module, DataLoader(TensorDataset(images, targets), batch_size=4))
    assert torch.equal(figures.confusion_matrix, EXPECTED)

    figure = confusion_matrix_figure(EXPECTED, ["a", "b", "c"])
    (axes,) = [a for a in figure.axes if a.get_xlabel() == "predicted class"]
    drawn = torch.tensor(axes.images[0].get_array().data)
    rates = EXPECTED.double() / EXPECTED.sum(1, keepdim=True)
    torch.testing.assert_close(drawn, rates)  # row i of the picture is true class i
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert labels == ["a (67%)", "b (100%)", "c (0%)"]  # recall of each true class
