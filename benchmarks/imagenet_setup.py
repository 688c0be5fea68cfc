"""Benchmark 2c: ``ImageNetDataModule.setup()`` on a tree of 100,000 files, first run and cached.

A tree of ``train/<wnid>/*.JPEG`` (1,000 classes x 100 empty files: indexing reads names only)
plus a one-file-per-class ``val/`` is written to a temporary folder. Measured, alternating ABBA:

* first run: ``setup("fit")`` of a new datamodule whose index cache folder is empty (it lists
  every folder, then writes the cache);
* cached: ``setup("fit")`` of a new datamodule with that cache present (one ``stat`` per
  folder instead of listing 100,000 entries);
* for comparison, constructing torchvision's ``ImageFolder`` on the same train folder.

The OS's directory cache is warm in all three (the tree was just written); on a cold cache or
network storage the listing variants get slower and the cached one gains the most.

    python benchmarks/imagenet_setup.py
    python benchmarks/imagenet_setup.py --quick
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import (
    alternating,
    common_parser,
    emit,
    fmt,
    machine_info,
    print_header,
    summarize,
    table,
    wait_for_idle,
)
from _data import write_empty_tree
from torchvision import datasets

from datamodules.files import index_images
from datamodules.imagenet import ImageNetDataModule

VARIANTS = ["first run (no cache)", "cached", "torchvision ImageFolder (train only)"]


def setup_seconds(data_dir: Path, cache_dir: Path) -> float:
    dm = ImageNetDataModule(str(data_dir), cache_dir=str(cache_dir), num_workers=0)
    start = time.perf_counter()
    dm.setup("fit")
    elapsed = time.perf_counter() - start
    assert dm.train_dataset is not None
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=100, help="train files per class")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes, args.per_class = 20, 50
        repeats = args.repeats or 1
    else:
        repeats = args.repeats or 5

    warnings.filterwarnings("ignore", ".*class names are the WordNet ids.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.wait_idle is not None:
        wait_for_idle(args.wait_idle, args.wait_timeout)
    torch.set_num_threads(1)  # indexing is single-threaded Python and file-system calls
    info = machine_info(1)
    print_header("ImageNetDataModule.setup() on a large tree: first run vs cached", info)

    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp:
        root = Path(tmp) / "imagenet"
        start = time.perf_counter()
        train_files = write_empty_tree(root / "train", args.classes, args.per_class)
        val_files = write_empty_tree(root / "val", args.classes, 1)
        written = time.perf_counter() - start
        print(
            f"# {train_files} train + {val_files} val empty files in {args.classes} classes "
            f"(written in {written:.1f} s); {repeats} repeats ABBA",
            flush=True,
        )
        warm = Path(tmp) / "cache-warm"
        setup_seconds(root, warm)  # populates the cache (and warms imports)
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r, variant in alternating(VARIANTS, repeats):
            if variant == VARIANTS[0]:
                cold = Path(tmp) / f"cache-cold-{r}"
                samples[variant].append(setup_seconds(root, cold))
                shutil.rmtree(cold, ignore_errors=True)
            elif variant == VARIANTS[1]:
                samples[variant].append(setup_seconds(root, warm))
            else:
                start = time.perf_counter()
                folder = datasets.ImageFolder(str(root / "train"))
                samples[variant].append(time.perf_counter() - start)
                assert len(folder) == train_files
        from_cache = index_images(root / "train", [warm]).from_cache
        cache_bytes = sum(f.stat().st_size for f in warm.iterdir())

    s = {v: summarize(x) for v, x in samples.items()}
    speedup = s[VARIANTS[0]]["median"] / s[VARIANTS[1]]["median"]
    print()
    print(
        table(
            [[v, fmt(s[v], "s", 3)] for v in VARIANTS],
            [f"setup('fit'), {train_files + val_files} files", "median [min..max]"],
        )
    )
    print(
        f"cached is {speedup:.0f}x faster than the first run; the train index was served from "
        f"the cache: {from_cache}; cache size {cache_bytes / 1024:.0f} KB"
    )
    emit(
        "imagenet_setup",
        info,
        {
            "train_files": train_files,
            "val_files": val_files,
            "classes": args.classes,
            "setup_s": s,
            "cached_speedup": speedup,
            "cache_hit": from_cache,
            "cache_bytes": cache_bytes,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
