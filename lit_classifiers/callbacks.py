"""Training helpers of :class:`~lit_classifiers.ClassifierModule` that are not its core steps.

* :class:`ClassifierTensorBoard` puts the hyperparameters on TensorBoard's HParams tab next to
  the real validation and test metrics, and draws a confusion matrix and a grid of misclassified
  validation images after each validation epoch. The module attaches one automatically (see
  ``ClassifierModule.configure_callbacks``); it does nothing unless a ``TensorBoardLogger`` is
  in use.
* :func:`check_finite_loss` stops training at the first non-finite loss, before the optimizer
  step that would spread it into the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from datamodules.info import dataset_info
from lit_classifiers.predictions import readable_text

__all__ = [
    "HPARAMS_METRICS",
    "ClassifierTensorBoard",
    "NonFiniteLossError",
    "check_finite_loss",
    "confusion_matrix_figure",
    "misclassified_figure",
]

#: Metrics shown on the HParams tab. They are the scalars the module logs anyway, so the tab
#: reads their real values instead of a placeholder ``hp_metric``.
HPARAMS_METRICS = ("val/acc1", "val/acc5", "val/loss", "test/acc1", "test/acc5", "test/loss")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def check_finite_loss(loss: Tensor, *, epoch: int, global_step: int, batch_idx: int) -> None:
    """Raise :class:`NonFiniteLossError` naming where training broke.

    Raising inside the training step, before backward and the optimizer step, leaves the
    weights as they were after the last good step, and no later checkpoint overwrites the last
    good one. Costs one host-device synchronisation per step.
    """
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteLossError(
            f"non-finite training loss ({loss.detach().float().cpu().tolist()}) at epoch {epoch}, "
            f"global step {global_step} (batch {batch_idx} of the epoch); training stopped "
            "before this step's optimizer update, so saved checkpoints hold finite weights. "
            "Lower the learning rate, add warm-up or check the data of this batch."
        )


def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = _hparam_value(value)
    return flat


class ClassifierTensorBoard(Callback):
    """TensorBoard extras for image classification; silent without a ``TensorBoardLogger``.

    Args:
        max_images: Misclassified validation images to show (taken from rank 0's share).
        max_confusion_classes: Above this many classes the confusion matrix is not drawn: a
            1000x1000 picture shows nothing and costs a second per epoch.
    """

    def __init__(self, max_images: int = 16, max_confusion_classes: int = 50) -> None:
        super().__init__()
        self.max_images = max_images
        self.max_confusion_classes = max_confusion_classes
        self._declared: set[str] = set()
        self._active = False
        self._confmat: MulticlassConfusionMatrix | None = None
        self._images: list[Tensor] = []
        self._true: list[int] = []
        self._pred: list[int] = []

    # HParams ---------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Declare the hyperparameters and their metrics before Lightning logs anything.

        TensorBoard keeps the *first* HParams summary of a run, and Lightning writes its own
        (with a ``hp_metric`` of -1 unless ``default_hp_metric=False``) after ``setup``. The
        summary written here names the metrics the module logs, without writing any values.
        """
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero or logger.log_dir in self._declared:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        from lit_classifiers.lightning_compat import tensorboard_file_writer

        # Class names are data, and a thousand of them would swamp the table.
        params = _flatten(
            {k: v for k, v in pl_module.hparams.items() if k != "class_names" and k[:1] != "_"}
        )
        experiment, start, end = hparams_summary(params, dict.fromkeys(HPARAMS_METRICS, 0.0))
        writer = tensorboard_file_writer(logger.experiment)
        for summary in (experiment, start, end):
            writer.add_summary(summary)
        self._declared.add(logger.log_dir)

    # Figures ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The same answer on every rank, which the confusion matrix's sync relies on.
        self._active = _tensorboard(trainer) is not None and not trainer.sanity_checking
        if not self._active:
            return
        num_classes = int(pl_module.hparams.num_classes)
        if num_classes <= self.max_confusion_classes:
            if self._confmat is None or self._confmat.num_classes != num_classes:
                self._confmat = MulticlassConfusionMatrix(num_classes)
            self._confmat = self._confmat.to(pl_module.device)
            self._confmat.reset()
        else:
            self._confmat = None
        self._images, self._true, self._pred = [], [], []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active or not isinstance(outputs, Mapping) or "preds" not in outputs:
            return
        preds, target = outputs["preds"], outputs["target"]
        if self._confmat is not None and len(target):
            self._confmat.update(preds, target)
        missing = self.max_images - len(self._images)
        if missing <= 0 or not trainer.is_global_zero or not len(target):
            return
        wrong = (preds != target).nonzero().flatten()[:missing]
        if len(wrong):
            images = batch[0][: len(target)][wrong].detach().float().cpu()
            self._images.extend(images)
            self._true.extend(target[wrong].tolist())
            self._pred.extend(preds[wrong].tolist())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        matrix = self._confmat.compute() if self._confmat is not None else None  # all ranks sync
        logger = _tensorboard(trainer)
        if not trainer.is_global_zero or logger is None:
            return
        names = _class_names(pl_module)
        step = trainer.global_step
        if matrix is not None:
            figure = confusion_matrix_figure(matrix.cpu(), names)
            logger.experiment.add_figure("val/confusion_matrix", figure, step)
        if self._images:
            info = dataset_info(trainer)
            images = _displayable(
                torch.stack(self._images),
                info.mean if info is not None else None,
                info.std if info is not None else None,
            )
            true = [names[i] for i in self._true]
            pred = [names[i] for i in self._pred]
            logger.experiment.add_figure(
                "val/misclassified", misclassified_figure(images, true, pred), step
            )
        self._images, self._true, self._pred = [], [], []


def _class_names(pl_module: pl.LightningModule) -> list[str]:
    names = pl_module.hparams.get("class_names")
    num_classes = int(pl_module.hparams.num_classes)
    return [str(name) for name in names] if names else [str(i) for i in range(num_classes)]


def _plain_label(name: str) -> str:
    """A class name as matplotlib should draw it: valid UTF-8 (a non-UTF-8 folder name would
    crash the renderer) and with ``$`` escaped (``$...$`` would be parsed as mathtext, which
    can fail to parse), so the figure shows the name exactly."""
    return readable_text(name).replace("$", r"\$")


def _displayable(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Tensor:
    """Images back in [0, 1]: un-normalised with the datamodule's statistics when they fit,
    otherwise each image stretched to its own range (enough to see what the model saw)."""
    channels = images.shape[1]
    if mean is not None and std is not None and len(mean) == len(std) == channels:
        m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
        return (images * s + m).clamp(0, 1)
    flat = images.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    high = flat.max(1).values.view(-1, 1, 1, 1)
    return (images - low) / (high - low).clamp(min=1e-12)


def confusion_matrix_figure(matrix: Tensor, class_names: Sequence[str]) -> Figure:
    """Rows are true classes normalised to 1; each row's label carries the class's accuracy."""
    class_names = [_plain_label(name) for name in class_names]
    counts = matrix.double()
    totals = counts.sum(1)
    rates = counts / totals.clamp(min=1).unsqueeze(1)
    per_class = counts.diag() / totals.clamp(min=1)
    overall = counts.diag().sum() / counts.sum().clamp(min=1)
    n = len(class_names)
    side = max(4.0, 0.32 * n + 2.5)
    figure = Figure(figsize=(side + 1.0, side))
    axes = figure.add_subplot()
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(n), labels=class_names, rotation=90, fontsize=8)
    axes.set_yticks(
        range(n),
        labels=[
            f"{name} ({acc:.0%})" for name, acc in zip(class_names, per_class.tolist(), strict=True)
        ],
        fontsize=8,
    )
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j] > 0:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    axes.text(
                        j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color
                    )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class (per-class accuracy)")
    axes.set_title(f"validation accuracy {float(overall):.2%} ({int(counts.sum())} images)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure


def misclassified_figure(images: Tensor, true: Sequence[str], predicted: Sequence[str]) -> Figure:
    """A grid of ``(N, C, H, W)`` images in [0, 1], each titled with true and predicted class."""
    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(2.2 * cols, 2.5 * rows))
    for index in range(count):
        axes = figure.add_subplot(rows, cols, index + 1)
        image = images[index]
        if image.shape[0] >= 3:
            axes.imshow(image[:3].permute(1, 2, 0).numpy())
        else:
            axes.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        axes.set_title(
            f"true: {_plain_label(true[index])}\npred: {_plain_label(predicted[index])}",
            fontsize=8,
        )
        axes.axis("off")
    figure.tight_layout()
    return figure
