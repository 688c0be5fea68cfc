"""Benchmark 3 (GPU): ResNet-50 training images/s at 224x224, bf16-mixed, channels_last, compiled.

Reference: NVIDIA's published 2,470 images/s for ResNet-50 v1.5 training on one A100 80GB with
mixed precision (DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5, DGX A100,
batch 256, pytorch-21.03 NGC container; 938 images/s with TF32). Our goal on one H100: at least
3,000 images/s.

Variants (alternated ABBA, each keeping its model, and so its compiled graph, across repeats):

* ``plain-fp32``: a plain loop, fp32 weights and activations (cuDNN's default TF32 convolutions),
  NCHW, eager;
* ``plain-bf16-cl``: the plain loop under ``torch.autocast(bfloat16)``, channels_last, eager;
* ``plain-bf16-cl-compile``: the same with ``torch.compile``;
* ``lightning-bf16-cl``: ``Trainer.fit`` on ``ClassifierModule`` built by the project's CLI with
  its defaults (logger, checkpointing, LR monitor, progress bar) plus
  ``--trainer.precision bf16-mixed --model.channels_last true``;
* ``lightning-bf16-cl-compile``: the same with ``--model.compile true``: the headline figure;
* ``lightning-bf16-cl-jpeg``: ``lightning-bf16-cl`` fed from JPEG files through
  ``ImageFolderDataModule`` (RandomResizedCrop + flip fused into decoding in ``--workers``
  loader workers, uint8 batches normalised on the device);
* ``lightning-bf16-cl-jpeg-decode-cuda``: the same with ``--data.decode_device cuda`` (workers
  read the files and draw the crops, nvJPEG decodes each batch on the GPU). On a CPU dry run
  ``decode_device cpu`` stands in for it: the same path, decoded in the main process.

The synthetic variants' data is resident on the device (a normalised float batch), so their
figure is the training step's, not a data pipeline's (NVIDIA's includes a DALI pipeline); the
JPEG variants add the project's input pipeline (16 classes instead of 1,000: a 2048x16 instead of
a 2048x1000 last layer). The JPEG files are ``--jpeg-unique`` photographs cut from the bundled
ones (ImageNet's 500x375-like sizes), hard-linked until one epoch holds every step, so no epoch
boundary falls in a run. SGD with momentum 0.9 (the module's default), cuDNN benchmark mode on
for every variant. Timing: ``torch.cuda.synchronize()`` at the end of the last warm-up step and at
the end of the last timed step, so each timed step includes fetching (and decoding) its batch.

    python benchmarks/gpu_resnet50.py                       # on a CUDA machine
    python benchmarks/gpu_resnet50.py --device cpu --steps 2 --warmup 1 --batch-size 4 \\
        --image-size 64 --repeats 1                         # dry run of every code path
    python benchmarks/gpu_resnet50.py --quick               # CPU, eager only: a smoke run

``benchmarks/gpu_session.sh`` runs it, with the CUDA tests and a fit on a folder, on a lent GPU
machine as one prepared script (benchmarks/README.md, section 3).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    alternating,
    common_parser,
    emit,
    fmt,
    machine_info,
    print_header,
    set_threads,
    summarize,
    table,
    usable_cpus,
    wait_for_idle,
)
from _data import write_photo_tree
from lightning.pytorch import Callback, LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_classifiers import create_backbone
from lit_classifiers.cli import cli_main

NVIDIA_A100_AMP = 2470.0
NVIDIA_A100_TF32 = 938.0
GOAL_H100 = 3000.0
NUM_CLASSES = 1000
ALL_VARIANTS = [
    "plain-fp32",
    "plain-bf16-cl",
    "plain-bf16-cl-compile",
    "lightning-bf16-cl",
    "lightning-bf16-cl-compile",
    "lightning-bf16-cl-jpeg",
    "lightning-bf16-cl-jpeg-decode-cuda",
]
JPEG_CLASSES = 16
HEADLINE = "lightning-bf16-cl-compile"

# set by main() before the CLI instantiates the datamodule
_BATCH: tuple[torch.Tensor, torch.Tensor] | None = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RepeatedBatch(Dataset):
    """The same device-resident ``(images, labels)`` batch, ``length`` times."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], length: int) -> None:
        self.batch = batch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch


class SyntheticDeviceData(LightningDataModule):
    """``steps`` identical device-resident batches (no host work, no copies)."""

    num_classes = NUM_CLASSES
    in_channels = 3
    class_names = None

    def __init__(self, steps: int = 10) -> None:
        super().__init__()
        self.steps = steps

    def train_dataloader(self) -> DataLoader:
        assert _BATCH is not None
        return DataLoader(RepeatedBatch(_BATCH, self.steps), batch_size=None, shuffle=False)


class SyncedWindow(Callback):
    """Synchronised wall time from the end of training step ``warmup - 1`` to the end of step
    ``warmup + steps - 1`` (counted from 0): ``steps`` whole steps, each fetching its batch."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        if warmup < 1:
            raise ValueError(
                f"--warmup must be at least 1 (the window opens after it), got {warmup}"
            )
        self.first, self.last, self.device = warmup - 1, warmup + steps - 1, device
        self.seen = 0
        self.start = self.end = 0.0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int):
        if self.seen in (self.first, self.last):
            synchronize(self.device)
            now = time.perf_counter()
            if self.seen == self.first:
                self.start = now
            else:
                self.end = now
        self.seen += 1


class PlainVariant:
    def __init__(self, name: str, device: torch.device) -> None:
        self.bf16 = "bf16" in name
        self.memory_format = torch.channels_last if "-cl" in name else torch.contiguous_format
        torch.manual_seed(0)
        model = create_backbone("resnet50", NUM_CLASSES).to(
            device, memory_format=self.memory_format
        )
        self.model = torch.compile(model) if name.endswith("-compile") else model
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4
        )
        self.device = device

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, batch: tuple[torch.Tensor, torch.Tensor], warmup: int, steps: int) -> float:
        for _ in range(warmup):
            self.step(*batch)
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(*batch)
        synchronize(self.device)
        return steps * len(batch[1]) / (time.perf_counter() - start)


def write_jpeg_folder(root: str, unique: int, images: int) -> tuple[int, int]:
    """``root/train/<class>/`` with at least ``images`` JPEG files, at least ``unique`` of them
    distinct (the rest hard links to them), and one per class in ``root/val/``; returns the
    numbers of training files and of distinct ones."""
    per_class = max(1, math.ceil(unique / JPEG_CLASSES))
    files = write_photo_tree(os.path.join(root, "train"), JPEG_CLASSES, per_class)
    for index in range(len(files), images):
        source = files[index % len(files)]
        os.link(source, source.with_name(f"{source.stem}_{index}{source.suffix}"))
    for source in files[::per_class]:
        target = os.path.join(root, "val", source.parent.name)
        os.makedirs(target, exist_ok=True)
        os.link(source, os.path.join(target, source.name))
    return max(images, len(files)), len(files)


class LightningVariant:
    def __init__(
        self, name: str, device: torch.device, workdir: str, jpeg_dir: str | None, workers: int
    ) -> None:
        self.name, self.device, self.workdir = name, device, workdir
        self.jpeg_dir, self.workers = jpeg_dir, workers
        self.compile = name.endswith("-compile")
        self.model: Any = None  # the first fit's module is reused: it keeps its compiled graph

    def data_args(self, batch: tuple[torch.Tensor, torch.Tensor], total: int) -> list[str]:
        if "-jpeg" not in self.name:
            return ["--data", f"{__name__}.SyntheticDeviceData", "--data.steps", str(total)]
        assert self.jpeg_dir is not None
        if self.name.endswith("-decode-cuda"):
            decode = "cuda" if self.device.type == "cuda" else "cpu"
        else:
            decode = "worker"
        return [
            "--data",
            "ImageFolderDataModule",
            "--data.data_dir",
            self.jpeg_dir,
            "--data.batch_size",
            str(len(batch[1])),
            "--data.image_size",
            str(batch[0].shape[-1]),
            "--data.num_workers",
            str(self.workers),
            "--data.decode_device",
            decode,
            "--trainer.limit_val_batches",
            "0",
            "--trainer.num_sanity_val_steps",
            "0",
        ]

    def run(self, batch: tuple[torch.Tensor, torch.Tensor], warmup: int, steps: int) -> float:
        total = warmup + steps
        args = [
            "--model.backbone",
            "resnet50",
            "--model.channels_last",
            "true",
            "--model.compile",
            str(self.compile).lower(),
            *self.data_args(batch, total),
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.accelerator",
            "gpu" if self.device.type == "cuda" else "cpu",
            "--trainer.devices",
            "1",
            "--trainer.max_epochs",
            "1",
            "--trainer.max_steps",
            str(total),
            "--trainer.benchmark",
            "true",
            "--trainer.logger.init_args.save_dir",
            tempfile.mkdtemp(dir=self.workdir),
        ]
        cli = cli_main(args, run=False)
        if self.model is None:
            self.model = cli.model
        window = SyncedWindow(warmup, steps, self.device)
        cli.trainer.callbacks.append(window)
        cli.trainer.fit(self.model, datamodule=cli.datamodule)
        compiled = getattr(self.model.backbone, "_compiled_call_impl", None) is not None
        assert compiled == self.compile, f"{self.name}: backbone compiled = {compiled}"
        return steps * len(batch[1]) / (window.end - window.start)


def main(argv: list[str] | None = None) -> int:
    global _BATCH
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps before each run")
    parser.add_argument("--variants", nargs="+", default=None, choices=ALL_VARIANTS)
    parser.add_argument(
        "--workers", type=int, default=None, help="loader workers of the JPEG variants (all CPUs)"
    )
    parser.add_argument(
        "--jpeg-unique", type=int, default=1024, help="distinct JPEG files of the JPEG variants"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.batch_size, args.image_size = "cpu", 2, 32
        args.steps, args.warmup, args.jpeg_unique = 1, 1, JPEG_CLASSES
        args.workers = args.workers or 1
        variants = args.variants or [
            "plain-bf16-cl",
            "lightning-bf16-cl",
            "lightning-bf16-cl-jpeg-decode-cuda",
        ]
        repeats = args.repeats or 1
    else:
        variants = args.variants or ALL_VARIANTS
        repeats = args.repeats or 3
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; for a dry run pass --device cpu (see --help)")

    for pattern in (
        ".*val/acc1.*",
        ".*does not have many workers.*",
        ".*args parameter is intended.*",
        ".*smaller than the logging interval.*",
        ".*no `val_dataloader`.*",
    ):
        warnings.filterwarnings("ignore", pattern)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.wait_idle is not None:
        wait_for_idle(args.wait_idle, args.wait_timeout)
    threads = set_threads(args.threads or (1 if args.quick else None))
    torch.backends.cudnn.benchmark = True
    info = machine_info(threads)
    info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print_header(f"ResNet-50 training throughput on {info['device']}", info)
    print(
        f"# {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.warmup} warm-up "
        f"+ {args.steps} timed steps per run, {repeats} repeats ABBA; variants: "
        f"{', '.join(variants)}",
        flush=True,
    )

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)
    _BATCH = (images.to(device), labels.to(device))

    results: dict[str, list[float]] = {v: [] for v in variants}
    compile_s: dict[str, float] = {}
    workers = args.workers or usable_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as workdir:
        jpeg_dir = None
        if any("-jpeg" in v for v in variants):
            images = args.batch_size * (args.warmup + args.steps)
            start = time.perf_counter()
            jpeg_dir = os.path.join(workdir, "jpeg")
            files, distinct = write_jpeg_folder(jpeg_dir, args.jpeg_unique, images)
            print(
                f"# JPEG variants: {files} training files ({distinct} distinct, written "
                f"in {time.perf_counter() - start:.1f} s), {workers} loader workers",
                flush=True,
            )
        runners: dict[str, Any] = {
            v: LightningVariant(v, device, workdir, jpeg_dir, workers)
            if v.startswith("lightning")
            else None
            for v in variants
        }
        for r, v in alternating(variants, repeats):
            if runners[v] is None:
                runners[v] = PlainVariant(v, device)
            start = time.perf_counter()
            ips = runners[v].run(_BATCH, args.warmup, args.steps)
            if r == 0:  # the first run of a variant pays for compilation
                compile_s[v] = time.perf_counter() - start
            results[v].append(ips)
            print(f"  {v:28s} {ips:9.1f} img/s", file=sys.stderr, flush=True)

    s = {v: summarize(x) for v, x in results.items()}
    rows = [
        [
            v,
            fmt(s[v], "img/s"),
            f"{s[v]['median'] / NVIDIA_A100_AMP:.2f}x",
            f"{compile_s.get(v, 0):.0f} s",
        ]
        for v in variants
    ]
    print()
    print(table(rows, ["variant", "median [min..max]", "vs NVIDIA A100 AMP 2470", "first run (s)"]))
    headline = s.get(HEADLINE, {}).get("median")
    on_gpu = device.type == "cuda"
    if headline is not None and on_gpu:
        verdict = "MET" if headline >= GOAL_H100 else "NOT MET"
        print(f"\n{HEADLINE}: {headline:.0f} img/s; goal >= {GOAL_H100:.0f} on one H100: {verdict}")
    elif not on_gpu:
        print("\ndry run on CPU: code paths checked; GPU figures pending a GPU session")
    emit(
        "gpu_resnet50",
        info,
        {
            "device": info["device"],
            "config": {
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "steps": args.steps,
                "warmup": args.warmup,
                "repeats": repeats,
            },
            "ips": s,
            "first_run_s": compile_s,
            "reference_nvidia_a100_amp": NVIDIA_A100_AMP,
            "goal_h100": GOAL_H100,
            "goal_met": (headline >= GOAL_H100) if (headline is not None and on_gpu) else None,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
