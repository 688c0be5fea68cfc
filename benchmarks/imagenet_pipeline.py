"""Benchmark 2b: the ImageNet training pipeline against torchvision's reference, per worker.

On the same JPEG files (real photographs cut to ImageNet's typical 500x375, see ``_data.py``):

* reference: ``ImageFolder`` + PIL + ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` (torchvision's classic ImageNet training input), default collate;
* pil-path: the datamodule's decoder before the fast path, ``RandomResizedCropDecode(...,
  backend="pil")`` (PIL decode, ``draft`` where the crop allows, ``resize(box=...)``), uint8;
* datamodule: ``ImageNetDataModule(...).train_dataset`` and its loader's collate: decode-crop-
  resize to uint8 in the worker, torchvision's decoder where it is faster (``datamodules.
  decoding``), normalisation later, in the training step;
* timm (only where ``timm`` imports): ``ImageFolder`` + timm's training transform
  (``timm.data.create_transform(size, is_training=True, color_jitter=None)``: its
  ``RandomResizedCropAndInterpolation``, flip, ``ToTensor``, ``Normalize``; the colour jitter
  its default adds is left out, as the reference has none), default collate: the loader
  timm's ``create_loader`` builds without its CUDA prefetcher;
* reference-bytes / datamodule-bytes: the same two from the files' bytes held in memory. This
  stands in for the streaming path (a StreamingDataModule decodes tar-member bytes; reading the
  shards is not included) and uses the datamodule's own ``train_transform`` on the bytes.

"Per worker" is measured the way a DataLoader worker runs: in one process with one torch thread,
the dataset's ``__getitem__`` and the collate function over a shuffled pass; the pipelines
alternate ABBA, and every pass records its CPU share (``_common.CpuShare``). Like with like: the
reference's time includes ``ToTensor`` + ``Normalize`` (float32); the datamodule's stops at uint8
and its normalisation runs in the training step. For CPU training that step pays it on the CPU,
so the headline ratio adds the datamodule's ``normalize`` per image (one thread: CPU time per
image, whatever the step's thread count). On a GPU it runs on the device and is measured there
(only when this runs on a CUDA machine; then decoding on the device, nvJPEG through
``datamodules.transforms.decode_encoded``, is measured too).

The output check draws the same crops (same seeds) through every pipeline and compares the
normalised tensors with the reference, in grey levels. It is a gate: the mean must stay within
1 grey level and the maximum within 1 grey level for every crop torchvision decoded, or the
script says FAILED and exits with status 1.

    python benchmarks/imagenet_pipeline.py             # 640 images, 5 repeats
    PEER_PYTHON benchmarks/imagenet_pipeline.py        # an interpreter with timm: + timm
    python benchmarks/imagenet_pipeline.py --quick
"""

from __future__ import annotations

import importlib.util
import io
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
    CpuShare,
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
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets
from torchvision import transforms as T

from datamodules.datasets import FileImageDataset
from datamodules.decoding import decoder_for, resize_uint8
from datamodules.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule
from datamodules.transforms import RandomResizedCropDecode, decode_encoded

PEERS = ["timm"] if importlib.util.find_spec("timm") is not None else []
PIPELINES = ["reference", *PEERS, "pil-path", "datamodule", "reference-bytes", "datamodule-bytes"]
LOADER_PIPELINES = ["reference", *PEERS, "pil-path", "datamodule"]
# ours -> the reference it is compared with
BASELINE = {
    "pil-path": "reference",
    "datamodule": "reference",
    "datamodule-bytes": "reference-bytes",
}
GOAL = 2.0
GATE_MEAN = 1.0  # grey levels, mean |difference| to the reference
GATE_MAX = 1.0 + 1e-3  # grey levels, any pixel of a torchvision-decoded crop (float rounding)


def reference_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    return T.Compose(
        [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class BytesDataset(Dataset):
    """Encoded images held in memory, decoded by ``decode(data, name)`` (the streaming case)."""

    def __init__(
        self, blobs: list[bytes], labels: list[int], names: list[str], decode: Callable
    ) -> None:
        self.blobs, self.labels, self.names, self.decode = blobs, labels, names, decode

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.decode(self.blobs[index], self.names[index]), self.labels[index]


def build(data_dir: Path, size: int, batch: int) -> dict[str, Any]:
    dm = ImageNetDataModule(
        str(data_dir), image_size=size, batch_size=batch, num_workers=0, cache_dir=None
    )
    dm.setup("fit")
    ours = dm.train_dataset
    assert isinstance(ours, FileImageDataset)
    transform = dm.train_transform
    assert isinstance(transform, RandomResizedCropDecode) and transform.backend == "auto"
    collate = dm.train_dataloader().collate_fn
    # normalize_us times the layout the loader really gives
    sample = collate([ours[0], ours[1]])[0]
    assert sample.is_contiguous(memory_format=torch.channels_last), sample.stride()
    pil_transform = RandomResizedCropDecode(
        size, transform.scale, transform.ratio, transform.hflip, transform.mode, backend="pil"
    )
    pil = FileImageDataset(ours.root, ours.paths, ours.labels, pil_transform, ours.on_bad_image)
    reference = datasets.ImageFolder(str(data_dir / "train"), transform=reference_transform(size))

    paths = [ours.path(i) for i in range(len(ours))]
    blobs = [Path(p).read_bytes() for p in paths]
    labels = [int(x) for x in ours.labels]
    ref_bytes = reference_transform(size)

    def reference_decode(data: bytes, name: str) -> torch.Tensor:
        # what ImageFolder's pil_loader does, from memory
        return ref_bytes(Image.open(io.BytesIO(data)).convert("RGB"))

    def ours_decode(data: bytes, name: str) -> torch.Tensor:
        return transform(data, name=name)

    peers = {}
    if "timm" in PEERS:
        from timm.data import create_transform

        timm_transform = create_transform(size, is_training=True, color_jitter=None)
        peers["timm"] = (
            datasets.ImageFolder(str(data_dir / "train"), timm_transform),
            default_collate,
        )
    return {
        **peers,
        "reference": (reference, default_collate),
        "pil-path": (pil, collate),
        "datamodule": (ours, collate),
        "reference-bytes": (BytesDataset(blobs, labels, paths, reference_decode), default_collate),
        "datamodule-bytes": (BytesDataset(blobs, labels, paths, ours_decode), collate),
        "_dm": dm,
        "_paths": paths,
    }


def one_pass(dataset: Dataset, collate: Callable, order: np.ndarray, batch: int) -> CpuShare:
    """``__getitem__`` + collate over ``order``, as one worker does it (wall time, CPU share)."""
    with CpuShare(1) as meter:
        for i in range(0, len(order), batch):
            collate([dataset[int(j)] for j in order[i : i + batch]])
    return meter


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
    """Same seeds through every pipeline; |difference| of the normalised tensors to the
    reference's, in grey levels (0..255) of the un-normalised image, split by the decoder the
    datamodule chose for the crop."""
    dm = built["_dm"]
    transform: RandomResizedCropDecode = dm.train_transform
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    names = ["pil-path", "datamodule", "datamodule-bytes", "reference-bytes"]
    means: dict[str, list[float]] = {k: [] for k in names}
    maxes = {k: {"torchvision": 0.0, "pil": 0.0} for k in names}
    decoders = {"torchvision": 0, "pil": 0}
    shapes_ok = True
    n = min(count, len(built["reference"][0]))
    for i in range(n):
        seed = 1000 + i
        torch.manual_seed(seed)
        with Image.open(built["_paths"][i]) as header:
            decoder = decoder_for(header, transform._box(header), (size, size), transform.mode)
        decoders[decoder] += 1
        torch.manual_seed(seed)
        ref, _ = built["reference"][0][i]
        for name in names:
            torch.manual_seed(seed)
            ours, _ = built[name][0][i]
            normalised = ours if ours.is_floating_point() else dm.normalize(ours.unsqueeze(0))[0]
            shapes_ok &= normalised.shape == ref.shape and normalised.dtype == ref.dtype
            grey = ((normalised - ref) * std).abs()
            means[name].append(float(grey.mean()))
            maxes[name][decoder] = max(maxes[name][decoder], float(grey.max()))
    result: dict[str, Any] = {
        "images": n,
        "crops_by_decoder": decoders,
        "same_shape_and_dtype": bool(shapes_ok),
    }
    for name in names:
        result[name] = {
            "mean_abs_grey_levels": float(np.mean(means[name])) if means[name] else math.nan,
            "max_abs_grey_levels_torchvision_crops": maxes[name]["torchvision"],
            "max_abs_grey_levels_pil_crops": maxes[name]["pil"],
        }
    gated = ["datamodule", "datamodule-bytes"]
    result["gate"] = {
        "mean_at_most": GATE_MEAN,
        "max_at_most_on_torchvision_crops": GATE_MAX,
        "passed": bool(
            shapes_ok
            and n > 0
            and all(result[k]["mean_abs_grey_levels"] <= GATE_MEAN for k in gated)
            and all(maxes[k]["torchvision"] <= GATE_MAX for k in gated)
        ),
    }
    return result


def normalize_us(dm: ImageNetDataModule, batch: int, size: int, repeats: int, device: str) -> float:
    """Median microseconds per image of the datamodule's ``normalize`` on a uint8 batch laid
    out as its loaders give them (channels-last, ``datamodules.datasets.stack_channels_last``),
    each result dropped before the next call, as a training step drops its batch."""
    hwc = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    images = hwc.permute(0, 3, 1, 2)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    dm.normalize(images)
    sync()
    times = []
    for _ in range(max(3, repeats)):
        start = time.perf_counter()
        dm.normalize(images)
        sync()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times)) / batch


def gpu_figures(built: dict, size: int, batch: int, repeats: int) -> dict[str, Any]:
    """On a CUDA device: normalisation there, and decoding there (nvJPEG, batched)."""
    if not torch.cuda.is_available():
        return {"measured": False, "why": "no CUDA device on this machine"}
    dm = built["_dm"]
    transform: RandomResizedCropDecode = dm.train_transform
    paths = built["_paths"]
    torch.manual_seed(0)
    encoded = [transform.encode(p) for p in paths]  # what workers would send
    batches = [encoded[i : i + batch] for i in range(0, len(encoded), batch)]
    decode_encoded(batches[0], size, transform.mode, device="cuda")  # warm-up (nvJPEG init)
    torch.cuda.synchronize()
    times = []
    for _ in range(max(2, repeats)):
        start = time.perf_counter()
        for chunk in batches:
            decode_encoded(chunk, size, transform.mode, device="cuda")
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "measured": True,
        "device": torch.cuda.get_device_name(),
        "normalize_us_per_image": normalize_us(dm, batch, size, repeats, "cuda"),
        "decode_on_device_ips": summarize([len(encoded) / t for t in times]),
        "encode_in_worker_note": "header parse + crop/flip draw; not timed here",
    }


def breakdown(
    files: list[Path], size: int, repeats: int, dm: ImageNetDataModule
) -> list[tuple[str, float]]:
    """Median microseconds per image of each stage, over the same files and crop boxes."""
    from torchvision.io import ImageReadMode, decode_jpeg

    torch.manual_seed(0)
    boxes = []
    decoders = []
    for f in files:
        with Image.open(f) as im:
            top, left, h, w = T.RandomResizedCrop.get_params(im, [0.08, 1.0], [3 / 4, 4 / 3])
            boxes.append((left, top, left + w, top + h))
            decoders.append(decoder_for(im, boxes[-1], (size, size)))
    blobs = [f.read_bytes() for f in files]
    pil = [Image.open(f).convert("RGB") for f in files]
    crops = [
        im.resize((size, size), Image.Resampling.BILINEAR, box=b)
        for im, b in zip(pil, boxes, strict=True)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tensors = [
            decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=ImageReadMode.RGB)
            for b in blobs
        ]
    to_tensor_norm = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def pil_decode() -> None:
        for f in files:
            with Image.open(f) as im:
                im.convert("RGB")

    def pil_header() -> None:
        for b in blobs:
            with Image.open(io.BytesIO(b)) as im:
                im.size  # noqa: B018 - the header parse is the work

    def tv_decode() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for b in blobs:
                decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8), ImageReadMode.RGB)

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
            resize_uint8(t[:, top:bottom, left:right], (size, size))

    def reference_tail() -> None:
        for c in crops:
            to_tensor_norm(c)

    stages = [
        ("read file bytes", read),
        ("PIL: header only (Image.open, the reference's and the datamodule's)", pil_header),
        ("PIL: open + full decode + RGB", pil_decode),
        ("PIL: resize(box) to 224, antialiased bilinear", pil_resize),
        ("PIL image -> uint8 tensor (np.array)", to_uint8_tensor),
        ("reference only: ToTensor + Normalize (float32)", reference_tail),
        ("torchvision decode_jpeg (libjpeg-turbo)", tv_decode),
        ("torch: uint8 antialiased bilinear resize (resize_uint8)", torch_resize),
    ]
    dct = sum(max(size / (r - left), size / (b - t)) <= 0.5 for left, t, r, b in boxes)
    results = [
        ("share of crops where DCT scaling (draft) applies, %", 100.0 * dct / len(boxes)),
        (
            "share of crops decoded by torchvision (decoder_for), %",
            100.0 * decoders.count("torchvision") / len(decoders),
        ),
    ]
    for name, fn in stages:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        results.append((name, 1e6 * float(np.median(times)) / len(files)))
    results.append(
        (
            "datamodule.normalize in the step (batch 64, 1 thread)",
            normalize_us(dm, 64, size, repeats, "cpu"),
        )
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640, help="training images to write")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument(
        "--quality",
        type=int,
        default=98,
        help="JPEG quality of the files (98: ~100 KB mean, near ImageNet's ~110 KB)",
    )
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
            "pipeline, alternated ABBA; *-bytes: decoded from bytes in memory (streaming "
            "stand-in)",
            flush=True,
        )
        built = build(root, args.size, args.batch_size)
        dm = built["_dm"]
        n = len(built["reference"][0])
        order = np.random.default_rng(0).permutation(n)

        for name in PIPELINES:  # warm-up: imports, first-call allocations
            ds, collate = built[name]
            one_pass(ds, collate, order[: min(n, args.batch_size)], args.batch_size)
        per_worker: dict[str, list[float]] = {p: [] for p in PIPELINES}
        shares: dict[str, list[float]] = {p: [] for p in PIPELINES}
        for _, name in alternating(PIPELINES, repeats):
            ds, collate = built[name]
            meter = one_pass(ds, collate, order, args.batch_size)
            per_worker[name].append(n / meter.wall)
            shares[name].append(meter.share)

        loader: dict[str, dict[str, list[float]]] = {}
        for workers in [w for w in args.loader_workers if w > 0]:
            loader[str(workers)] = {p: [] for p in LOADER_PIPELINES}
            for _, name in alternating(LOADER_PIPELINES, max(2, repeats // 2)):
                ds, collate = built[name]
                loader[str(workers)][name].append(loader_ips(ds, collate, args.batch_size, workers))

        check = output_check(built, args.check_images, args.size)
        norm_cpu_us = normalize_us(dm, args.batch_size, args.size, repeats, "cpu")
        gpu = gpu_figures(built, args.size, args.batch_size, repeats)
        stages = breakdown(files[: min(len(files), 160)], args.size, max(1, repeats // 2) + 1, dm)

    summaries = {p: summarize(v) for p, v in per_worker.items()}
    min_share = {p: min(v) for p, v in shares.items()}
    median_share = {p: float(np.median(v)) for p, v in shares.items()}
    us = {p: 1e6 / summaries[p]["median"] for p in PIPELINES}  # per image, one worker
    ratio_uint8 = {p: us[BASELINE[p]] / us[p] for p in BASELINE}
    ratio_cpu = {p: us[BASELINE[p]] / (us[p] + norm_cpu_us) for p in BASELINE}
    gpu_norm = gpu.get("normalize_us_per_image") if gpu["measured"] else None
    ratio_gpu = {p: us[BASELINE[p]] / us[p] for p in BASELINE} if gpu["measured"] else None

    ratio_peer = {peer: us[peer] / (us["datamodule"] + norm_cpu_us) for peer in PEERS}
    rows = []
    for p in PIPELINES:
        base = BASELINE.get(p)
        rows.append(
            [
                p,
                fmt(summaries[p], "img/s"),
                f"{median_share[p]:.2f} ({min_share[p]:.2f})",
                f"{us[p]:.0f}",
                f"{ratio_uint8[p]:.2f}x vs {base}" if base else "1.00x" if p == "reference" else "",
                f"{ratio_cpu[p]:.2f}x" if base else "",
            ]
        )
    print()
    print(
        table(
            rows,
            [
                "per worker (1 process, 1 thread)",
                "median [min..max]",
                "CPU share median (min)",
                "us/img",
                "uint8 (normalisation left out)",
                "+ normalisation in a CPU step",
            ],
        )
    )
    for workers, values in loader.items():
        s = {p: summarize(v) for p, v in values.items()}
        r = s["reference"]["median"]
        print()
        print(
            table(
                [[p, fmt(s[p], "img/s"), f"{s[p]['median'] / r:.2f}x"] for p in LOADER_PIPELINES],
                [f"DataLoader, {workers} worker(s)", "median [min..max]", "vs reference"],
            )
        )
    print(
        f"\nnormalisation in the training step (datamodule.normalize, batch {args.batch_size}, "
        f"1 thread = CPU time per image): {norm_cpu_us:.0f} us/image on this CPU; on a GPU: "
        + (f"{gpu_norm:.1f} us/image ({gpu['device']})" if gpu_norm is not None else "not measured")
    )
    if gpu["measured"]:
        print(
            f"decoding on the device (decode_encoded, nvJPEG, batch {args.batch_size}): "
            f"{fmt(gpu['decode_on_device_ips'], 'img/s')}"
        )
    else:
        print("decoding on the device (nvJPEG): not measured (no CUDA device)")
    c = check

    def max_text(name: str, decoder: str) -> str:
        if not c["crops_by_decoder"][decoder]:
            return "n/a (no such crop)"
        return f"{c[name][f'max_abs_grey_levels_{decoder}_crops']:.2f}"

    print(
        f"output check on {c['images']} images with identical seeds ({c['crops_by_decoder']}): "
        f"same shape and dtype after normalisation: {c['same_shape_and_dtype']}"
    )
    print(
        table(
            [
                [
                    k,
                    f"{c[k]['mean_abs_grey_levels']:.3f}",
                    max_text(k, "torchvision"),
                    max_text(k, "pil"),
                ]
                for k in ("datamodule", "datamodule-bytes", "pil-path", "reference-bytes")
            ],
            ["vs reference", "mean |diff|", "max, crops torchvision decodes", "max, PIL's crops"],
        )
    )
    gate = c["gate"]
    print(
        f"output gate (datamodule and datamodule-bytes: mean <= {GATE_MEAN:g}, max <= 1 grey "
        f"level on torchvision's crops): {'passed' if gate['passed'] else 'FAILED'}"
    )
    print("\nWhere a worker's time goes (median us per image, same files and crop boxes):")
    print(table([[name, f"{v:.0f}"] for name, v in stages], ["stage", "us/image (or %)"]))
    for peer, ratio in ratio_peer.items():
        verdict = "ahead" if ratio > 1 else "BEHIND"
        print(
            f"\ndatamodule vs {peer} per worker, normalisation counted in a CPU step: "
            f"{ratio:.2f}x ({verdict})"
        )
    folders, streaming = ratio_cpu["datamodule"], ratio_cpu["datamodule-bytes"]
    print(
        f"\ngoal >= {GOAL:.1f}x the reference per worker, normalisation counted in a CPU step: "
        f"folders {folders:.2f}x ({'MET' if folders >= GOAL else 'NOT MET'}), streaming "
        f"stand-in (bytes) {streaming:.2f}x ({'MET' if streaming >= GOAL else 'NOT MET'}); "
        + (
            f"GPU (normalisation on the device): folders {ratio_gpu['datamodule']:.2f}x, "
            f"bytes {ratio_gpu['datamodule-bytes']:.2f}x"
            if ratio_gpu
            else "GPU: not measured"
        )
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
            "cpu_share_min": min_share,
            "cpu_share_median": median_share,
            "cpu_share_raw": shares,
            "ratio_vs_reference": {
                "uint8_normalisation_left_out": ratio_uint8,
                "cpu_training_normalisation_counted": ratio_cpu,
                "gpu_normalisation_on_device": ratio_gpu,
            },
            "ratio_vs_peers_cpu_training": ratio_peer,
            "dataloader_ips": {
                w: {p: summarize(v) for p, v in vals.items()} for w, vals in loader.items()
            },
            "normalize_us_per_image_cpu_1_thread": norm_cpu_us,
            "gpu": gpu,
            "output_check": check,
            "breakdown_us_per_image": dict(stages),
            "goal": GOAL,
            "goal_met_cpu_training": {
                "folders": folders >= GOAL,
                "streaming_bytes": streaming >= GOAL,
            },
            "raw": per_worker,
        },
    )
    return 0 if gate["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
