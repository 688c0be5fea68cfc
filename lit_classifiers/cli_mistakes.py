"""The common mistakes on a ``lit-classifiers`` command line, each found by a check of our own
and told in one line that says what to write instead.

:func:`find_mistake` runs only once parsing has failed: it looks at what the user typed (the
options, the ``--data`` and optimizer names, the keys of each ``--config`` file) against the
parser's own option names and the chosen classes' signatures, never at the parser's message.
When it finds nothing, the parser's own message is shown.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule

import datamodules
from lit_classifiers.registry import list_backbones

#: Options people reach for that are spelled differently here, by the option's last part.
ELSEWHERE = {
    "lr": "--model.lr",
    "learning_rate": "--model.lr",
    "weight_decay": "--model.optimizer.init_args.weight_decay",
    "momentum": "--model.optimizer.init_args.momentum",
    "batch_size": "--data.batch_size",
    "epochs": "--trainer.max_epochs",
}
#: Options earlier versions had (and saved in each run's config.yaml), with what replaced them.
REMOVED = {
    "lr_monitor": "removed: the module logs the learning rate itself (train/lr, or "
    "train/lr/<group>); delete the lr_monitor section from the config",
}
#: The model's arguments the datamodule sets (see ``ClassifierCLI.add_arguments_to_parser``).
LINKED = ("num_classes", "class_names", "in_channels")
#: Options that take a class by name: the base class whose subclasses they take.
CLASS_OPTIONS = {"model.optimizer": "Optimizer", "model.lr_scheduler": "LRScheduler"}


def datamodule_classes() -> dict[str, type[LightningDataModule]]:
    """The datamodules ``--data NAME`` offers, by name (the shared base class is no choice)."""
    return {
        name: cls
        for name in datamodules.__all__
        if isinstance(cls := getattr(datamodules, name), type)
        and issubclass(cls, LightningDataModule)
        and cls is not datamodules.ImageClassificationDataModule
    }


def command_line_options(args: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """``(key, value)`` of each ``--key value`` / ``--key=value`` (``+`` of appends dropped)."""
    for k, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        key, equals, value = arg[2:].partition("=")
        if not equals:
            following = args[k + 1] if k + 1 < len(args) else None
            value = following if following is not None and not following.startswith("--") else None
        yield key.rstrip("+"), value


def config_keys(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted keys of a config file's leaves."""
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from config_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _parameters(cls: object) -> list[str]:
    try:
        return list(inspect.signature(cls).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


def _close(given: str, known: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(given, known, n=2)
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


def _subclass_names(base_name: str) -> list[str]:
    import torch

    bases = {
        "Optimizer": torch.optim.Optimizer,
        "LRScheduler": torch.optim.lr_scheduler.LRScheduler,
    }
    names, todo = set(), [bases[base_name]]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return sorted(names)


def _class_of(name: str) -> type | None:
    """The class a class-taking option names: a torch.optim name or an imported class path."""
    import torch

    module_name, _, class_name = name.rpartition(".")
    home = sys.modules.get(module_name) if module_name else torch.optim
    found = getattr(home, class_name, None) or getattr(torch.optim.lr_scheduler, name, None)
    return found if isinstance(found, type) else None


def unknown_option(key: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """What is wrong with option ``key``, or ``None``; ``defaults``: the parser's flattened
    defaults (every option it has), ``given``: the command line's options."""
    takes_class = {k.removesuffix(".class_path") for k in defaults if k.endswith(".class_path")}
    option = f"--{key}"
    head, _, last = key.rpartition(".")
    if key.split(".", 1)[0] in REMOVED:
        return f"{option}: {REMOVED[key.split('.', 1)[0]]}"
    if (
        key in defaults
        or key in takes_class
        or key.endswith(".help")
        or key in ("help", "print_config", "config")
    ):
        return None
    if key.startswith("model.") and last in LINKED:
        return f"{option}: no such option; the data sets it (--data.{last})"
    if head == "data" and (data_class := datamodule_classes().get(str(given.get("data")))):
        if last not in _parameters(data_class):
            hint = _close(last, _parameters(data_class), "--data.")
            return f"{option}: {data_class.__name__} has no such argument{hint}"
        return None
    for option_key in CLASS_OPTIONS:
        if head in (option_key, f"{option_key}.init_args"):
            name = given.get(option_key) or defaults.get(f"{option_key}.class_path")
            cls = _class_of(str(name)) if name else None
            params = _parameters(cls)
            if cls is None or last in params:
                return None
            hint = _close(last, params, f"--{head}.")
            return f"{option}: {cls.__name__} has no such argument{hint}"
    parts = key.split(".")
    if any(".".join(parts[:n]) in {*defaults, *takes_class} for n in range(1, len(parts))):
        return None  # inside an option that takes a class: its class checks it
    known = [f"--{k}" for k in defaults]
    close = ELSEWHERE.get(last) or ", ".join(difflib.get_close_matches(option, known, 1, 0.8))
    hint = f"; did you mean {close}?" if close and close != option else ""
    return f"{option}: no such option{hint}"


def wrong_value(key: str, value: str) -> str | None:
    """What is wrong with the value of a class-, config- or number-taking option, or ``None``."""
    if key == "data" and "." not in value:
        choices = datamodule_classes()
        if value in choices:
            return None
        stem = value.lower().removesuffix("datamodule")
        close = [n for n in choices if n.lower().removesuffix("datamodule") == stem]
        close += difflib.get_close_matches(value, [n for n in choices if n not in close], n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"--data {value}: no such datamodule; {hint}choose from {', '.join(choices)}"
    if key == "model" and not os.path.isfile(value):
        if value in list_backbones():
            return (
                f"--model takes a config file, and {value!r} is none; the backbone is "
                f"--model.backbone {value}"
            )
        return f"--model {value}: no such config file (--model takes a YAML file of its options)"
    names = _subclass_names(CLASS_OPTIONS[key]) if key in CLASS_OPTIONS else []
    if names and "." not in value and value not in names:  # (our own schedulers included)
        hint = _close(value, names)
        return f"--{key} {value}: no such class{hint} (--{key}.help NAME shows its arguments)"
    if key.rpartition(".")[2] == "lr":
        try:
            finite = math.isfinite(float(value)) and float(value) > 0
        except ValueError:
            finite = False
        if not finite:
            return f"--{key} {value}: lr must be a positive finite number, e.g. 0.1"
    return None


def _number_type(cls: object, name: str) -> tuple[type, bool] | None:
    """``(int or float, whether None is allowed)`` when ``cls``'s argument ``name`` takes only
    numbers, from its type hints; ``None`` for anything else."""
    try:
        hint = typing.get_type_hints(cls.__init__).get(name)  # type: ignore[misc]
    except Exception:  # a hint that does not resolve: no verdict
        return None
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = set(typing.get_args(hint) if union else (hint,))
    optional = type(None) in kinds
    kinds.discard(type(None))
    if not kinds or not kinds <= {int, float}:
        return None
    return (float if float in kinds else int), optional


def wrong_number(key: str, value: str, given: Mapping[str, Any]) -> str | None:
    """What is wrong with the value of a ``--trainer.X``, ``--model.X`` or ``--data.X`` option
    that takes a number, or ``None``."""
    from lightning.pytorch import Trainer

    from lit_classifiers.module import ClassifierModule

    head, _, name = key.rpartition(".")
    owners = {"trainer": Trainer, "model": ClassifierModule}
    owner = owners.get(head) or (
        datamodule_classes().get(str(given.get("data"))) if head == "data" else None
    )
    found = _number_type(owner, name) if owner is not None else None
    if found is None:
        return None
    kind, optional = found
    if optional and value in ("null", "None", "none"):
        return None
    try:
        kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        return f"--{key} {value}: expected {what}{' or null' if optional else ''}"
    return None


def find_mistake(
    args: Sequence[str],
    parsers: Mapping[str, Any],
    configs: Sequence[Mapping[str, Any]],
    subcommands: Sequence[str],
) -> str | None:
    """The first common mistake in ``args`` (a subcommand's command line), as one line.

    ``parsers``: each LightningCLI subcommand's parser; ``configs``: the ``--config`` files'
    contents; ``subcommands``: all subcommands, for the message.
    """
    if not args or args[0] not in parsers:
        if args and not args[0].startswith("-"):
            return f"unknown subcommand {args[0]!r}: one of {', '.join(subcommands)}"
        return f"a subcommand is required: one of {', '.join(subcommands)}"
    try:
        defaults = dict(parsers[args[0]].get_defaults().items())
    except Exception:  # a default that does not validate: no names to compare
        return None
    given = dict(command_line_options(args[1:]))
    for key, value in given.items():
        found = (
            value is not None and (wrong_value(key, value) or wrong_number(key, value, given))
        ) or unknown_option(key, defaults, given)
        if found:
            return found
    for config in configs:
        for key in config_keys(config):
            if found := unknown_option(key, defaults, {}):
                return f"config key {key!r}: {found.split(': ', 1)[1]}"
    data_class = datamodule_classes().get(str(given.get("data")))
    if data_class is not None and not configs:
        signature = inspect.signature(data_class).parameters.values()
        missing = [
            f"--data.{p.name}"
            for p in signature
            if p.default is inspect.Parameter.empty and f"data.{p.name}" not in given
        ]
        if missing:
            return f"{data_class.__name__} needs {', '.join(missing)}"
    if "model.backbone" not in given and not configs:
        return (
            f"--model.backbone is required: one of {', '.join(list_backbones())} "
            "(details: lit-classifiers backbones)"
        )
    return None


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
