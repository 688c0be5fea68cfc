"""ClassifierModule through a real Trainer: fit, validate, test, predict, checkpoints, logging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.modules import (
    CLASS_NAMES,
    NUM_CLASSES,
    SIZE,
    TinyDataModule,
    TinyNet,
    make_loader,
    make_tensors,
    make_trainer,
    sequential_net,
    sgd,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, Dataset

from lit_classifiers.module import ClassifierModule

EVAL_METRICS = {f"{stage}/{name}" for stage in ("val", "test") for name in ("loss", "acc1", "acc5")}


class _ImagesWithPaths(Dataset):
    def __init__(self, n: int = 6) -> None:
        self.images, _ = make_tensors(n)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.images[index], f"img{index}.png"


def test_fit_validate_test_predict_with_registered_backbone() -> None:
    model = ClassifierModule(
        "resnet20", num_classes=NUM_CLASSES, class_names=CLASS_NAMES, optimizer=sgd
    )
    trainer = make_trainer(max_epochs=1, log_every_n_steps=1)
    trainer.fit(model, make_loader(20, shuffle=True), make_loader(9))
    assert {"train/loss", "train/acc1", "train/lr", "val/loss", "val/acc1", "val/acc5"} <= set(
        trainer.callback_metrics
    )
    val = trainer.validate(model, make_loader(9), verbose=False)[0]
    test = trainer.test(model, make_loader(9), verbose=False)[0]
    assert set(val) | set(test) == EVAL_METRICS
    assert val["val/acc5"] == 1.0  # top-5 of 5 classes (clamped) always hits

    with_paths = trainer.predict(model, DataLoader(_ImagesWithPaths(6), batch_size=4))
    first = with_paths[0]
    assert set(first) == {"probs", "topk_probs", "topk_indices", "topk_names", "paths"}
    assert first["probs"].shape == (4, NUM_CLASSES)
    torch.testing.assert_close(first["probs"].sum(-1), torch.ones(4))
    assert first["topk_indices"].shape == (4, 5)
    assert first["topk_names"][0] == [CLASS_NAMES[i] for i in first["topk_indices"][0].tolist()]
    assert first["paths"] == ["img0.png", "img1.png", "img2.png", "img3.png"]

    images, _ = make_tensors(3)
    bare = trainer.predict(model, DataLoader(images, batch_size=3))[0]  # batches of bare tensors
    assert "paths" not in bare
    model.eval()
    torch.testing.assert_close(bare["probs"], model(images).softmax(-1))


def test_user_module_backbone_and_checkpoint_round_trip(tmp_path: Path) -> None:
    model = ClassifierModule(sequential_net(), num_classes=NUM_CLASSES, optimizer=sgd)
    assert "backbone" not in model.hparams  # an nn.Module is not a hyperparameter
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="model")
    trainer = make_trainer(callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(model, make_loader(16), make_loader(8))

    loaded = ClassifierModule.load_from_checkpoint(
        tmp_path / "model.ckpt", backbone=sequential_net()
    )
    images, _ = make_tensors(8)
    model.eval(), loaded.eval()
    assert torch.equal(model(images), loaded(images))


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    # Pretrained weights from a file: the checkpoint must not need that file again.
    weights = tmp_path / "resnet20.pt"
    from lit_classifiers import create_backbone

    torch.save(create_backbone("resnet20", NUM_CLASSES).state_dict(), weights)
    model = ClassifierModule(
        "resnet20",
        num_classes=NUM_CLASSES,
        backbone_kwargs={"weights": str(weights), "dropout": 0.1},
        optimizer=sgd,
        ema_decay=0.5,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="model")
    trainer = make_trainer(callbacks=[checkpoint], enable_checkpointing=True, limit_train_batches=3)
    trainer.fit(model, datamodule=TinyDataModule())
    weights.unlink()

    path = tmp_path / "model.ckpt"
    saved = torch.load(path, weights_only=True)
    assert saved["hyper_parameters"]["backbone_kwargs"] == {"dropout": 0.1}
    assert saved["hyper_parameters"]["class_names"] == TinyDataModule().class_names  # adopted
    loaded = ClassifierModule.load_from_checkpoint(path)
    assert loaded.class_names == TinyDataModule().class_names
    predictions = [
        make_trainer().predict(m, make_loader(12, batch_size=5)) for m in (model, loaded)
    ]
    for a, b in zip(*predictions, strict=True):
        assert torch.equal(a["probs"], b["probs"])
        assert a["topk_names"] == b["topk_names"]


def test_bf16_mixed_on_cpu() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    trainer = make_trainer(precision="bf16-mixed")
    trainer.fit(model, make_loader(16), make_loader(8))
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    prediction = trainer.predict(model, make_loader(8))[0]
    assert prediction["probs"].dtype == torch.float32


def test_channels_last_runs() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, channels_last=True)
    assert model.backbone.conv.weight.is_contiguous(memory_format=torch.channels_last)
    make_trainer(limit_train_batches=2).fit(model, make_loader(16))


def test_logged_names_in_tensorboard(tmp_path: Path) -> None:
    # Lightning's default default_hp_metric=True: its placeholder must not take the HParams tab.
    logger = TensorBoardLogger(tmp_path, name="tb")
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    trainer = make_trainer(logger=logger, max_epochs=2, log_every_n_steps=1, num_sanity_val_steps=1)
    datamodule = TinyDataModule()
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)

    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    expected = {"train/loss", "train/acc1", "train/lr"} | EVAL_METRICS
    assert expected <= set(tags["scalars"])
    assert len(events.Scalars("val/acc1")) == 2  # once per epoch, none from the sanity check
    assert {"val/confusion_matrix", "val/misclassified"} <= set(tags["images"])
    assert len(events.Images("val/confusion_matrix")) == 2

    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_tags = {info.name.tag for info in experiment.experiment.metric_infos}
    assert metric_tags == EVAL_METRICS  # real, logged metrics; no "hp_metric" placeholder
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["num_classes"].number_value == NUM_CLASSES
    hparams = start.session_start_info.hparams
    assert hparams["body_lr_scale"].number_value == 1.0
    assert "backbone_lr_scale" not in hparams and "freeze_backbone" not in hparams
    assert "class_names" not in hparams  # data, and a thousand names would swamp the table
    assert hparams["optimizer"].string_value == "SGD"  # the optimizer's class, not its code


@pytest.mark.parametrize("names", [None, CLASS_NAMES])
def test_figures_draw_with_and_without_datamodule_statistics(names: list[str] | None) -> None:
    from lit_classifiers.callbacks import (
        _displayable,
        confusion_matrix_figure,
        misclassified_figure,
    )

    images, _ = make_tensors(4)
    stats = (None, None) if names is None else ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    shown = _displayable(images, *stats)
    assert shown.min() >= 0 and shown.max() <= 1 and shown.shape == (4, 3, SIZE, SIZE)
    labels = names or [str(i) for i in range(NUM_CLASSES)]
    matrix = torch.randint(0, 5, (NUM_CLASSES, NUM_CLASSES))
    assert confusion_matrix_figure(matrix, labels).axes
    assert misclassified_figure(shown, labels[:4], labels[1:5]).axes
