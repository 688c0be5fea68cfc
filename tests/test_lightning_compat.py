"""Every private Lightning or torch API lit-classifiers relies on, exercised against the installed
versions through ``lit_classifiers.lightning_compat``. After an upgrade, a failure here names the
adapter function to update, instead of a training run failing somewhere in the middle."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import pytest
import torch
from helpers.modules import NUM_CLASSES, TinyNet, make_loader, make_trainer, sgd
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import scalar

from lit_classifiers import lightning_compat
from lit_classifiers.checkpoint_io import CheckpointError, SafeCheckpointIO
from lit_classifiers.lightning_compat import (
    CHECKED_ON,
    is_checkpoint_io_wrapper,
    load_module_state,
    replace_wrapped_checkpoint_io,
)
from lit_classifiers.module import ClassifierModule

PACKAGE = Path(lightning_compat.__file__).parent


def broken(adapter: str, detail: object) -> str:
    return (
        f"lit_classifiers.lightning_compat.{adapter} no longer works with lightning "
        f"{lightning.__version__} and torch {torch.__version__} (it was checked on "
        f"lightning {CHECKED_ON['lightning']}, torch {CHECKED_ON['torch']}): update that "
        f"adapter. {detail}"
    )


def call(adapter: str, *args: Any, **kwargs: Any) -> Any:
    """Call an adapter; the private name it uses having moved fails with ``broken``'s message."""
    try:
        return getattr(lightning_compat, adapter)(*args, **kwargs)
    except (AttributeError, ImportError, TypeError) as error:
        pytest.fail(broken(adapter, f"{type(error).__name__}: {error}"))


# --------------------------------------------------------------------------------- public APIs
class _EvaluationLoaders(Callback):
    """What ``trainer.val_dataloaders``/``test_dataloaders`` return while each stage runs."""

    def __init__(self) -> None:
        self.batch_sizes: dict[str, int] = {}

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch_sizes[trainer.state.fn.value] = trainer.val_dataloaders.batch_size

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch_sizes["test"] = trainer.test_dataloaders.batch_size


def test_public_eval_dataloaders_are_those_of_the_running_stage() -> None:
    """exact_eval.py finds the running evaluation's loaders through the public properties.
    Older Lightning versions kept returning fit's loaders during a later ``validate()``: should
    this fail, exact_eval.py must read the running loop's loaders instead."""
    probe = _EvaluationLoaders()
    trainer = make_trainer(callbacks=[probe], limit_train_batches=1)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    trainer.fit(model, make_loader(8), make_loader(8, batch_size=4))
    trainer.validate(model, make_loader(9, batch_size=3), verbose=False)
    trainer.test(model, make_loader(9, batch_size=2), verbose=False)
    assert probe.batch_sizes == {"fit": 4, "validate": 3, "test": 2}, (
        f"trainer.val_dataloaders/test_dataloaders do not return the running stage's loaders "
        f"with lightning {lightning.__version__}: fix exact_eval._evaluation_dataloaders"
    )


# --------------------------------------------------------------------------------- tensorboard
def test_tensorboard_file_writer_writes_summaries_also_after_close(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    file_writer = call("tensorboard_file_writer", writer)
    assert hasattr(file_writer, "add_summary"), broken("tensorboard_file_writer", file_writer)
    file_writer.add_summary(scalar("first", 1.0), 0)
    writer.close()  # what a finalised TensorBoardLogger's writer is
    reopened = call("tensorboard_file_writer", writer)
    assert reopened is not None, broken("tensorboard_file_writer", "no writer after close()")
    reopened.add_summary(scalar("second", 2.0), 0)
    writer.close()

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"first", "second"} <= set(events.Tags()["scalars"]), broken(
        "tensorboard_file_writer", f"the event files hold {events.Tags()['scalars']}"
    )


# --------------------------------------------------------------------------------- checkpoint IO
def test_a_wrapped_checkpoint_io_can_be_replaced() -> None:
    wrapper = AsyncCheckpointIO()
    assert call("is_checkpoint_io_wrapper", wrapper), broken(
        "is_checkpoint_io_wrapper", "AsyncCheckpointIO is not recognised as a wrapper"
    )
    assert not is_checkpoint_io_wrapper(TorchCheckpointIO())
    trainer = make_trainer(plugins=[wrapper])
    assert type(trainer.strategy.checkpoint_io.checkpoint_io) is TorchCheckpointIO
    # Why the adapter exists. Should this fail, the public setter now replaces the base IO:
    # use it in checkpoint_io.install_safe_checkpoint_io and remove the adapter.
    wrapper.checkpoint_io = SafeCheckpointIO()
    assert type(wrapper.checkpoint_io) is TorchCheckpointIO, (
        "AsyncCheckpointIO.checkpoint_io's setter now replaces a configured base IO: replace "
        "lightning_compat.replace_wrapped_checkpoint_io by it"
    )

    safe = SafeCheckpointIO()
    call("replace_wrapped_checkpoint_io", wrapper, safe)
    assert trainer.strategy.checkpoint_io.checkpoint_io is safe, broken(
        "replace_wrapped_checkpoint_io", "the wrapper still delegates to its old base IO"
    )
    # The wrapper now loads through SafeCheckpointIO, which alone refuses weights_only=False.
    with pytest.raises(CheckpointError, match="weights_only=False is not supported"):
        trainer.strategy.checkpoint_io.load_checkpoint("x.ckpt", weights_only=False)
    with pytest.raises(TypeError, match="TorchCheckpointIO is not a wrapping CheckpointIO"):
        replace_wrapped_checkpoint_io(TorchCheckpointIO(), safe)


# --------------------------------------------------------------------------------- loading
class _Probe(pl.LightningModule):
    def __init__(self, width: int = 2, tag: str = "default") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(width, 1)
        self.hook_saw: dict[str, Any] | None = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.hook_saw = checkpoint


def _checkpoint(**hparams: Any) -> dict[str, Any]:
    source = _Probe(width=3)
    return {
        "state_dict": source.state_dict(),
        "hyper_parameters": {"width": 3, "tag": "stored", **hparams},
        "pytorch-lightning_version": lightning.__version__,
    }


@pytest.mark.parametrize("instantiator", [None, "lightning.pytorch.cli.instantiate_module"])
def test_load_module_state_builds_the_module_from_a_checkpoint_in_memory(
    instantiator: str | None,
) -> None:
    extra = {"_instantiator": instantiator} if instantiator else {}
    checkpoint = _checkpoint(**extra)
    model = call("load_module_state", _Probe, checkpoint, strict=True, tag="given")
    assert isinstance(model, _Probe), broken("load_module_state", type(model))
    assert (model.hparams.width, model.hparams.tag) == (3, "given")  # the caller's kwargs win
    assert model.hook_saw is checkpoint, broken("load_module_state", "no on_load_checkpoint")
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), broken("load_module_state", key)


def test_load_module_state_honours_strict() -> None:
    checkpoint = _checkpoint()
    checkpoint["state_dict"]["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_module_state(_Probe, checkpoint, strict=True)
    with pytest.warns(UserWarning, match="not in the model state dict"):
        model = load_module_state(_Probe, checkpoint, strict=False)
    assert model.layer.weight.shape == (1, 3)


# --------------------------------------------------------------------------------- isolation
def _private_lightning_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if node.module.split(".")[0] not in ("lightning", "pytorch_lightning", "torch"):
            continue
        private_module = any(part.startswith("_") for part in node.module.split("."))
        names = [alias.name for alias in node.names if alias.name.startswith("_")]
        if private_module or names:
            found.append(f"{path.name}:{node.lineno} from {node.module} import {names or '...'}")
    return found


def test_private_lightning_names_are_used_in_the_adapter_only() -> None:
    adapter_only = (
        "._combined_loader",
        "._get_file_writer",
        "._checkpoint_io",
        "._evaluation_loop",
    )
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "lightning_compat.py":
            continue
        offenders += _private_lightning_imports(path)
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {name}" for name in adapter_only if name in text]
    assert offenders == [], f"private Lightning/torch APIs outside lightning_compat: {offenders}"
    assert _private_lightning_imports(PACKAGE / "lightning_compat.py")  # the check can see them
