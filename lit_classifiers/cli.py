"""The ``lit-classifiers`` command: LightningCLI over ClassifierModule and any datamodule.

    lit-classifiers fit --config configs/stl10/base.yaml --config configs/stl10/resnet18.yaml
    lit-classifiers fit --model.backbone resnet18 --data STL10DataModule --data.data_dir DIR
    lit-classifiers fit --config ... --ckpt_path last      # resume the latest run of that name
    lit-classifiers test --config runs/stl10-resnet18/version_0/config.yaml --ckpt_path last
    lit-classifiers predict --config ... --ckpt_path ... --data.predict_dir photos/
    lit-classifiers backbones "resnet*"

Defaults: a TensorBoard logger writing one folder per run under ``runs/`` with the run's full
config beside it, ``ModelCheckpoint`` on ``val/acc1`` keeping ``last.ckpt``, a progress bar and
seed 0. The datamodule's ``num_classes``, ``class_names`` and ``in_channels`` reach the model
without being repeated.

One place per run: ``runs/<data>-<backbone>/version_N`` holds everything of a run, for every
logger (see lit_classifiers/run_folders.py). For people: ``--help`` lists the registered
backbones and the datamodules and gives each Lightning option its first sentence
(lit_classifiers/cli_help.py); a common mistake gets one line that says what to write instead
(lit_classifiers/cli_mistakes.py); options are never abbreviated.

Whatever a user hands the command is treated as possibly hostile: a checkpoint (local or a URL)
is read with ``weights_only=True`` and its hyper-parameters may only name a registered backbone,
never a class to import; run folders are claimed atomically, so two runs started at once never
share one.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from fsspec.utils import get_protocol
from jsonargparse import Namespace
from jsonargparse.typing import register_type
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_classifiers.backbones_command import backbones_main
from lit_classifiers.callbacks import NonFiniteLossError, progress_defaults
from lit_classifiers.checkpoint_io import (
    NonFiniteWeightsError,
    SafeCheckpointIO,
    local_checkpoint_file,
    stored_model_hparams,
)
from lit_classifiers.cli_help import SUBCOMMAND_HELP, ConciseHelpFormatter, summary
from lit_classifiers.cli_mistakes import check_config_files, datamodule_classes, find_mistake
from lit_classifiers.module import ClassifierModule
from lit_classifiers.predictions import PredictionCSVWriter
from lit_classifiers.registry import get_backbone_info, list_backbones
from lit_classifiers.run_folders import (
    RUN_VERSION_ENV,
    RunConfigCallback,
    assign_run_folder,
    is_launching_process,
    last_checkpoint,
    open_csv_log,
    remove_if_empty,
    run_root,
    save_last_every_epoch,
    with_save_dirs,
)

__all__ = ["ClassifierCLI", "cli_main", "main"]

PROG = "lit-classifiers"
DEBUG_ENV = "LIT_CLASSIFIERS_DEBUG"
#: Subcommands ``main`` runs itself, before LightningCLI; listed in ``lit-classifiers --help``
#: and in the error for a missing subcommand beside LightningCLI's own. A subcommand added to
#: ``main`` belongs here too (tests/test_cli_usability.py checks it).
OTHER_SUBCOMMANDS = {
    "backbones": "List the registered backbones with parameters, FLOPs and papers.",
    "export": "Export a checkpoint's network as an ONNX, TorchScript or torch.export file.",
    "prepare": "Convert a dataset into litdata chunks for --data StreamingDataModule.",
}
_TRAINER_DOCS = "https://lightning.ai/docs/pytorch/stable/core-api/trainer"


def quiet_known_noise() -> None:
    """Silence the two messages Lightning and torch print on every run, and only those.

    Lightning's advertisement for its cloud logger (an INFO log line) and torch's
    ``LeafSpec`` FutureWarning, raised by Lightning's own use of the deprecated class: neither
    asks anything of the user.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if _drop_litlogger_tip not in target.filters:
            target.addFilter(_drop_litlogger_tip)


def _drop_litlogger_tip(record: logging.LogRecord) -> bool:
    return "try installing [litlogger]" not in str(record.msg)


# ---------------------------------------------------------------------------------------- parsing
class BackboneName(str):
    """A registered backbone's name, the CLI's type of ``--model.backbone``.

    ``ClassifierModule`` also takes an ``nn.Module``; from the command line the backbone is a
    name, so the help lists the names instead of every ``nn.Module`` in torch, and an unknown
    name is refused while parsing, with the close ones.
    """


def _backbone_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the name of a registered backbone, got {value!r}")
    try:
        get_backbone_info(value)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    return str(value)  # a plain str: checkpoints store it and are read with weights_only


register_type(BackboneName, str, _backbone_name)


class ConciseArgumentParser(LightningArgumentParser):
    """A parser whose errors are one line saying what to write instead (see
    lit_classifiers/cli_mistakes.py), not ~95 lines of usage; no abbreviated options
    (``--trainer.max_epoch`` is a mistake, not ``max_epochs``)."""

    #: Finds the mistake in what the user typed; set by ``ClassifierCLI.parse_arguments``.
    find_mistake: Callable[[], str | None] = staticmethod(lambda: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", ConciseHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get(DEBUG_ENV):
            super().error(message, ex)  # raises: jsonargparse is trying alternatives, or debugging
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        line = self.find_mistake() or _one_line(message)
        print(f"{prog}: error: {line}\n(see: {prog} --help)", file=sys.stderr)
        sys.exit(2)


class ClassifierCLI(LightningCLI):
    """LightningCLI with the project's defaults, data-to-model links and safe checkpoints."""

    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        # A run that writes nothing (fast_dev_run, a failed start) leaves no empty folder, and
        # the next CLI in this process claims a folder of its own.
        self._claimed_folder: Path | None = None
        self.parsers: list[LightningArgumentParser] = []
        # With run, a --ckpt_path URL is downloaded once, for its hyper-parameters and the
        # Trainer, and removed at the end; the saved config keeps the URL.
        self._downloads = contextlib.ExitStack() if run else None
        self._local_ckpt_path: str | None = None
        inherited = os.environ.get(RUN_VERSION_ENV)
        with self._downloads or contextlib.nullcontext():
            try:
                super().__init__(*args, run=run, **kwargs)
            except BaseException:
                self._release_run_folder(inherited)
                raise
        if run:
            self._release_run_folder(inherited)
        elif self._claimed_folder is not None:  # the caller may still run; empty at exit: gone
            atexit.register(_remove_quietly, self._claimed_folder.absolute())

    def _release_run_folder(self, inherited: str | None) -> None:
        if self._claimed_folder is None:
            return
        _remove_quietly(self._claimed_folder)
        if inherited is None:
            os.environ.pop(RUN_VERSION_ENV, None)
        else:
            os.environ[RUN_VERSION_ENV] = inherited

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """LightningCLI's, except that ``--model.backbone`` is a registered name.

        ``ClassifierModule(backbone: str | nn.Module)`` would make jsonargparse list every
        ``nn.Module`` subclass in torch (~740 lines of ``fit --help``) and accept a class path
        to import; a module is for Python users.
        """
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults(
            {f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        )
        parser.add_class_arguments(
            self.model_class,
            "model",
            fail_untyped=False,
            instantiate=True,
            sub_configs=True,
            skip={"backbone"},
        )
        group = parser.groups["model"]
        group.add_argument(
            "--model.backbone",
            type=BackboneName,
            required=True,
            help=(
                f"The network, a registered backbone: {', '.join(list_backbones())} "
                f"(parameters, FLOPs and papers: {PROG} backbones). From Python, "
                "ClassifierModule also takes an nn.Module."
            ),
        )
        parser.add_subclass_arguments(
            self.datamodule_class,
            "data",
            fail_untyped=False,
            required=True,
            help="The datamodule, by name (or class path): "
            + " ".join(f"{name}: {summary(cls)}" for name, cls in datamodule_classes().items()),
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for attribute in ("num_classes", "class_names", "in_channels"):
            parser.link_arguments(f"data.{attribute}", f"model.{attribute}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                # Metric names hold "/", which Lightning would turn into sub-folders.
                "checkpoint.filename": "epoch{epoch:03d}-acc1_{val/acc1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(PredictionCSVWriter, "predictions")
        titles = {
            "model": "The model (ClassifierModule)",
            "trainer": f"Lightning's Trainer (first sentences; all of it: {_TRAINER_DOCS})",
            "data": "The data: --data NAME, then its arguments as --data.ARG VALUE "
            "(--data.help NAME lists them)",
            "checkpoint": "Checkpoints (Lightning's ModelCheckpoint): the best val/acc1 and "
            "last.ckpt in the run's checkpoints/",
            "predictions": "The CSV that predict writes",
        }
        for key, title in titles.items():
            parser.groups[key].title = title
        self.parsers.append(parser)  # one per subcommand, in the order of subcommands()

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            args = with_save_dirs(list(args))
            subcommands = [*self.subcommands(), *OTHER_SUBCOMMANDS]
            parsers = dict(zip(self.subcommands(), self.parsers, strict=False))
            configs = check_config_files(args)
            for each in [parser, *self.parsers]:
                each.find_mistake = functools.partial(
                    find_mistake, args, parsers, configs, subcommands
                )
            self.config = parser.parse_args(args)

    # ------------------------------------------------------------------ checkpoints
    def _parse_ckpt_path(self) -> None:
        """Take the model's hyper-parameters from ``--ckpt_path`` as Lightning does, but safely.

        Lightning's own version feeds the stored hyper-parameters to jsonargparse as they are,
        so a ``class_path`` or ``_instantiator`` in a checkpoint makes the CLI import modules
        and build classes, and it skips URLs (which its Trainer then loads with
        ``weights_only=False``). Here the checkpoint is read with ``weights_only=True`` wherever
        it is, and its hyper-parameters may only name a registered backbone.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = config.ckpt_path = self._resolve_last_checkpoint(config)
        if not ckpt_path or ckpt_path in ("best", "hpc", "registry"):
            return
        local = ckpt_path = str(ckpt_path)
        if self._downloads is not None and get_protocol(ckpt_path) != "file":
            local = self._downloads.enter_context(local_checkpoint_file(ckpt_path))
            self._local_ckpt_path = local
        hparams = stored_model_hparams(local, source=ckpt_path)
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _resolve_last_checkpoint(self, config: Namespace) -> str:
        """``--ckpt_path last``: the ``last.ckpt`` of the latest run of the same name, whose
        folder the resumed run then keeps writing to (its curves continue)."""
        root = run_root(config)
        if root is None:
            raise ValueError(
                "--ckpt_path last resumes the latest run in its runs/<name>/version_N folder, "
                "but this run's logger writes no such local folder; pass the checkpoint's path "
                "instead"
            )
        found = last_checkpoint(root)
        if found is None:
            raise FileNotFoundError(
                f"--ckpt_path last: no earlier run to resume, {root} has no "
                "version_N/checkpoints/last.ckpt; start the run without --ckpt_path"
            )
        version, checkpoint = found
        folder = checkpoint.parent.parent
        self._run_version = version
        if is_launching_process():
            print(f"{PROG}: resuming {checkpoint} into {folder}", file=sys.stderr)
        return str(checkpoint)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            # Lightning's "No supported gpu backend found!" does not say which option asked;
            # its other messages (max_epochs, ...) name their option themselves.
            raised_in = traceback.extract_tb(error.__traceback__)[-1].filename
            if "accelerator" not in Path(raised_in).name:
                raise ValueError(f"--trainer: {error}") from error
            trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
            raise ValueError(
                f"--trainer.accelerator={trainer.accelerator} --trainer.devices={trainer.devices}: "
                f"{error} (this machine: {_accelerators_here()}); use --trainer.accelerator=auto "
                "to take whatever is there"
            ) from error

    # ------------------------------------------------------------------ run folders
    def before_instantiate_classes(self) -> None:
        """Give the run its folder, for all its loggers (see :func:`assign_run_folder`)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.run_folder = assign_run_folder(
            config, self.subcommand, getattr(self, "_run_version", None)
        )
        if self.run_folder.claimed is not None:
            self._claimed_folder = self.run_folder.claimed
        if self.run_folder.without_logger:
            self.save_config_kwargs = {
                **self.save_config_kwargs,
                "save_without_logger": True,
            }

    def after_instantiate_classes(self) -> None:
        # The saved config.yaml must not pin the folder this run claimed: a run started again
        # from that file would otherwise write into this run's folder.
        super().after_instantiate_classes()
        run_folder = getattr(self, "run_folder", None)
        for namespace, key in run_folder.pinned if run_folder else []:
            setattr(namespace, key, None)
        if self._local_ckpt_path is not None:  # what the Trainer is given, not what is saved
            self.config_init[self.subcommand].ckpt_path = self._local_ckpt_path
        # A user's --trainer.plugins replaces the default list, and SafeCheckpointIO with it;
        # unless they chose a CheckpointIO of their own, checkpoints stay safe.
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = SafeCheckpointIO()
        save_last_every_epoch(self.trainer)
        if is_launching_process():
            for logger in self.trainer.loggers:
                if isinstance(logger, CSVLogger):
                    open_csv_log(logger)


def _remove_quietly(folder: Path) -> None:
    with contextlib.suppress(OSError):
        remove_if_empty(folder)


def _accelerators_here() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} CUDA device(s)"
    mps = getattr(torch.backends, "mps", None)
    return "an Apple MPS device" if mps is not None and mps.is_available() else "CPU only, no GPU"


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> ClassifierCLI:
    """Build (and by default run) the CLI; ``args`` replace ``sys.argv[1:]``."""
    quiet_known_noise()
    return ClassifierCLI(
        ClassifierModule,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the module takes optimizer and schedule callables
        seed_everything_default=0,
        save_config_callback=RunConfigCallback,
        parser_class=ConciseArgumentParser,
        trainer_defaults={
            "plugins": [{"class_path": "lit_classifiers.checkpoint_io.SafeCheckpointIO"}],
            "logger": {
                "class_path": "lit_classifiers.callbacks.ClassifierTensorBoardLogger",
                "init_args": {
                    "save_dir": "runs",
                    "name": None,
                    "default_hp_metric": False,
                },
            },
            # Outside a terminal: one line per epoch instead of the progress bar.
            **progress_defaults(),
        },
        parser_kwargs={
            "prog": PROG,
            "description": "Train, evaluate and use image classifiers.",
            "epilog": "other subcommands (each has its own --help):\n"
            + "\n".join(f"    {name:<20}{text}" for name, text in OTHER_SUBCOMMANDS.items()),
            **{
                name: {"description": text, "usage": f"{PROG} {name} [options]"}
                for name, text in SUBCOMMAND_HELP.items()
            },
        },
        args=args,
        run=run,
    )


#: Errors that mean "the input was wrong", reported as one line (no traceback unless debugging).
USER_ERRORS = (
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ValueError,  # includes CheckpointError, ImageDecodeError and the archive errors
    MisconfigurationException,
    NonFiniteLossError,
    NonFiniteWeightsError,
)


def _one_line(message: object) -> str:
    """A message as one line: an error re-raised from a DataLoader worker carries the worker's
    whole traceback; its last line is the original message."""
    text = str(message).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _root_cause(error: BaseException) -> BaseException:
    """The error a datamodule or model raised, not the report jsonargparse wraps it in, which
    buries it after the types tried and a dump of every argument."""
    while error.__cause__ is not None and error.__traceback__ is not None:
        raised_in = Path(traceback.extract_tb(error.__traceback__)[-1].filename)
        if "jsonargparse" not in raised_in.parts:
            break
        error = error.__cause__
    return error


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["backbones"]:
            return backbones_main(args[1:], prog=f"{PROG} backbones")
        # Each imported for its own subcommand only (prepare needs litdata, an extra).
        if args[:1] == ["export"]:
            from lit_classifiers.export import export_main

            return export_main(args[1:])
        if args[:1] == ["prepare"]:
            from datamodules.prepare import prepare_main

            return prepare_main(args[1:])
        cli_main(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENV):
            raise
        error = _root_cause(error)
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(
            f"{PROG}: error: {_one_line(message)}\n(set {DEBUG_ENV}=1 to see the traceback)",
            file=sys.stderr,
        )
        return 2
    except OSError as error:  # disk full, permissions, ... while writing what the run makes
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
