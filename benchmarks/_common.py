"""Helpers shared by the benchmark scripts: statistics, machine facts, the result line.

Every script prints a human-readable report and, last, one machine-readable line::

    BENCHMARK_RESULT {"benchmark": "...", ...}

which ``tests/test_benchmarks.py`` parses. Nothing here is timed by tests.

Measurement rules the scripts follow: warm-up iterations are never timed, every figure is the
median of several repeats with its min..max spread, compared variants alternate within one run
(in ABBA order, so neither always goes first), and the number of intra-op threads is stated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

RESULT_PREFIX = "BENCHMARK_RESULT "
T = TypeVar("T")


# ---------------------------------------------------------------------------- statistics
def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the spread (max - min) as a percentage of the median."""
    if not values:
        raise ValueError("no measurements to summarize")
    median = statistics.median(values)
    lo, hi = min(values), max(values)
    spread = 100.0 * (hi - lo) / median if median else math.nan
    return {"median": median, "min": lo, "max": hi, "spread_pct": spread, "n": len(values)}


def fmt(summary: dict[str, float], unit: str = "", digits: int = 1) -> str:
    """``1234.5 img/s [1200.1..1250.0, n=5]``."""
    u = f" {unit}" if unit else ""
    return (
        f"{summary['median']:.{digits}f}{u} "
        f"[{summary['min']:.{digits}f}..{summary['max']:.{digits}f}, n={summary['n']}]"
    )


def alternating(variants: Sequence[T], repeats: int) -> list[tuple[int, T]]:
    """(repeat, variant) in ABBA order: even repeats in the given order, odd ones reversed.

    Over an even number of repeats every variant runs equally often in every position, so a
    slow drift of the machine (thermal, another user's job) cannot favour one of them.
    """
    order: list[tuple[int, T]] = []
    for r in range(repeats):
        seq = list(variants) if r % 2 == 0 else list(reversed(variants))
        order.extend((r, v) for v in seq)
    return order


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took, by ``time.perf_counter``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class CpuShare:
    """Wall time of a ``with`` block and the share of ``threads`` CPUs this process got in it.

    ``share`` = process CPU time / (wall time x threads). A compute-bound block that owns its
    cores scores about 1.0 (OpenMP threads spin rather than sleep); well below that, another
    process took the CPUs and the figure measured contention, not the code.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.wall = 0.0
        self.share = math.nan

    def __enter__(self) -> CpuShare:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        cpu = time.process_time() - self._cpu0
        self.share = cpu / (self.wall * self.threads) if self.wall > 0 else math.nan


# ---------------------------------------------------------------------------- machine facts
def loadavg() -> tuple[float, float, float] | None:
    try:
        with open("/proc/loadavg") as f:
            one, five, fifteen = (float(x) for x in f.read().split()[:3])
        return one, five, fifteen
    except (OSError, ValueError):
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def wait_for_idle(max_load: float = 0.7, timeout_s: float = 600.0, poll_s: float = 15.0) -> None:
    """Sleep until the 1-minute load average is at most ``max_load`` (or ``timeout_s`` passed).

    The machines these run on are shared; a figure measured while someone's test suite runs
    is a figure about their test suite.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        load = loadavg()
        if load is None or load[0] <= max_load:
            return
        if time.monotonic() >= deadline:
            print(f"# load {load[0]:.2f} still above {max_load} after {timeout_s:.0f} s; going on")
            return
        print(f"# 1-minute load {load[0]:.2f} > {max_load}; waiting {poll_s:.0f} s", flush=True)
        time.sleep(poll_s)


def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads`` (default: every usable CPU); returns the number in effect."""
    import torch

    torch.set_num_threads(threads or usable_cpus())
    return torch.get_num_threads()


def machine_info(threads: int | None = None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu_model(),
        "usable_cpus": usable_cpus(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_at_start": loadavg(),
        "command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
    }
    for module in ("torchvision", "lightning", "PIL"):
        mod = sys.modules.get(module)
        if mod is not None:
            info[module] = getattr(mod, "__version__", "?")
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_header(title: str, info: dict[str, Any]) -> None:
    print(f"== {title}")
    load = info.get("loadavg_at_start")
    load_text = "n/a" if load is None else " ".join(f"{x:.2f}" for x in load)
    print(
        f"# {info['date']} | {info['host_cpu']} | {info['usable_cpus']} usable CPUs | "
        f"torch {info['torch']} | torch threads {info['torch_threads']} | load {load_text}"
    )
    print(f"# command: {info['command']}", flush=True)


def emit(benchmark: str, info: dict[str, Any], results: dict[str, Any]) -> None:
    """Print the machine-readable result line (last line of every script)."""
    payload = {"benchmark": benchmark, "machine": info, "loadavg_at_end": loadavg(), **results}
    print(RESULT_PREFIX + json.dumps(payload, default=_json_default), flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: all CPUs)"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        metavar="LOAD",
        help="first wait until the 1-minute load average is <= LOAD (see --wait-timeout)",
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=600.0, help="seconds --wait-idle waits at most"
    )
    return parser


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    text_rows = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in text_rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
