"""The CLI facing hostile or damaged input: checkpoints (local and over HTTP) that try to run
code, concurrent runs in one folder, resuming with ``--ckpt_path last``, and every user mistake
ending in one line that names the problem."""

from __future__ import annotations

import functools
import http.server
import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.cli import (
    SCRIPT,
    TINY,
    assert_one_line_error,
    cli_env,
    run,
    run_dirs,
    scalars,
    start,
)
from PIL import Image

ZEN = "Beautiful is better than ugly"  # what importing the module `this` prints


class CreatesFile:
    """Unpickling this creates a file (through a stdlib function, so it would really run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope="module")
def good_checkpoint(fitted_run: Path) -> Path:
    return run_dirs(fitted_run)[0] / "checkpoints" / "last.ckpt"


def edited_checkpoint(source: Path, target: Path, **hparams: object) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, target)
    return target


@pytest.fixture()
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server over a folder: (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_checkpoint_url_never_runs_code_in_any_subcommand(
    good_checkpoint: Path, http_folder: tuple[Path, str], tmp_path: Path
) -> None:
    served, base = http_folder
    marker = tmp_path / "pwned"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = CreatesFile(marker)
    torch.save(checkpoint, served / "evil.ckpt")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (8, 8), 100).save(photos / "a.png")
    torch_home = tmp_path / "torch_home"
    env = cli_env(TORCH_HOME=str(torch_home))
    commands = [
        [sub, *TINY, "--ckpt_path", f"{base}/evil.ckpt"]
        for sub in ("fit", "validate", "test", "predict")
    ]
    commands[-1] += ["--data.predict_dir", str(photos)]
    for _attempt in range(2):  # a cached copy must not run on the next call either
        processes = [start(SCRIPT, *command, cwd=tmp_path, env=env) for command in commands]
        for process in processes:
            stdout, stderr = process.communicate(timeout=300)
            result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            assert_one_line_error(result, r"evil\.ckpt.*(weights_only|code)")
            assert "weights_only=False" not in stderr
    assert not marker.exists()
    assert not list(torch_home.rglob("*.ckpt"))  # the hub cache is no back door


def test_good_checkpoint_url_is_loaded(
    good_checkpoint: Path, http_folder: tuple[Path, str], fitted_run: Path, tmp_path: Path
) -> None:
    served, base = http_folder
    (served / "good.ckpt").write_bytes(good_checkpoint.read_bytes())
    env = cli_env(TORCH_HOME=str(tmp_path / "torch_home"))
    run(SCRIPT, "validate", *TINY, "--ckpt_path", f"{base}/good.ckpt", cwd=tmp_path, env=env)
    from_url = scalars(run_dirs(tmp_path)[-1])["val/acc1"][-1]
    assert from_url == pytest.approx(scalars(run_dirs(fitted_run)[0])["val/acc1"][-1], abs=1e-6)
    assert not list((tmp_path / "torch_home").rglob("*.ckpt"))


@pytest.mark.parametrize(
    "hparams",
    [
        {"backbone": {"class_path": "this.Foo"}},
        {"_instantiator": "this.Foo"},
        {"_class_path": "this.Foo"},
        {"backbone": "torch.nn.Identity"},
        {"backbone_kwargs": {"weights": {"class_path": "this.Foo", "init_args": {}}}},
    ],
    ids=["backbone-class-path", "instantiator", "class-path", "torch-class", "nested"],
)
def test_checkpoint_hparams_cannot_import_or_build_classes(
    good_checkpoint: Path, tmp_path: Path, hparams: dict[str, object]
) -> None:
    evil = edited_checkpoint(good_checkpoint, tmp_path / "evil.ckpt", **hparams)
    result = run(SCRIPT, "validate", *TINY, "--ckpt_path", evil, cwd=tmp_path, check=False)
    assert ZEN not in result.stdout + result.stderr
    key = next(iter(hparams))
    assert_one_line_error(result, rf"evil\.ckpt.*{key}")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.tfevents*"))


def test_two_fits_started_at_once_get_their_own_run_folders(tmp_path: Path) -> None:
    args = [*TINY, "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    processes = [start(SCRIPT, "fit", *args, cwd=tmp_path) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    folders = run_dirs(tmp_path)
    assert [p.name for p in folders] == ["version_0", "version_1"]
    for folder in folders:
        assert len(list(folder.glob("config*.yaml"))) == 1
        assert len(list(folder.glob("events.out.tfevents*"))) == 1
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert len(list((folder / "checkpoints").glob("epoch*.ckpt"))) == 1


def test_ckpt_path_last_resumes_the_latest_run_in_its_own_folder(tmp_path: Path) -> None:
    missing = run(SCRIPT, "fit", *TINY, "--ckpt_path", "last", cwd=tmp_path, check=False)
    assert_one_line_error(missing, r"no earlier run to resume.*digits-resnet20")
    run(SCRIPT, "fit", *TINY, cwd=tmp_path)
    (first,) = run_dirs(tmp_path)
    config = (first / "config.yaml").read_text()
    before = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = run(
        SCRIPT, "fit", *TINY, "--trainer.max_epochs=2", "--ckpt_path", "last", cwd=tmp_path
    )
    assert f"resuming {Path('runs', 'digits-resnet20', 'version_0', 'checkpoints')}" in (
        resumed.stderr
    )
    assert run_dirs(tmp_path) == [first]  # no version_1
    assert (first / "config.yaml").read_text() == config  # the first run's config is kept
    assert "max_epochs: 2" in (first / "config-resumed-1.yaml").read_text()
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["global_step"] == 3 and checkpoint["global_step"] == 6  # 3 steps an epoch
    steps = scalars(first)["val/acc1"]
    assert len(steps) == 2  # the curve continues in the same folder


def bad_image_folder(root: Path) -> Path:
    """``root/train/{a,b}`` with tiny PNGs, and one damaged PNG in ``b``."""
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (12, 12), (40 * k, 0, 0)).save(root / "train" / name / f"{k}.png")
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def write_damaged(kind: str, good: Path, target: Path) -> Path:
    data = good.read_bytes()
    content = {
        "zero-bytes": b"",
        "truncated": data[: len(data) // 2],
        "text": b"epoch: 3\nthis is not a checkpoint\n",
        "corrupt": data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:],
    }[kind]
    target.write_bytes(content)
    return target


@pytest.mark.parametrize("kind", ["zero-bytes", "truncated", "text", "corrupt"])
def test_damaged_checkpoints_give_one_line(good_checkpoint: Path, tmp_path: Path, kind: str):
    damaged = write_damaged(kind, good_checkpoint, tmp_path / "damaged.ckpt")
    result = run(SCRIPT, "test", *TINY, "--ckpt_path", damaged, cwd=tmp_path, check=False)
    assert_one_line_error(result, r"damaged\.ckpt")


def test_checkpoint_refused_by_weights_only_never_advises_unsafe_loading(
    good_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["extra"] = CreatesFile(tmp_path / "pwned")
    torch.save(checkpoint, tmp_path / "unsafe.ckpt")
    result = run(SCRIPT, "test", *TINY, "--ckpt_path", "unsafe.ckpt", cwd=tmp_path, check=False)
    line = assert_one_line_error(result, r"unsafe\.ckpt")
    assert "weights_only=False" not in result.stderr and "weights_only=False" not in line
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_of_another_class_count_gives_one_line(good_checkpoint: Path, tmp_path: Path):
    folder = bad_image_folder(tmp_path / "three")
    (folder / "train" / "b" / "broken.png").unlink()
    (folder / "train" / "c").mkdir()
    Image.new("RGB", (12, 12)).save(folder / "train" / "c" / "0.png")
    args = [
        "--model.backbone=resnet20",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={folder}",
        "--data.image_size=8",
        "--data.num_workers=0",
        "--trainer.enable_progress_bar=false",
    ]
    result = run(SCRIPT, "test", *args, "--ckpt_path", good_checkpoint, cwd=tmp_path, check=False)
    assert_one_line_error(result, r"(num_classes|classes).*(10|3)")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["fit", *TINY, "--trainer.accelerator=gpu"], r"accelerator=gpu.*no GPU"),
        (["backbones", "resnet18", "--input-size", "8"], r"resnet18.*(8|size)"),
        (["fit", *TINY, "--trainer.max_epochs=abc"], r"max_epochs.*abc"),
        (["fit", "--config", "empty.yaml"], r"empty\.yaml.*empty"),
        (
            ["fit", *TINY, "--model.optimizer=SGD", "--model.optimizer.init_args.lr=1e12"],
            r"non-finite",
        ),
        (
            [
                "fit",
                "--model.backbone=resnet20",
                "--data=ImageFolderDataModule",
                "--data.data_dir=images",
                "--data.image_size=8",
                "--data.batch_size=8",
                "--data.num_workers=1",
                "--trainer.max_epochs=1",
                "--trainer.enable_progress_bar=false",
            ],
            r"broken\.png",
        ),
    ],
    ids=["no-gpu", "backbones-input-size", "option-type", "empty-yaml", "divergence", "bad-image"],
)
def test_mistakes_end_in_one_line(tmp_path: Path, args: list[str], pattern: str) -> None:
    (tmp_path / "empty.yaml").write_text("")
    bad_image_folder(tmp_path / "images")
    result = run(SCRIPT, *args, cwd=tmp_path, check=False)
    assert_one_line_error(result, pattern)


def test_debug_variable_keeps_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    env = {**cli_env(), "LIT_CLASSIFIERS_DEBUG": "1"}
    result = run(SCRIPT, "fit", "--config", "empty.yaml", cwd=tmp_path, check=False, env=env)
    assert result.returncode != 0 and "Traceback" in result.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
