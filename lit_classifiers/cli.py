"""The ``lit-classifiers`` command: LightningCLI over ClassifierModule and any datamodule.

    lit-classifiers fit --config configs/stl10/base.yaml --config configs/stl10/resnet18.yaml
    lit-classifiers fit --model.backbone resnet18 --data STL10DataModule --data.data_dir DIR
    lit-classifiers fit --config ... --ckpt_path last      # resume the latest run of that name
    lit-classifiers test --config runs/stl10-resnet18/version_0/config.yaml --ckpt_path last
    lit-classifiers predict --config ... --ckpt_path ... --data.predict_dir photos/
    lit-classifiers backbones "resnet*"

Defaults: a TensorBoard logger writing one folder per run under ``runs/`` with the run's full
config beside it, ``ModelCheckpoint`` on ``val/acc1`` keeping ``last.ckpt``, the learning-rate
monitor, a progress bar and seed 0. The datamodule's ``num_classes``, ``class_names`` and
``in_channels`` reach the model without being repeated.

One place per run: ``runs/<data>-<backbone>/version_N`` holds everything of a run, for every
logger (``--trainer.logger+ CSVLogger`` writes there too, and without a logger the config and
checkpoints still go there, not into the working directory); ``validate``, ``test`` and
``predict`` of a checkpoint in a run's ``checkpoints/`` log into that run's folder, so its
TensorBoard run (and HParams trial) shows the fit and the evaluation together.

For people: ``--help`` lists the registered backbones and the datamodules and gives each
Lightning option its first sentence (about 360 lines for ``fit``); a mistake gets one line that
says what to write instead (see :func:`explain`); options are never abbreviated.

Whatever a user hands the command is treated as possibly hostile: a checkpoint (local or a URL)
is read with ``weights_only=True`` and its hyper-parameters may only name a registered backbone,
never a class to import; run folders are claimed atomically, so two runs started at once never
share one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import inspect
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import DefaultHelpFormatter, Namespace
from jsonargparse.typing import register_type
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from lit_classifiers.backbones_command import backbones_main
from lit_classifiers.callbacks import NonFiniteLossError, progress_defaults
from lit_classifiers.checkpoint_io import (
    NonFiniteWeightsError,
    stored_model_hparams,
)
from lit_classifiers.cli_mistakes import datamodule_classes, find_mistake
from lit_classifiers.module import ClassifierModule
from lit_classifiers.predictions import PredictionCSVWriter
from lit_classifiers.registry import get_backbone_info, list_backbones
from lit_classifiers.run_folders import (
    LIGHTNING_LOG_NAME,
    RUN_VERSION_ENV,
    RunConfigCallback,
    claim_run_folder,
    claim_version,
    is_launching_process,
    last_checkpoint,
    logger_args,
    next_version,
    open_csv_log,
    remove_if_empty,
    run_name,
    run_root,
    version_of_checkpoint,
    with_save_dirs,
)

__all__ = [
    "RUN_VERSION_ENV",
    "ClassifierCLI",
    "claim_run_folder",
    "cli_main",
    "main",
    "next_version",
]

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
_SUBCOMMAND_HELP = {
    "fit": "Train a model; each run gets its own folder runs/<data>-<backbone>/version_N.",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate a checkpoint on the test split.",
    "predict": "Classify images (--data.predict_dir) into a CSV file.",
}
_TRAINER_DOCS = "https://lightning.ai/docs/pytorch/stable/core-api/trainer"
#: Option groups whose help is Lightning's: shown as their first sentence.
_LIGHTNING_GROUPS = ("trainer.", "checkpoint.", "seed_everything", "weights_only")


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


# ---------------------------------------------------------------------------------------- help
def _rst_to_text(text: str) -> str:
    """Docstring markup as plain text: ``x``, :class:`~a.B` and :mod:`a.b` become x, B, a.b."""
    text = re.sub(r":\w+:`~([^`]*)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text)
    return re.sub(r"``?([^`]*)``?", r"\1", text)


def _first_sentence(text: str) -> str:
    """The first sentence that says something (Lightning's "Default: ``None``." does not: the
    default is shown anyway)."""
    text = re.split(r"\s+\.\. \w+::", text, maxsplit=1)[0]  # .. warning:: / .. note:: blocks
    sentences = re.split(r"(?<=[a-z0-9)\]}'\"`])[.:]\s+(?=[A-Z`(])", text.strip())
    for sentence in sentences:
        if sentence and not re.match(r"(Defaults?( to\b|:)|Example)", sentence):
            return sentence.rstrip(".:") + "."
    return text


class ConciseHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """``--help`` a person reads: each Lightning option's first sentence without docstring
    markup, no lists of every importable subclass (``--X.help NAME`` shows a class's arguments),
    each option's text on the lines below it; descriptions keep their line breaks."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 6, width: Any = None
    ) -> None:
        if " [options] " not in prog:  # the top-level help: a few short options, a table
            max_help_position = 24
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action: argparse.Action) -> str:
        if isinstance(action.help, str):
            action = copy.copy(action)
            if not action.option_strings and action.dest in _SUBCOMMAND_HELP:
                action.help = _SUBCOMMAND_HELP[action.dest]  # not the Trainer's, cut mid-line
            action.help = " ".join(_rst_to_text(action.help).split())
            if action.dest.startswith(_LIGHTNING_GROUPS):
                action.help = _first_sentence(action.help)
            action.extra_help = str  # type: ignore[attr-defined]  (no "known subclasses: ...")
        return super()._get_help_string(action)


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


def _summary(cls: type) -> str:
    return _rst_to_text((inspect.getdoc(cls) or "").strip().split("\n\n")[0].replace("\n", " "))


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
        inherited = os.environ.get(RUN_VERSION_ENV)
        try:
            super().__init__(*args, run=run, **kwargs)
        except BaseException:
            self._release_run_folder(inherited)
            raise
        if run:
            self._release_run_folder(inherited)

    def _release_run_folder(self, inherited: str | None) -> None:
        if self._claimed_folder is None:
            return
        with contextlib.suppress(OSError):
            remove_if_empty(self._claimed_folder)
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
            + " ".join(f"{name}: {_summary(cls)}" for name, cls in datamodule_classes().items()),
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
        hparams = stored_model_hparams(str(ckpt_path))
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
        """Give the run one folder, ``runs/<data>-<backbone>/version_N``, for all its loggers.

        A ``fit`` claims a new folder atomically (a resumed one continues its run's folder);
        ``validate``, ``test`` and ``predict`` of a checkpoint in a run's ``checkpoints/`` log
        into that run's folder, so its TensorBoard run (and HParams trial) holds the fit and
        the evaluation together. Without a logger, a ``fit`` still gets its folder for the
        config and the checkpoints, instead of the working directory.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._pinned: list[tuple[Namespace, str]] = []  # reset after instantiation
        loggers = logger_args(config)
        name = run_name(config)
        save_dir = (loggers[0].save_dir if loggers else None) or "runs"
        for args in loggers:
            if args.save_dir is None:
                args.save_dir = save_dir
            if args.name in (None, LIGHTNING_LOG_NAME):
                args.name = name
        no_logger = config.trainer.logger is False and config.trainer.default_root_dir is None
        if not loggers and not no_logger:
            return
        root = run_root(config)
        version = getattr(self, "_run_version", None)
        if version is None and root is not None and self.subcommand != "fit":
            version = version_of_checkpoint(config.get("ckpt_path"), root)
        if loggers:
            if loggers[0].version is None:
                if version is None:
                    version = self._claim(loggers[0])
                self._pin(loggers[0], "version", version)
            for args in loggers[1:]:  # the same folder, or the same number elsewhere
                if args.version is None and isinstance(loggers[0].version, int):
                    self._pin(args, "version", loggers[0].version)
        elif root is not None and (version is not None or self.subcommand == "fit"):
            if version is None:
                version = self._claim(Namespace(save_dir=str(root.parent), name=root.name))
            if version is not None:
                self._pin(config.trainer, "default_root_dir", str(root / f"version_{version}"))
                self.save_config_kwargs = {**self.save_config_kwargs, "save_without_logger": True}

    def _claim(self, init_args: Namespace) -> int | None:
        before = os.environ.get(RUN_VERSION_ENV)
        version = claim_version(init_args)
        if os.environ.get(RUN_VERSION_ENV) != before and version is not None:  # claimed here
            self._claimed_folder = Path(init_args.save_dir, init_args.name, f"version_{version}")
        return version

    def _pin(self, namespace: Namespace, key: str, value: Any) -> None:
        if value is not None:
            setattr(namespace, key, value)
            self._pinned.append((namespace, key))

    def after_instantiate_classes(self) -> None:
        # The saved config.yaml must not pin the folder this run claimed: a run started again
        # from that file would otherwise write into this run's folder.
        super().after_instantiate_classes()
        for namespace, key in getattr(self, "_pinned", []):
            setattr(namespace, key, None)
        if is_launching_process():
            for logger in self.trainer.loggers:
                if isinstance(logger, CSVLogger):
                    open_csv_log(logger)


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
                "init_args": {"save_dir": "runs", "name": None, "default_hp_metric": False},
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
                for name, text in _SUBCOMMAND_HELP.items()
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
    """The error a datamodule or model raised, not jsonargparse's report that the value
    "does not validate against any of the Union subtypes", which buries it after the types
    tried and a dump of every argument."""
    while error.__cause__ is not None and "Union subtypes" in str(error):
        error = error.__cause__
    return error


def check_config_files(args: Sequence[str]) -> list[dict[str, Any]]:
    """The ``--config`` files' contents; naming the file when one is missing, empty or not a
    YAML mapping.

    jsonargparse reports YAML errors with line and column but without the file they are in.
    """
    import yaml

    paths = [
        value.split("=", 1)[1] if "=" in value else (args[i + 1] if i + 1 < len(args) else "")
        for i, value in enumerate(args)
        if value in ("-c", "--config") or value.startswith("--config=")
    ]
    contents = []
    for position, path in enumerate(paths):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        base = Path(path).with_name("base.yaml")
        given_before = {Path(p).resolve() for p in paths[:position]}
        if Path(path).name != base.name and base.is_file() and base.resolve() not in given_before:
            # A recipe holds only what its network changes; alone it would train with defaults.
            raise ValueError(
                f"config file {path!r} builds on {str(base)!r}: pass --config {base} "
                f"--config {path}"
            )
        try:
            with open(path, encoding="utf-8") as handle:
                content = yaml.safe_load(handle)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"config file {path!r} is not valid YAML: {error}") from None
        if not isinstance(content, dict):
            what = "empty" if content is None else f"a {type(content).__name__}"
            raise ValueError(
                f"config file {path!r} is {what}; expected a YAML mapping such as "
                "'model: {backbone: resnet18}'"
            )
        contents.append(content)
    return contents


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["backbones"]:
            return backbones_main(args[1:], prog=f"{PROG} backbones")
        if args[:1] == ["export"]:
            from lit_classifiers.export import export_main  # only this subcommand needs it

            return export_main(args[1:])
        if args[:1] == ["prepare"]:
            from datamodules.prepare import prepare_main  # litdata: the [streaming] extra

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
