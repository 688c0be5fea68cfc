"""``lit-classifiers backbones [PATTERN]``: the registered backbones as a table (or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lit_classifiers.summary import backbone_summary, format_table

__all__ = ["backbones_main"]


def backbones_main(args: Sequence[str], prog: str = "lit-classifiers backbones") -> int:
    """List the registered backbones with parameters, measured FLOPs and papers."""
    parser = argparse.ArgumentParser(
        prog=prog,
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
        print(f"{prog}: no backbone matches {options.pattern!r}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2) if options.json else format_table(rows))
    return 0
