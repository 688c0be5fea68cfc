"""``--help`` a person reads: each Lightning option's first sentence without docstring markup,
no lists of every importable subclass, the subcommands' own one-line summaries."""

from __future__ import annotations

import argparse
import copy
import inspect
import re
from typing import Any

from jsonargparse import DefaultHelpFormatter

SUBCOMMAND_HELP = {
    "fit": "Train a model; each run gets its own folder runs/<data>-<backbone>/version_N.",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate a checkpoint on the test split.",
    "predict": "Classify images (--data.predict_dir) into a CSV file.",
}
#: Option groups whose help is Lightning's: shown as their first sentence.
_LIGHTNING_GROUPS = ("trainer.", "checkpoint.", "seed_everything", "weights_only")


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
            if not action.option_strings and action.dest in SUBCOMMAND_HELP:
                action.help = SUBCOMMAND_HELP[action.dest]  # not the Trainer's, cut mid-line
            action.help = " ".join(_rst_to_text(action.help).split())
            if action.dest.startswith(_LIGHTNING_GROUPS):
                action.help = _first_sentence(action.help)
            action.extra_help = str  # type: ignore[attr-defined]  (no "known subclasses: ...")
        return super()._get_help_string(action)


def summary(cls: type) -> str:
    return _rst_to_text((inspect.getdoc(cls) or "").strip().split("\n\n")[0].replace("\n", " "))
