"""Failing loudly and loading safely: unsafe checkpoints, non-finite losses, wrong num_classes."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.modules import (
    NUM_CLASSES,
    TinyDataModule,
    TinyNet,
    make_loader,
    make_trainer,
    sequential_net,
    sgd,
)
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_classifiers.callbacks import NonFiniteLossError
from lit_classifiers.module import ClassifierModule
from lit_classifiers.rng_state import capture_rng_state, restore_rng_state


class _CreatesFile:
    """Unpickling this object creates a file: the stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


@pytest.fixture()
def checkpoint_path(tmp_path: Path) -> Path:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="good")
    trainer = make_trainer(callbacks=[checkpoint], enable_checkpointing=True, limit_train_batches=2)
    trainer.fit(model, make_loader(16), make_loader(8))
    return tmp_path / "ckpt" / "good.ckpt"


def test_own_checkpoints_load_with_weights_only(checkpoint_path: Path) -> None:
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert {"state_dict", "rng_states", "hyper_parameters", "optimizer_states"} <= set(checkpoint)
    assert "optimizer" not in checkpoint["hyper_parameters"]  # callables are code, not data
    loaded = ClassifierModule.load_from_checkpoint(checkpoint_path, backbone=TinyNet())
    before = torch.get_rng_state()
    loaded.on_fit_start()  # a later fresh fit: only resuming restores the stored RNG state
    assert torch.equal(torch.get_rng_state(), before)


def test_unsafe_checkpoint_is_refused(checkpoint_path: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = _CreatesFile(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)

    # The payload works when unpickled without restrictions...
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()

    # ...but none of the module's loading paths runs it.
    with pytest.raises(pickle.UnpicklingError):
        ClassifierModule.load_from_checkpoint(evil, backbone=TinyNet())
    with pytest.raises(ValueError, match="weights_only=True"):
        ClassifierModule.load_from_checkpoint(evil, backbone=TinyNet(), weights_only=False)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    with pytest.raises(pickle.UnpicklingError):
        make_trainer(max_epochs=2).fit(model, make_loader(16), ckpt_path=evil)
    with pytest.raises(pickle.UnpicklingError):
        make_trainer().validate(model, make_loader(8), ckpt_path=evil, verbose=False)
    assert not marker.exists()


def test_rng_state_round_trip_is_weights_only_safe(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


class _PoisonBatch(Callback):
    """Puts a NaN into one batch of the second epoch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == 1 and batch_idx == 2:
            batch[0][0, 0, 0, 0] = float("nan")


def test_non_finite_loss_stops_with_location_and_keeps_checkpoint(tmp_path: Path) -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = make_trainer(
        max_epochs=3, callbacks=[checkpoint, _PoisonBatch()], enable_checkpointing=True
    )
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, global step 12 \(batch 2"):
        trainer.fit(model, make_loader(40), make_loader(8))

    # No optimizer step took the NaN: the live weights are still finite...
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # ...and the last checkpoint is the good one from the end of epoch 0.
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 10
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )


class _CountSteps(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args) -> None:  # type: ignore[no-untyped-def]
        self.batches += 1


def test_num_classes_mismatch_with_datamodule_fails_in_setup() -> None:
    model = ClassifierModule(TinyNet(4), num_classes=4, optimizer=sgd)
    counter = _CountSteps()
    with pytest.raises(ValueError, match=r"num_classes=4 but the datamodule has 5 classes"):
        make_trainer(callbacks=[counter]).fit(model, datamodule=TinyDataModule(num_classes=5))
    assert counter.batches == 0


def test_labels_out_of_range_fail_before_the_first_step() -> None:
    model = ClassifierModule(TinyNet(4), num_classes=4, optimizer=sgd)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = make_trainer()
    with pytest.raises(ValueError, match=r"labels range from 0 to 4 .* num_classes=4"):
        trainer.fit(model, make_loader(16))  # labels 0..4
    assert trainer.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"labels range from 0 to 4"):
        make_trainer().validate(model, make_loader(16), verbose=False)


def test_backbone_output_size_mismatch_is_reported() -> None:
    model = ClassifierModule(sequential_net(NUM_CLASSES + 1), num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"logits of shape \(4, 6\) .* num_classes=5"):
        make_trainer().fit(model, make_loader(16))


def test_constructor_rejects_inconsistent_arguments() -> None:
    with pytest.raises(ValueError, match="class_names has 2 names"):
        ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, class_names=["a", "b"])
    with pytest.raises(ValueError, match="get_classifier"):
        ClassifierModule(sequential_net(), num_classes=NUM_CLASSES, freeze_body=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be >= 2, got 1"),
        ({"lr_scheduler_interval": "batch"}, r"lr_scheduler_interval must be 'epoch' or 'step'"),
        ({"ema_decay": 1.5}, r"ema_decay must be in \[0, 1\], got 1.5"),
        ({"warmup_epochs": 2, "warmup_steps": 10}, r"give warmup_epochs or warmup_steps, not both"),
        ({"warmup_steps": -1}, r"warmup_epochs and warmup_steps must be >= 0, got 0 and -1"),
        ({"warmup_epochs": 1, "warmup_start_factor": 0.0}, r"warmup_start_factor .* got 0.0"),
        ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\], got 1.5"),
        ({"cutmix_alpha": -0.2}, r"cutmix_alpha must be >= 0 \(0 disables it\), got -0.2"),
        ({"body_lr_scale": -0.1}, r"body_lr_scale must be >= 0, got -0.1"),
        ({"predict_topk": 0}, r"predict_topk must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_before_anything_is_built(
    kwargs: dict[str, object], message: str
) -> None:
    arguments = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        ClassifierModule("resnet20", **arguments)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)
