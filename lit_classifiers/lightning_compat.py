"""Every private API of torch, torchvision, Lightning, jsonargparse, litdata (and argparse) that
lit-classifiers uses, in one list, and the adapter for the one that has no public equivalent.

A private name is taken only where no public API does the job. :data:`PRIVATE_APIS` names each
use: the file, the private name as it appears there, and why. ``tests/test_lightning_compat.py``
holds the list to the code both ways (a private name used in the project and missing here fails,
as does an entry whose name its file no longer uses) and checks that each name still exists in
the installed versions, so an upgrade that renames one fails there, naming it, instead of in the
middle of a training run.

Checked on lightning 2.6.6, torch 2.14.1, torchvision 0.29.1, jsonargparse 4.x, litdata 0.2.x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["CHECKED_ON", "PRIVATE_APIS", "PrivateApi", "tensorboard_file_writer"]

#: The versions the uses below were last checked against.
CHECKED_ON = {"lightning": "2.6.6", "torch": "2.14.1"}


class PrivateApi(NamedTuple):
    """One use of a private name: ``file`` (relative to the repository root) contains ``name``;
    ``owner`` is where the name lives (``module:attribute.path``), checked to exist."""

    file: str
    name: str
    owner: str
    why: str


PRIVATE_APIS: tuple[PrivateApi, ...] = (
    PrivateApi(
        "lit_classifiers/lightning_compat.py",
        "_get_file_writer",
        "torch.utils.tensorboard:SummaryWriter._get_file_writer",
        "writes the HParams plugin's ready-made Summary protobufs; SummaryWriter's add_* "
        "methods each build their own (Lightning's TensorBoardLogger makes the same call)",
    ),
    # The CLI.
    PrivateApi(
        "lit_classifiers/cli.py",
        "_parse_ckpt_path",
        "lightning.pytorch.cli:LightningCLI._parse_ckpt_path",
        "--ckpt_path's hyper-parameters read safely (checkpoint_io.stored_model_hparams)",
    ),
    PrivateApi(
        "lit_classifiers/cli_help.py",
        "_get_help_string",
        "argparse:HelpFormatter._get_help_string",
        "each Lightning option's help as its first sentence, without the list of subclasses",
    ),
    # The data pipeline.
    PrivateApi(
        "benchmarks/gpu_resnet50.py",
        "_compiled_call_impl",
        "torch.nn:Module",
        "reports whether the backbone runs compiled",
    ),
    PrivateApi(
        "benchmarks/lightning_overhead.py",
        "_LoggerConnector",
        "lightning.pytorch.trainer.connectors.logger_connector.logger_connector:_LoggerConnector",
        "times Lightning's logging of step metrics",
    ),
)


def tensorboard_file_writer(writer: SummaryWriter) -> Any:
    """The ``FileWriter`` of a torch ``SummaryWriter``, (re)opened if the writer was closed.

    ``SummaryWriter`` has no public method that writes a ready-made ``Summary`` protobuf (the
    HParams plugin's experiment and session summaries). Its ``file_writer`` attribute is
    ``None`` once the writer is closed (a logger finalised by an earlier ``fit``), which
    ``_get_file_writer`` repairs. Checked on torch 2.14.1 and lightning 2.6.6.
    """
    return writer._get_file_writer()
