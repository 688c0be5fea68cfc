"""Smoke test of the benchmark scripts: each runs with ``--quick`` (all in one subprocess, each as
its own ``__main__``) and must print its figures. No timing is asserted: the figures of a
loaded CI machine mean nothing."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
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


GPU_SESSION = BENCHMARKS / "gpu_session.sh"


def test_gpu_session_names_only_variants_and_tests_that_exist() -> None:
    """A misspelt name would only fail on a lent GPU machine, costing its lease."""
    script = GPU_SESSION.read_text()
    module = ast.parse((BENCHMARKS / "gpu_resnet50.py").read_text())
    variants = next(
        ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "ALL_VARIANTS"
    )
    named = re.findall(r"\b(?:plain|lightning)-[a-z0-9-]+", script)
    assert len(named) == 7 and set(named) <= set(variants)
    tests = re.findall(r"\btests/\S+\.py\b", script)
    assert len(tests) == 2 and all((BENCHMARKS.parent / t).is_file() for t in tests)


def test_gpu_session_refuses_an_unknown_stage_before_starting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(GPU_SESSION), "checks", "compiel"],
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown stage 'compiel' (expected checks, bench or compile)" in result.stderr
    assert not out.exists()


# Runs each script given on its command line with --quick in this one interpreter, in a folder
# of its own, as ``python script --quick`` would (``__main__``, its own sys.argv and working
# directory), and writes what each printed and its exit status beside it. One interpreter
# imports torch and Lightning once for all of them: a process per script spent ~5 s each on it.
RUNNER = """
import contextlib, os, runpy, sys, traceback
from pathlib import Path

for script, workdir in zip(sys.argv[1::2], sys.argv[2::2]):
    os.chdir(workdir)
    status = 0
    with open("stdout", "w") as out, open("stderr", "w") as err:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv = [script, "--quick"]
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            except BaseException:
                traceback.print_exc()
                status = 1
    Path("status").write_text(str(status))
"""


def run_quick(scripts: list[str], tmp_path: Path, timeout_s: float = 600.0) -> dict[str, tuple]:
    """Run ``script --quick`` for every script, one after another in one interpreter (see
    ``RUNNER``); (returncode, stdout, stderr) for each, returncode None for one never reached."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = []
    for script in scripts:
        workdir = tmp_path / script.removesuffix(".py")
        workdir.mkdir()
        args += [str(BENCHMARKS / script), str(workdir)]
    # TMPDIR stays short: DataLoader workers bind AF_UNIX sockets in it.
    subprocess.run([sys.executable, "-c", RUNNER, *args], env=env, timeout=timeout_s, check=False)
    results = {}
    for script in scripts:
        workdir = tmp_path / script.removesuffix(".py")
        status = workdir / "status"
        results[script] = (
            int(status.read_text()) if status.exists() else None,
            (workdir / "stdout").read_text() if (workdir / "stdout").exists() else "",
            (workdir / "stderr").read_text() if (workdir / "stderr").exists() else "",
        )
    return results


@pytest.mark.slow
def test_quick_runs_print_their_figures(tmp_path: Path) -> None:
    results = run_quick(sorted(SCRIPTS), tmp_path)
    for script, (returncode, stdout, stderr) in results.items():
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
