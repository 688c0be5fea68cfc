"""Multi-node training, executed: the README's ``torchrun`` command run as two "nodes" on this
machine (gloo on CPU, loopback), and the SLURM script in ``examples/`` checked against what
Lightning's ``SLURMEnvironment`` reads."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
import yaml
from helpers.cli import REPO, TINY, cli_env, run_cli, run_dirs, scalars
from helpers.fresh import read_report
from jsonargparse import Namespace

from lit_classifiers.cli import cli_main
from lit_classifiers.run_folders import RUN_VERSION_ENV, claim_version, is_launching_process

README = REPO / "README.md"
SBATCH = REPO / "examples" / "slurm" / "train_imagenet.sbatch"
TORCHRUN = Path(sys.executable).with_name("torchrun")
# Options naming files that exist only on the cluster the README has in mind.
CLUSTER_ONLY = {"--config", "--data.data_dir"}
# 37 validation images: on 2 ranks Lightning's sampler pads one, which exact evaluation drops.
SMALL_VAL = ["--data.val_split=37", "--trainer.limit_val_batches=1.0"]
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "MASTER_ADDR")

requires_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this torch build has no torch.distributed with the gloo backend",
)


# ---------------------------------------------------------------------- reading the documents
def _shell_commands(text: str) -> list[list[str]]:
    """Every command of a shell text, backslash continuations joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    return [
        shlex.split(line, comments=True)
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _options(words: list[str], where: str) -> list[tuple[str, str]]:
    """``--key value`` / ``--key=value`` pairs, in order."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        assert word.startswith("--"), f"{where}: expected an --option, got {word!r} in {words}"
        if "=" in word:
            key, value = word.split("=", 1)
            i += 1
        else:
            assert i + 1 < len(words), f"{where}: {word} has no value"
            key, value = word, words[i + 1]
            i += 2
        pairs.append((key, value))
    return pairs


def _value(pairs: list[tuple[str, str]], key: str, where: str) -> str:
    values = [v for k, v in pairs if k == key]
    assert values, f"{where} does not set {key}"
    return values[-1]


def readme_torchrun() -> tuple[list[tuple[str, str]], str, list[tuple[str, str]]]:
    """The README's torchrun line: torchrun's options, the subcommand, the CLI's options."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = [c for b in blocks for c in _shell_commands(b) if c and c[0] == "torchrun"]
    assert len(commands) == 1, f"README.md shows {len(commands)} torchrun commands, expected one"
    words = commands[0]
    assert "-m" in words and words[words.index("-m") + 1] == "lit_classifiers", words
    at = words.index("-m")
    launcher = _options(words[1:at], "README's torchrun options")
    subcommand, *cli = words[at + 2 :]
    return launcher, subcommand, _options(cli, "README's lit_classifiers options")


def sbatch_script() -> tuple[dict[str, str], list[str]]:
    """The example's ``#SBATCH`` options and its ``srun`` command."""
    text = SBATCH.read_text(encoding="utf-8")
    directives = dict(_options(re.findall(r"^#SBATCH\s+(\S+)", text, flags=re.M), "#SBATCH lines"))
    sruns = [c for c in _shell_commands(text) if c and c[0] == "srun"]
    assert len(sruns) == 1, f"{SBATCH} has {len(sruns)} srun commands, expected one"
    return directives, sruns[0]


def srun_trainer(srun: list[str]) -> dict[str, str]:
    """``--trainer.*`` options of the script's ``srun ... -m lit_classifiers fit ...``."""
    at = srun.index("-m")
    assert srun[at + 1 : at + 3] == ["lit_classifiers", "fit"], srun
    cli = [w for w in srun[at + 3 :] if w != "$@"]
    return {k: v for k, v in _options(cli, f"{SBATCH.name}'s srun") if k.startswith("--trainer.")}


def printed_config(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """What ``lit-classifiers <args> --print_config`` prints in the repository, parsed."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["lit-classifiers"])  # not pytest's own arguments
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        cli_main([*args, "--print_config"])
    assert stop.value.code in (0, None), args
    return yaml.safe_load(out.getvalue())


# ---------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (torchrun starts its workers in their own sessions, so
    signalling torchrun's process group would miss them)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _stop(process: subprocess.Popen) -> None:
    """End a torchrun and the workers it started, by their ids."""
    if process.poll() is not None:
        return
    workers = _children(process.pid)
    process.terminate()  # torchrun passes SIGTERM on to its workers and waits for them
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):  # it ended with torchrun
            os.kill(pid, signal.SIGKILL)


def run_nodes(commands: list[list[str]], cwd: Path, timeout: float = 240) -> list[str]:
    """Start one command per "node" at once; all must succeed. Returns each one's output."""
    env = cli_env(OMP_NUM_THREADS="1")
    for name in LAUNCH_VARIABLES:
        env.pop(name, None)
    logs = [cwd / f"node{i}.log" for i in range(len(commands))]
    processes = []
    timed_out = False
    try:
        for command, log in zip(commands, logs, strict=True):
            with open(log, "w") as out:
                processes.append(
                    subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out, text=True)
                )
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        for process in processes:
            _stop(process)
    outputs = [log.read_text(errors="replace") for log in logs]
    for i, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, (
            f"node {i} ended with {process.returncode}"
            f"{f' (stopped after {timeout:.0f} s)' if timed_out else ''}:\n{output[-3000:]}"
        )
    return outputs


# ---------------------------------------------------------------------- torchrun
def test_readme_torchrun_command_is_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher, subcommand, cli = readme_torchrun()
    where = "README's torchrun command"
    assert subcommand == "fit"
    assert _value(launcher, "--nnodes", where) == _value(cli, "--trainer.num_nodes", where)
    assert _value(launcher, "--nproc_per_node", where) == _value(cli, "--trainer.devices", where)
    assert re.fullmatch(r"\S+:\d+", _value(launcher, "--rdzv_endpoint", where))
    config = printed_config([subcommand, *(f"{k}={v}" for k, v in cli)], monkeypatch)
    assert config["trainer"]["num_nodes"] == int(_value(cli, "--trainer.num_nodes", where))
    # Lightning types devices as int | str | list: "8" stays a string.
    assert int(config["trainer"]["devices"]) == int(_value(cli, "--trainer.devices", where))
    assert config["model"]["backbone"] == "resnet50"


@pytest.mark.slow
@requires_gloo
def test_readme_torchrun_on_two_nodes_writes_one_run_with_single_process_metrics(
    tmp_path: Path,
) -> None:
    """The README's command as 2 nodes x 1 process: one run folder, one checkpoint, and the
    validation metrics it logged are those one process computes from its checkpoint."""
    launcher, subcommand, readme_cli = readme_torchrun()
    port = _free_port()
    launch = {
        **dict(launcher),
        "--nnodes": "2",
        "--nproc_per_node": "1",
        "--rdzv_endpoint": f"127.0.0.1:{port}",
        # Both "nodes" are this machine: workers reach each other on loopback, not on whatever
        # address the host name resolves to.
        "--local_addr": "127.0.0.1",
    }
    kept = [f"{k}={v}" for k, v in readme_cli if k not in CLUSTER_ONLY]
    cli = [*TINY, *kept, *SMALL_VAL, "--trainer.accelerator=cpu"]
    nodes = ["--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1"]
    torchrun = [str(TORCHRUN), *(f"{k}={v}" for k, v in launch.items())]
    command = [*torchrun, "-m", "lit_classifiers", subcommand, *cli, *nodes]

    outputs = run_nodes([command, command], cwd=tmp_path)

    joined = "\n".join(outputs)
    # One process group of two, not two single-process runs.
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in joined and "GLOBAL_RANK: 1, MEMBER: 2/2" in joined
    assert [p.name for p in run_dirs(tmp_path)] == ["version_0"], joined[-3000:]
    run_dir = tmp_path / "runs" / "digits-resnet20" / "version_0"
    assert [p.name for p in run_dir.glob("config*.yaml")] == ["config.yaml"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["num_nodes"] == 2
    assert saved["trainer"]["logger"]["init_args"]["version"] is None  # reruns get a new folder
    assert len(list(tmp_path.rglob("last.ckpt"))) == 1
    logged = scalars(run_dir)
    assert len(logged["val/acc1"]) == 1

    single = tmp_path / "one_process"
    single.mkdir()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    one = ["--trainer.strategy=auto", "--trainer.num_nodes=1", "--trainer.devices=1"]
    # One process: this one, through the command's main (a subprocess adds ~5 s of imports, and
    # `python -m lit_classifiers` itself is what the two nodes above ran).
    run_cli("validate", *cli, *one, "--ckpt_path", ckpt, cwd=single)
    reference = scalars(run_dirs(single)[0])
    assert logged["val/acc1"] == reference["val/acc1"]  # k/37 exactly, each image counted once
    assert logged["val/loss"] == pytest.approx(reference["val/loss"], rel=1e-5)


# ---------------------------------------------------------------------- SLURM
def test_sbatch_script_matches_its_trainer_options(monkeypatch: pytest.MonkeyPatch) -> None:
    syntax = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    directives, srun = sbatch_script()
    trainer = srun_trainer(srun)
    # The command parses as written, with the script's default data folder.
    at = srun.index("-m")
    args = [w.replace("$DATA_DIR", "data/imagenet") for w in srun[at + 2 :] if w != "$@"]
    config = printed_config(args, monkeypatch)
    assert config["trainer"]["num_nodes"] == int(trainer["--trainer.num_nodes"])
    assert int(config["trainer"]["devices"]) == int(trainer["--trainer.devices"])
    per_device = config["data"]["init_args"]["batch_size"]
    assert int(directives["--nodes"]) * int(directives["--ntasks-per-node"]) * per_device == 256
    assert directives["--nodes"] == trainer["--trainer.num_nodes"]
    assert directives["--ntasks-per-node"] == trainer["--trainer.devices"]
    assert directives["--gres"] == f"gpu:{directives['--ntasks-per-node']}"
    # Lightning raises for --ntasks > 1 without --ntasks-per-node, and skips SLURM for these names.
    assert "--ntasks" not in directives
    assert directives["--job-name"] not in ("bash", "interactive")


#: Step 5 of the shared fresh interpreter (helpers/fresh.py), which calls it with its cases and
#: the environment the process started with.
SLURM_PROBE = '''
def slurm_tasks(cases, clean):
    """Each case's trainer as Lightning sets it up in that task, in a folder of its own."""
    import os
    from pathlib import Path
    from lit_classifiers.cli import cli_main

    results = []
    for case in cases:
        os.environ.clear()
        os.environ.update(clean, **case["env"])
        folder = Path(case["folder"])
        folder.mkdir()
        os.chdir(folder)
        trainer = cli_main(case["args"], run=False).trainer
        environment = trainer.strategy.cluster_environment
        launched = None
        if type(environment).__name__ == "SLURMEnvironment":
            # What fit() does first: check the settings against SLURM's, start no process
            # (srun started them), then run the given function.
            try:
                launched = trainer.strategy.launcher.launch(lambda: "launched")
            except ValueError as error:
                launched = str(error)
        results.append({
            "launched": launched,
            "environment": type(environment).__name__,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "main_address": environment.main_address,
            "main_port": environment.main_port,
            "runs": sorted(str(p.relative_to(folder)) for p in folder.glob("runs/*/*")),
        })
    return results
'''


def slurm_layout() -> tuple[int, int, list[tuple[int, int]]]:
    """Nodes, tasks per node, and the (node, local rank) of the tasks looked at: the first, the
    last node's first, the last."""
    directives, _ = sbatch_script()
    nodes, per_node = int(directives["--nodes"]), int(directives["--ntasks-per-node"])
    return nodes, per_node, [(0, 0), (nodes - 1, 0), (nodes - 1, per_node - 1)]


def slurm_cases(folder: Path) -> list[dict]:
    """The environment and command line of each task of :func:`slurm_layout` that srun would
    start with the script, then the first task with too few devices, then named "interactive";
    each runs in its own folder under ``folder``."""
    directives, srun = sbatch_script()
    trainer = srun_trainer(srun)
    nodes, per_node, tasks = slurm_layout()
    # The script's devices are GPUs; this machine has CPUs, which Lightning counts the same way.
    args = [
        *TINY,
        "--trainer.accelerator=cpu",
        *(f"{k}={v}" for k, v in trainer.items()),
    ]
    slurm = {
        "SLURM_NTASKS": str(nodes * per_node),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NAME": directives["--job-name"],
        "SLURM_JOB_ID": "9034217",
        "SLURM_NODELIST": "gpu[017-018]",
    }
    cases = [
        {
            "env": {
                **slurm,
                "SLURM_PROCID": str(node * per_node + local),
                "SLURM_LOCALID": str(local),
                "SLURM_NODEID": str(node),
            },
            "folder": str(folder / f"task{node * per_node + local}"),
            "args": args,
        }
        for node, local in tasks
    ]
    first = cases[0]["env"]
    fewer = [*args, f"--trainer.devices={per_node // 2}"]
    cases.append({"env": first, "folder": str(folder / "mismatch"), "args": fewer})
    interactive = {**first, "SLURM_JOB_NAME": "interactive"}
    cases.append({"env": interactive, "folder": str(folder / "interactive"), "args": args})
    return cases


# slow: each task in a process outside pytest's (one shared with the checks of four other modules,
# helpers/fresh.py): the tasks change its environment, working folder and Lightning's rank
@pytest.mark.slow
def test_slurm_environment_gives_the_ranks_the_script_implies(fresh_interpreter: Path) -> None:
    """Each task srun would start, as Lightning sees it: world size, ranks, the address of the
    first node, and a run folder claimed by task 0 alone."""
    report = read_report(fresh_interpreter)["slurm"]
    assert "error" not in report, report.get("error")
    seen = report["results"]
    nodes, per_node, tasks = slurm_layout()
    assert len(seen) == len(tasks) + 2

    for (node, local), task in zip(tasks, seen[: len(tasks)], strict=True):
        rank = node * per_node + local
        assert task == {
            "launched": "launched",
            "environment": "SLURMEnvironment",
            "world_size": nodes * per_node,
            "global_rank": rank,
            "local_rank": local,
            "node_rank": node,
            "main_address": "gpu017",
            "main_port": 15000 + 4217,  # Lightning: 15000 + the job id's last 4 digits
            "runs": ["runs/digits-resnet20/version_0"] if rank == 0 else [],
        }, (node, local)
    # --trainer.devices other than --ntasks-per-node: the run stops before it starts.
    assert "--ntasks-per-node" in seen[-2]["launched"], seen[-2]
    # Named "interactive", the job is a shell to start processes from, and Lightning leaves it be.
    assert seen[-1]["environment"] != "SLURMEnvironment"
    # Each CLI was built with run=False and never run: the folder task 0 claimed, still empty,
    # went when the process ended, though the process had left that working folder by then.
    assert (fresh_interpreter / "slurm" / "task0" / "runs" / "digits-resnet20").is_dir()
    assert not list((fresh_interpreter / "slurm").glob("*/runs/*/version_*"))


@pytest.mark.parametrize(
    ("variables", "launching"),
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}, True),  # torchrun, node 0, first
        ({"RANK": "8", "LOCAL_RANK": "0", "GROUP_RANK": "1"}, False),  # torchrun, node 1, first
        ({"RANK": "3", "LOCAL_RANK": "3", "GROUP_RANK": "0"}, False),  # torchrun, node 0
        ({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}, True),
        ({"SLURM_PROCID": "8", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}, False),
        ({"NODE_RANK": "1"}, False),  # Lightning's own launcher, started by hand on node 1
    ],
)
def test_only_global_rank_zero_claims_a_run_folder(
    variables: dict[str, str], launching: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(RUN_VERSION_ENV, "")  # restored afterwards, whatever the claim sets
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert is_launching_process() is launching

    monkeypatch.chdir(tmp_path)
    version = claim_version(Namespace(save_dir="runs", name="digits-resnet20", version=None))
    claimed = sorted(p.name for p in (tmp_path / "runs" / "digits-resnet20").glob("*"))
    assert (version, claimed) == ((0, ["version_0"]) if launching else (None, []))
