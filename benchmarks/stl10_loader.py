"""Benchmark 2a: the STL-10 training loader against resnet18's training throughput.

A synthetic ``stl10_binary/`` in the official on-disk format (column-major uint8 planes, labels
1..10; see ``_data.write_stl10_release``) is written to a temporary folder and read by
``STL10DataModule`` with its defaults (96x96, random 12-px reflect-padded shift + horizontal flip,
batch 64, its default number of workers). Measured, alternating ABBA:

* per worker: the training dataset's ``__getitem__`` + collate in one process with one torch
  thread (how a DataLoader worker runs), with and without the default augmentation;
* the datamodule's own ``train_dataloader()`` (real worker processes, batch IPC included);
* resnet18's training throughput at 96x96, batch 64 (fp32 and bf16-mixed+channels_last, all
  threads) from batches held in memory, and the same training loop fed by the real loader (its
  workers then share the machine's cores with training).

    python benchmarks/stl10_loader.py
    python benchmarks/stl10_loader.py --quick
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from _common import (
    CpuShare,
    alternating,
    common_parser,
    emit,
    fmt,
    machine_info,
    print_header,
    set_threads,
    summarize,
    table,
    wait_for_idle,
)
from _data import write_stl10_release
from torch.utils.data import Dataset
from train_throughput import Runner, Variant, measure

from datamodules.stl10 import STL10DataModule
from lit_classifiers import create_backbone


def one_pass(dataset: Dataset, collate: Callable, order: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(order), batch):
        collate([dataset[int(j)] for j in order[i : i + batch]])
    return time.perf_counter() - start


def loader_ips(batches: Iterator[Any], count: int) -> float:
    next(batches)  # worker start-up and the first batch excluded
    images = 0
    start = time.perf_counter()
    for images_batch, _ in itertools.islice(batches, count):
        images += len(images_batch)
    return images / (time.perf_counter() - start)


def train_from(
    runner: Runner, batches: Iterator[Any], dm: STL10DataModule, steps: int, warmup: int
) -> float:
    """Images/s of the training loop fed batch by batch (normalised as on the device)."""
    images = 0
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        x, y = next(batches)
        runner.x = dm.normalize(x).contiguous(memory_format=runner.memory_format)
        runner.y = y
        runner.step()
        if step >= warmup:
            images += len(y)
    return images / (time.perf_counter() - start)


def cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=5000, help="as the real release")
    parser.add_argument("--num-workers", type=int, default=None, help="default: the module's")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per run")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {}
    if args.quick:
        args.train_images, args.steps, warmup = 256, 1, 1
        kwargs = {"batch_size": 8, "num_workers": 1, "image_size": 48}
        repeats = args.repeats or 1
    else:
        repeats, warmup = args.repeats or 4, 2

    if args.wait_idle is not None:
        wait_for_idle(args.wait_idle, args.wait_timeout)
    threads = set_threads(args.threads or (1 if args.quick else None))
    info = machine_info(threads)
    print_header("STL-10 training loader vs resnet18 training throughput", info)

    with tempfile.TemporaryDirectory(prefix="bench-stl10-") as tmp:
        write_stl10_release(tmp, args.train_images, 200, seed=0)
        kwargs["data_dir"] = tmp
        if args.num_workers is not None:
            kwargs["num_workers"] = args.num_workers
        dm = STL10DataModule(**kwargs)
        plain_dm = STL10DataModule(**kwargs, augment=False)
        dm.setup("fit")
        plain_dm.setup("fit")
        batch = dm.batch_size
        variants = {
            "default augmentation": (dm.train_dataset, dm.train_dataloader().collate_fn),
            "no augmentation": (plain_dm.train_dataset, plain_dm.train_dataloader().collate_fn),
        }
        n = len(dm.train_dataset)
        order = np.random.default_rng(0).permutation(n)
        print(
            f"# {n} training images (synthetic, official format), batch {batch}, module default "
            f"num_workers={dm.num_workers}; per-worker figures with 1 torch thread; training "
            f"with {threads} threads; {repeats} repeats ABBA",
            flush=True,
        )

        torch.set_num_threads(1)
        for ds, collate in variants.values():
            one_pass(ds, collate, order[:batch], batch)
        per_worker: dict[str, list[float]] = {k: [] for k in variants}
        for _, name in alternating(list(variants), repeats):
            ds, collate = variants[name]
            per_worker[name].append(n / one_pass(ds, collate, order, batch))
        torch.set_num_threads(threads)

        # resnet18 at 96x96 from memory, and fed by the datamodule's own loader
        torch.manual_seed(0)
        base = create_backbone("resnet18", 10)
        side = dm.image_size
        x = dm.normalize(torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8))
        y = torch.randint(0, 10, (batch,))
        train_variants = [Variant("fp32", False, False), Variant("bf16-mixed+cl", True, True)]
        runners = {v.name: Runner(base, v, x, y) for v in train_variants}
        train_ips: dict[str, list[float]] = {v.name: [] for v in train_variants}
        shares: list[float] = []
        for _, v in alternating(train_variants, repeats):
            ips, share = measure(runners[v.name], warmup, args.steps, 0.0, batch, threads)
            train_ips[v.name].append(ips)
            shares.append(share)
        best = max(train_ips, key=lambda k: summarize(train_ips[k])["median"])

        loader = dm.train_dataloader()
        batches = cycle(loader)
        loader_steps = max(4, min(len(loader) - 1, 40))
        dl_ips = [loader_ips(batches, loader_steps) for _ in range(max(2, repeats // 2))]
        fed: dict[str, list[float]] = {"from memory": [], "from train_dataloader()": []}
        memory = itertools.repeat(
            (torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8), y)
        )
        with CpuShare(threads) as meter:
            for _, source in alternating(list(fed), repeats):
                it = memory if source == "from memory" else batches
                fed[source].append(train_from(runners[best], it, dm, args.steps, warmup))
        del runners

    worker = {k: summarize(v) for k, v in per_worker.items()}
    train = {k: summarize(v) for k, v in train_ips.items()}
    dl = summarize(dl_ips)
    fed_s = {k: summarize(v) for k, v in fed.items()}
    demand = train[best]["median"]
    per_worker_default = worker["default augmentation"]["median"]
    print()
    print(
        table(
            [[k, fmt(s, "img/s")] for k, s in worker.items()]
            + [[f"train_dataloader() ({dm.num_workers} workers, no training)", fmt(dl, "img/s")]],
            ["STL-10 loader", "median [min..max]"],
        )
    )
    print()
    print(
        table(
            [[f"resnet18 {side}px b{batch} {k}", fmt(s, "img/s")] for k, s in train.items()]
            + [[f"{best}, {k}", fmt(s, "img/s")] for k, s in fed_s.items()],
            ["training (CPU)", "median [min..max]"],
        )
    )
    slowdown = fed_s["from train_dataloader()"]["median"] / fed_s["from memory"]["median"]
    print(
        f"\none worker delivers {per_worker_default / demand:.0f}x what resnet18 trains "
        f"({per_worker_default:.0f} vs {demand:.1f} img/s): the loader needs "
        f"{100 * demand / per_worker_default:.1f}% of one core; training fed by the real loader "
        f"runs at {slowdown:.3f}x the in-memory speed (CPU share {meter.share:.2f})"
    )
    goal_met = per_worker_default >= demand and dl["median"] >= demand
    print(f"goal (the loader is never the bottleneck): {'MET' if goal_met else 'NOT MET'}")
    emit(
        "stl10_loader",
        info,
        {
            "train_images": n,
            "batch_size": batch,
            "num_workers": dm.num_workers,
            "per_worker_ips": worker,
            "dataloader_ips": dl,
            "resnet18_train_ips": train,
            "fed_training_ips": fed_s,
            "fed_vs_memory": slowdown,
            "headroom_per_worker": per_worker_default / demand,
            "min_train_cpu_share": min(shares),
            "goal_met": goal_met,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
