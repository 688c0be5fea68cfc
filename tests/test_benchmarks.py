"""Smoke test of the benchmark scripts: each runs with ``--quick`` as a real subprocess and must
print its figures. No timing is asserted: the figures of a loaded CI machine mean nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PREFIX = "BENCHMARK_RESULT "

# script -> (keys its result must hold, a line its report must print)
SCRIPTS = {
    "lightning_overhead.py": (
        ["plain_steady_ips", "lightning_steady_ips", "ratio_steady", "ratio_end_to_end"],
        "b/a per pair",
    ),
    "stl10_loader.py": (
        ["per_worker_ips", "dataloader_ips", "resnet18_train_ips", "fed_training_ips"],
        "goal (the loader is never the bottleneck)",
    ),
    "imagenet_pipeline.py": (
        [
            "per_worker_ips",
            "cpu_share_min",
            "ratio_vs_reference",
            "normalize_us_per_image_cpu_1_thread",
            "output_check",
            "breakdown_us_per_image",
        ],
        "goal >= 2.0x the reference per worker, normalisation counted in a CPU step",
    ),
    "imagenet_setup.py": (["setup_s", "cached_speedup", "cache_bytes"], "cached is"),
    "train_throughput.py": (["results"], "Summary (median images/s"),
    "end_to_end.py": (
        ["ratio_wall", "plain", "fit", "runs"],
        "fit / plain wall time",
    ),
    "gpu_resnet50.py": (["ips", "reference_nvidia_a100_amp", "goal_h100"], "dry run on CPU"),
}


def finite_numbers(value: object) -> list[float]:
    """Every number in a nested JSON value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in finite_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in finite_numbers(v)]
    return []


def test_every_script_is_covered() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SCRIPTS)


def run_quick(
    scripts: list[str], tmp_path: Path, parallel: int, timeout_s: float = 300.0
) -> dict[str, tuple]:
    """Run ``script --quick`` for every script, ``parallel`` at a time; (returncode, out, err).
    A run still going after ``timeout_s`` seconds in all is killed and reported as failed."""
    deadline = time.monotonic() + timeout_s
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    pending = list(scripts)
    running: dict[str, subprocess.Popen] = {}
    results: dict[str, tuple] = {}
    files = {}
    while pending or running:
        while pending and len(running) < parallel:
            script = pending.pop(0)
            workdir = tmp_path / script.removesuffix(".py")
            workdir.mkdir()
            out, err = open(workdir / "stdout", "w+"), open(workdir / "stderr", "w+")  # noqa: SIM115
            files[script] = (out, err)
            running[script] = subprocess.Popen(
                [sys.executable, str(BENCHMARKS / script), "--quick"],
                stdout=out,
                stderr=err,
                text=True,
                cwd=workdir,  # nothing may be written into the checkout
                env=env,  # TMPDIR stays short: DataLoader workers bind AF_UNIX sockets in it
            )
        for script, proc in list(running.items()):
            if proc.poll() is None and time.monotonic() > deadline:
                proc.kill()
                proc.wait()
            if proc.poll() is not None:
                out, err = files[script]
                out.seek(0)
                err.seek(0)
                results[script] = (proc.returncode, out.read(), err.read())
                out.close()
                err.close()
                del running[script]
        time.sleep(0.05)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_run_prints_its_figures(script: str, tmp_path: Path) -> None:
    # One script a test, so that pytest-xdist spreads them over its workers.
    ((returncode, stdout, stderr),) = run_quick([script], tmp_path, parallel=1).values()
    check_output(script, returncode, stdout, stderr, tmp_path / script.removesuffix(".py"))


def check_output(script: str, returncode: int, stdout: str, stderr: str, workdir: Path) -> None:
    assert returncode == 0, stderr[-3000:]
    keys, line = SCRIPTS[script]
    assert line in stdout, stdout[-3000:]
    results = [ln for ln in stdout.splitlines() if ln.startswith(PREFIX)]
    assert len(results) == 1, stdout[-3000:]
    result = json.loads(results[0][len(PREFIX) :])
    assert result["benchmark"] == script.removesuffix(".py")
    assert result["machine"]["torch_threads"] >= 1
    for key in keys:
        assert key in result, key
        numbers = finite_numbers(result[key])
        assert numbers, key
        assert all(math.isfinite(x) and x >= 0 for x in numbers), (key, result[key])
    if script == "imagenet_setup.py":
        assert result["cache_hit"] is True
    if script == "imagenet_pipeline.py":  # the output gate passed (else the exit status is 1)
        check = result["output_check"]
        assert check["gate"]["passed"] is True and check["images"] > 0, check
        for pipeline in ("datamodule", "datamodule-bytes"):
            assert check[pipeline]["max_abs_grey_levels_torchvision_crops"] <= 1.001, check
    assert not (workdir / "runs").exists(), "a benchmark left a runs/ folder behind"
    assert not (workdir / "lightning_logs").exists(), "a benchmark left lightning_logs/ behind"
