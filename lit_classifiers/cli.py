"""The ``lit-classifiers`` command: LightningCLI over ClassifierModule and any datamodule.

    lit-classifiers fit --config configs/stl10/resnet18.yaml
    lit-classifiers fit --model.backbone resnet18 --data STL10DataModule --data.data_dir DIR
    lit-classifiers test --config configs/stl10/resnet18.yaml --ckpt_path runs/.../last.ckpt
    lit-classifiers predict --config ... --ckpt_path ... --data.predict_dir photos/
    lit-classifiers backbones "resnet*"

Defaults: a TensorBoard logger writing one folder per run under ``runs/`` with the run's full
config beside it, ``ModelCheckpoint`` on ``val/acc1`` keeping ``last.ckpt``, the learning-rate
monitor, a progress bar and seed 0. The datamodule's ``num_classes``, ``class_names`` and
``in_channels`` reach the model without being repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import datamodules  # noqa: F401  (makes the datamodules known to ``--data NAME``)
from lit_classifiers.module import ClassifierModule
from lit_classifiers.predictions import PredictionCSVWriter
from lit_classifiers.summary import backbone_summary, format_table

__all__ = ["ClassifierCLI", "main"]

PROG = "lit-classifiers"
DEBUG_ENV = "LIT_CLASSIFIERS_DEBUG"


class ClassifierCLI(LightningCLI):
    """LightningCLI with the project's defaults and data-to-model links."""

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

    def before_instantiate_classes(self) -> None:
        """Name the run's log folder after its data and backbone unless the user named it."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is None or getattr(init_args, "name", "") is not None:
            return
        data_name = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower()
        backbone = config.model.backbone
        backbone_name = backbone if isinstance(backbone, str) else "custom"
        init_args.name = f"{data_name}-{backbone_name}"


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> ClassifierCLI:
    """Build (and by default run) the CLI; ``args`` replace ``sys.argv[1:]``."""
    return ClassifierCLI(
        ClassifierModule,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the module takes optimizer and schedule callables
        seed_everything_default=0,
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


USER_ERRORS = (KeyError, FileNotFoundError, NotADirectoryError, ValueError)


def check_config_files(args: Sequence[str]) -> None:
    """Name the file when a ``--config`` is missing or not valid YAML.

    jsonargparse reports YAML errors with line and column but without the file they are in.
    """
    import yaml

    paths = [
        value.split("=", 1)[1] if "=" in value else (args[i + 1] if i + 1 < len(args) else "")
        for i, value in enumerate(args)
        if value in ("-c", "--config") or value.startswith("--config=")
    ]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        try:
            with open(path) as handle:
                yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"config file {path!r} is not valid YAML: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["backbones"]:
        return backbones_main(args[1:])
    try:
        check_config_files(args)
        cli_main(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENV):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(
            f"{PROG}: error: {message}\n(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
