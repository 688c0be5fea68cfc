"""What TensorBoard shows of a run, read back from the event files; and the learning-rate finder.

HParams: the settings runs are compared by, with their real types, once per run folder. Scalars:
``train/`` and ``val/`` first, once-per-epoch metrics against the epoch, one learning-rate curve
per parameter group. Custom Scalars: train vs validation accuracy on one chart. Lightning's
model summary: real FLOPs. Lightning's learning-rate finder: finds a rate and trains with it,
from Python and from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.cli import TINY, run_cli, run_dirs
from helpers.modules import NUM_CLASSES, TinyDataModule, TinyNet, make_trainer, sgd
from lightning.pytorch.callbacks import Callback, LearningRateFinder
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.model_summary import ModelSummary
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.optim.lr_scheduler import StepLR
from torch.utils.flop_counter import FlopCounterMode

from datamodules import DigitsDataModule
from lit_classifiers.callbacks import ClassifierTensorBoardLogger
from lit_classifiers.module import ClassifierModule

EVAL_METRICS = {f"{stage}/{name}" for stage in ("val", "test") for name in ("loss", "acc1", "acc5")}
SESSION_TAG = "_hparams_/session_start_info"


def _events(log_dir: str | Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _session(log_dir: str | Path) -> dict[str, Any]:
    """The HParams session of a run folder as {name: value}, each value in its stored kind."""
    content = _events(log_dir).PluginTagToContent("hparams")[SESSION_TAG]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: getattr(v, v.WhichOneof("kind")) for name, v in start.hparams.items()}


def _session_kinds(log_dir: str | Path) -> dict[str, str]:
    content = _events(log_dir).PluginTagToContent("hparams")[SESSION_TAG]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: v.WhichOneof("kind") for name, v in start.hparams.items()}


def _count_sessions(log_dir: Path) -> int:
    """HParams sessions in every events file of the folder (the accumulator shows the first)."""
    return sum(
        value.tag == SESSION_TAG
        for path in log_dir.glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    )


def _fit_with_logger(logger: TensorBoardLogger, **trainer_kwargs: Any) -> ClassifierModule:
    model = ClassifierModule(
        TinyNet(),
        num_classes=NUM_CLASSES,
        optimizer=sgd,
        lr_scheduler=lambda optimizer: StepLR(optimizer, step_size=1, gamma=0.5),
        warmup_epochs=1,
        label_smoothing=0.1,
        mixup_alpha=0.2,
        body_lr_scale=0.1,
    )
    options = {"logger": logger, "max_epochs": 2, "log_every_n_steps": 1, **trainer_kwargs}
    make_trainer(**options).fit(model, datamodule=TinyDataModule())
    return model


# ------------------------------------------------------------------------------------------ HParams
@pytest.mark.parametrize("logger_class", [TensorBoardLogger, ClassifierTensorBoardLogger])
def test_hparams_hold_the_settings_runs_are_compared_by(
    tmp_path: Path, logger_class: type[TensorBoardLogger]
) -> None:
    # A plain TensorBoardLogger keeps Lightning's default_hp_metric=True placeholder.
    logger = logger_class(tmp_path, name="tb")
    _fit_with_logger(logger, accumulate_grad_batches=2)
    session = _session(logger.log_dir)

    expected = {
        "optimizer": "SGD",
        "lr": 0.05,  # helpers.modules.sgd
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_scheduler": "StepLR",
        "warmup_epochs": 1,
        "batch_size": 16,  # 8 per device x 1 device x 2 accumulated batches
        "batch_size_per_device": 8,
        "accumulate_grad_batches": 2,
        "max_epochs": 2,
        "precision": "32-true",
        "devices": 1,
        "data": "tiny",
        "image_size": 8,
        "label_smoothing": 0.1,
        "mixup_alpha": 0.2,
        "cutmix_alpha": 0.0,
        "ema": False,
        "nesterov": False,
        "channels_last": False,
        "backbone": "TinyNet",
        "body_lr_scale": 0.1,
    }
    assert {name: session.get(name) for name in expected} == pytest.approx(expected)
    kinds = _session_kinds(logger.log_dir)
    for flag in ("ema", "nesterov", "channels_last", "compile", "freeze_body"):
        assert kinds[flag] == "bool_value", flag  # true/false on the tab, not 1.0/0.0
    assert kinds["optimizer"] == "string_value" and kinds["lr"] == "number_value"
    assert "class_names" not in session and "ema_decay" not in session  # data; an unset option

    content = _events(logger.log_dir).PluginTagToContent("hparams")
    if logger_class is ClassifierTensorBoardLogger:
        # No experiment: TensorBoard then shows the union of all runs' settings as columns.
        assert "_hparams_/experiment" not in content
    else:
        # Ours comes first, so Lightning's placeholder experiment is not the one shown.
        experiment = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/experiment"]
        ).experiment
        assert {info.name.tag for info in experiment.metric_infos} == EVAL_METRICS
        assert {info.name for info in experiment.hparam_infos} == set(session)


def test_ema_and_datamodule_augmentation_are_on_the_tab(tmp_path: Path) -> None:
    logger = ClassifierTensorBoardLogger(tmp_path, name="tb")
    model = ClassifierModule("resnet20", num_classes=10, in_channels=1, ema_decay=0.9)
    data = DigitsDataModule(image_size=8, batch_size=16, augment=False, seed=3)
    make_trainer(logger=logger, limit_train_batches=1, limit_val_batches=1).fit(model, data)
    session = _session(logger.log_dir)
    assert session["ema"] is True and session["ema_decay"] == pytest.approx(0.9)
    assert session["data/augment"] is False and session["data/seed"] == 3
    assert session["data"] == "digits" and session["image_size"] == 8
    assert session["batch_size"] == 16 and session["backbone"] == "resnet20"
    # Where data lives and how it is loaded is not something runs are compared by.
    assert not {"data/num_workers", "data/pin_memory", "data/predict_dir"} & set(session)
    assert not any(name.startswith("data/_") for name in session)


def test_a_test_run_or_a_resumed_fit_in_the_fits_folder_adds_no_second_session(
    tmp_path: Path,
) -> None:
    logger = ClassifierTensorBoardLogger(tmp_path, name="tb", version=0)
    model = _fit_with_logger(logger, max_epochs=1)
    folder = Path(logger.log_dir)
    assert _count_sessions(folder) == 1

    # New trainers (and with them new callbacks) logging into the same folder, as the CLI's
    # `test --ckpt_path last` and `fit --ckpt_path last` do.
    again = ClassifierTensorBoardLogger(tmp_path, name="tb", version=0)
    make_trainer(logger=again).test(model, datamodule=TinyDataModule(), verbose=False)
    resumed = ClassifierTensorBoardLogger(tmp_path, name="tb", version=0)
    make_trainer(logger=resumed, max_epochs=1).fit(model, datamodule=TinyDataModule())
    assert len(list(folder.glob("events.out.tfevents.*"))) == 3
    assert _count_sessions(folder) == 1
    assert _session(folder)["optimizer"] == "SGD"  # the fit's session, not the test's

    # A test run in a folder of its own has its session, without training settings.
    alone = ClassifierTensorBoardLogger(tmp_path, name="tb", version=1)
    make_trainer(logger=alone).test(model, datamodule=TinyDataModule(), verbose=False)
    session = _session(alone.log_dir)
    assert session["data"] == "tiny" and "optimizer" not in session and "batch_size" not in session


# ------------------------------------------------------------------------------------------ Scalars
def test_scalars_open_on_train_and_val_with_epochs_on_the_x_axis(tmp_path: Path) -> None:
    logger = ClassifierTensorBoardLogger(tmp_path, name="tb")
    _fit_with_logger(logger)  # 3 batches of 8 per epoch, 2 epochs
    events = _events(logger.log_dir)
    tags = set(events.Tags()["scalars"])
    assert {"epoch", "hp_metric"}.isdisjoint(tags)
    assert {tag.split("/")[0] for tag in tags} == {"train", "val"}  # TensorBoard sorts groups

    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in tags}
    for tag in ("val/acc1", "val/acc5", "val/loss", "train/acc1"):
        assert steps[tag] == [0, 1], tag  # the epoch
    assert steps["train/loss"] == list(range(6))  # the optimizer step

    layout = layout_pb2.Layout.FromString(
        events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    )
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    accuracy = charts["top-1 accuracy: train vs val"].multiline.tag
    assert list(accuracy) == [r"^train/acc1$", r"^val/acc1$"]


def test_validation_within_epochs_keeps_the_step_axis(tmp_path: Path) -> None:
    logger = ClassifierTensorBoardLogger(tmp_path, name="tb")
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    trainer = make_trainer(logger=logger, log_every_n_steps=1, val_check_interval=2)
    trainer.fit(model, datamodule=TinyDataModule(n=32))  # 4 steps, validation after 2 and 4
    events = _events(logger.log_dir)
    assert [e.step for e in events.Scalars("val/acc1")] == [1, 3]  # the last step before it
    assert "epoch" not in events.Tags()["scalars"]


def test_learning_rate_is_one_curve_per_parameter_group(tmp_path: Path) -> None:
    logger = ClassifierTensorBoardLogger(tmp_path, name="tb")
    _fit_with_logger(logger)
    events = _events(logger.log_dir)
    rate_tags = {tag for tag in events.Tags()["scalars"] if "lr" in tag}
    assert rate_tags == {"train/lr/classifier", "train/lr/body"}  # no lr-warmup duplicates
    classifier = [e.value for e in events.Scalars("train/lr/classifier")]
    body = [e.value for e in events.Scalars("train/lr/body")]
    # Warm-up (epoch 0 at 1% of 0.05), then StepLR halving at the end of each epoch.
    assert classifier == pytest.approx([0.0005] * 3 + [0.025] * 3)
    assert body == pytest.approx([0.1 * rate for rate in classifier])


def test_one_parameter_group_logs_train_lr(tmp_path: Path) -> None:
    logger = ClassifierTensorBoardLogger(tmp_path, name="tb")
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    make_trainer(logger=logger, log_every_n_steps=1).fit(model, datamodule=TinyDataModule())
    rate_tags = {tag for tag in _events(logger.log_dir).Tags()["scalars"] if "lr" in tag}
    assert rate_tags == {"train/lr"}


def test_logger_refuses_the_hp_metric_placeholder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"default_hp_metric=True.*no hp_metric placeholder"):
        ClassifierTensorBoardLogger(tmp_path, default_hp_metric=True)


# ------------------------------------------------------------------------------------------ FLOPs
def test_model_summary_counts_flops_at_the_datamodules_image_size() -> None:
    model = ClassifierModule("resnet20", num_classes=10, in_channels=1)
    data = DigitsDataModule(image_size=16, batch_size=16)
    make_trainer(limit_train_batches=1).fit(model, data)
    assert tuple(model.example_input_array.shape) == (1, 1, 16, 16)

    counter = FlopCounterMode(display=False)
    model.eval()
    with torch.no_grad(), counter:
        model.backbone(torch.zeros(1, 1, 16, 16))
    assert counter.get_total_flops() > 0
    assert ModelSummary(model).total_flops == counter.get_total_flops()


# ---------------------------------------------------------------------------------------- LR finder
class _Rates(Callback):
    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, *args: Any) -> None:  # type: ignore[no-untyped-def]
        self.rates.append([group["lr"] for group in trainer.optimizers[0].param_groups])


def test_tuner_lr_find_sets_the_rate_the_next_fit_trains_with(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, body_lr_scale=0.5)
    trainer = make_trainer(default_root_dir=tmp_path)
    data = TinyDataModule(n=120, batch_size=4)
    finder = Tuner(trainer).lr_find(model, datamodule=data, num_training=25)
    found = finder.suggestion()
    assert found is not None and found != 0.05
    assert model.hparams.lr == found
    assert not list(tmp_path.glob(".lr_find*"))  # its temporary checkpoint is gone

    rates = _Rates()
    make_trainer(callbacks=[rates], limit_train_batches=2).fit(model, datamodule=data)
    assert rates.rates[0] == pytest.approx([found, 0.5 * found])  # classifier, body


def test_learning_rate_finder_callback_applies_the_rate_with_warmup_and_scales(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = ClassifierModule(
        TinyNet(),
        num_classes=NUM_CLASSES,
        optimizer=sgd,
        body_lr_scale=0.5,
        warmup_steps=2,
        warmup_start_factor=0.5,
    )
    # Up to a rate of 1e8 and without early stopping, the search runs into non-finite losses:
    # they stop nothing, and the weights they made are thrown away.
    finder = LearningRateFinder(num_training_steps=25, max_lr=1e8, early_stop_threshold=None)
    rates = _Rates()
    trainer = make_trainer(
        callbacks=[finder, rates], limit_train_batches=30, default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=TinyDataModule(n=120, batch_size=4))
    losses = torch.tensor(finder.optimal_lr.results["loss"])
    assert not torch.isfinite(losses[-1])  # the search diverged
    found = finder.optimal_lr.suggestion()
    assert found is not None and model.hparams.lr == found
    # Warm-up from half the rate over two steps; the body at half the classifier's rate.
    expected = [[0.5 * found, 0.25 * found], [0.75 * found, 0.375 * found], [found, 0.5 * found]]
    for seen, wanted in zip(rates.rates[:3], expected, strict=True):
        assert seen == pytest.approx(wanted)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lr_argument_replaces_the_optimizers_rate_and_is_checked() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, lr=0.3)
    optimizer = model.configure_optimizers()["optimizer"]
    assert optimizer.param_groups[0]["lr"] == 0.3 and optimizer.defaults["lr"] == 0.3
    assert optimizer.param_groups[0]["momentum"] == 0.9  # the rest as the callable built it
    for bad in (0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match=r"^lr must be a positive number .* got "):
            ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, lr=bad)  # type: ignore[arg-type]


# slow: the finder's steps and a fit through the CLI; the finder's tests above run it from Python
@pytest.mark.slow
def test_learning_rate_finder_from_the_command_line(tmp_path: Path) -> None:
    args = [a for a in TINY if not a.startswith("--trainer.limit_train_batches")]
    run_cli(
        "fit",
        *args,
        "--trainer.limit_train_batches=20",
        "--trainer.callbacks+=LearningRateFinder",
        "--trainer.callbacks.num_training_steps=15",
        cwd=tmp_path,
    )
    (run_dir,) = run_dirs(tmp_path)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    found = checkpoint["hyper_parameters"]["lr"]
    assert isinstance(found, float) and found != 0.1  # the default SGD's rate
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(found)
    assert _session(run_dir)["lr"] == pytest.approx(found)
    assert not list(tmp_path.glob(".lr_find*"))
