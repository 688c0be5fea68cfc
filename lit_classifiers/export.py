"""``lit-classifiers export``: a checkpoint's network as an ONNX, TorchScript or torch.export file.

    lit-classifiers export --ckpt_path runs/stl10-resnet18/version_0/checkpoints/last.ckpt \\
        --format onnx

What is exported is the backbone alone, in eval mode, with the EMA weights when the checkpoint
kept them (as :class:`~lit_classifiers.ClassifierModule` evaluates). ``N`` is dynamic; ``H = W``
is fixed at ``--image-size``. It returns ``(N, num_classes)`` logits. Its input is either

* ``--preprocessing none`` (the default): what the backbone takes, float32 images ``(N, C, H,
  W)`` normalised as in training, ``(x / 255 - mean) / std`` per channel; or
* ``--preprocessing included``: uint8 images ``(N, H, W, C)`` (the layout of a decoded image as
  PIL and NumPy give it, RGB or a single grayscale channel), already resized and cropped; the
  file scales and normalises them itself.

Beside the file, ``<output>.classes.json`` holds the class names and every number the input
needs (``"preprocessing"``: resize, interpolation, crop, channel order, value range, mean, std
and the evaluation protocol, recorded in the checkpoint by
:class:`~lit_classifiers.callbacks.InputPreprocessing`), so a server needs nothing else. The
class names are also stored inside the file (ONNX ``metadata_props["class_names"]``, the extra
file ``classes.json`` of TorchScript and torch.export archives). Before anything is moved into
place, the written file is loaded back and its outputs are compared with the checkpoint's at
two batch sizes, so a file that is there is a file that works.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import secrets
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import fsspec
import torch
from torch import Tensor, nn

from datamodules.transforms import default_resize_size
from lit_classifiers.callbacks import PREPROCESSING_KEY
from lit_classifiers.checkpoint_io import read_checkpoint
from lit_classifiers.module import ClassifierModule
from lit_classifiers.registry import get_backbone_info

__all__ = ["FORMATS", "ExportError", "ExportResult", "export_checkpoint", "export_main"]

PROG = "lit-classifiers export"
ExportFormat = Literal["onnx", "torchscript", "exported_program"]
Preprocessing = Literal["none", "included"]
PREPROCESSING_CHOICES = ("none", "included")
#: The default file suffix of each format.
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "exported_program": ".pt2"}
CLASSES_SUFFIX = ".classes.json"
EXTRA_FILE = "classes.json"
INSTALL_HINT = 'pip install -e ".[export]"'
# Float32 through a different runtime (onnxruntime's kernels) reorders sums: differences of a
# few 1e-6 relative are expected, anything near 1e-3 is a wrong graph.
ATOL, RTOL = 1e-4, 1e-3


class ExportError(ValueError):
    """The options, the checkpoint or the installed packages cannot give the requested file."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote, and how far the reloaded file was from the model."""

    output: Path
    classes_file: Path
    format: str
    input_shape: tuple[str, int, int, int]  # ("batch", C, H, W), or ("batch", H, W, C) uint8
    ema: bool
    max_abs_diff: float | None  # None when verification was skipped


def export_checkpoint(
    ckpt_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    format: ExportFormat = "onnx",
    batch_size_example: int = 2,
    opset: int | None = None,
    *,
    image_size: int | None = None,
    preprocessing: Preprocessing = "none",
    overwrite: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Export the network of a :class:`~lit_classifiers.ClassifierModule` checkpoint.

    Args:
        ckpt_path: The checkpoint, read with ``weights_only=True`` through
            ``ClassifierModule.load_from_checkpoint`` (a local path or a URL).
        output: The file to write. Default: beside a local checkpoint, named after it with the
            format's suffix (``last.ckpt`` -> ``last.onnx``, ``last.pt``, ``last.pt2``).
        format: ``"onnx"`` (the torch.export-based exporter; needs onnx and onnxscript, and
            onnxruntime to verify), ``"torchscript"`` (``torch.jit.script``, which PyTorch has
            deprecated) or ``"exported_program"`` (``torch.export.export`` and ``save``).
        batch_size_example: Batch size of the example traced; at least 2, since tracing
            specialises a batch of 1 to a constant.
        opset: ONNX opset version; ``None`` takes the exporter's default.
        image_size: Height and width of the input. Default: the ``image_size`` of the
            datamodule stored in the checkpoint, else the backbone's ``default_input_size``.
        preprocessing: ``"none"``: the file takes normalised float32 ``(N, C, H, W)``;
            ``"included"``: it takes uint8 ``(N, H, W, C)`` and normalises them itself (needs a
            checkpoint that recorded its mean and std, see
            :class:`~lit_classifiers.callbacks.InputPreprocessing`).
        overwrite: Replace an existing output (and its classes file) instead of refusing.
        verify: Load the written file back and compare its outputs with the checkpoint's.

    Returns:
        What was written. Nothing is left behind on failure, and nothing already there is
        replaced until the new file has been written completely (and verified).
    """
    _check_options(format, batch_size_example, image_size, preprocessing)
    source = os.fspath(ckpt_path)
    target = _output_path(source, output, format)
    classes_file = target.with_name(target.name + CLASSES_SUFFIX)
    _check_writable(source, target, classes_file, overwrite)
    _check_packages(format, verify)
    network = _load_network(source, image_size, preprocessing == "included", batch_size_example)
    example = network.example(batch_size_example, seed=0)

    with _temporary(target) as model_tmp, _temporary(classes_file) as classes_tmp:
        with torch.no_grad():
            _write_model(network, example, model_tmp, format, opset)
        max_diff = None
        if verify:
            max_diff = _verify(network, model_tmp, format, batch_size_example)
        _write_description(network, format, classes_tmp)
        # The classes file first: a model file in place always has its classes file beside it.
        os.replace(classes_tmp, classes_file)
        os.replace(model_tmp, target)
    return ExportResult(target, classes_file, format, network.input_shape, network.ema, max_diff)


def _check_options(
    format: str, batch_size_example: object, image_size: object, preprocessing: str
) -> None:
    """Refuse bad options before anything is read, so a mistake costs no checkpoint load."""
    if format not in FORMATS:
        raise ExportError(f"--format {format!r} is not one of {', '.join(FORMATS)}")
    if preprocessing not in PREPROCESSING_CHOICES:
        raise ExportError(
            f"--preprocessing {preprocessing!r} is not one of {', '.join(PREPROCESSING_CHOICES)}"
        )
    if isinstance(batch_size_example, bool) or not isinstance(batch_size_example, int):
        raise ExportError(f"batch_size_example must be an int >= 2, got {batch_size_example!r}")
    if batch_size_example < 2:
        raise ExportError(
            f"batch_size_example must be >= 2 (a batch of 1 is traced as a constant), "
            f"got {batch_size_example}"
        )
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise ExportError(f"--image-size must be an int, got {image_size!r}")
    if image_size is not None:
        _check_fits_in_memory(image_size, batch_size_example, "--image-size")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _check_fits_in_memory(image_size: int, batch_size: int, what: str) -> None:
    """Refuse a size whose verification batch alone (one float32 channel of ``batch_size + 1``
    images: a lower bound of what the export holds at once) exceeds this machine's memory."""
    memory = _physical_memory()
    needed = (batch_size + 1) * image_size * image_size * 4
    if memory is not None and needed > memory:
        raise ExportError(
            f"{what} {image_size} cannot be exported on this machine: a batch of "
            f"{batch_size + 1} such images alone takes {needed / 2**30:.0f} GiB, and it has "
            f"{memory / 2**30:.0f} GiB of memory"
        )


# ----------------------------------------------------------------------------------- the network
@dataclass(frozen=True)
class _Network:
    """The eval-mode network to export, and what the checkpoint says about its input and output."""

    net: nn.Module
    ema: bool
    name: str
    in_channels: int
    image_size: int
    class_names: list[str] | None
    num_classes: int
    preprocessing: dict[str, Any] | None  # None: the checkpoint did not record it
    included: bool  # the file takes uint8 (N, H, W, C) and normalises them itself

    @property
    def input_shape(self) -> tuple[str, int, int, int]:
        """``("batch", C, H, W)``, or ``("batch", H, W, C)`` with the preprocessing included:
        the batch is dynamic in every format."""
        size, channels = self.image_size, self.in_channels
        if self.included:
            return ("batch", size, size, channels)
        return ("batch", channels, size, size)

    def example(self, batch: int, seed: int) -> Tensor:
        """Random input of the file's shape and dtype."""
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, *self.input_shape[1:])
        if self.included:
            return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        return torch.randn(shape, generator=generator)


class Normalized(nn.Module):
    """``net`` behind the datamodule's normalisation: uint8 ``(N, H, W, C)`` in, logits out.

    ``x * (1 / (255 std)) - mean / std``: the same two constants as
    :class:`datamodules.normalization.BatchNormalizer`, so the file computes what evaluation does.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.register_buffer("scale", (1 / (255 * std_t)).float())
        self.register_buffer("shift", (-mean_t / std_t).float())

    def forward(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return self.net(x * self.scale + self.shift)


def _load_network(source: str, image_size: int | None, included: bool, batch_size: int) -> _Network:
    """The checkpoint's network as :class:`~lit_classifiers.ClassifierModule` evaluates it."""
    stored_size, preprocessing = _stored_input(source)
    if image_size is None:
        image_size = stored_size
        if image_size is not None:
            _check_fits_in_memory(image_size, batch_size, "the checkpoint's image_size")
    if included and preprocessing is None:
        raise ExportError(
            f"--preprocessing included: checkpoint {source} does not record its input "
            "normalisation (it was saved without lit_classifiers' InputPreprocessing callback, "
            "e.g. before it existed); export with --preprocessing none and normalise yourself"
        )
    # compile=False: a compiled backbone would be exported through its compiled wrapper.
    module = ClassifierModule.load_from_checkpoint(source, map_location="cpu", compile=False)
    module.eval()
    ema = module.ema is not None
    net = module.ema.module if module.ema is not None else module.backbone
    net.eval()
    name = str(module.hparams.get("backbone", type(net).__name__))
    if image_size is None:
        image_size = get_backbone_info(name).default_input_size
    _check_image_size(net, name, image_size)
    class_names = module.hparams.get("class_names")
    if preprocessing is not None:
        preprocessing = _at_size(preprocessing, image_size)
    in_channels = int(getattr(net, "in_channels", module.hparams.get("in_channels", 3)))
    if included:
        net = Normalized(net, preprocessing["mean"], preprocessing["std"]).eval()
    return _Network(
        net=net,
        ema=ema,
        name=name,
        in_channels=in_channels,
        image_size=image_size,
        class_names=None if class_names is None else [str(c) for c in class_names],
        num_classes=int(module.hparams.get("num_classes")),
        preprocessing=preprocessing,
        included=included,
    )


def _at_size(preprocessing: dict[str, Any], image_size: int) -> dict[str, Any]:
    """The recorded preprocessing for crops of ``image_size``: an export at another size than
    training's takes the datamodules' default resize for it (``size * 256 / 224``)."""
    crop = preprocessing.get("crop") or {}
    if crop.get("height") == image_size:
        return preprocessing
    channels = preprocessing["input_size"][0]
    return {
        **preprocessing,
        "input_size": [channels, image_size, image_size],
        "resize": {**preprocessing["resize"], "shortest_edge": default_resize_size(image_size)},
        "crop": {**crop, "height": image_size, "width": image_size},
    }


def _check_image_size(net: nn.Module, name: str, image_size: int) -> None:
    """Refuse a size the backbone cannot take, rather than failing inside the exporter."""
    minimum = getattr(net, "min_input_size", 1)
    if image_size < minimum:
        raise ExportError(
            f"--image-size {image_size} is below {name}'s minimum input size {minimum}"
        )


def _description(network: _Network, format: str) -> dict[str, Any]:
    """The classes file's content: what a user of the file needs to feed it and read it."""
    if network.included:
        layout, dtype = "NHWC", "uint8"
        steps = "resize, then crop; the file scales and normalises"
    else:
        layout, dtype = "NCHW", "float32"
        steps = "resize, crop, then x * rescale_factor, then (x - mean) / std per channel"
    preprocessing = None
    if network.preprocessing is not None:
        preprocessing = {
            **network.preprocessing,
            "included": network.included,
            "steps": steps,
            # The file is one view per image; the datamodules' ten_crop and dense protocols
            # average several views, which a server would have to do itself.
            "eval_protocol": "center",
        }
    return {
        "class_names": network.class_names,
        "num_classes": network.num_classes,
        "backbone": network.name,
        "weights": "ema" if network.ema else "raw",
        "format": format,
        "input": {
            "name": "images",
            "shape": list(network.input_shape),  # batch: any size
            "layout": layout,
            "dtype": dtype,
        },
        "preprocessing": preprocessing,
        "output": {"name": "logits", "shape": ["batch", network.num_classes]},
    }


def _write_description(network: _Network, format: str, path: Path) -> None:
    """Beside the model, so the class names can be read without loading the model."""
    path.write_text(json.dumps(_description(network, format), indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------- the paths
def _output_path(source: str, output: str | os.PathLike[str] | None, format: str) -> Path:
    if output is not None:
        return Path(output)
    if fsspec.utils.get_protocol(source) != "file":
        raise ExportError(f"checkpoint {source} is not a local file: give --output")
    checkpoint = Path(source.removeprefix("file://"))
    return checkpoint.with_name(checkpoint.stem + FORMATS[format])


def _check_writable(source: str, target: Path, classes_file: Path, overwrite: bool) -> None:
    local = source.removeprefix("file://")
    if fsspec.utils.get_protocol(source) == "file" and not os.path.isfile(local):
        what = "is a folder, not a checkpoint file" if os.path.isdir(local) else "does not exist"
        raise ExportError(f"checkpoint {source} {what}")
    if not target.parent.is_dir():
        raise ExportError(f"--output {target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise ExportError(f"--output {target} is a folder; give a file name")
    if os.path.exists(local) and target.exists() and os.path.samefile(local, target):
        raise ExportError(f"--output {target} is the checkpoint itself")
    for path in (target, classes_file):
        if path.exists() and not overwrite:
            raise ExportError(f"{path} already exists; pass --overwrite to replace it")


def _check_packages(format: str, verify: bool) -> None:
    if format != "onnx":
        return
    needed = ["onnx", "onnxscript", *(["onnxruntime"] if verify else [])]
    missing = []
    for name in needed:
        try:  # imported, not just looked up: a broken install fails here, not mid-export
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"--format onnx needs {', '.join(missing)}, which cannot be imported: {INSTALL_HINT}"
        )


def _stored_input(source: str) -> tuple[int | None, dict[str, Any] | None]:
    """The crop size the checkpoint was trained with, if it stored one, and its recorded
    preprocessing (:class:`~lit_classifiers.callbacks.InputPreprocessing`), if any."""
    checkpoint = read_checkpoint(source, map_location="cpu")
    preprocessing = checkpoint.get(PREPROCESSING_KEY)
    if not _valid_preprocessing(preprocessing):
        preprocessing = None
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    size = hparams.get("image_size") if isinstance(hparams, dict) else None
    if preprocessing is not None and size is None:
        size = preprocessing["crop"]["height"]
    return (size if isinstance(size, int) and not isinstance(size, bool) else None), preprocessing


def _valid_preprocessing(value: object) -> bool:
    """A checkpoint is a file from anywhere: take its record only when it has the right shape."""
    if not isinstance(value, dict):
        return False
    try:
        channels = value["input_size"][0]
        numbers = [*value["mean"], *value["std"]]
        return (
            isinstance(channels, int)
            and len(value["mean"]) == len(value["std"]) == channels
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers)
            and all(v > 0 for v in value["std"])
            and isinstance(value["crop"]["height"], int)
            and isinstance(value["resize"], dict)
        )
    except (KeyError, TypeError, IndexError):
        return False


@contextlib.contextmanager
def _temporary(final: Path) -> Iterator[Path]:
    """A new path in ``final``'s folder, removed on exit unless it was moved into place.

    Not created here: the writer creates it, so it gets the umask's permissions (mkstemp's
    0600 would make the exported file private).
    """
    # Keeps the final suffix: torch.export.save and load want a name ending in .pt2.
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    path = final.with_name(f".{final.name}.partial-{tag}{final.suffix}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- the writers
def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1)


def _write_model(
    network: _Network, example: Tensor, path: Path, format: str, opset: int | None
) -> None:
    """Write ``network`` to ``path`` in ``format``, with the class names stored inside."""
    names = json.dumps(network.class_names)
    if format == "onnx":
        _write_onnx(network.net, example, path, opset, names)
    elif format == "torchscript":
        _write_torchscript(network.net, path, names)
    else:
        _write_exported_program(network.net, example, path, names)


def _write_onnx(net: nn.Module, example: Tensor, path: Path, opset: int | None, names: str) -> None:
    # dynamo=True: the TorchScript-based exporter (dynamo=False) is deprecated since torch 2.9.
    program = torch.onnx.export(
        net,
        (example,),
        dynamo=True,
        dynamic_shapes=({0: _batch_dim()},),
        input_names=["images"],
        output_names=["logits"],
        opset_version=opset,
        external_data=False,
        verbose=False,
    )
    program.model.metadata_props["class_names"] = names
    program.save(path, external_data=False)


def _write_torchscript(net: nn.Module, path: Path, names: str) -> None:
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, str(path), _extra_files={EXTRA_FILE: names})


def _write_exported_program(net: nn.Module, example: Tensor, path: Path, names: str) -> None:
    program = torch.export.export(net, (example,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, path, extra_files={EXTRA_FILE: names})


# ---------------------------------------------------------------------------------- verification
def _verify(network: _Network, path: Path, format: str, batch_size: int) -> float:
    """Load ``path`` back and compare it with the network at two batch sizes (the batch is
    dynamic)."""
    run = _loader(path, format)
    worst = 0.0
    for seed, batch in enumerate((batch_size, batch_size + 1), start=1):
        images = network.example(batch, seed)
        with torch.no_grad():
            expected = network.net(images)
        got = run(images)
        if got.shape != expected.shape:
            raise ExportError(
                f"{format} file {path}: output shape {tuple(got.shape)} for a batch of {batch}, "
                f"expected {tuple(expected.shape)}"
            )
        diff = (got - expected).abs().max().item()
        worst = max(worst, diff)
        if diff > ATOL + RTOL * expected.abs().max().item():
            raise ExportError(
                f"{format} file {path}: outputs differ from the checkpoint's by up to {diff:.3g} "
                f"on a batch of {batch}"
            )
    return worst


def _loader(path: Path, format: str) -> Callable[[Tensor], Tensor]:
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    if format == "torchscript":
        scripted = torch.jit.load(str(path), map_location="cpu")
        return _no_grad(scripted)
    program = torch.export.load(path)
    return _no_grad(program.module())


def _no_grad(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(x)

    return run


# ------------------------------------------------------------------------------------ the command
class _Parser(argparse.ArgumentParser):
    """Errors in one line naming the option, as the rest of the command reports them."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}\n(see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Write a checkpoint's network (its EMA weights when it kept them), in eval mode, as "
            "an ONNX, TorchScript or torch.export file with a dynamic batch dimension, and "
            "beside it (<output>.classes.json) the class names and every number of the input's "
            "preprocessing (resize, crop, mean, std). The file takes float32 images (N, C, H, "
            "W) normalised as in training, (x / 255 - mean) / std per channel, or with "
            "--preprocessing included uint8 images (N, H, W, C); it returns (N, classes) "
            "logits. The written file is loaded back and checked against the checkpoint."
        ),
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, help="the checkpoint")
    parser.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        help="onnx (needs the [export] extra: onnx, onnxscript, onnxruntime), torchscript "
        "(torch.jit.script, deprecated by PyTorch) or exported_program (torch.export)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="file to write (default: beside the checkpoint, named after it: .onnx, .pt, .pt2)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="height and width of the input (default: the checkpoint's datamodule image_size, "
        "else the backbone's default input size)",
    )
    parser.add_argument(
        "--preprocessing",
        choices=PREPROCESSING_CHOICES,
        default="none",
        help="none: the file takes normalised float32 (N, C, H, W); included: it takes uint8 "
        "(N, H, W, C) images, resized and cropped as the classes file says, and normalises "
        "them itself",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    parser.add_argument(
        "--batch-size-example",
        type=int,
        default=2,
        help="batch size of the traced example, at least 2 (the exported batch is dynamic)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the file back and comparing it with the checkpoint",
    )
    return parser


def export_main(args: Sequence[str]) -> int:
    """``lit-classifiers export``; errors are raised for the command's one-line reporting."""
    options = _parser().parse_args(list(args))
    with warnings.catch_warnings():
        # torch.jit.script's deprecation is stated in --help; repeating it on every export of
        # the format the user asked for adds nothing.
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", "`torch.jit.save` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
        result = export_checkpoint(
            options.ckpt_path,
            options.output,
            options.format,
            batch_size_example=options.batch_size_example,
            opset=options.opset,
            image_size=options.image_size,
            preprocessing=options.preprocessing,
            overwrite=options.overwrite,
            verify=options.verify,
        )
    weights = "EMA weights" if result.ema else "weights"
    checked = (
        f", max |difference| {result.max_abs_diff:.2g} from the checkpoint"
        if result.max_abs_diff is not None
        else ""
    )
    shape = ", ".join(map(str, result.input_shape))
    print(
        f"wrote {result.output} ({result.format}, {weights}, input ({shape}){checked}) "
        f"and {result.classes_file}"
    )
    return 0
