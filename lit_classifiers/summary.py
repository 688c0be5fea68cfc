"""The table of registered backbones: parameters, measured FLOPs, input sizes and papers.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device
(no memory, no arithmetic), for one image at the backbone's default input size unless another
is given. They are reported as multiply-accumulates (GMACs), the unit torchvision and most
papers call "FLOPs".
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lit_classifiers.registry import get_backbone_info, list_backbones

__all__ = ["backbone_summary", "count_macs", "format_table"]


def count_macs(name: str, input_size: int | None = None, num_classes: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of backbone ``name`` on one square image."""
    info = get_backbone_info(name)
    size = input_size or info.default_input_size
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        model = info.builder(**kwargs).eval()
        image = torch.empty(1, getattr(model, "in_channels", 3), size, size)
    with FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops() // 2


def backbone_summary(
    pattern: str | None = None, input_size: int | None = None, flops: bool = True
) -> list[dict[str, Any]]:
    """One row per registered backbone matching ``pattern`` (fnmatch), in natural name order;
    ``num_params`` and ``gmacs`` are those of the default ``num_classes``."""
    rows = []
    for name in list_backbones(pattern):
        row = get_backbone_info(name).as_dict()
        if flops:
            size = input_size or row["default_input_size"]
            row["flops_input_size"] = size
            row["gmacs"] = count_macs(name, size) / 1e9
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`backbone_summary` rows, for terminals and notebooks."""
    columns = [
        ("name", "name", "{}"),
        ("family", "family", "{}"),
        ("params", "num_params", "{:,}"),
        ("classes", "num_classes", "{}"),  # the params are counted at the default classes
        ("GMACs", "gmacs", "{:.3f}"),
        ("at", "flops_input_size", "{}"),
        ("min", "min_input_size", "{}"),
        ("default", "default_input_size", "{}"),
        ("torchvision", "torchvision_name", "{}"),
        ("paper", "paper", "{}"),
    ]
    columns = [c for c in columns if rows and c[1] in rows[0]]
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row[key] is None else fmt.format(row[key]) for _, key, fmt in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
