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

Whatever a user hands the command is treated as possibly hostile: a checkpoint (local or a URL)
is read with ``weights_only=True`` and its hyper-parameters may only name a registered backbone,
never a class to import; run folders are claimed atomically, so two runs started at once never
share one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

import datamodules  # noqa: F401  (makes the datamodules known to ``--data NAME``)
from lit_classifiers.callbacks import NonFiniteLossError
from lit_classifiers.checkpoint_io import (
    NonFiniteWeightsError,
    check_checkpoint_hparams,
    read_checkpoint,
    upgrade_hparams,
)
from lit_classifiers.module import ClassifierModule
from lit_classifiers.predictions import PredictionCSVWriter
from lit_classifiers.summary import backbone_summary, format_table

__all__ = ["ClassifierCLI", "main"]

PROG = "lit-classifiers"
DEBUG_ENV = "LIT_CLASSIFIERS_DEBUG"
#: Passes the run folder the launching process claimed to the processes Lightning starts for
#: the other DDP ranks (they inherit the environment), so all ranks log to the same folder.
RUN_VERSION_ENV = "LIT_CLASSIFIERS_RUN_VERSION"
_RANK_VARIABLES = (
    "RANK",  # torchrun
    "LOCAL_RANK",  # torchrun, Lightning's own launcher
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",  # SLURM
    "JSM_NAMESPACE_RANK",  # LSF (jsrun)
    "OMPI_COMM_WORLD_RANK",  # Open MPI
    "PMI_RANK",  # MPICH, Intel MPI
)
_VERSION_FOLDER = re.compile(r"version_(\d+)")


class ConciseArgumentParser(LightningArgumentParser):
    """A parser whose errors are one line naming the option, not ~95 lines of usage first."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get(DEBUG_ENV):
            super().error(message, ex)  # raises: jsonargparse is trying alternatives, or debugging
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"{prog}: error: {_one_line(message)}\n(see: {prog} --help)", file=sys.stderr)
        sys.exit(2)


class RunConfigCallback(SaveConfigCallback):
    """Saves the run's config beside its logs, never over an earlier one.

    A resumed run writes into the folder of the run it continues, which already holds that
    run's ``config.yaml``: the new config goes to ``config-resumed-N.yaml`` instead.
    """

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        log_dir = trainer.log_dir if self.save_to_log_dir and not self.already_saved else None
        if log_dir is not None and "://" not in log_dir:
            first = Path(log_dir, self.config_filename)
            if first.exists():
                kind = "resumed" if self.config.get("ckpt_path") else "run"
                k = 1
                while Path(log_dir, f"{first.stem}-{kind}-{k}{first.suffix}").exists():
                    k += 1
                self.config_filename = f"{first.stem}-{kind}-{k}{first.suffix}"
        super().setup(trainer, pl_module, stage)


class ClassifierCLI(LightningCLI):
    """LightningCLI with the project's defaults, data-to-model links and safe checkpoints."""

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
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(PredictionCSVWriter, "predictions")

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
        ckpt_path = str(ckpt_path)
        checkpoint = read_checkpoint(ckpt_path)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        check_checkpoint_hparams(hparams, ckpt_path)
        hparams = upgrade_hparams(hparams)  # argument names renamed since the checkpoint was saved
        # Both are Lightning's own bookkeeping, checked above to name ClassifierModule only.
        hparams.pop("_instantiator", None)
        hparams.pop("_class_path", None)
        if isinstance(hparams.get("backbone_kwargs"), dict):  # the state_dict supersedes weights
            hparams["backbone_kwargs"] = {
                k: v for k, v in hparams["backbone_kwargs"].items() if k != "weights"
            }
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _resolve_last_checkpoint(self, config: Namespace) -> str:
        """``--ckpt_path last``: the ``last.ckpt`` of the latest run of the same name, whose
        folder the resumed run then keeps writing to (its curves continue)."""
        logger_args = _logger_init_args(config)
        if logger_args is None:
            raise ValueError(
                "--ckpt_path last resumes the latest run in the logger's folder, but this run has "
                "no single logger with a save_dir; pass the checkpoint's path instead"
            )
        run_root = Path(getattr(logger_args, "save_dir", None) or "runs") / _run_name(config)
        versions = sorted(
            (int(m.group(1)), path)
            for path in (run_root.iterdir() if run_root.is_dir() else [])
            if (m := _VERSION_FOLDER.fullmatch(path.name))
            and (path / "checkpoints" / "last.ckpt").is_file()
        )
        if not versions:
            raise FileNotFoundError(
                f"--ckpt_path last: no earlier run to resume, {run_root} has no "
                "version_N/checkpoints/last.ckpt; start the run without --ckpt_path"
            )
        version, folder = versions[-1]
        checkpoint = folder / "checkpoints" / "last.ckpt"
        logger_args.version = version
        self._claimed_version = True
        if _is_launching_process():
            print(f"{PROG}: resuming {checkpoint} into {folder}", file=sys.stderr)
        return str(checkpoint)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            # Lightning's "No supported gpu backend found!" does not say which option asked.
            trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
            raise ValueError(
                f"--trainer.accelerator={trainer.accelerator} --trainer.devices={trainer.devices}: "
                f"{error} (this machine: {_accelerators_here()}); use --trainer.accelerator=auto "
                "to take whatever is there"
            ) from error

    # ------------------------------------------------------------------ run folders
    def before_instantiate_classes(self) -> None:
        """Name the run's folder after its data and backbone, and claim it atomically."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger_args = _logger_init_args(config)
        if logger_args is None:
            return
        if getattr(logger_args, "name", "") is None:
            logger_args.name = _run_name(config)
        if getattr(logger_args, "version", "") is None:
            logger_args.version = _claim_version(logger_args)
            self._claimed_version = True

    def after_instantiate_classes(self) -> None:
        # The saved config.yaml must not pin the folder this run claimed: a run started again
        # from that file would otherwise write into this run's folder.
        super().after_instantiate_classes()
        if getattr(self, "_claimed_version", False):
            config = self.config[self.subcommand] if self.subcommand else self.config
            _logger_init_args(config).version = None  # type: ignore[union-attr]


def _logger_init_args(config: Namespace) -> Namespace | None:
    """The ``init_args`` of the run's one logger, where it has the usual ``save_dir``/``name``
    /``version`` arguments (TensorBoardLogger, CSVLogger); ``None`` otherwise."""
    logger = config.trainer.logger
    init_args = getattr(logger, "init_args", None)
    if init_args is None or not {"save_dir", "name", "version"} <= set(vars(init_args)):
        return None
    return init_args


def _run_name(config: Namespace) -> str:
    logger_args = _logger_init_args(config)
    name = getattr(logger_args, "name", None) if logger_args is not None else None
    if name:
        return str(name)
    data_name = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower()
    backbone = config.model.backbone
    return f"{data_name}-{backbone if isinstance(backbone, str) else 'custom'}"


def _accelerators_here() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} CUDA device(s)"
    mps = getattr(torch.backends, "mps", None)
    return "an Apple MPS device" if mps is not None and mps.is_available() else "CPU only, no GPU"


def _is_launching_process() -> bool:
    """True in the process the user started; False in the other ranks of a distributed run."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def _claim_version(logger_args: Namespace) -> int | None:
    """Create ``save_dir/name/version_N`` with the first free N, atomically.

    ``mkdir`` either creates the folder or fails because it exists, so two runs started at
    once in one folder get two versions (Lightning lists the folders and picks the next number,
    which races). Other ranks take the launching process's choice; remote ``save_dir``\\ s are
    left to Lightning.
    """
    save_dir = str(getattr(logger_args, "save_dir", None) or "")
    if not save_dir or "://" in save_dir:
        return None
    root = Path(save_dir) / str(logger_args.name or "lightning_logs")
    key = f"{root.resolve()}|"
    inherited = os.environ.get(RUN_VERSION_ENV, "")
    if inherited.startswith(key):
        return int(inherited[len(key) :])
    if not _is_launching_process():
        return None
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION_FOLDER.fullmatch(p.name))]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            break
        except FileExistsError:
            version += 1
    os.environ[RUN_VERSION_ENV] = f"{key}{version}"
    return version


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> ClassifierCLI:
    """Build (and by default run) the CLI; ``args`` replace ``sys.argv[1:]``."""
    return ClassifierCLI(
        ClassifierModule,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the module takes optimizer and schedule callables
        seed_everything_default=0,
        save_config_callback=RunConfigCallback,
        parser_class=ConciseArgumentParser,
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": None, "default_hp_metric": False},
            },
        },
        parser_kwargs={"prog": PROG},
        args=args,
        run=run,
    )


def backbones_main(args: Sequence[str]) -> int:
    """``lit-classifiers backbones [PATTERN]``: the registry as a table (or JSON)."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} backbones",
        description="List the registered backbones with parameters, measured FLOPs and papers.",
    )
    parser.add_argument("pattern", nargs="?", default=None, help='fnmatch filter, e.g. "resnet*"')
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="count FLOPs at this side (default: each one's)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip counting FLOPs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args(args)
    rows = backbone_summary(options.pattern, options.input_size, flops=not options.no_flops)
    if not rows:
        print(f"{PROG} backbones: no backbone matches {options.pattern!r}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2) if options.json else format_table(rows))
    return 0


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


def check_config_files(args: Sequence[str]) -> None:
    """Name the file when a ``--config`` is missing, empty or not a YAML mapping.

    jsonargparse reports YAML errors with line and column but without the file they are in.
    """
    import yaml

    paths = [
        value.split("=", 1)[1] if "=" in value else (args[i + 1] if i + 1 < len(args) else "")
        for i, value in enumerate(args)
        if value in ("-c", "--config") or value.startswith("--config=")
    ]
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["backbones"]:
            return backbones_main(args[1:])
        if args[:1] == ["export"]:
            from lit_classifiers.export import export_main  # only this subcommand needs it

            return export_main(args[1:])
        check_config_files(args)
        cli_main(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENV):
            raise
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
