"""The private Lightning and torch APIs lit-classifiers needs, in one place.

Everything else uses public APIs. Each function here reaches for a name that starts with an
underscore because no public API does the job; its docstring says why, and which versions it
was checked on. ``tests/test_lightning_compat.py`` runs every function against the installed
versions, so an upgrade that renames or changes one of them fails that test, naming the
function to update, instead of failing somewhere in a training run.

Checked on lightning 2.6.6 and torch 2.14.1 (tensorboard 2.21.0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.core.saving import _load_state
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "is_checkpoint_io_wrapper",
    "load_module_state",
    "replace_wrapped_checkpoint_io",
    "tensorboard_file_writer",
]

#: The versions the functions below were last checked against.
CHECKED_ON = {"lightning": "2.6.6", "torch": "2.14.1"}


def tensorboard_file_writer(writer: SummaryWriter) -> Any:
    """The ``FileWriter`` of a torch ``SummaryWriter``, (re)opened if the writer was closed.

    Private because ``SummaryWriter`` has no public method that writes a ready-made
    ``Summary`` protobuf (the HParams plugin's experiment and session summaries); its
    ``add_*`` methods each build their own. Its ``file_writer`` attribute is ``None`` once the
    writer is closed (a logger finalised by an earlier ``fit``), which ``_get_file_writer``
    repairs. Lightning's own ``TensorBoardLogger.log_hyperparams`` makes the same call.
    Checked on torch 2.14.1 and lightning 2.6.6.
    """
    return writer._get_file_writer()


def is_checkpoint_io_wrapper(io: object) -> bool:
    """Whether ``io`` is a Lightning ``CheckpointIO`` that delegates to another one (such as
    ``AsyncCheckpointIO``), whose ``checkpoint_io`` property then names the one it wraps.

    Private because the wrappers' shared base class, ``_WrappingCheckpointIO``, is not
    exported; ``AsyncCheckpointIO`` alone would miss user-defined wrappers.
    Checked on lightning 2.6.6.
    """
    return isinstance(io, _WrappingCheckpointIO)


def replace_wrapped_checkpoint_io(wrapper: CheckpointIO, inner: CheckpointIO) -> None:
    """Make ``wrapper`` (see :func:`is_checkpoint_io_wrapper`) delegate to ``inner``.

    Private because the public ``checkpoint_io`` setter ignores the new value once a base IO
    is set, and the strategy sets Lightning's default ``TorchCheckpointIO`` as the base the
    first time anyone reads ``strategy.checkpoint_io``. Checked on lightning 2.6.6
    (``_WrappingCheckpointIO._checkpoint_io``).
    """
    if not is_checkpoint_io_wrapper(wrapper):
        raise TypeError(f"{type(wrapper).__name__} is not a wrapping CheckpointIO")
    wrapper._checkpoint_io = inner  # type: ignore[attr-defined]


def load_module_state(
    cls: type[pl.LightningModule],
    checkpoint: dict[str, Any],
    strict: bool | None = None,
    **kwargs: Any,
) -> pl.LightningModule:
    """Build ``cls`` from a checkpoint dictionary already in memory, the way
    ``LightningModule.load_from_checkpoint`` does after reading the file: hyper-parameters
    (``kwargs`` win), LightningCLI's recorded instantiator, ``configure_model``,
    ``on_load_checkpoint`` and ``load_state_dict(strict=...)``.

    Private because the public ``load_from_checkpoint`` only takes a path or a file and reads
    it itself, while ``ClassifierModule`` must read and check the file first (``weights_only``,
    URLs fetched into memory, stored hyper-parameters vetted). Passing the checked dictionary
    back as a buffer would serialise every tensor a second time.
    Checked on lightning 2.6.6 (``lightning.pytorch.core.saving._load_state``).
    """
    return _load_state(cls, checkpoint, strict=strict, **kwargs)  # type: ignore[return-value]
