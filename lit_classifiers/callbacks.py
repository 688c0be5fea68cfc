"""Training helpers of :class:`~lit_classifiers.ClassifierModule` that are not its core steps.

* :class:`ClassifierTensorBoard` puts each run on TensorBoard's HParams tab with the settings
  runs are compared by (see :func:`run_hparams`) next to the real validation and test metrics,
  adds a Custom Scalars layout (train vs validation accuracy on one chart), and draws a
  confusion matrix and a grid of misclassified validation images after each validation epoch.
  The module attaches one automatically (see ``ClassifierModule.configure_callbacks``); it does
  nothing unless a ``TensorBoardLogger`` is in use.
* :class:`ClassifierTensorBoardLogger` is a ``TensorBoardLogger`` whose Scalars view opens on
  ``train/`` and ``val/``: it leaves out Lightning's ``epoch`` and ``hp_metric`` scalars and
  plots the once-per-epoch metrics (``val/*``, ``test/*``, ``train/acc1``) against the epoch.
* :class:`InputPreprocessing` stores in every checkpoint how an image becomes the network's
  input at evaluation (resize, crop, channels, mean, std), so ``lit-classifiers export`` can
  write it beside the exported file. The module attaches one too.
* :class:`StepLogInterval` logs per-step scalars (``train/loss``, ``train/lr``) every step of a
  short epoch instead of Lightning's every 50 steps; the module attaches one.
* :class:`EpochSummary` prints one line per epoch (metrics and time), the output for a file or a
  pipe, where a progress bar would write hundreds of lines; see :func:`progress_defaults`.
* :func:`check_finite_loss` stops training at the first non-finite loss, before the optimizer
  step that would spread it into the weights.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from datamodules.info import dataset_info
from lit_classifiers.optimization import WARMUP_NAME, optimizer_hparams
from lit_classifiers.predictions import readable_text

__all__ = [
    "CUSTOM_SCALARS_LAYOUT",
    "HPARAMS_METRICS",
    "PREPROCESSING_KEY",
    "ClassifierTensorBoard",
    "ClassifierTensorBoardLogger",
    "EpochSummary",
    "InputPreprocessing",
    "NonFiniteLossError",
    "StepLogInterval",
    "check_finite_loss",
    "confusion_matrix_figure",
    "folder_has_hparams",
    "hparams_summaries",
    "input_preprocessing",
    "misclassified_figure",
    "progress_defaults",
    "run_hparams",
]

#: Metrics shown on the HParams tab. They are the scalars the module logs anyway, so the tab
#: reads their real values instead of a placeholder ``hp_metric``.
HPARAMS_METRICS = ("val/acc1", "val/acc5", "val/loss", "test/acc1", "test/acc5", "test/loss")

#: TensorBoard's Custom Scalars tab: ``{category: {chart: ["Multiline", [tag regexes]]}}``.
CUSTOM_SCALARS_LAYOUT: dict[str, dict[str, list[Any]]] = {
    "accuracy": {
        "top-1 accuracy: train vs val": ["Multiline", [r"^train/acc1$", r"^val/acc1$"]],
        "top-5 accuracy (val)": ["Multiline", [r"^val/acc5$"]],
    },
    "loss": {
        "train loss (per step)": ["Multiline", [r"^train/loss$"]],
        "val loss (per epoch)": ["Multiline", [r"^val/loss$"]],
    },
    "learning rate": {"learning rate per parameter group": ["Multiline", [r"^train/lr"]]},
}

#: Metrics logged once per epoch, which ClassifierTensorBoardLogger plots against the epoch.
PER_EPOCH_PREFIXES = ("val/", "test/", "train/acc1")

#: Datamodule arguments that say where data lives or how it is loaded, not what a model learns
#: from: left off the HParams tab (paths would also make every run's row differ).
_DATA_PLUMBING = frozenset(
    {
        "data_dir",
        "input_dir",
        "cache_dir",
        "max_cache_size",
        "predict_dir",
        "download",
        "verify_archives",
        "num_workers",
        "pin_memory",
        "persistent_workers",
        "on_bad_image",
        "batch_size",  # shown as batch_size_per_device and the global batch_size
        "image_size",  # shown from the dataset's facts
    }
)


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


def _hparam_value(value: Any) -> bool | int | float | str | None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (bool, int, float, str)) for v in value
    ):
        return ", ".join(str(v) for v in value)
    return str(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested mappings as ``outer/inner`` keys, every value a bool, number or str; ``None``
    values (an option that is off, such as ``ema_decay``) are left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            if value:
                flat.update(_flatten(value, f"{prefix}{key}/"))
            continue
        converted = _hparam_value(value)
        if converted is not None:
            flat[f"{prefix}{key}"] = converted
    return flat


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def run_hparams(
    trainer: pl.Trainer, pl_module: pl.LightningModule
) -> dict[str, bool | int | float | str]:
    """The settings a run is compared by, flat and ready for TensorBoard's HParams tab.

    First the facts of the run: backbone, data set (``data``) and ``image_size``; for a fit,
    ``optimizer`` (its class), ``lr`` (the base rate actually used, e.g. the one the
    learning-rate finder set), ``momentum``/``nesterov``/``beta1``/``beta2`` and
    ``weight_decay`` as far as the optimizer has them, ``lr_scheduler`` (``"none"`` without),
    the global ``batch_size`` (per device x processes x gradient accumulation),
    ``batch_size_per_device``, ``accumulate_grad_batches``, ``max_epochs``; then ``precision``,
    ``devices`` (per node), ``num_nodes`` and ``ema``. Then the module's other
    hyper-parameters (warm-up, label smoothing, MixUp/CutMix, ``ema_decay``, ...) and the
    datamodule's as ``data/<name>`` (its augmentation settings, splits and seed; not paths or
    loader settings). Values are bools, numbers or strings; unset (``None``) ones are left out.
    The optimizer facts need the optimizer Lightning built, so call this from ``on_fit_start``
    or later; a validate or test run has no optimizer to describe.
    """
    hparams = pl_module.hparams
    fitting = trainer.state.fn == TrainerFn.FITTING
    facts: dict[str, Any] = {}
    backbone = hparams.get("backbone")
    if not isinstance(backbone, str):  # a network passed as a module is not a hyperparameter
        backbone = type(getattr(pl_module, "backbone", pl_module)).__name__
    facts["backbone"] = backbone
    info = dataset_info(trainer)
    if info is not None:
        facts["data"] = info.name
        facts["image_size"] = info.image_size
    if fitting and trainer.optimizers:
        facts.update(optimizer_hparams(trainer.optimizers[0], hparams.get("lr")))
        main = [
            type(config.scheduler).__name__
            for config in trainer.lr_scheduler_configs
            if config.name != WARMUP_NAME
        ]
        facts["lr_scheduler"] = ", ".join(main) or "none"
    per_device = getattr(trainer.datamodule, "batch_size", None)
    if fitting and _positive_int(per_device):
        accumulate = trainer.accumulate_grad_batches
        facts["batch_size"] = per_device * trainer.world_size * accumulate
        facts["batch_size_per_device"] = per_device
        facts["accumulate_grad_batches"] = accumulate
    if fitting and trainer.max_epochs is not None and trainer.max_epochs >= 0:
        facts["max_epochs"] = trainer.max_epochs
    if fitting and trainer.max_steps > 0:
        facts["max_steps"] = trainer.max_steps
    facts["precision"] = str(trainer.precision)
    facts["devices"] = trainer.num_devices
    facts["num_nodes"] = trainer.num_nodes
    if "ema_decay" in hparams:
        facts["ema"] = hparams["ema_decay"] is not None
    # Class names are data, and a thousand of them would swamp the table.
    module_params = {k: v for k, v in hparams.items() if k != "class_names" and k[:1] != "_"}
    data_params = dict(getattr(trainer.datamodule, "hparams", None) or {})
    data_params = {k: v for k, v in data_params.items() if k not in _DATA_PLUMBING and k[:1] != "_"}
    rest = {**_flatten(module_params), **_flatten(data_params, "data/")}
    flat = _flatten(facts)
    return {**flat, **{k: v for k, v in rest.items() if k not in flat}}


def hparams_summaries(
    params: Mapping[str, bool | int | float | str],
    metrics: Sequence[str] = HPARAMS_METRICS,
    *,
    experiment: bool = True,
) -> list[Any]:
    """The HParams plugin's summaries of one run: its session start (the values), and with
    ``experiment`` the experiment (which hyperparameters and metrics the tab has columns for).

    Built here rather than with ``torch.utils.tensorboard.summary.hparams``, which stores a
    bool as the number 1.0 or 0.0 (its ``int`` branch catches bools first) and always adds an
    experiment. TensorBoard shows the columns of *one* run's experiment (its hparams backend
    picks the first it finds); without any, it shows the union of every run's values, which is
    what comparing runs with different optimizers or datasets needs.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    infos = []
    for name, value in params.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
            kind = api_pb2.DATA_TYPE_BOOL
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
            kind = api_pb2.DATA_TYPE_FLOAT64
        elif isinstance(value, str):
            start.hparams[name].string_value = value
            kind = api_pb2.DATA_TYPE_STRING
        else:
            raise TypeError(f"hyperparameter {name}={value!r}: expected a bool, number or str")
        infos.append(api_pb2.HParamInfo(name=name, type=kind))

    def summary(tag: str, **content: Any) -> Summary:
        data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
        plugin = SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()
        )
        return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])

    summaries = []
    if experiment:
        metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metrics]
        summaries.append(
            summary(
                metadata.EXPERIMENT_TAG,
                experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metric_infos),
            )
        )
    summaries.append(summary(metadata.SESSION_START_INFO_TAG, session_start_info=start))
    return summaries


#: Events read per events file when looking for an earlier HParams session: the session is
#: among a run's first events, and a long run's files can hold gigabytes of images.
_EVENTS_SCANNED = 50


def folder_has_hparams(log_dir: str) -> bool:
    """Whether an events file in ``log_dir`` (not its sub-folders) already holds an HParams
    session: a fit resumed into its own folder, or a test run logging into a fit's folder,
    must not add a second trial. Only local folders are read."""
    if "://" in log_dir or not os.path.isdir(log_dir):
        return False
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for name in sorted(os.listdir(log_dir)):
        path = os.path.join(log_dir, name)
        if "tfevents" not in name or not os.path.isfile(path):
            continue
        for index, event in enumerate(EventFileLoader(path).Load()):
            if index >= _EVENTS_SCANNED:
                break
            values = event.summary.value
            if any(value.metadata.plugin_data.plugin_name == "hparams" for value in values):
                return True
    return False


def _validates_once_per_epoch(trainer: pl.Trainer) -> bool:
    interval = trainer.val_check_interval
    return (
        isinstance(interval, float)
        and interval == 1.0
        and trainer.check_val_every_n_epoch is not None
    )


class ClassifierTensorBoardLogger(TensorBoardLogger):
    """A ``TensorBoardLogger`` whose Scalars view opens on ``train/`` and ``val/``.

    TensorBoard sorts its groups of charts by name, so Lightning's ``epoch`` scalar (logged
    with every metric) and ``hp_metric`` placeholder came first. This logger writes neither,
    and plots the metrics logged once per epoch (``val/*``, ``test/*``, ``train/acc1``) with the
    epoch as their x value: runs with other batch sizes line up, and train and validation
    accuracy share an axis (see the Custom Scalars tab). Per-step metrics (``train/loss``, the
    learning rates) keep the optimizer step. Where validation runs more often than once per
    epoch (``val_check_interval``) everything keeps the step, which :class:`ClassifierTensorBoard`
    sets from the trainer.

    Args:
        save_dir, name, version, log_graph, prefix, sub_dir, kwargs: as ``TensorBoardLogger``.
        default_hp_metric: Only ``False``: the HParams tab shows the real metrics.
        epoch_axis: Plot the once-per-epoch metrics against the epoch.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = False,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        epoch_axis: bool = True,
        **kwargs: Any,
    ) -> None:
        if default_hp_metric:
            raise ValueError(
                "ClassifierTensorBoardLogger(default_hp_metric=True): this logger writes no "
                "hp_metric placeholder (the HParams tab shows val/ and test/ metrics); use "
                "default_hp_metric=False or a plain TensorBoardLogger"
            )
        super().__init__(
            save_dir,
            name=name,
            version=version,
            log_graph=log_graph,
            default_hp_metric=False,
            prefix=prefix,
            sub_dir=sub_dir,
            **kwargs,
        )
        self.epoch_axis = epoch_axis
        #: Set by ClassifierTensorBoard: False where validation runs several times an epoch.
        self.validates_once_per_epoch = True

    @property
    def plots_epochs(self) -> bool:
        """Whether the once-per-epoch metrics are written with the epoch as their step."""
        return self.epoch_axis and self.validates_once_per_epoch

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)  # Lightning's bookkeeping, the x axis of the rest
        if self.plots_epochs and epoch is not None:
            per_epoch = {
                k: metrics.pop(k) for k in list(metrics) if k.startswith(PER_EPOCH_PREFIXES)
            }
            if per_epoch:
                super().log_metrics(per_epoch, int(epoch))
        if metrics:
            super().log_metrics(metrics, step)


def _figure_step(trainer: pl.Trainer, logger: TensorBoardLogger) -> int:
    """The step of a validation figure: the step of the validation metrics beside it."""
    if isinstance(logger, ClassifierTensorBoardLogger) and logger.plots_epochs:
        return trainer.current_epoch
    return trainer.global_step


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
        #: The last validation epoch's counts: rows are true classes, columns predicted ones.
        self.confusion_matrix: Tensor | None = None
        self._images: list[Tensor] = []
        self._true: list[int] = []
        self._pred: list[int] = []

    # HParams ---------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = _tensorboard(trainer)
        if isinstance(logger, ClassifierTensorBoardLogger):
            logger.validates_once_per_epoch = _validates_once_per_epoch(trainer)
        if stage in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            self._declare(trainer, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the optimizer is built (and a LearningRateFinder, which Lightning runs first,
        # has set the rate) and before Lightning logs its own hyperparameters or any metric.
        self._declare(trainer, pl_module)

    def _declare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the run's HParams session and the Custom Scalars layout, once per folder.

        TensorBoard keeps the *first* HParams summary of a run. Beside a plain
        ``TensorBoardLogger``, which writes its own (with a ``hp_metric`` of -1 unless
        ``default_hp_metric=False``) after ``on_fit_start``, the summary written here also
        declares the experiment, naming the metrics the module logs.
        """
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        log_dir = logger.log_dir
        if log_dir in self._declared:
            return
        self._declared.add(log_dir)
        if folder_has_hparams(log_dir):
            return
        from lit_classifiers.lightning_compat import tensorboard_file_writer

        summaries = hparams_summaries(
            run_hparams(trainer, pl_module),
            experiment=not isinstance(logger, ClassifierTensorBoardLogger),
        )
        writer = tensorboard_file_writer(logger.experiment)
        for summary in summaries:
            writer.add_summary(summary)
        logger.experiment.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)

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
        self.confusion_matrix = matrix.cpu() if matrix is not None else None
        logger = _tensorboard(trainer)
        if not trainer.is_global_zero or logger is None:
            return
        names = _class_names(pl_module)
        step = _figure_step(trainer, logger)
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
    """A grid of ``(N, C, H, W)`` images in [0, 1], each under its true and predicted class.

    One axes spanning the figure, each image placed by its extent and captioned by a text: an
    axes per image (and ``tight_layout`` over them) is what makes matplotlib slow. Images are
    shown at their own pixel size, brought into :data:`GRID_IMAGE_PX` (enlarging a 64 px image
    further costs drawing and PNG time and shows no more); this is drawn every validation epoch.
    """
    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    height, width = images.shape[-2:]
    side = max(height, width)
    scale = min(max(side, GRID_IMAGE_PX[0]), GRID_IMAGE_PX[1]) / side
    # Inches at the figure's 100 dpi: the image, then a two-line caption above it.
    image_w, image_h = width * scale / 100, height * scale / 100
    cell_w, cell_h = max(image_w, 1.6) + 0.1, image_h + 0.45
    figure = Figure(figsize=(cell_w * cols, cell_h * rows), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.axis("off")
    for index, image in enumerate(images):
        left, top = (index % cols) * cell_w, (index // cols) * cell_h
        x0, y0 = left + (cell_w - image_w) / 2, top + 0.4
        extent = (x0, x0 + image_w, y0 + image_h, y0)
        if image.shape[0] >= 3:
            pixels, style = image[:3].permute(1, 2, 0).numpy(), {}
        else:
            pixels, style = image[0].numpy(), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
        axes.imshow(pixels, extent=extent, interpolation="nearest", **style)
        axes.text(
            left + cell_w / 2,
            y0 - 0.03,
            f"true: {_plain_label(true[index])}\npred: {_plain_label(predicted[index])}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    # Data coordinates are inches, y downwards; set last, as each imshow resets the limits.
    axes.set(xlim=(0.0, cell_w * cols), ylim=(cell_h * rows, 0.0))
    return figure


#: The smallest and largest side, in pixels, of an image in the misclassified grid.
GRID_IMAGE_PX = (64, 224)


# ------------------------------------------------------------------------------ preprocessing
#: The checkpoint key under which :class:`InputPreprocessing` stores the evaluation input.
PREPROCESSING_KEY = "lit_classifiers_preprocessing"


def input_preprocessing(trainer: pl.Trainer) -> dict[str, Any] | None:
    """How the trainer's datamodule turns an image into the network's evaluation input.

    The single-view (``center``) path of :mod:`datamodules.eval_views`: the shorter side
    resized to ``resize_size`` (bilinear, antialiased: PIL's ``Image.resize`` for files), the
    central ``crop_size`` square, then ``(x / 255 - mean) / std`` per channel. The names follow
    timm's pretrained configs and Hugging Face's image processors. ``None`` for a datamodule
    that declares no :class:`~datamodules.info.DatasetInfo`.
    """
    info = dataset_info(trainer)
    if info is None:
        return None
    datamodule = trainer.datamodule
    resize = getattr(datamodule, "eval_resize_size", None)
    size = info.image_size
    return {
        "input_size": [info.in_channels, size, size],
        "channel_order": "RGB" if info.in_channels == 3 else "L (grayscale)",
        "resize": {
            "shortest_edge": int(resize) if isinstance(resize, int) else None,
            "longest_edge": "int(shortest_edge * longer / shorter), truncated",
            "interpolation": "bilinear",
            "antialias": True,
            "as": "torchvision.transforms.Resize(shortest_edge) on a PIL image "
            "(PIL Image.resize with BILINEAR)",
        },
        "crop": {
            "mode": "center",
            "height": size,
            "width": size,
            "as": "torchvision.transforms.CenterCrop: top = round((H - height) / 2), "
            "left = round((W - width) / 2)",
        },
        "value_range": [0, 255],  # uint8 pixels
        "rescale_factor": 1 / 255,
        "mean": list(info.mean),
        "std": list(info.std),
        "dataset": info.name,
    }


class InputPreprocessing(Callback):
    """Stores :func:`input_preprocessing` in every checkpoint (under :data:`PREPROCESSING_KEY`).

    Plain numbers and strings, so ``torch.load(weights_only=True)`` reads it; nothing is stored
    when the datamodule declares no :class:`~datamodules.info.DatasetInfo`.
    """

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        description = input_preprocessing(trainer)
        if description is not None:
            checkpoint[PREPROCESSING_KEY] = description


# ------------------------------------------------------------------------------ what a run shows
#: Lightning's ``Trainer(log_every_n_steps=...)`` default.
LIGHTNING_LOG_EVERY = 50
#: Per-step scalars get at least this many points per epoch when Lightning's default is in use.
POINTS_PER_EPOCH = 20


def step_log_interval(batches_per_epoch: int | float, log_every_n_steps: int) -> int:
    """The logging interval for an epoch of ``batches_per_epoch`` optimizer steps.

    Lightning's default of 50 leaves a 15-batch epoch with no point at all; in its place, at
    least :data:`POINTS_PER_EPOCH` points per epoch (every step up to 39 batches), never sparser
    than 50. Any other value was chosen by the user and is kept.
    """
    if log_every_n_steps != LIGHTNING_LOG_EVERY or not math.isfinite(batches_per_epoch):
        return log_every_n_steps
    return max(1, min(LIGHTNING_LOG_EVERY, int(batches_per_epoch) // POINTS_PER_EPOCH))


class StepLogInterval(Callback):
    """Sets ``trainer.log_every_n_steps`` from the epoch length (:func:`step_log_interval`).

    A ``log_every_n_steps`` of exactly 50 cannot be told from Lightning's default, and is
    replaced like it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chosen: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every step until the epoch length is known: Lightning then warns that an epoch is
        # shorter than the interval only where a value the user chose makes it so.
        self._chosen = trainer.log_every_n_steps
        if self._chosen == LIGHTNING_LOG_EVERY:
            trainer.log_every_n_steps = 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._chosen is None:
            return
        steps = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
        trainer.log_every_n_steps = step_log_interval(steps, self._chosen)


def _format_metric(value: Any) -> str:
    number = float(value.item() if isinstance(value, Tensor) else value)
    return f"{number:.4g}"


class EpochSummary(Callback):
    """One line per training epoch on standard output: the epoch's metrics and its time.

    ``epoch 3/8  train/loss 0.6812  train/lr 0.05  val/acc1 0.7667  val/acc5 1  val/loss 0.6345
    8.1 s``

    The metrics are those logged by the callbacks' end of the epoch: ``train/loss`` of the last
    step, the rate and the validation metrics (``train/acc1``, logged by the module's own epoch
    end afterwards, is left out, and is on TensorBoard). The time runs from the start of the
    epoch's first batch to the end of its validation. What a run under CI, ``nohup`` or SLURM
    writes instead of a progress bar (see
    :func:`progress_defaults`); printed by the global rank 0 only.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._started
        total = trainer.max_epochs
        epoch = f"epoch {trainer.current_epoch + 1}" + (
            f"/{total}" if total is not None and total > 0 else ""
        )
        metrics = trainer.callback_metrics
        # train/acc1 is logged by the module's epoch end, after this hook: what is there now
        # is the previous epoch's.
        shown = sorted(
            (
                name
                for name in metrics
                if name.startswith(("train/", "val/")) and not name.startswith("train/acc")
            ),
            key=lambda name: (not name.startswith("train/"), "/lr" in name, name),
        )
        fields = [f"{name} {_format_metric(metrics[name])}" for name in shown]
        stream = self.stream if self.stream is not None else sys.stdout
        print("  ".join([epoch, *fields, f"{seconds:.1f} s"]), file=stream, flush=True)


def progress_defaults(stream: Any = None) -> dict[str, Any]:
    """Trainer defaults for the output ``stream`` (standard output by default).

    A terminal keeps Lightning's progress bar; a file or a pipe gets :class:`EpochSummary`
    instead (``--trainer.enable_progress_bar true`` brings the bar back beside it).
    """
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return {}
    return {"enable_progress_bar": False, "callbacks": [EpochSummary()]}
