"""Checkpoints read without running code (also over HTTP), written atomically, never non-finite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.fresh import read_report
from helpers.modules import NUM_CLASSES, TinyNet, fit_registered, make_loader, make_trainer, sgd
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_classifiers.checkpoint_io import (
    CheckpointError,
    NonFiniteWeightsError,
    SafeCheckpointIO,
    UnsafeCheckpointError,
    check_checkpoint_hparams,
    first_non_finite,
    read_checkpoint,
)
from lit_classifiers.module import ClassifierModule

inf = float("inf")
nan = float("nan")


class _CreatesFile:
    """Unpickling this object creates a file: the stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def safe_trainer(**kwargs: Any) -> pl.Trainer:
    """A test trainer with SafeCheckpointIO as its plugin, as the README tells Python users."""
    return make_trainer(plugins=[SafeCheckpointIO()], **kwargs)


def fit_tiny(tmp_path: Path, name: str = "good") -> Path:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename=name)
    trainer = safe_trainer(callbacks=[checkpoint], enable_checkpointing=True, limit_train_batches=2)
    trainer.fit(model, make_loader(16), make_loader(8))
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    return tmp_path / "ckpt" / f"{name}.ckpt"


@pytest.fixture()
def good_checkpoint(tmp_path: Path) -> Path:
    return fit_tiny(tmp_path)


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()).is_relative_to(home)
    return home


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# ------------------------------------------------------------------------------------------ HTTP
def test_payload_served_over_http_never_runs(
    good_checkpoint: Path, served: tuple[Path, str], torch_home: Path, tmp_path: Path
) -> None:
    folder, base = served
    marker = tmp_path / "pwned"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = _CreatesFile(marker)
    torch.save(checkpoint, folder / "evil.ckpt")
    torch.load(folder / "evil.ckpt", weights_only=False)  # the payload is live...
    assert marker.exists()
    marker.unlink()
    url = f"{base}/evil.ckpt"

    with pytest.raises(UnsafeCheckpointError) as error:
        read_checkpoint(url)
    message = one_line(error)
    assert url in message and "may contain code" in message and "getattr" in message
    assert "weights_only=False" not in message

    for _ in range(2):  # a cache would show on the second round
        model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
        for run in ("fit", "validate", "test", "predict"):
            trainer = safe_trainer(max_epochs=2)
            kwargs = {} if run in ("fit", "predict") else {"verbose": False}
            with pytest.raises(CheckpointError, match="may contain code"):
                getattr(trainer, run)(model, make_loader(8), ckpt_path=url, **kwargs)
            assert not marker.exists(), run
        with pytest.raises(CheckpointError, match="may contain code"):
            ClassifierModule.load_from_checkpoint(url, backbone=TinyNet())
    assert not marker.exists()
    assert files_under(torch_home) == []


def test_good_checkpoint_over_http_loads(
    good_checkpoint: Path, served: tuple[Path, str], torch_home: Path
) -> None:
    folder, base = served
    (folder / "good.ckpt").write_bytes(good_checkpoint.read_bytes())
    url = f"{base}/good.ckpt"
    local = torch.load(good_checkpoint, weights_only=True)

    remote = read_checkpoint(url)
    assert remote.keys() == local.keys()
    assert all(torch.equal(remote["state_dict"][k], v) for k, v in local["state_dict"].items())

    loaded = ClassifierModule.load_from_checkpoint(url, backbone=TinyNet())
    assert torch.equal(loaded.backbone.fc.weight, local["state_dict"]["backbone.fc.weight"])

    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    safe_trainer().validate(model, make_loader(8), ckpt_path=url, verbose=False)
    assert torch.equal(model.backbone.fc.weight, local["state_dict"]["backbone.fc.weight"])

    with pytest.raises(CheckpointError, match=r"missing\.ckpt does not exist") as error:
        read_checkpoint(f"{base}/missing.ckpt")
    one_line(error)
    assert files_under(torch_home) == []


def test_unreachable_and_unsupported_remote_checkpoints_give_one_line() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/last.ckpt"
    with pytest.raises(CheckpointError, match=r"cannot download checkpoint http://127") as error:
        read_checkpoint(url)
    one_line(error)

    with pytest.raises(CheckpointError, match=r"nosuchscheme://") as error:
        read_checkpoint("nosuchscheme://bucket/last.ckpt")
    one_line(error)

    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(CheckpointError, match=r"s3:// scheme needs an fsspec backend"):
            read_checkpoint("s3://bucket/last.ckpt")


# ------------------------------------------------------------------------------------------ damage
def _truncated(good: Path, bad: Path) -> None:
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def _not_a_dict(good: Path, bad: Path) -> None:
    torch.save([torch.zeros(2)], bad)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (None, r"does not exist"),
        (lambda good, bad: bad.write_bytes(b""), r"is empty \(0 bytes\)"),
        (_truncated, r"is truncated or corrupt"),
        (lambda good, bad: bad.write_text("<html>404 Not Found</html>\n"), r"is a text file"),
        (lambda good, bad: bad.write_text("version https://git-lfs.github.com/spec/v1\n"), "LFS"),
        (lambda good, bad: bad.write_bytes(b"\x00\xff" * 50), r"is not a PyTorch checkpoint"),
        (_not_a_dict, r"holds a list, not a checkpoint dictionary"),
        (lambda good, bad: bad.mkdir(), r"is a folder"),
    ],
    ids=["missing", "empty", "truncated", "text", "lfs-pointer", "binary", "not-a-dict", "folder"],
)
def test_unusable_checkpoint_files_give_one_line(
    good_checkpoint: Path,
    tmp_path: Path,
    make,
    expected: str,  # type: ignore[no-untyped-def]
) -> None:
    bad = tmp_path / "bad.ckpt"
    if make is not None:
        make(good_checkpoint, bad)
    with pytest.raises(CheckpointError, match=expected) as error:
        read_checkpoint(bad)
    assert str(bad) in one_line(error)
    with pytest.raises(CheckpointError, match=expected) as error:
        ClassifierModule.load_from_checkpoint(bad, backbone=TinyNet())
    one_line(error)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES)
    with pytest.raises(CheckpointError, match=expected) as error:
        safe_trainer().validate(model, make_loader(8), ckpt_path=bad, verbose=False)
    one_line(error)


# ------------------------------------------------------------------------------------------ fit
def test_checkpoint_of_another_model_gives_one_line(tmp_path: Path) -> None:
    resnet20 = fit_registered(tmp_path, "resnet20", NUM_CLASSES)
    for model, expected in [
        (
            ClassifierModule("resnet32", num_classes=NUM_CLASSES),
            r"trained with backbone=resnet20, num_classes=5; this model is backbone=resnet32, "
            r"num_classes=5",
        ),
        (
            ClassifierModule("resnet20", num_classes=3),
            r"trained with backbone=resnet20, num_classes=5; this model is backbone=resnet20, "
            r"num_classes=3",
        ),
    ]:
        with pytest.raises(CheckpointError, match=expected) as error:
            make_trainer().validate(model, make_loader(8), ckpt_path=resnet20, verbose=False)
        assert str(resnet20) in one_line(error)
    with pytest.raises(CheckpointError, match=r"num_classes=5; this model .* num_classes=3") as e:
        ClassifierModule.load_from_checkpoint(resnet20, num_classes=3)
    one_line(e)

    tiny = fit_tiny(tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"backbone\.conv\.weight has shape \(8, 3, 3, 3\) in the checkpoint but "
        r"\(8, 1, 3, 3\) in the model",
    ) as error:
        ClassifierModule.load_from_checkpoint(tiny, backbone=TinyNet(in_channels=1))
    one_line(error)
    with pytest.raises(CheckpointError, match=r"lacks \d+ of the model's tensors") as error:
        ClassifierModule.load_from_checkpoint(tiny, backbone=TinyNet(), ema_decay=0.9)
    one_line(error)
    with pytest.raises(CheckpointError, match=r"custom backbone module, which is not stored"):
        ClassifierModule.load_from_checkpoint(tiny)
    # The right model still loads, and resuming a fit from a local path works.
    loaded = ClassifierModule.load_from_checkpoint(resnet20)
    assert loaded.hparams.backbone == "resnet20" and loaded.num_classes == NUM_CLASSES
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    make_trainer(max_epochs=2, limit_train_batches=1).fit(model, make_loader(8), ckpt_path=tiny)


def test_bare_weights_file_is_named_as_such(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(ClassifierModule(TinyNet(), num_classes=NUM_CLASSES).state_dict(), weights)
    with pytest.raises(CheckpointError, match=r"has no state_dict: it is not a Lightning") as error:
        ClassifierModule.load_from_checkpoint(weights, backbone=TinyNet())
    assert str(weights) in one_line(error)


# ------------------------------------------------------------------------------------------ hparams
def test_hparams_a_cli_run_stores_pass_and_dangerous_ones_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_classifiers.cli import cli_main

    monkeypatch.chdir(tmp_path)  # the CLI claims runs/<name>/version_N in the working directory
    cli = cli_main(
        [
            "--model.backbone=resnet20",
            "--model.optimizer=Adam",
            "--model.lr_scheduler=StepLR",
            "--model.lr_scheduler.step_size=3",
            "--model.backbone_kwargs={dropout: 0.1}",
            "--data=DigitsDataModule",
            "--data.image_size=8",
        ],
        run=False,
    )
    stored = dict(cli.model.hparams)  # what ModelCheckpoint writes as hyper_parameters
    assert stored["_instantiator"] == "lightning.pytorch.cli.instantiate_module"
    check_checkpoint_hparams(stored, "cli.ckpt")
    subclass_mode = {**stored, "_class_path": "lit_classifiers.module.ClassifierModule"}
    check_checkpoint_hparams(subclass_mode, "cli.ckpt")

    for hparams, key in [
        ({"backbone_kwargs": {"block": {"init_args": {}}}}, "backbone_kwargs.block"),
        ({"class_names": ["a", {"class_path": "os.system"}]}, r"class_names\[1\]"),
        ({"label_smoothing": torch.tensor(0.1)}, "label_smoothing is a Tensor"),
        ({"_class_path": "this.Foo"}, "_class_path='this.Foo'"),
        ({"backbone": 3}, "backbone=3"),
    ]:
        with pytest.raises(CheckpointError, match=rf"checkpoint x\.ckpt: .*{key}") as error:
            check_checkpoint_hparams(hparams, "x.ckpt")
        one_line(error)


# slow: a fresh interpreter: what it imported is the point (one for the checks of five
# modules, helpers/fresh.py)
@pytest.mark.slow
def test_dangerous_hparams_are_refused_before_any_import(fresh_interpreter: Path) -> None:
    report = read_report(fresh_interpreter)["checkpoints"]
    assert "error" not in report, report.get("error")
    assert "Beautiful is better" not in (fresh_interpreter / "stdout").read_text()  # `import this`
    assert report["imported_this"] is False
    results = report["results"]
    good = fresh_interpreter / f"resnet20-{NUM_CLASSES}.ckpt"
    assert results[str(good)] == "loaded"
    for name, key in [
        ("class_path", "backbone="),
        ("instantiator", "_instantiator='this.Foo'"),
        ("dotted_backbone", "backbone='torch.nn.Identity' is not a registered backbone"),
        ("class_path_key", "_class_path='this.Foo'"),
    ]:
        path = str(fresh_interpreter / f"{name}.ckpt")
        message = results[path]
        assert path in message and key in message and "\n" not in message, message


# ------------------------------------------------------------------------------------------ wiring
def test_module_leaves_the_trainers_checkpoint_io_alone() -> None:
    """The plugin is the user's (or the CLI's) choice; the module never swaps it in setup."""
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)

    class MyIO(TorchCheckpointIO):
        pass

    for io, expected in [(None, TorchCheckpointIO), (MyIO(), MyIO)]:
        trainer = make_trainer(plugins=[io] if io else None, limit_train_batches=1)
        trainer.fit(model, make_loader(8))
        assert type(trainer.strategy.checkpoint_io) is expected


# ------------------------------------------------------------------------------------------ saving
def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    with pytest.raises(NonFiniteWeightsError, match=r"last\.ckpt: b holds non-finite .*1 inf"):
        io.save_checkpoint(
            {"state_dict": {"w": torch.ones(3), "b": torch.tensor([1, inf])}}, target
        )
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_first_non_finite_names_the_first_bad_tensor_and_passes_an_overflowing_sum() -> None:
    tensors = [
        ("big", torch.full((10,), 6e4, dtype=torch.float16)),  # finite; its fp16 sum is inf
        ("ok", torch.ones(3, dtype=torch.bfloat16)),
        ("steps", torch.tensor(7)),  # integers are never non-finite
        ("nan", torch.tensor([1.0, nan, nan])),
        ("inf", torch.tensor([-inf, 1.0])),
        ("c", torch.tensor([1 + 1j, complex(0, inf)])),
    ]
    assert first_non_finite(tensors[:3]) is None
    assert first_non_finite(tensors) == ("nan", "2 NaN of 3 values")
    assert first_non_finite(tensors[4:]) == ("inf", "1 inf of 2 values")
    assert first_non_finite(tensors[5:]) == ("c", "1 inf of 2 values")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_diverging_fit_with_finite_loss_stops_without_saving_non_finite_weights(
    tmp_path: Path,
) -> None:
    # SGD at lr=1e5 overflows BatchNorm's running_var in epoch 0 while the loss stays finite
    # (the lr=50 ResNet run of issue 10 took longer to get there; the mechanism is the same).
    torch.manual_seed(0)
    model = ClassifierModule(
        TinyNet(), num_classes=NUM_CLASSES, optimizer=lambda p: torch.optim.SGD(p, lr=1e5)
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, monitor="val/acc1", mode="max")
    trainer = make_trainer(max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True)
    with pytest.raises(NonFiniteWeightsError, match=r"at epoch 0 .*backbone\.bn\.running_var"):
        trainer.fit(model, make_loader(40), make_loader(8))
    # It diverged in epoch 0, so the check ran before the first checkpoint was due.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        target = mount / "last.ckpt"
        io = SafeCheckpointIO()
        io.save_checkpoint({"state_dict": {"w": torch.ones(10)}}, target)
        with pytest.raises(
            CheckpointError,
            match=r"disk full while saving .*last\.ckpt \(\d.* free\); the previous checkpoint "
            r"is intact",
        ) as error:
            io.save_checkpoint({"state_dict": {"w": torch.ones(1_000_000)}}, target)
        one_line(error)
        assert [p.name for p in mount.iterdir()] == ["last.ckpt"]
        assert torch.equal(read_checkpoint(target)["state_dict"]["w"], torch.ones(10))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


SUBPROCESS_SAVE = """
import sys, torch
from lit_classifiers.checkpoint_io import SafeCheckpointIO
io = SafeCheckpointIO()
io.save_checkpoint({"epoch": 0, "state_dict": {"w": torch.ones(10)}}, sys.argv[1])
print("saved", flush=True)
ballast = torch.ones(64 * 2**20)  # 256 MiB: writing and fsync'ing it takes a while
io.save_checkpoint({"epoch": 1, "state_dict": {"w": ballast}}, sys.argv[1])
print("finished", flush=True)
"""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed in the meantime
        return 0


@pytest.mark.slow
def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp_path")
    temp_dir = shm / f"lit-classifiers-test-{uuid.uuid4().hex}"
    temp_dir.mkdir()
    run_dir = tmp_path / "run"
    target = run_dir / "last.ckpt"
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", SUBPROCESS_SAVE, str(target)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(temp_dir)},
        )
        try:
            assert process.stdout is not None and process.stdout.readline() == "saved\n"
            deadline = time.monotonic() + 60
            partial: list[Path] = []
            while not partial and time.monotonic() < deadline and process.poll() is None:
                partial = [p for p in run_dir.glob(".last.ckpt.*.tmp") if _size(p)]
            process.kill()
        finally:
            process.wait()
        assert partial, "the second save was never seen in progress"
        assert read_checkpoint(target)["epoch"] == 0
        assert list(temp_dir.iterdir()) == []
        # The next save clears what the killed one left.
        SafeCheckpointIO().save_checkpoint({"epoch": 2, "state_dict": {}}, target)
        assert [p.name for p in run_dir.iterdir()] == ["last.ckpt"]
    finally:
        for leftover in temp_dir.iterdir():
            leftover.unlink()
        temp_dir.rmdir()


@pytest.mark.parametrize(
    ("plugin", "kept"),
    [
        ("lightning.fabric.plugins.environments.LightningEnvironment", SafeCheckpointIO),
        ("lightning.pytorch.plugins.io.AsyncCheckpointIO", "AsyncCheckpointIO"),
    ],
)
def test_a_users_plugins_keep_the_safe_checkpoint_io_unless_they_bring_one(
    plugin: str, kept: type | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_classifiers.cli import cli_main

    monkeypatch.chdir(tmp_path)
    args = ["--model.backbone=resnet20", "--data=DigitsDataModule", f"--trainer.plugins={plugin}"]
    io = cli_main(args, run=False).trainer.strategy.checkpoint_io
    assert isinstance(io, kept) if isinstance(kept, type) else type(io).__name__ == kept
