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
import ast
import contextlib
import csv
import difflib
import inspect
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import DefaultHelpFormatter, Namespace
from jsonargparse.typing import register_type
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger

import datamodules  # (makes the datamodules known to ``--data NAME``)
from lit_classifiers.backbones_command import backbones_main
from lit_classifiers.callbacks import NonFiniteLossError, progress_defaults
from lit_classifiers.checkpoint_io import (
    NonFiniteWeightsError,
    stored_model_hparams,
)
from lit_classifiers.module import ClassifierModule
from lit_classifiers.predictions import PredictionCSVWriter
from lit_classifiers.registry import get_backbone_info, list_backbones

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
#: Options people reach for that are spelled differently here, by the option's last part:
#: the options that set it, the first of them that exists is offered.
_ELSEWHERE = {
    "lr": ("--model.lr", "--model.optimizer.init_args.lr"),
    "learning_rate": ("--model.lr", "--model.optimizer.init_args.lr"),
    "weight_decay": ("--model.optimizer.init_args.weight_decay",),
    "momentum": ("--model.optimizer.init_args.momentum",),
    "batch_size": ("--data.batch_size",),
    "epochs": ("--trainer.max_epochs",),
    "max_epochs": ("--trainer.max_epochs",),
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


def _short_default(match: re.Match[str]) -> str:
    """``{'class_path': 'a.b.SGD', 'init_args': {'lr': 0.1}}`` as ``SGD(lr=0.1)``."""
    try:
        init_args = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        return match.group(0)
    shown = ", ".join(f"{k}={v}" for k, v in init_args.items() if v is not None)
    return f"default: {match.group(1).rsplit('.', 1)[-1]}({shown})"


class ConciseHelpFormatter(DefaultHelpFormatter):
    """``--help`` a person reads: one usage line, each Lightning option's first sentence, no
    lists of every importable subclass (the ``--X.help NAME`` options show a class's
    arguments), class defaults written as ``SGD(lr=0.1, ...)``, and each option's text on the
    lines below it across the width of the screen rather than in a 55-column strip.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 6,
        width: int | None = None,
    ) -> None:
        if " [options] " not in prog:  # the top-level help: a few short options, a table
            max_help_position = 24
        super().__init__(prog, indent_increment, max_help_position, width)

    def add_usage(self, usage: str | None, actions: Any, *args: Any, **kwargs: Any) -> None:
        actions = list(actions)
        if usage is None and len(actions) > 12:  # a subcommand: its usage would list them all
            usage = f"{self._prog.replace(' [options]', '')} [options]"
        super().add_usage(usage, actions, *args, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str:
        original = action.help
        if isinstance(original, str) and not getattr(action, "keep_lines", False):
            action.help = " ".join(_rst_to_text(original).split())  # docstring line breaks
            if action.dest.startswith(_LIGHTNING_GROUPS) and not getattr(action, "own_help", False):
                action.help = _first_sentence(action.help)
        try:
            text = super()._get_help_string(action)
        finally:
            action.help = original
        return re.sub(r", known subclasses: [^)]*\)$", ")", text)

    def _expand_help(self, action: argparse.Action) -> str:
        text = super()._expand_help(action)
        return re.sub(
            r"default: \{'class_path': '([\w.]+)', 'init_args': (\{[^{}]*\})\}",
            _short_default,
            text,
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Line breaks left in (the lists written with keep_lines) are kept; the rest is wrapped.
        lines = []
        for part in text.split("\n"):
            lines += super()._split_lines(part, width)
        return lines


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


def _datamodule_classes() -> dict[str, type[LightningDataModule]]:
    """The datamodules ``--data NAME`` offers, by name (the shared base class is no choice)."""
    found = {}
    for name in datamodules.__all__:
        cls = getattr(datamodules, name)
        if (
            isinstance(cls, type)
            and issubclass(cls, LightningDataModule)
            and cls is not datamodules.ImageClassificationDataModule
        ):
            found[name] = cls
    return found


def _summary(cls: type) -> str:
    return _rst_to_text((inspect.getdoc(cls) or "").strip().split("\n\n")[0].replace("\n", " "))


class ConciseArgumentParser(LightningArgumentParser):
    """A parser whose errors are one line saying what to write instead, not ~95 lines of
    usage or jsonargparse's list of the union types a value failed; no abbreviated options
    (``--trainer.max_epoch`` is a mistake, not ``max_epochs``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", ConciseHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get(DEBUG_ENV):
            super().error(message, ex)  # raises: jsonargparse is trying alternatives, or debugging
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"{prog}: error: {explain(message, parser)}\n(see: {prog} --help)", file=sys.stderr)
        sys.exit(2)


def explain(message: str, parser: argparse.ArgumentParser | None = None) -> str:
    """A jsonargparse error as one line that names the option and what it takes."""
    text = str(message).strip()
    if m := re.match(r'expected "subcommand" to be one of \{([^}]*)\}', text):
        names = [*m.group(1).split(","), *OTHER_SUBCOMMANDS]
        return f"a subcommand is required: one of {', '.join(names)}"
    if m := re.match(r"the following arguments are required: (.*)", text):
        return _explain_required(m.group(1))
    if m := re.search(r"argument \{[^}]*\}: invalid choice: '([^']*)'", text):
        names = [*_SUBCOMMAND_HELP, *OTHER_SUBCOMMANDS]
        return f"unknown subcommand {m.group(1)!r}: one of {', '.join(names)}"
    if m := re.match(r'Linked "model\.(\w+)" must be given via "(data\.\w+)"', text):
        return f"--model.{m.group(1)}: no such option; the data sets it ({m.group(2)})"
    if m := re.match(r"unrecognized arguments: (.*)", text):
        unknown = [a.split("=", 1)[0] for a in m.group(1).split() if a.startswith("-")]
        if unknown:
            return _explain_unknown_option(unknown[0], parser)
    if m := re.match(r"Subcommand '\w+' does not accept option '([^']+)'", text):
        return (
            f"config key {m.group(1)!r}: "
            + _explain_unknown_option(f"--{m.group(1)}", parser).split(": ", 1)[1]
        )
    m = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.DOTALL)
    if m is None:
        return _one_line(text)
    key, detail = m.group(1), m.group(2)
    if nested := re.search(r'callable class: Parser key "(\w+)":\s*(.*)', detail, re.DOTALL):
        key, detail = f"{key}.init_args.{nested.group(1)}", nested.group(2)  # SGD's lr, ...
        if nested.group(1) == "lr":
            given = re.search(r"Given value: (.*?)\.? Got value", detail)
            value = f" {given.group(1)}" if given else ""
            return f"--{key}{value}: lr must be a positive finite number, e.g. 0.1"
    if unloadable := re.match(r"Unable to load config '([^']*)'", detail):
        return _explain_config_option(key, unloadable.group(1))
    if key == "data" and (explained := _explain_data(detail)):
        return explained
    if unknown_class := re.search(r"Expected a dot import path string: (\S+)", detail):
        return _explain_class_name(key, unknown_class.group(1))
    if unknown := re.search(
        r"Option '(\w+)' is not accepted\. Got value: Namespace\(class_path='([\w.]+)'", detail
    ):
        return _explain_class_argument(key, unknown.group(2), unknown.group(1))
    if typed := re.match(r"Not of type \w+: (.*)", detail, re.DOTALL):
        return f"--{key}: {_one_line(typed.group(1))}"
    if single := re.match(r"(Expected .*?)\. Got value: (.*)", detail, re.DOTALL):
        return f"--{key}: expected {_expected(single.group(1))}, got {single.group(2).strip()!r}"
    return f"--{key}: {_union_errors(detail)}"


def _explain_required(names: str) -> str:
    first = names.split(",")[0].strip().split(".", 1)[-1]
    if first == "model.backbone":
        return (
            f"--model.backbone is required: one of {', '.join(list_backbones())} "
            f"(details: {PROG} backbones)"
        )
    if first == "data":
        return f"--data is required: one of {', '.join(_datamodule_classes())}"
    return f"--{first} is required"


#: Options earlier versions had (and saved in each run's config.yaml), with what replaced them.
_REMOVED = {
    "lr_monitor": "removed: the module logs the learning rate itself (train/lr, or "
    "train/lr/<group>); delete the lr_monitor section from the config",
}


def _explain_unknown_option(option: str, parser: argparse.ArgumentParser | None) -> str:
    name = option.lstrip("-")
    if (removed := _REMOVED.get(name.split(".", 1)[0])) is not None:
        return f"{option}: {removed}"
    last = name.rsplit(".", 1)[-1]
    known = [o for o in getattr(parser, "_option_string_actions", {}) if o.startswith("--")]
    # The optimizer's own arguments are checked by its class; options inside it are not listed.
    nested = ("--model.optimizer.init_args.", "--model.lr_scheduler.init_args.")
    elsewhere = [o for o in _ELSEWHERE.get(last, ()) if o in known or o.startswith(nested)]
    close = [o for o in elsewhere if o != option][:1]
    if not close:
        close = difflib.get_close_matches(option, known, n=2, cutoff=0.8)
        close += [o for o in known if o.endswith(f".{name}") and o not in close]
    hint = f"; did you mean {' or '.join(close[:3])}?" if close else ""
    return f"{option}: no such option{hint}"


def _explain_class_argument(key: str, class_path: str, argument: str) -> str:
    """``--model.optimizer.init_args.lrr``: SGD has no ``lrr``; its close arguments."""
    module_name, _, class_name = class_path.rpartition(".")
    # Only a class jsonargparse has imported already: nothing is imported for a message.
    cls = getattr(sys.modules.get(module_name), class_name, None)
    try:
        params = list(inspect.signature(cls).parameters) if cls is not None else []
    except (TypeError, ValueError):
        params = []
    close = difflib.get_close_matches(argument, params, n=2)
    hint = (
        f"; did you mean {' or '.join(f'--{key}.init_args.{c}' for c in close)}?" if close else ""
    )
    return f"--{key}.init_args.{argument}: {class_name} has no such argument{hint}"


def _option_bases() -> dict[str, type]:
    """The base class of each option that takes a class by name, for "did you mean"."""
    import torch

    return {
        "model.optimizer": torch.optim.Optimizer,
        "model.lr_scheduler": torch.optim.lr_scheduler.LRScheduler,
    }


def _explain_class_name(key: str, given: str) -> str:
    """``--model.optimizer Adamm``: the classes the option takes whose names are close."""
    names, todo = set(), [_option_bases()[key]] if key in _option_bases() else []
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    close = difflib.get_close_matches(given, sorted(names), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (
        f"--{key} {given}: no such class{hint} (a class name or path; --{key}.help NAME shows "
        "its arguments)"
    )


def _explain_config_option(key: str, value: str) -> str:
    if key == "model" and value in list_backbones():
        return (
            f"--model takes a config file, and {value!r} is none; the backbone is "
            f"--model.backbone {value}"
        )
    if os.path.isfile(value):
        return f"--{key} {value}: not a YAML mapping of --{key}'s options"
    return f"--{key} {value}: no such config file (--{key} takes a YAML file of its options)"


def _explain_data(detail: str) -> str | None:
    """``--data``: the name of an unknown datamodule, or the real problem with a known one."""
    choices = _datamodule_classes()
    if m := re.search(r"Expected a dot import path string: (\S+)", detail) or re.search(
        r"Problem with given class_path '([^']+)':\s*No module named", detail
    ):
        given = m.group(1)
        stem = given.rsplit(".", 1)[-1].lower().removesuffix("datamodule")
        close = [n for n in choices if n.lower().removesuffix("datamodule") == stem]
        close += difflib.get_close_matches(given, [n for n in choices if n not in close], n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"--data {given}: no such datamodule; {hint}choose from {', '.join(choices)}"
    m = re.search(
        r"Problem with given class_path '([\w.]+)':\s*(.*?)\n\s*- Expected a <class",
        detail,
        re.DOTALL,
    )
    if m is None:
        return None
    class_name, problem = m.group(1).rsplit(".", 1)[-1], _one_line(m.group(2))
    if required := re.match(r"the following arguments are required: (.*)", problem):
        args = ", ".join(f"--data.{a.strip()}" for a in required.group(1).split(","))
        return f"{class_name} needs {args}"
    if unknown := re.match(r"Option '([^']+)' is not accepted", problem):
        option = unknown.group(1)
        cls = choices.get(class_name)
        params = list(inspect.signature(cls).parameters) if cls is not None else []
        close = difflib.get_close_matches(option, params, n=2)
        hint = f"; did you mean {' or '.join(f'--data.{c}' for c in close)}?" if close else ""
        return f"--data.{option}: {class_name} has no such argument{hint}"
    return f"--data ({class_name}): {problem}"


def _expected(text: str) -> str:
    """ "Expected a <class 'int'>" as "int", "Expected a typing.Literal['a', 'b']" as "one of
    'a', 'b'"."""
    text = re.sub(r"^Expected (an? )?", "", text.strip()).rstrip(".")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return re.sub(r"typing\.Literal\[(.*)\]", r"one of \1", text)


def _union_errors(detail: str) -> str:
    """jsonargparse's "Does not validate against any of the Union subtypes" report, as the
    errors that matter: not "Expected a <class 'NoneType'>", nor the value's repr."""
    if "Does not validate against any of the Union subtypes" not in detail:
        return _one_line(detail)
    given = re.search(r"Given value: (.*)", detail)
    errors = [
        line.strip()[2:]
        for line in detail.split("Errors:", 1)[-1].split("Given value type:")[0].splitlines()
        if line.strip().startswith("- ") and "NoneType" not in line
    ]
    expected = [_expected(e) for e in errors if e.startswith("Expected")]
    other = [e for e in errors if not e.startswith("Expected")]
    parts = ([f"expected {' or '.join(expected)}"] if expected else []) + other
    value = f", got {given.group(1).strip()!r}" if given and len(given.group(1)) < 80 else ""
    return _one_line("; ".join(parts) or detail) + value


class RunConfigCallback(SaveConfigCallback):
    """Saves the run's config beside its logs, never over an earlier one, never in the working
    directory.

    A resumed run, or a validate/test/predict of a run's checkpoint, writes into the folder of
    that run, which already holds its ``config.yaml``: the new config goes to
    ``config-resumed-N.yaml`` (``config-test-N.yaml``, ...) instead. Without a logger the
    config is saved only where the CLI gave the run a folder (``fit``, or a run's checkpoint);
    Lightning would put it in the working directory, where the next run would find it.
    """

    def __init__(self, *args: Any, save_without_logger: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_without_logger = save_without_logger

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if not trainer.loggers and not self.save_without_logger:
            return
        log_dir = trainer.log_dir if self.save_to_log_dir and not self.already_saved else None
        if log_dir is not None and "://" not in log_dir:
            first = Path(log_dir, self.config_filename)
            if first.exists():
                kind = str(getattr(stage, "value", stage)) if stage != "fit" else "resumed"
                if stage == "fit" and not self.config.get("ckpt_path"):
                    kind = "run"
                k = 1
                while Path(log_dir, f"{first.stem}-{kind}-{k}{first.suffix}").exists():
                    k += 1
                self.config_filename = f"{first.stem}-{kind}-{k}{first.suffix}"
        super().setup(trainer, pl_module, stage)


class ClassifierCLI(LightningCLI):
    """LightningCLI with the project's defaults, data-to-model links and safe checkpoints."""

    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        # A run that writes nothing (fast_dev_run, a failed start) leaves no empty folder, and
        # the next CLI in this process claims a folder of its own.
        self._claimed_folder: Path | None = None
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
            self._model_class,
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
        parser.add_lightning_class_args(
            self._datamodule_class, "data", subclass_mode=self.subclass_mode_data
        )
        data = next(a for a in parser._actions if a.dest == "data")
        data.help = "The datamodule, by name (or class path):\n" + "\n".join(
            f"- {name}: {_summary(cls)}" for name, cls in _datamodule_classes().items()
        )
        data.keep_lines = True  # type: ignore[attr-defined]  (one line per datamodule)

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
        helps = {
            "predictions.output_path": "Where to write it; default: predictions.csv in the "
            "run's folder.",
            "trainer.logger": "Where the run logs: by default TensorBoard in "
            "runs/<data>-<backbone>/version_N; --trainer.logger+ CSVLogger adds a CSV log in "
            "the same folder; false logs nothing (checkpoints and config still go there).",
            "seed_everything": "Seed of every random generator, set before anything is built; "
            "true picks a random one.",
        }
        for action in parser._actions:
            if action.dest in helps:
                action.help = helps[action.dest]
                action.own_help = True  # type: ignore[attr-defined]

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        action = parser._subcommands_action
        assert action is not None
        for choice in action._choices_actions:  # Trainer's docstrings, cut mid-sentence
            choice.help = _SUBCOMMAND_HELP.get(choice.dest, choice.help)
        for name, text in OTHER_SUBCOMMANDS.items():
            action._choices_actions.append(action._ChoicesPseudoAction(name, (), text))
        action.metavar = "{" + ",".join([*action.choices, *OTHER_SUBCOMMANDS]) + "}"
        for subcommand, subparser in self._subcommand_parsers.items():
            subparser.groups[subcommand].title = "Where to start"
            ckpt = next(a for a in subparser._actions if a.dest == "ckpt_path")
            ckpt.help = (
                "Checkpoint to resume: a path or an http(s) URL (read with weights_only=True), "
                "or last: the last.ckpt of the latest run of the same name, continued in its "
                "folder."
                if subcommand == "fit"
                else "Checkpoint to use: a path or an http(s) URL (read with weights_only=True), "
                "or last. One in runs/<name>/version_N/checkpoints/ logs into that run's folder."
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(_with_save_dirs(list(args)))

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
        run_root = _run_root(config)
        if run_root is None:
            raise ValueError(
                "--ckpt_path last resumes the latest run in its runs/<name>/version_N folder, "
                "but this run's logger writes no such local folder; pass the checkpoint's path "
                "instead"
            )
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
        self._run_version = version
        if _is_launching_process():
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
        loggers = _logger_args(config)
        run_name = _run_name(config)
        save_dir = (loggers[0].save_dir if loggers else None) or "runs"
        for args in loggers:
            if args.save_dir is None:
                args.save_dir = save_dir
            if args.name in (None, _LIGHTNING_LOG_NAME):
                args.name = run_name
        no_logger = config.trainer.logger is False and config.trainer.default_root_dir is None
        if not loggers and not no_logger:
            return
        root = _run_root(config)
        version = getattr(self, "_run_version", None)
        if version is None and root is not None and self.subcommand != "fit":
            version = _version_of_checkpoint(config.get("ckpt_path"), root)
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

    def _claim(self, logger_args: Namespace) -> int | None:
        before = os.environ.get(RUN_VERSION_ENV)
        version = _claim_version(logger_args)
        if os.environ.get(RUN_VERSION_ENV) != before and version is not None:  # claimed here
            self._claimed_folder = Path(
                logger_args.save_dir, logger_args.name, f"version_{version}"
            )
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
        if _is_launching_process():
            for logger in self.trainer.loggers:
                if isinstance(logger, CSVLogger):
                    _open_csv_log(logger)


def _with_save_dirs(args: list[str]) -> list[str]:
    """``--trainer.logger+ CSVLogger`` as ``... --trainer.logger.save_dir=runs``.

    Lightning's file loggers require a ``save_dir``, which a logger appended with ``+`` does not
    inherit from the default one, so parsing would fail; the folder under it is then the run's
    (see ``before_instantiate_classes``). Only for a class that requires it and when the
    command line does not give it.
    """
    out: list[str] = []
    k = 0
    while k < len(args):
        arg = args[k]
        out.append(arg)
        k += 1
        if arg.startswith("--trainer.logger+="):
            value = arg.split("=", 1)[1]
        elif arg == "--trainer.logger+" and k < len(args):
            value = args[k]
            out.append(value)
            k += 1
        else:
            continue
        rest = args[k:]
        following = rest[
            : next((i for i, a in enumerate(rest) if a.startswith("--trainer.logger+")), len(rest))
        ]
        given = any(
            a.split("=", 1)[0]
            in ("--trainer.logger.save_dir", "--trainer.logger.init_args.save_dir")
            for a in following
        )
        if not given and _requires_save_dir(value):
            out.append("--trainer.logger.save_dir=runs")
    return out


def _requires_save_dir(name: str) -> bool:
    """Whether the logger class ``name`` (as ``--trainer.logger`` takes it: a class name of
    ``lightning.pytorch.loggers`` or an imported class path) has a required ``save_dir``."""
    import lightning.pytorch.loggers as loggers

    module_name, _, class_name = name.rpartition(".")
    # Nothing is imported for this: a class path names a module already loaded, or nothing.
    cls = getattr(sys.modules.get(module_name) if module_name else loggers, class_name, None)
    try:
        parameter = inspect.signature(cls).parameters.get("save_dir") if cls else None
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


#: The ``name`` Lightning's loggers default to, replaced by the run's name.
_LIGHTNING_LOG_NAME = "lightning_logs"


def _logger_args(config: Namespace) -> list[Namespace]:
    """The ``init_args`` of the run's loggers that write ``save_dir/name/version_N`` folders
    (TensorBoardLogger, CSVLogger and their subclasses), in order.

    Other loggers' ``name`` and ``version`` mean something else (W&B's version is the id of
    the run to resume), so they are left as given.
    """
    from lightning.fabric.loggers import CSVLogger as FabricCSVLogger
    from lightning.fabric.loggers import TensorBoardLogger as FabricTensorBoardLogger

    logger = config.trainer.logger
    found = []
    for item in logger if isinstance(logger, list) else [logger]:
        init_args = getattr(item, "init_args", None)
        module_name, _, class_name = str(getattr(item, "class_path", "")).rpartition(".")
        cls = getattr(sys.modules.get(module_name), class_name, None)  # imported when parsed
        if (
            isinstance(init_args, Namespace)
            and isinstance(cls, type)
            and issubclass(cls, (FabricCSVLogger, FabricTensorBoardLogger))
            and {"save_dir", "name", "version"} <= set(vars(init_args))
        ):
            found.append(init_args)
    return found


def _logger_init_args(config: Namespace) -> Namespace | None:
    """The first logger's ``init_args`` (see :func:`_logger_args`), or ``None``."""
    loggers = _logger_args(config)
    return loggers[0] if loggers else None


def _run_name(config: Namespace) -> str:
    logger_args = _logger_init_args(config)
    name = getattr(logger_args, "name", None) if logger_args is not None else None
    if name and name != _LIGHTNING_LOG_NAME:
        return str(name)
    data_name = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower()
    backbone = config.model.backbone
    return f"{data_name}-{backbone if isinstance(backbone, str) else 'custom'}"


def _run_root(config: Namespace) -> Path | None:
    """``save_dir/name`` of the run's folders; ``runs/<name>`` without a logger; ``None`` for a
    remote ``save_dir`` or a logger without one."""
    logger_args = _logger_init_args(config)
    if logger_args is None:
        if config.trainer.logger is False and config.trainer.default_root_dir is None:
            return Path("runs") / _run_name(config)
        return None
    save_dir = str(getattr(logger_args, "save_dir", None) or "runs")
    return None if "://" in save_dir else Path(save_dir) / _run_name(config)


def _version_of_checkpoint(ckpt_path: object, run_root: Path) -> int | None:
    """N where ``ckpt_path`` is ``run_root/version_N/checkpoints/*.ckpt``, else ``None``."""
    if not ckpt_path or "://" in str(ckpt_path):
        return None
    path = Path(str(ckpt_path))
    match = _VERSION_FOLDER.fullmatch(path.parent.parent.name)
    if path.parent.name != "checkpoints" or match is None:
        return None
    try:
        same = path.parent.parent.parent.resolve() == run_root.resolve()
    except OSError:
        return None
    return int(match.group(1)) if same else None


def _open_csv_log(logger: CSVLogger) -> None:
    """Start a CSV logger's file now, keeping the ``metrics.csv`` already in its folder.

    Lightning's CSV writer deletes the ``metrics.csv`` it finds in a non-empty folder when it
    starts, warning that "previous log files will be deleted", and when it adds a column it
    rewrites the file with only the columns it logged itself: a resumed run, or a test logged
    into its fit's folder, would lose the fit's metrics. With the file set aside while the
    writer starts and the writer told the file's columns, it appends to the file instead
    (rewriting it with the new columns added).
    """
    log_dir = str(logger.log_dir)
    if "://" in log_dir:
        return
    metrics = Path(log_dir, "metrics.csv")
    kept = metrics.with_name("metrics.csv.kept")
    if metrics.is_file():
        os.replace(metrics, kept)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* not empty")
            writer = logger.experiment
    finally:
        if kept.is_file():
            os.replace(kept, metrics)
    if metrics.is_file() and isinstance(getattr(writer, "metrics_keys", None), list):
        with open(metrics, newline="", encoding="utf-8") as handle:
            writer.metrics_keys = sorted(next(csv.reader(handle), []))


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
    """The run's ``version`` under ``save_dir/name``: claimed here (see :func:`claim_run_folder`)
    in the launching process, the launching process's choice in the other ranks of a
    distributed run; ``None`` for a remote ``save_dir`` (left to Lightning)."""
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
    version = claim_run_folder(root, next_version(root))
    os.environ[RUN_VERSION_ENV] = f"{key}{version}"
    return version


def next_version(root: Path) -> int:
    """One more than the highest N of the ``root/version_N`` folders (0 for none)."""
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION_FOLDER.fullmatch(p.name))]
    return max(taken, default=-1) + 1


def claim_run_folder(root: Path, version: int) -> int:
    """Create ``root/version_N`` for the first N from ``version`` that no one has, and return N.

    ``mkdir`` either creates the folder or fails because it exists, so two runs started at once
    in one folder get two versions, also when another run took ``version`` after it was listed
    (Lightning lists the folders and picks the next number, which races).
    """
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and the folders in it if no file is anywhere under it."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.is_dir() or path.is_symlink():
            return
        path.rmdir()  # fails, and keeps everything, if something was written meanwhile
    folder.rmdir()


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
            **{name: {"description": text} for name, text in _SUBCOMMAND_HELP.items()},
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
            return backbones_main(args[1:], prog=f"{PROG} backbones")
        if args[:1] == ["export"]:
            from lit_classifiers.export import export_main  # only this subcommand needs it

            return export_main(args[1:])
        if args[:1] == ["prepare"]:
            from datamodules.prepare import prepare_main  # litdata: the [streaming] extra

            return prepare_main(args[1:])
        check_config_files(args)
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
