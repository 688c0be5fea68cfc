"""End to end on a small job: ``lit-classifiers fit`` against a plain PyTorch loop (issue 20).

The same small job both ways, each a fresh process, alternating in ABBA order: ResNet-18 on an
image folder cut from the bundled photographs (``_data.write_photo_tree``), SGD 0.1 with
momentum, cosine schedule, one loader worker. The plain loop is the floor: torchvision's
ResNet-18, ``ImageFolder`` with torchvision's standard transforms, one ``torch.save`` per epoch,
nothing else. ``lit-classifiers fit`` runs with its defaults (TensorBoard figures, best and last
checkpoints, sanity check) and its output to a pipe.

Both report the same instants, taken by the same clock (``time.time``) in the process:

* **start-up**: from just before the process is started to the end of the first training batch
  (imports, the data index, the sanity check, the first step);
* **between epochs**: from the end of an epoch's validation to the end of the next epoch's
  first batch, minus that batch's share (the median training step), so what remains is what
  happens between the epochs (figures, checkpoints, loader start-up);
* **wall**: the whole command, process start to exit;
* **CPU**: the user + system seconds of the process and its loader workers (what the job costs
  one core; less sensitive than wall time to other work on the machine). ``--threads N`` runs
  every process with ``OMP_NUM_THREADS=N``.

With ``--fresh-workers`` the command also runs with ``--data.persistent_workers=false`` (new
training workers every epoch, the default before issue 20's per-sample seeds). With
``--timm-train PATH`` (timm's ``train.py`` from its repository, run by ``--timm-python``,
an interpreter that imports ``timm``) the same job also runs through timm's training script,
the fastest peer the issue measured: its model, loader and transforms, ``--no-prefetcher`` on
the CPU, no label smoothing or colour jitter (the other two apply neither), a checkpoint per
epoch as it always writes. Only its wall and CPU times are taken: the script is run unchanged.

    python benchmarks/end_to_end.py            # about 2-4 minutes on 2 idle cores
    python benchmarks/end_to_end.py --quick    # a smoke run
    python benchmarks/end_to_end.py --timm-train ../pytorch-image-models/train.py
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    alternating,
    common_parser,
    emit,
    fmt,
    loadavg,
    machine_info,
    print_header,
    summarize,
    table,
    wait_for_idle,
)
from _data import write_photo_tree

PROBE_ENV = "E2E_PROBE_FILE"
START_ENV = "E2E_START"

# A Lightning callback that records the instants above; written beside the data and put on
# PYTHONPATH of the fit process (the command's own code is measured unchanged).
PROBE = """
import json, os, time
from lightning.pytorch.callbacks import Callback


class Probe(Callback):
    def __init__(self):
        self.events = {"start": float(os.environ["E2E_START"]), "steps": [], "epochs": []}
        self._epoch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.time()
        if batch_idx == 0:
            self._epoch = {"first_batch_end": now}
            self.events["epochs"].append(self._epoch)
        else:
            self.events["steps"].append(now - self._t)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and self._epoch is not None:
            self._epoch["validation_end"] = time.time()

    def on_fit_end(self, trainer, pl_module):
        with open(os.environ["E2E_PROBE_FILE"], "w") as f:
            json.dump(self.events, f)
"""


def plain_loop(args: Any) -> None:
    """The floor: a plain PyTorch loop over the same folder, the same instants recorded."""
    start = float(os.environ[START_ENV])
    import torch
    import torchvision
    from torchvision import transforms as T

    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(args.size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    resize = round(args.size * 256 / 224)
    val_tf = T.Compose(
        [T.Resize(resize), T.CenterCrop(args.size), T.ToTensor(), T.Normalize(mean, std)]
    )
    root = Path(args.data)
    train = torchvision.datasets.ImageFolder(root / "train", train_tf)
    val = torchvision.datasets.ImageFolder(root / "val", val_tf)
    loader = torch.utils.data.DataLoader(
        train, batch_size=args.batch_size, shuffle=True, num_workers=1, drop_last=False
    )
    val_loader = torch.utils.data.DataLoader(val, batch_size=args.batch_size, num_workers=1)
    model = torchvision.models.resnet18(num_classes=len(train.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    events: dict[str, Any] = {"start": start, "steps": [], "epochs": []}
    for epoch in range(args.epochs):
        model.train()
        for index, (images, labels) in enumerate(loader):
            began = time.time()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            now = time.time()
            if index == 0:
                events["epochs"].append({"first_batch_end": now})
            else:
                events["steps"].append(now - began)
        schedule.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += (model(images).argmax(1) == labels).sum().item()
        events["epochs"][-1]["validation_end"] = time.time()
        torch.save({"model": model.state_dict(), "epoch": epoch}, Path(args.out) / "last.pt")
        accuracy = correct / len(val)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  val acc {accuracy:.4f}")
    with open(os.environ[PROBE_ENV], "w") as f:
        json.dump(events, f)


def _fit_command(data: Path, args: Any) -> list[str]:
    script = Path(sys.executable).with_name("lit-classifiers")
    return [
        str(script),
        "fit",
        "--model.backbone=resnet18",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={data}",
        f"--data.image_size={args.size}",
        f"--data.batch_size={args.batch_size}",
        "--data.num_workers=1",
        "--model.lr_scheduler=CosineAnnealingLR",
        f"--model.lr_scheduler.T_max={args.epochs}",
        f"--trainer.max_epochs={args.epochs}",
        "--trainer.accelerator=cpu",
        "--trainer.callbacks+=_e2e_probe.Probe",
    ]


def _plain_command(data: Path, out: Path, args: Any) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--plain-worker",
        f"--data={data}",
        f"--out={out}",
        f"--size={args.size}",
        f"--batch-size={args.batch_size}",
        f"--epochs={args.epochs}",
    ]


def _timm_command(data: Path, out: Path, args: Any) -> list[str]:
    """timm's train.py on the same job (flags of timm 1.0.28's script)."""
    size = str(args.size)
    return [
        args.timm_python,
        args.timm_train,
        f"--data-dir={data}",
        "--train-split=train",
        "--val-split=val",
        "--model=resnet18",
        f"--num-classes={args.classes}",
        "--input-size", "3", size, size,
        f"--batch-size={args.batch_size}",
        f"--validation-batch-size={args.batch_size}",
        "--opt=sgd",
        "--lr=0.1",
        "--momentum=0.9",
        "--weight-decay=1e-4",
        "--sched=cosine",
        f"--epochs={args.epochs}",
        "--warmup-epochs=0",
        "--cooldown-epochs=0",
        "--smoothing=0",
        "--color-jitter=0",
        "--workers=1",
        "--no-prefetcher",
        "--device=cpu",
        f"--output={out}",
    ]  # fmt: skip


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (their workers included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(kind: str, data: Path, scratch: Path, args: Any) -> dict[str, float]:
    """One process; its wall time, start-up and between-epoch times (seconds)."""
    cwd = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{kind}-"))
    probe = cwd / "probe.json"
    env = {
        **os.environ,
        PROBE_ENV: str(probe),
        "PYTHONPATH": os.pathsep.join([str(scratch), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
    }
    command = {
        "plain": lambda: _plain_command(data, cwd, args),
        "fit": lambda: _fit_command(data, args),
        "fit-fw": lambda: [*_fit_command(data, args), "--data.persistent_workers=false"],
        "timm": lambda: _timm_command(data, cwd, args),
    }[kind]()
    env[START_ENV] = repr(time.time())
    began, used = time.time(), _children_cpu()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.time() - began, _children_cpu() - used
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    if kind == "timm":  # run unchanged: no probe, only its wall time
        nan = float("nan")
        lines = len(result.stdout.splitlines()) + len(result.stderr.splitlines())
        return {"wall_s": wall, "cpu_s": cpu, "startup_s": nan, "between_epochs_s": nan,
                "step_s": nan, "stdout_lines": lines}  # fmt: skip
    events = json.loads(probe.read_text())
    step = statistics.median(events["steps"]) if events["steps"] else 0.0
    epochs = events["epochs"]
    between = [
        nxt["first_batch_end"] - prev["validation_end"] - step
        for prev, nxt in itertools.pairwise(epochs)
    ]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "startup_s": epochs[0]["first_batch_end"] - events["start"],
        "between_epochs_s": statistics.median(between),
        "step_s": step,
        "stdout_lines": len(result.stdout.splitlines()),
    }


def main() -> None:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--plain-worker", action="store_true", help=argparse_hidden())
    parser.add_argument("--data", default=None, help=argparse_hidden())
    parser.add_argument("--out", default=None, help=argparse_hidden())
    parser.add_argument("--size", type=int, default=64, help="crop side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40, help="training images per class")
    parser.add_argument(
        "--fresh-workers",
        action="store_true",
        help="also run the command with --data.persistent_workers=false (kind fit-fw)",
    )
    parser.add_argument("--timm-train", default=None, help="timm's train.py: also run it")
    parser.add_argument(
        "--timm-python", default=sys.executable, help="the interpreter that runs --timm-train"
    )
    args = parser.parse_args()
    if args.plain_worker:
        plain_loop(args)
        return
    if args.quick:
        args.epochs, args.classes, args.per_class, args.size = 2, 2, 8, 32
        args.batch_size = 4
    repeats = args.repeats or (1 if args.quick else 2)
    if args.wait_idle is not None:
        wait_for_idle(args.wait_idle, args.wait_timeout)
    info = machine_info()
    print_header("end to end: lit-classifiers fit vs a plain PyTorch loop (same job)", info)
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        scratch = Path(tmp)
        data = scratch / "data"
        write_photo_tree(data / "train", args.classes, args.per_class, seed=0)
        write_photo_tree(data / "val", args.classes, max(2, args.per_class // 4), seed=1)
        (scratch / "_e2e_probe.py").write_text(PROBE)
        print(
            f"# job: resnet18, {args.classes} classes x {args.per_class} train / "
            f"{max(2, args.per_class // 4)} val images, {args.size} px crops, batch "
            f"{args.batch_size}, {args.epochs} epochs, SGD 0.1 cosine, 1 loader worker; "
            f"{repeats} ABBA pair(s)",
            flush=True,
        )
        kinds = ["plain", "fit"] + (["fit-fw"] if args.fresh_workers else [])
        kinds += ["timm"] if args.timm_train else []
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for _, kind in alternating(kinds, repeats):
            runs[kind].append(_run(kind, data, scratch, args))
            last = runs[kind][-1]
            print(
                f"  {kind:5s} wall {last['wall_s']:6.1f} s  CPU {last['cpu_s']:6.1f} s  "
                f"start-up {last['startup_s']:5.1f} s  "
                f"between epochs {last['between_epochs_s']:5.2f} s  step {last['step_s']:.3f} s  "
                f"({last['stdout_lines']} stdout lines)",
                flush=True,
            )

    def wall_ratio(kind: str, baseline: str, key: str = "wall_s") -> dict[str, float]:
        """``kind``'s wall (or CPU) time over ``baseline``'s, run by run (both ran equally
        often)."""
        pairs = zip(runs[baseline], runs[kind], strict=True)
        return summarize([k[key] / b[key] for b, k in pairs])

    keys = ("wall_s", "cpu_s", "startup_s", "between_epochs_s", "step_s")
    summary = {kind: {k: summarize([r[k] for r in rs]) for k in keys} for kind, rs in runs.items()}
    titles = {
        "plain": "plain loop (floor)",
        "fit": "lit-classifiers fit",
        "fit-fw": "fit, fresh workers",
        "timm": "timm train.py",
    }
    rows = [
        [label, *(fmt(summary[kind][k], " s", 2) for kind in kinds)]
        for label, k in zip(
            ("wall", "CPU (all processes)", "start-up", "between epochs", "training step"),
            keys,
            strict=True,
        )
    ]
    print()
    print(table(rows, ["median [min..max]", *(titles[kind] for kind in kinds)]))
    ratio = wall_ratio("fit", "plain")
    print(f"\nfit / plain wall time: {fmt(ratio, 'x', 2)} (per ABBA pair)")
    peer_ratio = wall_ratio("fit", "timm") if args.timm_train else None
    peer_cpu = wall_ratio("fit", "timm", "cpu_s") if args.timm_train else None
    if peer_ratio is not None:
        print(f"fit / timm wall time: {fmt(peer_ratio, 'x', 2)} (per round)")
        print(f"fit / timm CPU time: {fmt(peer_cpu, 'x', 2)} (per round)")
    if args.fresh_workers:
        fresh = wall_ratio("fit-fw", "plain")
        print(f"fit with fresh workers each epoch / plain wall time: {fmt(fresh, 'x', 2)}")
    load = loadavg()
    print(f"# load average at end: {load}; above the CPU count the figures measured contention")
    emit(
        "end_to_end",
        info,
        {
            "ratio_wall": ratio,
            "ratio_wall_timm": peer_ratio,
            "ratio_cpu_timm": peer_cpu,
            **summary,
            "runs": runs,
            "job": {
                k: getattr(args, k)
                for k in ("size", "batch_size", "epochs", "classes", "per_class")
            },
        },
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
