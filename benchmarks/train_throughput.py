"""Benchmark 3 (CPU): training images/s of each backbone family at its usual input size.

For every backbone: fp32, bf16-mixed, channels_last and both, alternated within one run.
A training step is what a plain PyTorch loop does (forward and cross-entropy under
``torch.autocast('cpu', torch.bfloat16)`` for bf16-mixed, exactly what Lightning's
``precision="bf16-mixed"`` does; backward; SGD with momentum), on synthetic in-memory data so
that only the network is measured.

    python benchmarks/train_throughput.py        # alexnet vgg11 resnet18 resnet50 resnet20
    python benchmarks/train_throughput.py --backbones vgg16 resnet56 --batch-size 16
    python benchmarks/train_throughput.py --quick  # seconds: a smoke run
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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

from lit_classifiers import create_backbone, get_backbone_info

DEFAULT_BACKBONES = ["alexnet", "vgg11", "resnet18", "resnet50", "resnet20"]


@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool
    channels_last: bool


VARIANTS = [
    Variant("fp32", False, False),
    Variant("bf16-mixed", True, False),
    Variant("fp32+channels_last", False, True),
    Variant("bf16-mixed+channels_last", True, True),
]


HEADER = ["backbone", "input", "variant", "median [min..max]", "vs fp32", "min cpu share"]


def default_batch_size(input_size: int) -> int:
    return 128 if input_size <= 64 else 16


class Runner:
    """One variant's model, optimizer and batch; ``step()`` is one training iteration."""

    def __init__(self, base: torch.nn.Module, variant: Variant, x: torch.Tensor, y: torch.Tensor):
        memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
        self.memory_format = memory_format
        self.model = copy.deepcopy(base).to(memory_format=memory_format).train()
        self.x = x.contiguous(memory_format=memory_format)
        self.y = y
        self.bf16 = variant.bf16
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # frees the gradients between steps


def measure(
    runner: Runner, warmup: int, min_steps: int, min_time: float, batch: int, threads: int
) -> tuple[float, float]:
    """(images/s, CPU share) over timed steps after ``warmup`` untimed ones.

    The number of timed steps is fixed before timing, from the last warm-up step's duration,
    so that a measurement lasts about ``min_time`` seconds.
    """
    last = 0.0
    for _ in range(warmup):
        start = time.perf_counter()
        runner.step()
        last = time.perf_counter() - start
    steps = max(min_steps, math.ceil(min_time / last) if last > 0 else min_steps)
    with CpuShare(threads) as meter:
        for _ in range(steps):
            runner.step()
    return steps * batch / meter.wall, meter.share


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=None, help="registered names or 'all'")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16, 128 at <=64px")
    parser.add_argument("--input-size", type=int, default=None, help="default: each one's own")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each timing")
    parser.add_argument("--min-steps", type=int, default=2, help="timed steps per measurement")
    parser.add_argument("--min-time", type=float, default=4.0, help="seconds per measurement")
    args = parser.parse_args(argv)

    if args.quick:
        backbones = args.backbones or ["resnet20"]
        input_size, batch_size = args.input_size or 32, args.batch_size or 4
        repeats, warmup, min_steps, min_time = args.repeats or 1, 1, 1, 0.0
    else:
        backbones = args.backbones or DEFAULT_BACKBONES
        input_size, batch_size = args.input_size, args.batch_size
        repeats, warmup, min_steps, min_time = (
            args.repeats or 3,
            args.warmup,
            args.min_steps,
            args.min_time,
        )
    if backbones == ["all"]:
        from lit_classifiers import list_backbones

        backbones = list_backbones()

    if args.wait_idle is not None:
        wait_for_idle(args.wait_idle, args.wait_timeout)
    # one thread in quick mode: no OpenMP barriers to stall when the machine is busy
    threads = set_threads(args.threads or (1 if args.quick else None))
    info = machine_info(threads)
    print_header("Training throughput on CPU (synthetic data, plain loop)", info)
    print(f"# variants alternated ABBA, {repeats} repeats, {warmup} warm-up steps per timing")

    results: dict[str, dict] = {}
    rows = []
    for name in backbones:
        bi = get_backbone_info(name)
        side = input_size or bi.default_input_size
        batch = batch_size or default_batch_size(side)
        torch.manual_seed(0)
        base = create_backbone(name)
        with torch.no_grad():
            num_classes = base.eval()(torch.zeros(2, 3, side, side)).shape[1]
        x = torch.randn(batch, 3, side, side)
        y = torch.randint(0, num_classes, (batch,))
        runners = {v.name: Runner(base, v, x, y) for v in VARIANTS}
        del base
        samples: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
        shares: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
        for _, variant in alternating(VARIANTS, repeats):
            ips, share = measure(runners[variant.name], warmup, min_steps, min_time, batch, threads)
            samples[variant.name].append(ips)
            shares[variant.name].append(share)
        del runners
        fp32 = summarize(samples["fp32"])["median"]
        results[name] = {"input_size": side, "batch_size": batch, "family": bi.family}
        for v in VARIANTS:
            s = summarize(samples[v.name])
            results[name][v.name] = {
                **s,
                "speedup_vs_fp32": s["median"] / fp32,
                "raw": samples[v.name],
                "min_cpu_share": min(shares[v.name]),
            }
            rows.append(
                [
                    name,
                    f"{side}px b{batch}",
                    v.name,
                    fmt(s, "img/s"),
                    f"{s['median'] / fp32:.2f}x",
                    f"{min(shares[v.name]):.2f}",
                ]
            )
        print(table(rows[-len(VARIANTS) :], HEADER))
        print(flush=True)

    print("Summary (median images/s, training, CPU; cpu share < ~0.9 = contended):")
    print(table(rows, HEADER))
    emit(
        "train_throughput",
        info,
        {"repeats": repeats, "warmup_steps": warmup, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
