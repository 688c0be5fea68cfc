"""Benchmark 2b: the ImageNet training pipeline against torchvision's reference, per worker.

On the same JPEG files (real photographs cut to ImageNet's typical 500x375, see ``_data.py``):

* reference: ``ImageFolder`` + PIL + ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` (torchvision's classic ImageNet training input), default collate;
* datamodule: ``ImageNetDataModule(...).train_dataset`` and its loader's collate, i.e.
  decode-crop-resize to uint8 in the worker (``datamodules.transforms.RandomResizedCropDecode``),
  normalisation later on the accelerator;
* prototype: the same dataset with ``prototype_decode.FastRandomResizedCropDecode`` (see there).

"Per worker" is measured the way a DataLoader worker runs: in one process with one torch thread,
the dataset's ``__getitem__`` and the collate function over a shuffled pass; the pipelines
alternate ABBA. A DataLoader with real worker processes (batch IPC included) checks the figures.
The output check draws the same crops (same seeds) through all pipelines and compares the
normalised tensors.

    python benchmarks/imagenet_pipeline.py             # 640 images, 5 repeats
    python benchmarks/imagenet_pipeline.py --quick
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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
from _data import photo_sources, write_photo_tree
from PIL import Image
from prototype_decode import FastRandomResizedCropDecode, _resize_uint8
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image

from datamodules.datasets import FileImageDataset
from datamodules.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule

PIPELINES = ["reference", "datamodule", "prototype"]


def reference_dataset(train_dir: Path, size: int) -> Dataset:
    transform = T.Compose(
        [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return datasets.ImageFolder(str(train_dir), transform=transform)


def build(data_dir: Path, size: int, batch: int) -> dict[str, tuple[Dataset, Callable]]:
    dm = ImageNetDataModule(
        str(data_dir), image_size=size, batch_size=batch, num_workers=0, cache_dir=None
    )
    dm.setup("fit")
    ours = dm.train_dataset
    assert isinstance(ours, FileImageDataset)
    collate = dm.train_dataloader().collate_fn
    proto = FileImageDataset(
        ours.root, ours.paths, ours.labels, FastRandomResizedCropDecode(size), ours.on_bad_image
    )
    return {
        "reference": (reference_dataset(data_dir / "train", size), default_collate),
        "datamodule": (ours, collate),
        "prototype": (proto, collate),
        "_dm": dm,  # type: ignore[dict-item]
    }


def one_pass(dataset: Dataset, collate: Callable, order: np.ndarray, batch: int) -> float:
    """Seconds for ``__getitem__`` + collate over ``order``, as one worker does it."""
    start = time.perf_counter()
    for i in range(0, len(order), batch):
        collate([dataset[int(j)] for j in order[i : i + batch]])
    return time.perf_counter() - start


def loader_ips(dataset: Dataset, collate: Callable, batch: int, workers: int) -> float:
    """Images/s through a real DataLoader, from the first batch on (worker start excluded)."""
    batch = max(1, min(batch, len(dataset) // 5))  # at least a few timed batches
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate
    )
    it = iter(loader)
    next(it)
    count = 0
    start = time.perf_counter()
    for images, _ in it:
        count += len(images)
    return count / (time.perf_counter() - start)


def output_check(built: dict, count: int, size: int) -> dict[str, Any]:
    """Same seeds through every pipeline; differences of the normalised tensors, in grey levels
    (0..255) of the un-normalised image."""
    dm = built["_dm"]
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    diffs: dict[str, list[float]] = {"datamodule": [], "prototype": []}
    maxes: dict[str, float] = {"datamodule": 0.0, "prototype": 0.0}
    shapes_ok = True
    n = min(count, len(built["reference"][0]))
    for i in range(n):
        torch.manual_seed(1000 + i)
        ref, _ = built["reference"][0][i]
        for name in ("datamodule", "prototype"):
            torch.manual_seed(1000 + i)
            ours, _ = built[name][0][i]
            normalised = dm.normalize(ours.unsqueeze(0))[0]
            shapes_ok &= normalised.shape == ref.shape and normalised.dtype == ref.dtype
            grey = ((normalised - ref) * std).abs()
            diffs[name].append(float(grey.mean()))
            maxes[name] = max(maxes[name], float(grey.max()))
    return {
        "images": n,
        "same_shape_and_dtype": bool(shapes_ok),
        **{
            f"{k}_mean_abs_grey_levels": float(np.mean(v)) if v else math.nan
            for k, v in diffs.items()
        },
        **{f"{k}_max_abs_grey_levels": v for k, v in maxes.items()},
    }


def breakdown(files: list[Path], size: int, repeats: int) -> list[tuple[str, float]]:
    """Median microseconds per image of each stage, over the same files and crop boxes."""
    torch.manual_seed(0)
    boxes = []
    for f in files:
        with Image.open(f) as im:
            top, left, h, w = T.RandomResizedCrop.get_params(im, [0.08, 1.0], [3 / 4, 4 / 3])
            boxes.append((left, top, left + w, top + h))
    blobs = [f.read_bytes() for f in files]
    pil = [Image.open(f).convert("RGB") for f in files]
    crops = [
        im.resize((size, size), Image.Resampling.BILINEAR, box=b)
        for im, b in zip(pil, boxes, strict=True)
    ]
    tensors = [
        decode_image(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=ImageReadMode.RGB)
        for b in blobs
    ]
    to_tensor_norm = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def pil_decode() -> None:
        for f in files:
            with Image.open(f) as im:
                im.convert("RGB")

    def tv_decode() -> None:
        for b in blobs:
            decode_image(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=ImageReadMode.RGB)

    def read() -> None:
        for f in files:
            f.read_bytes()

    def pil_resize() -> None:
        for im, b in zip(pil, boxes, strict=True):
            im.resize((size, size), Image.Resampling.BILINEAR, box=b)

    def to_uint8_tensor() -> None:
        for c in crops:
            torch.from_numpy(np.array(c)).permute(2, 0, 1)

    def torch_resize() -> None:
        for t, (left, top, right, bottom) in zip(tensors, boxes, strict=True):
            _resize_uint8(t[:, top:bottom, left:right], size, size)

    def reference_tail() -> None:
        for c in crops:
            to_tensor_norm(c)

    stages = [
        ("read file bytes", read),
        ("PIL: open + full decode + RGB", pil_decode),
        ("PIL: resize(box) to 224, antialiased bilinear", pil_resize),
        ("PIL image -> uint8 tensor (np.array)", to_uint8_tensor),
        ("reference only: ToTensor + Normalize (float32)", reference_tail),
        ("torchvision.io.decode_image (libjpeg-turbo)", tv_decode),
        ("torch: uint8 antialiased bilinear resize", torch_resize),
    ]
    dct = sum(max(size / (r - left), size / (b - t)) <= 0.5 for left, t, r, b in boxes)
    results = [("share of crops where DCT scaling (draft) applies, %", 100.0 * dct / len(boxes))]
    for name, fn in stages:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        results.append((name, 1e6 * float(np.median(times)) / len(files)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640, help="training images to write")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--quality", type=int, default=97, help="JPEG quality of the files")
    parser.add_argument("--size", type=int, default=224, help="training crop side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--loader-workers", type=int, nargs="*", default=[1], help="DataLoader checks (0: none)"
    )
    parser.add_argument("--check-images", type=int, default=64, help="images in output check")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.classes, args.batch_size, args.check_images = 32, 2, 16, 8
        args.loader_workers = []
        repeats = args.repeats or 1
    else:
        repeats = args.repeats or 5
    per_class = max(1, args.images // args.classes)

    warnings.filterwarnings("ignore", ".*class names are the WordNet ids.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.wait_idle is not None:
        wait_for_idle(args.wait_idle, args.wait_timeout)
    torch.set_num_threads(1)  # what every DataLoader worker runs with
    info = machine_info(1)
    print_header("ImageNet training pipeline vs torchvision's reference, per worker", info)

    with tempfile.TemporaryDirectory(prefix="bench-imagenet-") as tmp:
        root = Path(tmp)
        files = write_photo_tree(root / "train", args.classes, per_class, args.quality, seed=0)
        write_photo_tree(root / "val", args.classes, 1, args.quality, seed=1)
        sizes = [f.stat().st_size for f in files]
        shapes: dict[str, int] = {}
        for f in files:
            with Image.open(f) as im:
                key = f"{im.size[0]}x{im.size[1]}"
                shapes[key] = shapes.get(key, 0) + 1
        sources = [p.name for p in photo_sources()]
        print(
            f"# {len(files)} JPEGs (quality {args.quality}, mean {np.mean(sizes) / 1024:.0f} KB, "
            f"shapes {shapes}) cut from {len(sources)} bundled photographs: {', '.join(sources)}"
        )
        print(
            f"# crop {args.size}, batch {args.batch_size}, 1 torch thread, {repeats} passes per "
            "pipeline, alternated ABBA",
            flush=True,
        )
        built = build(root, args.size, args.batch_size)
        n = len(built["reference"][0])
        order = np.random.default_rng(0).permutation(n)

        for name in PIPELINES:  # warm-up: imports, first-call allocations
            ds, collate = built[name]
            one_pass(ds, collate, order[: min(n, args.batch_size)], args.batch_size)
        per_worker: dict[str, list[float]] = {p: [] for p in PIPELINES}
        for _, name in alternating(PIPELINES, repeats):
            ds, collate = built[name]
            per_worker[name].append(n / one_pass(ds, collate, order, args.batch_size))

        loader: dict[str, dict[str, list[float]]] = {}
        for workers in [w for w in args.loader_workers if w > 0]:
            loader[str(workers)] = {p: [] for p in PIPELINES}
            for _, name in alternating(PIPELINES, max(2, repeats // 2)):
                ds, collate = built[name]
                loader[str(workers)][name].append(loader_ips(ds, collate, args.batch_size, workers))

        check = output_check(built, args.check_images, args.size)

        dm = built["_dm"]
        batch = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), dtype=torch.uint8)
        torch.set_num_threads(args.threads or int(info["usable_cpus"]))
        dm.normalize(batch)
        norm_times = []
        for _ in range(max(3, repeats)):
            start = time.perf_counter()
            dm.normalize(batch)
            norm_times.append(time.perf_counter() - start)
        torch.set_num_threads(1)
        norm_us = 1e6 * float(np.median(norm_times)) / args.batch_size
        stages = breakdown(files[: min(len(files), 160)], args.size, max(1, repeats // 2) + 1)

    summaries = {p: summarize(v) for p, v in per_worker.items()}
    ref = summaries["reference"]["median"]
    rows = [
        [p, fmt(summaries[p], "img/s"), f"{summaries[p]['median'] / ref:.2f}x"] for p in PIPELINES
    ]
    print()
    print(table(rows, ["per worker (1 process, 1 thread)", "median [min..max]", "vs reference"]))
    for workers, values in loader.items():
        s = {p: summarize(v) for p, v in values.items()}
        r = s["reference"]["median"]
        print()
        print(
            table(
                [[p, fmt(s[p], "img/s"), f"{s[p]['median'] / r:.2f}x"] for p in PIPELINES],
                [f"DataLoader, {workers} worker(s)", "median [min..max]", "vs reference"],
            )
        )
    print(
        f"\nnormalisation moved to the device: {norm_us:.1f} us/image on this CPU "
        f"({args.threads or info['usable_cpus']} threads), ~0 on a GPU"
    )
    print(
        f"output check on {check['images']} images with identical seeds: same shape and dtype "
        f"after normalisation: {check['same_shape_and_dtype']}; mean |diff| vs reference "
        f"{check['datamodule_mean_abs_grey_levels']:.3f} grey levels (datamodule), "
        f"{check['prototype_mean_abs_grey_levels']:.3f} (prototype); max "
        f"{check['datamodule_max_abs_grey_levels']:.1f} / "
        f"{check['prototype_max_abs_grey_levels']:.1f}"
    )
    print("\nWhere a worker's time goes (median us per image, same files and crop boxes):")
    print(table([[name, f"{us:.0f}"] for name, us in stages], ["stage", "us/image (or %)"]))
    ratio_dm = summaries["datamodule"]["median"] / ref
    ratio_proto = summaries["prototype"]["median"] / ref
    print(
        f"\ngoal >= 1.5x the reference per worker: datamodule {ratio_dm:.2f}x "
        f"({'MET' if ratio_dm >= 1.5 else 'NOT MET'}), prototype {ratio_proto:.2f}x "
        f"({'MET' if ratio_proto >= 1.5 else 'NOT MET'})"
    )
    emit(
        "imagenet_pipeline",
        info,
        {
            "files": {
                "count": len(files),
                "mean_bytes": float(np.mean(sizes)),
                "quality": args.quality,
                "shapes": shapes,
                "sources": sources,
            },
            "per_worker_ips": summaries,
            "ratio_vs_reference": {"datamodule": ratio_dm, "prototype": ratio_proto},
            "dataloader_ips": {
                w: {p: summarize(v) for p, v in vals.items()} for w, vals in loader.items()
            },
            "normalize_us_per_image_cpu": norm_us,
            "output_check": check,
            "breakdown_us_per_image": dict(stages),
            "goal_met": {"datamodule": ratio_dm >= 1.5, "prototype": ratio_proto >= 1.5},
            "raw": per_worker,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
