"""torch.fx, TorchScript and ``lit-classifiers export``: the traced, scripted and exported networks
compute what the eager ones do, and keep their input checks."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli import run_cli
from helpers.modules import NUM_CLASSES, make_loader, make_trainer, quick_backbone
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from datamodules import DigitsDataModule
from lit_classifiers import ClassifierModule, create_backbone, get_backbone_info
from lit_classifiers.cli import main
from lit_classifiers.export import ExportError, export_checkpoint

FAMILY_REPRESENTATIVES = ["alexnet", "alexnet_owt", "vgg11_bn", "resnet18", "resnet50", "resnet20"]
DIGITS = [str(d) for d in range(10)]
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported_program": ".pt2"}
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


# ------------------------------------------------------------------------------- fx, torchscript
def _outputs_of(model: nn.Module, x: Tensor, names: dict[str, str]) -> dict[str, Tensor]:
    """What the named submodules return in an eager call, recorded by forward hooks."""
    seen: dict[str, Tensor] = {}
    hooks = [
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, key=key: seen.__setitem__(key, out.clone())
        )
        for path, key in names.items()
    ]
    try:
        seen["logits"] = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_fx_feature_extraction_and_torchscript_equal_eager(name: str) -> None:
    torch.manual_seed(0)
    model = quick_backbone(name, 4).eval()
    size = get_backbone_info(name).min_input_size
    x = torch.randn(2, 3, size + 1, size + 2)
    # avgpool: every family has one, and no in-place op follows it (an extractor returning the
    # output of a layer followed by an in-place ReLU returns it after the ReLU, as in eager).
    body = {"avgpool": "pooled", model.classifier_name: "classifier"}
    with torch.no_grad():
        eager = _outputs_of(model, x, body)

    train_nodes, eval_nodes = get_graph_node_names(model)
    assert "check_image_batch" in eval_nodes  # the shape check is a leaf of the graph
    assert set(body) <= set(train_nodes) & set(eval_nodes)
    extractor = create_feature_extractor(model, return_nodes=body).eval()
    with torch.no_grad():
        traced = extractor(x)
    assert traced.keys() == {"pooled", "classifier"}
    torch.testing.assert_close(traced["pooled"], eager["pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traced["classifier"], eager["logits"], atol=1e-5, rtol=1e-5)
    small = torch.randn(1, 3, size - 1, size)
    with pytest.raises(ValueError, match=rf"{name} needs inputs of at least {size}x{size}"):
        extractor(small)  # the check survives the pruning to the requested nodes

    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scripted(x[:1]), model(x[:1]), atol=1e-5, rtol=1e-5)
    with pytest.raises(torch.jit.Error, match=rf"{name} needs inputs of at least {size}x{size}"):
        scripted(small)
    with pytest.raises(ValueError, match=rf"{name} needs inputs of at least {size}x{size}"):
        model(small)  # and eager calls keep their clear error


def test_torchscript_keeps_the_channel_and_rank_checks() -> None:
    scripted = torch.jit.script(create_backbone("resnet20", 3).eval())
    with pytest.raises(torch.jit.Error, match="built for in_channels=3, got an input with 1"):
        scripted(torch.randn(2, 1, 8, 8))
    with pytest.raises(
        torch.jit.Error, match=r"expects a batch of images .* got shape \[3, 8, 8\]"
    ):
        scripted(torch.randn(3, 8, 8))


# ---------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def ema_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps of resnet20 on 8x8 digits with an EMA of decay 0.5, so the EMA weights differ
    from the raw ones; the checkpoint stores the datamodule's image_size (8) and class names."""
    torch.manual_seed(0)
    module = ClassifierModule("resnet20", num_classes=10, in_channels=1, ema_decay=0.5)
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=DigitsDataModule(image_size=8, batch_size=16))
    path = tmp_path_factory.mktemp("export") / "digits.ckpt"
    trainer.save_checkpoint(path)
    return path


# ONNX (the dynamo exporter and onnxscript, ~5 s to import) and torch.export take seconds: in
# the slow tier; TorchScript takes the command through the same steps in the fast one.
@pytest.fixture(
    scope="module",
    params=[
        pytest.param("onnx", marks=pytest.mark.slow),
        "torchscript",
        pytest.param("exported_program", marks=pytest.mark.slow),
    ],
)
def exported(
    request: pytest.FixtureRequest, ema_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A format, written by the command (through its ``main``, in this process) with the
    default output name, beside a copy of the checkpoint: the folder and the format."""
    fmt = request.param
    folder = tmp_path_factory.mktemp(f"exported-{fmt}")
    checkpoint = folder / "model.ckpt"
    shutil.copy(ema_checkpoint, checkpoint)
    result = run_cli("export", "--ckpt_path", checkpoint, "--format", fmt, cwd=folder)
    assert f"wrote {checkpoint.with_suffix(SUFFIXES[fmt])} ({fmt}, EMA weights" in result.stdout
    return folder, fmt


def _run_exported(path: Path, fmt: str, images: Tensor) -> Tensor:
    """The exported file, loaded with its own runtime, applied to ``images``."""
    if fmt == "onnx":
        import onnxruntime  # here: ~1 s of imports that only the (slow) ONNX tests need

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (name,) = [i.name for i in session.get_inputs()]
        return torch.from_numpy(session.run(None, {name: images.numpy()})[0])
    with torch.no_grad():
        if fmt == "torchscript":
            return torch.jit.load(str(path))(images)
        return torch.export.load(path).module()(images)


def _embedded_class_names(path: Path, fmt: str) -> list[str]:
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props["class_names"])
    extra = {"classes.json": ""}
    if fmt == "torchscript":
        torch.jit.load(str(path), _extra_files=extra)
    else:
        torch.export.load(path, extra_files=extra)
    return json.loads(extra["classes.json"])


def test_export_equals_the_checkpoint_at_two_batch_sizes(exported: tuple[Path, str]) -> None:
    folder, fmt = exported
    checkpoint = folder / "model.ckpt"
    path = checkpoint.with_suffix(SUFFIXES[fmt])
    module = ClassifierModule.load_from_checkpoint(checkpoint).eval()
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 5):  # neither is the traced example's 2: the batch dimension is dynamic
        images = torch.randn(batch, 1, 8, 8, generator=generator)
        with torch.no_grad():
            expected, raw = module(images), module.backbone(images)
        got = _run_exported(path, fmt, images)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        # The EMA weights were exported, not the raw ones (which give other logits).
        assert (got - raw).abs().max() > 1e-3

    described = json.loads(path.with_name(path.name + ".classes.json").read_text())
    assert described["class_names"] == DIGITS == module.hparams.class_names
    assert described["weights"] == "ema"
    assert described["input"]["shape"] == ["batch", 1, 8, 8]  # the datamodule's image_size
    assert _embedded_class_names(path, fmt) == DIGITS
    assert not list(folder.glob(".*partial*"))  # no temporary file left behind


# slow: two torch.export runs; the TorchScript tests run the same API in the fast tier
@pytest.mark.slow
def test_export_api_image_size_and_no_overwrite(ema_checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "net.pt2"
    result = export_checkpoint(ema_checkpoint, output, "exported_program", image_size=12)
    assert (result.input_shape, result.ema) == (("batch", 1, 12, 12), True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    program = torch.export.load(output).module()
    assert program(torch.randn(3, 1, 12, 12)).shape == (3, 10)
    with pytest.raises(Exception, match="12"):  # the height is fixed at the exported size
        program(torch.randn(3, 1, 8, 8))

    before = output.read_bytes()
    with pytest.raises(ExportError, match=r"net\.pt2 already exists; pass --overwrite"):
        export_checkpoint(ema_checkpoint, output, "exported_program", image_size=8)
    assert output.read_bytes() == before
    export_checkpoint(ema_checkpoint, output, "exported_program", image_size=8, overwrite=True)
    assert torch.export.load(output).module()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt2", "net.pt2.classes.json"]


def test_export_without_datamodule_uses_the_backbone_default_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ClassifierModule("resnet20", num_classes=NUM_CLASSES)  # no class names, no EMA
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, make_loader(8, batch_size=4))
    checkpoint = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(checkpoint)
    result = export_checkpoint(checkpoint, None, "torchscript")
    assert result.output == tmp_path / "plain.pt"
    size = get_backbone_info("resnet20").default_input_size
    assert (result.input_shape, result.ema) == (("batch", 3, size, size), False)
    described = json.loads(result.classes_file.read_text())
    assert (described["class_names"], described["num_classes"]) == (None, NUM_CLASSES)
    assert described["weights"] == "raw"
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected = module.eval().backbone(images)
    torch.testing.assert_close(torch.jit.load(str(result.output))(images), expected)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--ckpt_path", "{tmp}/missing.ckpt"], r"checkpoint .*missing\.ckpt does not exist"),
        (["--ckpt_path", "{ckpt}", "--image-size", "3"], r"--image-size 3 is below resnet20's"),
        (["--ckpt_path", "{ckpt}", "--output", "{tmp}/no/x.onnx"], r"folder .*/no does not exist"),
        (["--ckpt_path", "{ckpt}", "--output", "{ckpt}"], r"is the checkpoint itself"),
    ],
)
def test_export_errors_are_one_line(
    ema_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    pattern: str,
) -> None:
    args = [a.format(tmp=tmp_path, ckpt=ema_checkpoint) for a in args]
    assert main(["export", "--format", "onnx", *args]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and errors[1].startswith("(set LIT_CLASSIFIERS_DEBUG"), errors
    assert errors[0].startswith("lit-classifiers: error: ")
    assert re.search(pattern, errors[0]), errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_without_onnxscript_says_what_to_install(
    ema_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(ExportError, match=r'needs onnxscript, .*pip install -e "\.\[export\]"'):
        export_checkpoint(ema_checkpoint, tmp_path / "m.onnx", "onnx")
    assert not list(tmp_path.iterdir())


def test_export_command_rejects_an_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", "x.ckpt", "--format", "tflite"])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0].startswith("lit-classifiers export: error: argument --format: invalid")
    assert errors[1:] == ["(see: lit-classifiers export --help)"]
