"""Where a checkpoint may come from: downloads bounded in size and time, fsspec URLs (chains
included) opened or refused in one line, Lightning's legacy hyper-parameter keys vetted."""

from __future__ import annotations

import contextlib
import http.server
import json
import sys
import tarfile
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import lightning
import pytest
import torch
from helpers.modules import NUM_CLASSES, make_loader, make_trainer

from lit_classifiers.checkpoint_io import (
    DOWNLOAD_TIMEOUT_ENV,
    MAX_DOWNLOAD_ENV,
    CheckpointError,
    SafeCheckpointIO,
    read_checkpoint,
    stored_model_hparams,
)
from lit_classifiers.module import ClassifierModule


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def save_resnet20(path: Path, **extra: Any) -> Path:
    """A checkpoint as Lightning writes one, without a fit (resnet20: a registered backbone)."""
    model = ClassifierModule("resnet20", num_classes=NUM_CLASSES)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
        **extra,
    }
    torch.save(checkpoint, path)
    return path


@pytest.fixture()
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder downloads go to, to see that nothing is left there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ------------------------------------------------------------------------------------------ HTTP
Respond = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture()
def http_server() -> Iterator[Callable[[Respond], str]]:
    """``start(respond)``: a loopback server answering every GET with ``respond(handler)``;
    returns its URL. A handler that waits ends once the test does."""
    servers: list[http.server.ThreadingHTTPServer] = []
    done = threading.Event()

    def start(respond: Respond) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                # The client hanging up is what a refused download looks like from here.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    respond(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/last.ckpt"

    start.done = done  # type: ignore[attr-defined]
    yield start
    done.set()
    for server in servers:
        server.shutdown()
        server.server_close()


ZIP_START = b"PK\x03\x04" + b"\x00" * 60  # what a checkpoint's first bytes look like


def test_a_download_announcing_more_than_the_limit_is_refused_before_it_is_read(
    http_server: Any, private_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_DOWNLOAD_ENV, str(2**20))
    sent = []

    def five_gigabytes(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(5 * 2**30))
        handler.end_headers()
        for _ in range(3):  # then hangs up; a client that reads on gets an error, not a cap
            handler.wfile.write(ZIP_START * 2**14)
            sent.append(1)

    url = http_server(five_gigabytes)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(url)
    assert one_line(error) == (
        f"checkpoint {url} announces 5.0 GiB, over the download limit of 1.0 MiB; set "
        f"{MAX_DOWNLOAD_ENV} to allow more"
    )
    assert list(private_tempdir.iterdir()) == []


def test_a_body_longer_than_the_limit_stops_at_the_limit(
    http_server: Any, private_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_DOWNLOAD_ENV, str(2**20))

    def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)  # no Content-Length: the body ends when the server closes
        handler.end_headers()
        while not http_server.done.is_set():
            handler.wfile.write(ZIP_START * 2**10)

    url = http_server(endless)
    with pytest.raises(CheckpointError, match=r"sends more, over the download limit of 1\.0 MiB"):
        ClassifierModule.load_from_checkpoint(url)
    assert list(private_tempdir.iterdir()) == []


def test_a_stalled_server_is_given_up_with_a_reason(
    http_server: Any, private_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "0.5")

    def stalls(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        handler.wfile.write(ZIP_START)
        handler.wfile.flush()
        http_server.done.wait(30)

    url = http_server(stalls)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(url)
    assert one_line(error) == (
        f"cannot download checkpoint {url}: the server sent nothing for 0.5 s (after 64 B); set "
        f"{DOWNLOAD_TIMEOUT_ENV} to wait longer"
    )
    assert list(private_tempdir.iterdir()) == []


def test_a_web_page_is_refused_at_its_first_bytes(http_server: Any) -> None:
    def page(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(b"<html><body>Sign in to download</body></html>\n")
        http_server.done.wait(30)  # a never-ending page: only the first bytes are read

    with pytest.raises(CheckpointError, match=r"is a text file, not a PyTorch checkpoint"):
        read_checkpoint(http_server(page))


def test_weights_are_read_from_a_url_within_the_same_bounds(
    tmp_path: Path, served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base = served
    weights = ClassifierModule("resnet20", num_classes=NUM_CLASSES).backbone.state_dict()
    torch.save(weights, folder / "resnet20.pt")
    model = ClassifierModule(
        "resnet20", num_classes=NUM_CLASSES, backbone_kwargs={"weights": f"{base}/resnet20.pt"}
    )
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in weights.items())
    monkeypatch.setenv(MAX_DOWNLOAD_ENV, "1000")
    with pytest.raises(ValueError, match=r"weights file http.*resnet20\.pt announces .* limit"):
        ClassifierModule(
            "resnet20", num_classes=NUM_CLASSES, backbone_kwargs={"weights": f"{base}/resnet20.pt"}
        )


# ------------------------------------------------------------------------------------------ fsspec
def test_chained_fsspec_urls_open_the_file_they_name(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    good = save_resnet20(tmp_path / "good.ckpt")
    expected = torch.load(good, weights_only=True)["state_dict"]
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.write(good, "good.ckpt")
    folder, base = served
    with tarfile.open(folder / "a.tar", "w") as archive:
        archive.add(good, "inner/good.ckpt")
    (tmp_path / "refs.json").write_text(
        json.dumps({"version": 1, "refs": {"good.ckpt": [str(good)]}})
    )
    with fsspec.open("memory://runs/good.ckpt", "wb") as memory:
        memory.write(good.read_bytes())
    urls = [
        f"zip://good.ckpt::file://{tmp_path}/a.zip",
        "memory://runs/good.ckpt",
        f"zip://good.ckpt::{tmp_path}/a.zip",
        f"tar://inner/good.ckpt::{base}/a.tar",
        f"reference://good.ckpt::file://{tmp_path}/refs.json",
    ]
    for url in urls:
        loaded = read_checkpoint(url)["state_dict"]
        assert all(torch.equal(loaded[k], v) for k, v in expected.items()), url
        assert stored_model_hparams(url)["backbone"] == "resnet20"  # what the CLI reads
    model = ClassifierModule.load_from_checkpoint(urls[0])
    assert torch.equal(model.backbone.fc.weight, expected["backbone.fc.weight"])
    fresh = ClassifierModule("resnet20", num_classes=NUM_CLASSES)
    make_trainer(plugins=[SafeCheckpointIO()]).validate(
        fresh, make_loader(4), ckpt_path=urls[3], verbose=False
    )
    assert torch.equal(fresh.backbone.fc.weight, expected["backbone.fc.weight"])

    with pytest.raises(CheckpointError, match=r"zip://missing\.ckpt::.* does not exist") as error:
        read_checkpoint(f"zip://missing.ckpt::file://{tmp_path}/a.zip")
    one_line(error)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("github://x/y", r"fsspec cannot open this URL \(TypeError: .*org"),
        ("tar://x", r"fsspec cannot open this URL"),
        ("zip://x::file:///nonexistent/a.zip", r"fsspec cannot open this URL|does not exist"),
        ("nosuchscheme://bucket/last.ckpt", r"fsspec cannot open this URL .*nosuchscheme"),
    ],
    ids=["github-without-repo", "tar-without-archive", "zip-of-nothing", "unknown-scheme"],
)
def test_urls_fsspec_cannot_open_give_one_line(url: str, expected: str) -> None:
    with pytest.raises(CheckpointError, match=expected) as error:
        read_checkpoint(url)
    assert one_line(error).startswith(f"cannot read checkpoint {url}") or "does not exist" in str(
        error.value
    )


# ------------------------------------------------------------------------------------------ hparams
@pytest.mark.parametrize("legacy_key", ["hparams", "module_arguments"])
@pytest.mark.parametrize(
    "payload",
    [
        lambda module: {"_instantiator": f"{module}.build"},
        lambda module: {"backbone_kwargs": {"class_path": f"{module}.Block", "init_args": {}}},
    ],
    ids=["instantiator", "class_path"],
)
def test_lightnings_legacy_hparams_keys_are_vetted_and_import_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy_key: str, payload: Any
) -> None:
    """Lightning still merges ``hparams`` and ``module_arguments`` into the model's arguments,
    ``_instantiator`` included, which it imports."""
    module = f"planted_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "def build(cls, kwargs):\n    return cls(**kwargs)\n"
        "class Block:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = save_resnet20(tmp_path / "legacy.ckpt", **{legacy_key: payload(module)})

    with pytest.raises(CheckpointError, match=r"legacy\.ckpt: hyper-parameter .*refused") as error:
        ClassifierModule.load_from_checkpoint(path)
    one_line(error)
    assert module not in sys.modules and not marker.exists()


# ------------------------------------------------------------------------------------------ CLI
def test_the_cli_trainer_reads_and_writes_checkpoints_through_safe_checkpoint_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_classifiers.cli import cli_main

    monkeypatch.chdir(tmp_path)  # the CLI claims runs/<name>/version_N in the working directory
    args = ["--model.backbone=resnet20", "--data=DigitsDataModule", "--data.image_size=8"]
    cli = cli_main(args, run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is SafeCheckpointIO
    # A class path, not an instance: the run's config.yaml can be given back with --config.
    assert cli.config.trainer.plugins[0].class_path.endswith("checkpoint_io.SafeCheckpointIO")
