"""Evaluation protocols center, ten_crop and dense: the views against torchvision, the model side
against hand computations, DDP against one process, and the command line.

Real photographs: scikit-learn's two bundled JPEGs (a temple and a flower, 640x427), used as they
are and cut into portrait, small, large and grayscale JPEGs.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from helpers.cli import TINY, run_cli, run_dirs, scalars
from helpers.ddp import read_ranks
from helpers.modules import TinyNet, make_trainer, quick_backbone
from PIL import Image
from torchvision.models import ResNet50_Weights
from torchvision.transforms import Resize, TenCrop
from torchvision.transforms import functional as TF

from datamodules import (
    DigitsDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    STL10DataModule,
    StreamingDataModule,
)
from datamodules.eval_views import (
    DenseViews,
    EvalViews,
    ExactCenterCrop,
    TenCropViews,
    eval_views,
    resized_size,
)
from lit_classifiers.eval_protocols import convolutional_head, dense_logits, protocol_logits
from lit_classifiers.module import ClassifierModule

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"
NUM_CLASSES = 5
SMALL = 16  # crop side of the tiny image-folder runs; eval_resize is then 18


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real JPEGs of every shape the centre crop must handle."""
    folder = tmp_path_factory.mktemp("photos")
    china, flower = Image.open(PHOTOS / "china.jpg"), Image.open(PHOTOS / "flower.jpg")
    made = {
        "portrait": flower.crop((100, 0, 400, 427)),  # 300x427
        "small": china.crop((200, 100, 350, 200)),  # 150x100: upscaled to 256
        "small_portrait": flower.crop((300, 150, 371, 260)),  # 71x110
        "large": china.resize((1280, 854), Image.Resampling.BICUBIC),  # JPEG draft would apply
        "gray": china.crop((0, 0, 427, 427)).convert("L"),
        "square": china.crop((100, 0, 400, 300)),
    }
    paths = {"landscape": PHOTOS / "china.jpg", "flower": PHOTOS / "flower.jpg"}
    for name, image in made.items():
        paths[name] = folder / f"{name}.jpg"
        image.save(paths[name], quality=90)
    return paths


def write_tiny_folder(root: Path, count: int = 37, seed: int = 0) -> list[Path]:
    """``root/{train,test}/c<k>/`` with ``count`` small real-photo JPEGs of varied shapes in
    test/ (and the same in train/, which the datamodule requires)."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(PHOTOS / "china.jpg"), Image.open(PHOTOS / "flower.jpg")]
    files = []
    for i in range(count):
        source = sources[i % 2]
        width, height = (int(v) for v in rng.integers(18, 40, size=2))
        left, top = int(rng.integers(0, 600)), int(rng.integers(0, 380))
        image = source.crop((left, top, left + 40, top + 40)).resize((width, height))
        for split in ("train", "test"):
            path = root / split / f"c{i % NUM_CLASSES}" / f"{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90)
        files.append(root / "test" / f"c{i % NUM_CLASSES}" / f"{i:03d}.jpg")
    return files


def tiny_datamodule(root: Path, **kwargs: object) -> ImageFolderDataModule:
    settings = {"image_size": SMALL, "batch_size": 4, "num_workers": 0, "val_split": 5}
    return ImageFolderDataModule(str(root), **{**settings, **kwargs})


def tiny_model(seed: int = 0) -> ClassifierModule:
    torch.manual_seed(seed)
    return ClassifierModule(TinyNet(NUM_CLASSES), num_classes=NUM_CLASSES)


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5):
    """Equal to within ``tolerance`` of the largest magnitude: float32 sums in another order."""
    assert actual.shape == expected.shape
    error = (actual - expected).abs().max()
    assert error <= tolerance * expected.abs().max(), (float(error), expected)


def unnormalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]):
    return (images * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)) * 255


# ------------------------------------------------------------------------------ center
def test_center_matches_torchvision_weights_transforms(photos: dict[str, Path], tmp_path: Path):
    reference = ResNet50_Weights.IMAGENET1K_V1.transforms()
    assert (reference.resize_size, reference.crop_size) == ([256], [224])
    center = ExactCenterCrop(224, 256)
    for name, path in photos.items():
        expected = unnormalise(
            reference(Image.open(path).convert("RGB")), reference.mean, reference.std
        )
        ours = center(str(path))
        assert ours.dtype == torch.uint8 and ours.shape == (3, 224, 224), name
        assert (ours.float() - expected).abs().max() <= 1.0, name

    # and what the datamodule's test split and predict transform actually decode
    for split in ("train", "val", "test"):
        for name, path in photos.items():
            target = tmp_path / split / name / "a.jpg"
            target.parent.mkdir(parents=True)
            shutil.copy(path, target)
    dm = ImageFolderDataModule(str(tmp_path), image_size=224, num_workers=0)
    dm.setup()
    predict = dm.predict_transform()
    for i in range(len(dm.test_dataset)):
        path = dm.test_dataset.path(i)
        expected = unnormalise(
            reference(Image.open(path).convert("RGB")), reference.mean, reference.std
        )
        assert (dm.test_dataset[i][0].float() - expected).abs().max() <= 1.0, path
        assert (predict(path).float() - expected).abs().max() <= 1.0, path


def test_ten_crop_views_equal_torchvision_ten_crop(photos: dict[str, Path]) -> None:
    views = TenCropViews(224, 256)
    for name in ("landscape", "portrait", "small_portrait", "gray"):
        image = Image.open(photos[name]).convert("RGB")
        by_hand = torch.stack([TF.pil_to_tensor(c) for c in TenCrop(224)(Resize(256)(image))])
        ours = views(str(photos[name]))
        assert ours.shape == (10, 3, 224, 224)
        assert torch.equal(ours, by_hand), name
    # corners, centre, then the same five of the mirror image
    assert torch.equal(ours[5], ours[1].flip(-1)) and torch.equal(ours[4], ours[9].flip(-1))


def test_dense_views_are_the_whole_image_at_each_scale_and_mirrored(photos: dict[str, Path]):
    image = Image.open(photos["portrait"]).convert("RGB")
    views = DenseViews((224, 300))(str(photos["portrait"]))
    assert [tuple(v.shape) for v in views] == [(2, 3, 318, 224), (2, 3, 427, 300)]
    for q, pair in zip((224, 300), views, strict=True):
        expected = TF.pil_to_tensor(Resize(q)(image))
        assert torch.equal(pair[0], expected) and torch.equal(pair[1], expected.flip(-1))
    assert resized_size(300, 427, 224) == (224, 318)  # torchvision truncates the long side


# ------------------------------------------------------------------------------ model side
@pytest.fixture(scope="module")
def fc_networks() -> dict[str, torch.nn.Module]:
    return {name: quick_backbone(name, NUM_CLASSES).eval() for name in ("vgg11", "alexnet")}


@pytest.mark.parametrize("name, channels, kernel", [("vgg11", 512, 7), ("alexnet", 256, 6)])
def test_fc_as_conv_head_equals_the_linear_head(fc_networks, name, channels, kernel) -> None:
    net = fc_networks[name]
    head = convolutional_head(net)
    assert head is not None and head.kernel == kernel
    torch.manual_seed(1)
    features = torch.randn(2, channels, kernel, kernel).relu()
    with torch.no_grad():
        linear = net.classifier(features.flatten(1))
        conv = head(features)
        assert conv.shape == (2, NUM_CLASSES, 1, 1)
        assert_relative(conv.flatten(1), linear)
        # a larger map: each score is the linear head on its kernel x kernel window
        wide = torch.randn(1, channels, kernel + 1, kernel + 2).relu()
        scores = head(wide)
        assert scores.shape == (1, NUM_CLASSES, 2, 3)
        window = wide[:, :, 1 : 1 + kernel, 2 : 2 + kernel]
        assert_relative(scores[:, :, 1, 2], net.classifier(window.flatten(1)))
    with pytest.raises(ValueError, match=f"at least {kernel}x{kernel}"):
        head(features[:, :, 1:, 1:])


# vgg11 (slow): VGG-11's forward at 224 costs seconds; alexnet's fc-as-conv head and resnet18's
# pooled one take the same path here, and vgg11's head is held to its linear head above.
@pytest.mark.parametrize(
    "name, size",
    [pytest.param("vgg11", 224, marks=pytest.mark.slow), ("alexnet", 227), ("resnet18", 224)],
)
def test_dense_at_the_crop_size_gives_the_plain_forward(fc_networks, photos, name, size) -> None:
    net = fc_networks[name] if name in fc_networks else quick_backbone(name, NUM_CLASSES).eval()
    # On a square photo, the whole image at Q = crop size is the centre crop.
    pair = DenseViews((size,))(str(photos["square"]))[0]
    crop = ExactCenterCrop(size, size)(str(photos["square"]))
    assert torch.equal(pair[0], crop)
    x = (pair.float() / 255 - 0.45) / 0.225
    with torch.no_grad():
        plain = net(x)
        dense = dense_logits(net, x)
        assert_relative(dense, plain)
        # The protocol: softmax of image and mirror averaged, one row per image.
        model = ClassifierModule(net, num_classes=NUM_CLASSES)
        model.eval()
        logits = protocol_logits([x.unsqueeze(0)], model, net)
        expected = plain.softmax(-1).mean(0, keepdim=True).log()
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_dense_scales_default_to_the_vgg_papers() -> None:
    assert eval_views("dense", 224) == EvalViews("dense", (256, 384, 512))
    assert eval_views("dense", 112).scales == (128, 192, 256)  # scaled by image_size / 224
    assert eval_views("dense:224,256,384,480,640", 112).scales == (224, 256, 384, 480, 640)
    assert eval_views("dense:300,200", 224).scales == (300, 200)
    assert eval_views(" ten_crop", 224) == EvalViews("ten_crop")


def _data_dir(root: Path) -> str:
    (root / "train" / "c0").mkdir(parents=True)
    return str(root)


# Every datamodule takes eval_protocol and checks it when it is made, before reading any data.
DATAMODULES = {
    "digits": lambda root: DigitsDataModule,
    "stl10": lambda root: functools.partial(STL10DataModule, str(root)),
    "imagenet": lambda root: functools.partial(ImageNetDataModule, str(root)),
    "image_folder": lambda root: functools.partial(ImageFolderDataModule, _data_dir(root)),
    "streaming": lambda root: functools.partial(StreamingDataModule, str(root)),
}


@pytest.mark.parametrize("datamodule", sorted(DATAMODULES))
@pytest.mark.parametrize("bad", ["tencrop", "dense:", "dense:0,256", "dense:256;384", 5])
def test_bad_eval_protocol_is_a_one_line_error(tmp_path: Path, datamodule: str, bad) -> None:
    make = DATAMODULES[datamodule](tmp_path)
    with pytest.raises(
        ValueError, match="eval_protocol must be 'center', 'ten_crop', 'dense'"
    ) as e:
        make(eval_protocol=bad)
    assert "\n" not in str(e.value) and repr(bad) in str(e.value)


def test_model_averages_the_views_of_a_plain_dataloader() -> None:
    """The model has no protocol of its own: (N, V, C, H, W) batches from any loader are
    averaged over V, and plain (N, C, H, W) batches are one view each."""
    model = tiny_model()
    torch.manual_seed(1)
    views, labels = torch.randn(6, 3, 3, 8, 8), torch.arange(6) % NUM_CLASSES
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(views, labels), batch_size=3
    )
    averaged = make_trainer().test(model, loader, verbose=False)[0]
    plain = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(views[:, 0], labels), batch_size=3
    )
    single = make_trainer().test(model, plain, verbose=False)[0]
    model.eval()
    with torch.no_grad():
        probs = model(views.flatten(0, 1)).softmax(-1).view(6, 3, -1).mean(1)
        first = torch.nn.functional.cross_entropy(model(views[:, 0]), labels)
    expected = -probs[torch.arange(6), labels].log().mean()
    assert averaged["test/loss"] == pytest.approx(float(expected), abs=1e-5)
    assert single["test/loss"] == pytest.approx(float(first), abs=1e-5)
    assert averaged["test/loss"] != pytest.approx(single["test/loss"], abs=1e-3)


# ------------------------------------------------------------------------------ end to end
def hand_probabilities(model: ClassifierModule, path: Path, protocol: str, dm) -> torch.Tensor:
    """An image's averaged probabilities, its views made with torchvision's own transforms."""
    image = Image.open(path).convert("RGB")
    if protocol == "ten_crop":
        groups = [TenCrop(SMALL)(Resize(dm.eval_resize_size)(image))]
    else:
        groups = [[Resize(q)(image), TF.hflip(Resize(q)(image))] for q in (16, 24)]
    probs = []
    with torch.no_grad():
        for group in groups:
            x = dm.normalize(torch.stack([TF.pil_to_tensor(view) for view in group]))
            probs.append(model(x).softmax(-1))
    return torch.cat(probs).mean(0)


@pytest.mark.parametrize("protocol", ["ten_crop", "dense:16,24"])
def test_test_and_predict_average_the_views(tmp_path: Path, protocol: str) -> None:
    files = write_tiny_folder(tmp_path, count=11)
    dm = tiny_datamodule(tmp_path, predict_dir=str(tmp_path / "test"), eval_protocol=protocol)
    model = tiny_model()
    trainer = make_trainer()
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    predictions = trainer.predict(model, datamodule=dm)

    model.eval()
    short = "ten_crop" if protocol == "ten_crop" else "dense"
    expected = {p.name: hand_probabilities(model, p, short, dm) for p in files}
    labels = torch.tensor([int(p.parent.name[1:]) for p in files])
    probs = torch.stack(list(expected.values()))
    loss = -probs[torch.arange(len(files)), labels].log().mean()
    acc1 = (probs.argmax(-1) == labels).float().mean()
    assert metrics["test/loss"] == pytest.approx(float(loss), abs=1e-5)
    assert metrics["test/acc1"] == pytest.approx(float(acc1), abs=1e-6)

    # predict: the same probabilities, so the CSV matches test
    rows = {
        Path(path).name: row
        for batch in predictions
        for path, row in zip(batch["paths"], batch["probs"], strict=True)
    }
    assert sorted(rows) == sorted(expected)
    for path, row in rows.items():
        torch.testing.assert_close(row, expected[path], rtol=1e-5, atol=1e-6)
    if short == "dense":  # one image per batch: images of different sizes cannot be stacked
        assert all(len(batch["paths"]) == 1 for batch in predictions)


# ------------------------------------------------------------------------------ DDP
PROTOCOLS = ("center", "ten_crop", "dense:16,24")


# slow: two DDP processes (one launch shared with test_module_ddp.py and test_streaming.py,
# helpers/ddp.py)
@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_two_processes_match_one_process(two_rank_job: Path) -> None:
    ranks = read_ranks(two_rank_job, "protocols")
    data, state_path = two_rank_job / "protocols" / "data", two_rank_job / "protocols" / "state.pt"

    single = {}
    trainer = make_trainer()
    for protocol in PROTOCOLS:
        model = tiny_model()
        model.load_state_dict(torch.load(state_path, weights_only=True))
        dm = tiny_datamodule(data, eval_protocol=protocol)
        single[protocol] = trainer.test(model, datamodule=dm, verbose=False)[0]

    for protocol in PROTOCOLS:
        if protocol != "center":  # the protocol took effect: its loss is not the centre crop's
            assert single[protocol]["test/loss"] != pytest.approx(single["center"]["test/loss"])
        # Lightning padded the split (38 images evaluated for 37), yet every image counts once
        assert sum(rank["seen"][protocol] for rank in ranks) == 38
        for rank in ranks:
            multi = rank["test"][protocol]
            assert multi["test/acc1"] == single[protocol]["test/acc1"]
            assert multi["test/acc5"] == single[protocol]["test/acc5"]
            assert multi["test/loss"] == pytest.approx(single[protocol]["test/loss"], abs=1e-6)


# The two-process part of helpers/ddp.py's launch.
def ddp_prepare(folder: Path) -> list[Path]:
    """37 images (divisible by neither the batch size nor 2 processes) and the weights."""
    write_tiny_folder(folder / "data", count=37)
    torch.save(tiny_model().state_dict(), folder / "state.pt")
    return [folder / "data", folder / "state.pt", folder]


def ddp_main(data: str, state_path: str, out_dir: str) -> None:
    """Each protocol on two gloo processes; each rank writes its metrics and image counts."""
    from lightning.pytorch.callbacks import Callback

    class SeenImages(Callback):
        def __init__(self) -> None:
            self.count = 0

        def on_test_start(self, trainer, pl_module) -> None:
            self.count = 0

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
            self.count += len(batch[1])

    result: dict[str, dict] = {"test": {}, "seen": {}}
    seen = SeenImages()
    trainer = make_trainer(devices=2, strategy="ddp", callbacks=[seen])
    for protocol in PROTOCOLS:
        model = tiny_model()
        model.load_state_dict(torch.load(state_path, weights_only=True))
        dm = tiny_datamodule(Path(data), eval_protocol=protocol)
        metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
        result["test"][protocol], result["seen"][protocol] = metrics, seen.count
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


# ------------------------------------------------------------------------------ command line
def test_cli_test_with_dense_protocol(fitted_run: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "fitted.ckpt"  # a copy: the shared run folder stays as it is
    shutil.copy(fitted_run / "runs/digits-resnet20/version_0/checkpoints/last.ckpt", checkpoint)
    images = 16  # dense batches hold one image each
    run_cli(
        "test",
        *TINY,
        "--data.eval_protocol=dense",
        f"--trainer.limit_test_batches={images}",
        f"--ckpt_path={checkpoint}",
        cwd=tmp_path,
    )
    (run_dir,) = run_dirs(tmp_path)
    logged = {tag: values[-1] for tag, values in scalars(run_dir).items()}

    # The same images evaluated in this process. The checkpoint (from a fit under "center")
    # must not have put its own protocol over the command line's.
    def evaluate(protocol: str) -> dict[str, float]:
        model = ClassifierModule.load_from_checkpoint(checkpoint)
        dm = DigitsDataModule(image_size=8, batch_size=1, eval_protocol=protocol)
        trainer = make_trainer(limit_test_batches=images)
        return trainer.test(model, datamodule=dm, verbose=False)[0]

    dense, center = evaluate("dense"), evaluate("center")
    assert logged["test/acc1"] == pytest.approx(dense["test/acc1"], abs=1e-6)
    assert logged["test/loss"] == pytest.approx(dense["test/loss"], abs=1e-5)
    assert dense["test/loss"] != pytest.approx(center["test/loss"], abs=1e-4)


@pytest.mark.slow
def test_vgg16_paper_recipe_tests_with_the_dense_protocol_end_to_end(tmp_path: Path) -> None:
    """`lit-classifiers test` with the VGG paper recipe on a tiny ImageNet: the dense protocol runs
    through the CLI (one scale, the smallest that leaves fc6 a 7x7 map; the recipe's own are in
    tests/test_recipes.py)."""
    from helpers.cli import CONFIGS
    from helpers.data import make_folder_layout

    data = make_folder_layout(tmp_path / "imagenet")
    run_cli(
        "test",
        "--config",
        CONFIGS / "imagenet" / "base.yaml",
        "--config",
        CONFIGS / "imagenet" / "vgg16_paper.yaml",
        f"--data.data_dir={data}",
        "--data.image_size=32",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--data.eval_protocol=dense:224",
        # One of the six val images (dense batches hold one image each): a batch count of 1 on
        # the command line is the float 1.0, every batch, six VGG-16 forwards at 224x224.
        "--trainer.limit_test_batches=0.17",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    (run_dir,) = run_dirs(tmp_path, "imagenet-vgg16")
    logged = scalars(run_dir)
    assert {"test/acc1", "test/loss"} <= set(logged)
    assert "eval_protocol: dense:224" in (run_dir / "config.yaml").read_text()
