"""Every private Lightning or torch API lit-classifiers relies on, exercised against the installed
versions through ``lit_classifiers.lightning_compat``. After an upgrade, a failure here names the
adapter function to update, instead of a training run failing somewhere in the middle."""

from __future__ import annotations

import ast
import importlib
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
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import scalar

from lit_classifiers import lightning_compat
from lit_classifiers.checkpoint_io import CheckpointError, SafeCheckpointIO
from lit_classifiers.lightning_compat import CHECKED_ON
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
def test_safe_checkpoint_io_as_a_plugin_also_inside_a_wrapper(tmp_path: Path) -> None:
    """Lightning's public seam: a wrapper such as AsyncCheckpointIO takes the IO it wraps."""
    trainer = make_trainer(plugins=[AsyncCheckpointIO(SafeCheckpointIO())])
    assert isinstance(trainer.strategy.checkpoint_io.checkpoint_io, SafeCheckpointIO)
    with pytest.raises(CheckpointError, match="weights_only=False is not supported"):
        trainer.strategy.checkpoint_io.load_checkpoint(tmp_path / "x.ckpt", weights_only=False)
    assert type(make_trainer().strategy.checkpoint_io) is TorchCheckpointIO  # nothing installed


# --------------------------------------------------------------------------------- the list
ROOT = PACKAGE.parent
SCANNED = ("lit_classifiers", "datamodules", "benchmarks")
OWN_PACKAGES = ("lit_classifiers", "datamodules", "benchmarks", "helpers")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _own_names(files: list[Path]) -> set[str]:
    """Private names the project defines itself (functions, classes, attributes it assigns)."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    names |= {path.stem for path in files}  # the benchmarks import _common, _data
    return {name for name in names if _is_private(name)}


def _overridden_private_hooks(path: Path) -> set[str]:
    """Private methods of another library that a class in ``path`` overrides."""
    module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__main__.py" or not module_name.startswith(("lit_classifiers", "datamod")):
        return set()
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # an optional extra that is not installed (litdata, onnx ...)
        return set()
    found = set()
    for cls in vars(module).values():
        if not isinstance(cls, type) or cls.__module__ != module_name:
            continue
        foreign = [b for b in cls.__mro__[1:] if not b.__module__.startswith(OWN_PACKAGES)]
        found |= {
            name
            for name in vars(cls)
            if _is_private(name)
            and name != "_abc_impl"  # what abc.ABCMeta gives every subclass
            and any(hasattr(base, name) for base in foreign)
        }
    return found


def _private_uses(path: Path, own: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(OWN_PACKAGES) or node.level or node.module in own:
                continue
            if any(_is_private(part) for part in node.module.split(".")):
                found.add(node.module)
            found |= {alias.name for alias in node.names if _is_private(alias.name)}
        elif isinstance(node, ast.Attribute):
            if ast.unparse(node).startswith("torch.ops."):
                found.add("torch.ops." + ast.unparse(node).split(".")[2])
            if _is_private(node.attr) and node.attr not in own:
                found.add(node.attr)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            text = name.value if isinstance(name, ast.Constant) else None
            if isinstance(text, str) and _is_private(text) and text not in own:
                found.add(text)
    return found | _overridden_private_hooks(path)


def test_every_private_api_used_is_listed_and_every_listed_one_is_used() -> None:
    files = sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))
    own = _own_names(files)
    listed = lightning_compat.PRIVATE_APIS
    unlisted = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        names = [entry.name for entry in listed if entry.file == relative]
        unlisted += [
            f"{relative}: {use}"
            for use in sorted(_private_uses(path, own))
            if not any(use in name for name in names)
        ]
    assert unlisted == [], (
        f"private APIs used but not listed in lightning_compat.PRIVATE_APIS: {unlisted}"
    )
    stale = [e for e in listed if e.name not in (ROOT / e.file).read_text(encoding="utf-8")]
    assert stale == [], f"PRIVATE_APIS entries no longer used (delete them): {stale}"


@pytest.mark.parametrize(
    "entry", lightning_compat.PRIVATE_APIS, ids=[e.name for e in lightning_compat.PRIVATE_APIS]
)
def test_each_listed_private_api_exists_in_the_installed_versions(entry: Any) -> None:
    module_name, _, attributes = entry.owner.partition(":")
    module = pytest.importorskip(module_name)
    found: Any = module
    for attribute in attributes.split("."):
        assert hasattr(found, attribute), (
            f"{entry.owner} is gone (lightning {lightning.__version__}, torch "
            f"{torch.__version__}): {entry.file} uses it ({entry.why}); update that code"
        )
        found = getattr(found, attribute)
