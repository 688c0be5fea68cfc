"""Training augmentation presets (``datamodules.augment``) checked on real JPEG files.

Crop geometry is measured from the output pixels of an image whose pixels encode their own
coordinates (saved here as a JPEG), so what is checked is what a model would see: the shorter
side S each crop was rescaled to, where it was taken, and whether it was mirrored, against the
ranges the papers give. The expected numbers are the papers' own (quoted below) and
fb.resnet.torch's published PCA constants, copied here as data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from helpers.cli import run_cli
from helpers.facts import stl10_coordinate_image, write_stl10_split
from PIL import Image

from datamodules import ImageFolderDataModule, ImageNetDataModule, STL10DataModule
from datamodules.augment import (
    ARRAY_PRESETS,
    FILE_PRESETS,
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    POLICIES,
    Augmented,
    PCALighting,
    TrainAugment,
)
from datamodules.decoding import ImageDecodeError
from datamodules.transforms import RandomResizedCropDecode

# fb.resnet.torch, datasets/imagenet.lua: "local pca = { eigval = torch.Tensor{ 0.2175, 0.0188,
# 0.0045 }, eigvec = torch.Tensor{ { -0.5675, 0.7192, 0.4009 }, { -0.5808, -0.0045, -0.8140 },
# { -0.5836, -0.6948, 0.4203 } } }", used as Lighting(0.1, pca.eigval, pca.eigvec).
FB_RESNET_EIGVAL = (0.2175, 0.0188, 0.0045)
FB_RESNET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# The papers' shorter side S for 224 crops: AlexNet Sec. 2 (256, central 256x256 square), VGG
# Sec. 3.1 ("Smin = 256 and Smax = 512"; single-scale S = 256 and S = 384), ResNet Sec. 3.4
# ("shorter side randomly sampled in [256, 480]").
PAPER_S = {
    "alexnet": (256, 256),
    "vgg": (256, 512),
    "vgg_fixed_256": (256, 256),
    "vgg_fixed_384": (384, 384),
    "resnet": (256, 480),
}
JITTER_PRESETS = list(PAPER_S)

PHOTO = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"  # a real 640x427 photo
IMAGENET_MEAN_UINT8 = (124, 116, 104)  # round(255 * (0.485, 0.456, 0.406))

# ---------------------------------------------------------------------------- the test image
COORD_W, COORD_H = 320, 240
RED_STEP = 255 / (COORD_W - 1)  # grey levels per source column
GREEN_STEP = 255 / (COORD_H - 1)


def coordinate_jpeg(path: Path) -> Path:
    """A 320x240 JPEG: red = column, green = row (scaled to 0..255), blue 200 (quality 95,
    no chroma subsampling, so the ramps survive compression to within a grey level)."""
    x = np.arange(COORD_W) * RED_STEP
    y = np.arange(COORD_H) * GREEN_STEP
    pixels = np.empty((COORD_H, COORD_W, 3), dtype=np.uint8)
    pixels[..., 0] = np.round(x)[None, :]
    pixels[..., 1] = np.round(y)[:, None]
    pixels[..., 2] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=95, subsampling=0)
    return path


def measure(image: torch.Tensor) -> dict[str, float | bool]:
    """The source box a ``(3, n, n)`` crop of :func:`coordinate_jpeg` shows, in source pixels.

    A resize keeps a linear ramp linear: output column c (centre c + 0.5) shows source column
    ``left + (c + 0.5) * width / n - 0.5``, and its red is that times ``RED_STEP``.
    """
    mirrored = bool(image[0, :, 0].double().mean() > image[0, :, -1].double().mean())
    if mirrored:
        image = image.flip(-1)
    n = image.shape[-1]
    centres = np.arange(n) + 0.5
    red_slope, red_at_0 = np.polyfit(centres, image[0].double().mean(dim=0).numpy(), 1)
    green_slope, green_at_0 = np.polyfit(centres, image[1].double().mean(dim=1).numpy(), 1)
    width = red_slope * n / RED_STEP
    height = green_slope * n / GREEN_STEP
    return {
        "width": width,
        "height": height,
        "left": red_at_0 / RED_STEP + 0.5,
        "top": green_at_0 / GREEN_STEP + 0.5,
        "mirrored": mirrored,
    }


def draws(transform, path: Path, count: int, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [transform(str(path)) for _ in range(count)]


def crop_stage(transform):
    """The decode-and-crop a preset starts with (colour lighting, policies and erasing follow
    it and would move the ramps' levels, which is where positions are read from)."""
    return transform.first if isinstance(transform, Augmented) else transform


# ---------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("preset", JITTER_PRESETS)
def test_paper_presets_draw_the_papers_shorter_side_and_crop_anywhere_inside(
    preset: str, tmp_path: Path
) -> None:
    size = 112  # half of 224: every number of the preset is halved
    path = coordinate_jpeg(tmp_path / "coords.jpg")
    outputs = draws(crop_stage(TrainAugment(preset).file_transform(size)), path, 120)
    assert all(o.shape == (3, size, size) and o.dtype == torch.uint8 for o in outputs)
    boxes = [measure(o) for o in outputs]
    short = min(COORD_W, COORD_H)
    low, high = (s * size / 224 for s in PAPER_S[preset])
    scales = np.array([size * short / b["width"] for b in boxes])
    # square crops (height and width from different channels agree)
    assert all(abs(b["height"] / b["width"] - 1) < 0.03 for b in boxes), preset
    # S in the paper's range, to the measurement's ~1 % and the box's whole-pixel rounding
    assert scales.min() >= low * 0.97 and scales.max() <= high * 1.03, (scales.min(), scales.max())
    if high > low:  # uniform over the range: both ends are reached
        assert scales.min() < low + 0.05 * (high - low), sorted(scales)[:5]
        assert scales.max() > high - 0.05 * (high - low), sorted(scales)[-5:]
        assert abs(scales.mean() - (low + high) / 2) < 0.08 * (high - low), scales.mean()
    # every crop inside the rescaled image (AlexNet: inside its central square), and the
    # position ranges over all of it
    if preset == "alexnet":
        region_left, region_w = (COORD_W - short) / 2, short
    else:
        region_left, region_w = 0, COORD_W
    lefts = np.array([b["left"] - region_left for b in boxes])
    tops = np.array([b["top"] for b in boxes])
    widths = np.array([b["width"] for b in boxes])
    assert lefts.min() > -1.5 and (lefts + widths).max() < region_w + 1.5
    assert tops.min() > -1.5 and (tops + widths).max() < COORD_H + 1.5
    free = np.clip(region_w - widths, 1, None)
    assert (lefts / free).min() < 0.15 and (lefts / free).max() > 0.85
    mirrored = sum(b["mirrored"] for b in boxes)
    assert 0.3 * len(boxes) < mirrored < 0.7 * len(boxes), mirrored


def test_inception_is_torchvisions_random_resized_crop_and_unchanged(tmp_path: Path) -> None:
    transform = TrainAugment("inception").file_transform(112, min_scale=0.3)
    # the plain preset is the fused RandomResizedCrop itself (benchmark 2b measures this path)
    assert type(transform) is RandomResizedCropDecode
    path = coordinate_jpeg(tmp_path / "coords.jpg")
    boxes = [measure(o) for o in draws(transform, path, 80)]
    areas = np.array([b["width"] * b["height"] / (COORD_W * COORD_H) for b in boxes])
    ratios = np.array([b["width"] / b["height"] for b in boxes])
    assert areas.min() >= 0.3 * 0.93 and areas.max() <= 1.02, (areas.min(), areas.max())
    assert ratios.min() >= 0.75 * 0.96 and ratios.max() <= 4 / 3 * 1.04
    assert areas.min() < 0.45 and areas.max() > 0.8


def test_other_crop_sizes_scale_the_papers_numbers_and_227_keeps_them(tmp_path: Path) -> None:
    path = coordinate_jpeg(tmp_path / "coords.jpg")
    short = min(COORD_W, COORD_H)
    # AlexNet's real 227 input: 227 crops of the 256 square, i.e. 227/256 of the shorter side
    alexnet = crop_stage(TrainAugment("alexnet").file_transform(227))
    alex = [measure(o) for o in draws(alexnet, path, 20)]
    assert all(abs(b["width"] - 227 / 256 * short) < 1.5 for b in alex)
    # 64 px crops: VGG's S in [256, 512] * 64 / 224 = [73, 146]
    vgg = [measure(o) for o in draws(crop_stage(TrainAugment("vgg").file_transform(64)), path, 80)]
    scales = np.array([64 * short / b["width"] for b in vgg])
    assert scales.min() >= 73 * 0.97 and scales.max() <= 146 * 1.03
    assert scales.min() < 85 and scales.max() > 134


def test_fused_crop_equals_rescale_then_crop(tmp_path: Path) -> None:
    """Each one-step box resample shows what rescaling the whole image to the S it was taken at
    and slicing at its position shows: no distortion, blur or offset from the fusion."""
    path = coordinate_jpeg(tmp_path / "coords.jpg")
    source = Image.open(path).convert("RGB")
    short = min(COORD_W, COORD_H)
    size = 112
    for preset in ("vgg", "alexnet"):
        crop = crop_stage(TrainAugment(preset).file_transform(size))
        for out in draws(crop, path, 10, seed=3):
            box = measure(out)
            s = round(size * short / box["width"])  # the S this crop was taken at
            rescaled = source.resize((round(COORD_W * s / short), s), Image.Resampling.BILINEAR)
            left = round(box["left"] * s / short)
            top = round(box["top"] * s / short)
            reference = np.asarray(rescaled.crop((left, top, left + size, top + size)))
            ours = out.flip(-1) if box["mirrored"] else out
            diff = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - reference.astype(int))
            # the ramps rise ~1 grey level per rescaled pixel: this is sub-pixel agreement
            assert diff[..., :2].mean() < 1.0, (preset, diff[..., :2].mean())


# ---------------------------------------------------------------------------- PCA lighting
def test_lighting_constants_are_fb_resnet_torchs_and_orthonormal() -> None:
    assert IMAGENET_PCA_EIGVAL == FB_RESNET_EIGVAL
    assert IMAGENET_PCA_EIGVEC == FB_RESNET_EIGVEC
    vectors = np.array(FB_RESNET_EIGVEC)  # eigenvectors are its columns
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=2e-3)


def test_pca_lighting_with_std_0_is_the_identity() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    assert torch.equal(PCALighting(0.0)(image), image)
    floats = torch.rand(3, 20, 30)
    assert torch.equal(PCALighting(0.0)(floats), floats)


def test_pca_lighting_shifts_every_pixel_by_one_rgb_vector_along_the_eigenvectors() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16, dtype=torch.float64) * 0.5 + 0.25
    vectors = torch.tensor(FB_RESNET_EIGVEC, dtype=torch.float64)
    values = torch.tensor(FB_RESNET_EIGVAL, dtype=torch.float64)
    lighting = PCALighting(0.1)
    alphas = []
    for _ in range(3000):
        shift = lighting(image) - image
        per_pixel = shift.flatten(1)
        # the same RGB vector at every pixel
        assert (per_pixel.max(dim=1).values - per_pixel.min(dim=1).values).max() < 1e-12
        # its coordinates along the eigenvectors are alpha_i * lambda_i
        alphas.append(torch.linalg.solve(vectors, per_pixel[:, 0]) / values)
    alpha = torch.stack(alphas)
    # alpha ~ N(0, 0.1), independently per eigenvector (3000 draws: std within ~3 %)
    torch.testing.assert_close(
        alpha.std(dim=0), torch.full((3,), 0.1, dtype=torch.float64), atol=0.006, rtol=0
    )
    assert alpha.mean(dim=0).abs().max() < 0.006
    correlation = torch.corrcoef(alpha.T) - torch.eye(3, dtype=torch.float64)
    assert correlation.abs().max() < 0.06


def test_pca_lighting_on_uint8_moves_every_pixel_by_one_whole_vector_and_clamps() -> None:
    torch.manual_seed(1)
    image = torch.randint(60, 196, (3, 12, 12), dtype=torch.uint8)
    first = torch.tensor(FB_RESNET_EIGVEC, dtype=torch.float64)[:, 0]
    along_first = []
    for _ in range(2000):
        shift = PCALighting(0.1)(image).int() - image.int()
        per_pixel = shift.flatten(1)
        assert bool((per_pixel == per_pixel[:, :1]).all())  # no clamping in 60..195
        along_first.append(float(first @ per_pixel[:, 0].double()))
    # first component: 255 * 0.1 * 0.2175 = 5.55 grey levels std (rounding adds ~0.5)
    assert 5.0 < float(np.std(along_first)) < 6.1
    extremes = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)
    for _ in range(20):  # large shifts saturate instead of wrapping around
        out = PCALighting(5.0)(extremes.contiguous())
        assert out.dtype == torch.uint8
        assert bool((out[..., 0] <= out[..., 1]).all())


def test_pca_lighting_refuses_non_rgb_images() -> None:
    with pytest.raises(ValueError, match=r"RGB images \(\.\.\., 3, H, W\), got shape \(1, 8, 8\)"):
        PCALighting()(torch.zeros(1, 8, 8, dtype=torch.uint8))


# ---------------------------------------------------------------------------- every combination
@pytest.mark.parametrize("preset", FILE_PRESETS)
def test_every_preset_with_every_policy_on_a_real_photograph(preset: str) -> None:
    torch.manual_seed(0)
    for policy in (None, *POLICIES):
        transform = TrainAugment(preset, policy, 0.5).file_transform(224)
        for _ in range(2):
            out = transform(str(PHOTO))
            assert out.shape == (3, 224, 224) and out.dtype == torch.uint8, (preset, policy)


def test_policies_change_the_crop_and_paper_presets_add_colour_lighting(tmp_path: Path) -> None:
    path = coordinate_jpeg(tmp_path / "coords.jpg")
    plain = TrainAugment("vgg_fixed_256").file_transform(112)
    blue = [int(o[2].float().mean().round()) for o in draws(plain, path, 30)]
    # the blue plane is constant (200) in the file: only the lighting moves it, by whole levels
    assert len(set(blue)) > 3 and all(abs(b - 200) < 30 for b in blue)
    inception = TrainAugment("inception").file_transform(112)
    assert {int(o[2].float().mean().round()) for o in draws(inception, path, 10)} == {200}
    for policy in POLICIES:
        with_policy = TrainAugment("inception", policy).file_transform(112)
        changed = 0
        for seed in range(8):
            (expected,) = draws(inception, path, 1, seed=seed)
            # same seed, same crop: the policy draws after the crop and flip
            (out,) = draws(with_policy, path, 1, seed=seed)
            changed += not torch.equal(out, expected)
        assert changed >= 4, policy


def test_random_erasing_paints_a_rectangle_of_the_mean_colour(tmp_path: Path) -> None:
    path = coordinate_jpeg(tmp_path / "coords.jpg")
    erase = TrainAugment("resnet", random_erasing=1.0).file_transform(
        112, fill=(0.485, 0.456, 0.406)
    )
    fill = torch.tensor(IMAGENET_MEAN_UINT8, dtype=torch.uint8).view(3, 1, 1)
    for out in draws(erase, path, 10):
        painted = (out == fill).all(dim=0)
        rows, cols = painted.any(dim=1).nonzero(), painted.any(dim=0).nonzero()
        area = int(painted.sum())
        assert 0.02 * 112 * 112 * 0.9 <= area <= 0.33 * 112 * 112 * 1.1
        bounding = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert area == int(bounding)  # one solid rectangle
    never = TrainAugment("resnet", random_erasing=0.0).file_transform(112)
    assert not any(bool((o == fill).all(dim=0).any()) for o in draws(never, path, 10))


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"train_augment": "VGG"},
            "train_augment='VGG' is not a training preset for image files; expected one of "
            "'inception', 'alexnet', 'vgg', 'vgg_fixed_256', 'vgg_fixed_384', 'resnet'",
        ),
        ({"train_augment": "pad_crop"}, "train_augment='pad_crop' is not a training preset"),
        (
            {"train_policy": "ra"},
            "train_policy='ra' is not a policy; expected None or one of 'randaugment', "
            "'trivialaugment', 'autoaugment'",
        ),
        ({"random_erasing": 1.5}, "random_erasing must be a probability in [0, 1], got 1.5"),
        ({"random_erasing": True}, "random_erasing must be a probability in [0, 1], got True"),
        (
            {"train_augment": "vgg", "min_scale": 0.3},
            "min_scale=0.3 only applies to train_augment='inception'",
        ),
    ],
)
@pytest.mark.parametrize("module", [ImageNetDataModule, ImageFolderDataModule])
def test_file_datamodules_reject_bad_augmentation_when_made(
    module, kwargs: dict, message: str, tmp_path: Path
) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError) as caught:
        module(str(tmp_path), num_workers=0, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def image_folder(root: Path) -> Path:
    for cls in ("a", "b"):
        for k in range(3):
            coordinate_jpeg(root / "train" / cls / f"{k}.jpg")
        coordinate_jpeg(root / "val" / cls / "0.jpg")
    return root


@pytest.mark.filterwarnings("ignore:no ILSVRC2012_devkit")
@pytest.mark.parametrize("module", [ImageNetDataModule, ImageFolderDataModule])
def test_file_datamodules_build_the_preset_and_remember_it(module, tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data")
    dm = module(
        str(root),
        image_size=64,
        num_workers=0,
        batch_size=6,
        cache_dir=str(tmp_path / "cache"),
        train_augment="resnet",
        train_policy="trivialaugment",
        random_erasing=0.25,
    )
    assert (dm.hparams["train_augment"], dm.hparams["train_policy"]) == ("resnet", "trivialaugment")
    assert dm.hparams["random_erasing"] == 0.25
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (6, 3, 64, 64) and images.dtype == torch.uint8
    transform = dm.train_dataset.loader
    assert transform is dm.train_transform
    steps = [type(step).__name__ for step in transform.steps]
    assert steps == ["TrivialAugmentWide", "PCALighting", "RandomErasing"]
    # resnet at 64 px: S in [256, 480] * 64/224 = [73, 137] of the 240 px shorter side
    path = root / "train" / "a" / "0.jpg"
    scales = [64 * 240 / measure(im)["width"] for im in draws(transform.first, path, 30)]
    assert min(scales) >= 73 * 0.97 and max(scales) <= 137 * 1.03
    assert min(scales) < 90 and max(scales) > 120
    # evaluation is untouched: the same centre crop every time
    assert torch.equal(dm.val_dataset[0][0], dm.val_dataset[0][0])


# ---------------------------------------------------------------------------- STL-10
def stl10_dir(root: Path) -> Path:
    image = stl10_coordinate_image()  # red = 2 * column, green = 2 * row (0..190)
    images = np.repeat(image[None], 10, axis=0)
    labels = np.arange(10)
    folder = root / "stl10_binary"
    write_stl10_split(folder, "train", images, labels)
    write_stl10_split(folder, "test", images, labels)
    return root


def test_stl10_default_is_still_pad_and_crop(tmp_path: Path) -> None:
    dm = STL10DataModule(str(stl10_dir(tmp_path)), val_split=0, num_workers=0)
    assert dm.hparams["train_augment"] == "pad_crop"
    dm.setup("fit")
    torch.manual_seed(0)
    out = [dm.train_dataset[i][0] for i in range(10)]
    # a shift of up to 12 px at the native scale: red still rises 2 levels per pixel
    for image in out:
        row = image[0, 48].double()
        middle = row[20:76]
        slope = np.polyfit(np.arange(len(middle)), middle.numpy(), 1)[0]
        assert abs(abs(slope) - 2) < 0.05


@pytest.mark.parametrize("preset", ["alexnet", "vgg", "vgg_fixed_384", "resnet"])
def test_stl10_presets_scale_with_the_96_px_images(preset: str, tmp_path: Path) -> None:
    dm = STL10DataModule(str(stl10_dir(tmp_path)), val_split=0, num_workers=0, train_augment=preset)
    dm.setup("fit")
    torch.manual_seed(0)
    image, _ = dm.train_dataset[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.uint8
    crop = crop_stage(dm.train_transform)
    stored = torch.from_numpy(stl10_coordinate_image())
    scales, lefts = [], []
    for _ in range(80):
        red = crop(stored)[0, 48].double().numpy()
        if red[0] > red[-1]:
            red = red[::-1]
        slope, at_0 = np.polyfit(np.arange(96) + 0.5, red, 1)
        scales.append(96 * 2 / slope)  # S: 96 source pixels span 96 * 96 / S output ones
        lefts.append(at_0 / 2 + 0.5)
    low, high = (round(s * 96 / 224) for s in PAPER_S[preset])  # e.g. VGG: [110, 219]
    assert min(scales) >= low * 0.97 and max(scales) <= high * 1.03, (min(scales), max(scales))
    if high > low:
        assert min(scales) < low + 0.08 * (high - low) and max(scales) > high - 0.08 * (high - low)
    assert min(lefts) > -1.0 and max(lefts) < 96 * (1 - 96 / high) + 1.0


def test_stl10_checks_its_augmentation_arguments(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match="train_augment='VGG' is not a training preset for STL-10; expected one of "
        "'pad_crop', 'inception', 'alexnet', 'vgg', 'vgg_fixed_256', 'vgg_fixed_384', 'resnet'$",
    ):
        STL10DataModule(str(tmp_path), train_augment="VGG")
    with pytest.raises(ValueError, match="augment=False turns training augmentation off"):
        STL10DataModule(str(tmp_path), augment=False, train_augment="vgg")
    with pytest.raises(ValueError, match="augment=False turns training augmentation off"):
        STL10DataModule(str(tmp_path), augment=False, random_erasing=0.5)
    dm = STL10DataModule(
        str(stl10_dir(tmp_path)),
        val_split=0,
        num_workers=0,
        image_size=64,
        train_augment="inception",
        train_policy="randaugment",
        random_erasing=0.5,
    )
    dm.setup("fit")
    assert dm.train_dataset[0][0].shape == (3, 64, 64)
    assert set(ARRAY_PRESETS) == {"pad_crop", *FILE_PRESETS}


# ---------------------------------------------------------------------------- the command
def test_cli_takes_the_presets_from_yaml_and_rejects_unknown_ones(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data")
    config = tmp_path / "augment.yaml"
    common = [
        "--model.backbone=resnet20",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.fast_dev_run=1",
        "--trainer.enable_progress_bar=false",
    ]
    config.write_text(
        "data:\n  init_args:\n    train_augment: vgg\n    train_policy: randaugment\n"
        "    random_erasing: 0.25\n"
    )
    done = run_cli("fit", *common, "--config", config, cwd=tmp_path)
    assert done.returncode == 0
    config.write_text("data:\n  init_args:\n    train_augment: vgg16\n")
    failed = run_cli("fit", *common, "--config", config, cwd=tmp_path, check=False)
    assert failed.returncode == 2
    error = [line for line in failed.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and (
        "train_augment='vgg16' is not a training preset for image files; expected one of "
        "'inception', 'alexnet', 'vgg', 'vgg_fixed_256', 'vgg_fixed_384', 'resnet'" in error[0]
    ), failed.stderr[-2000:]


def test_presets_decode_bytes_and_name_them_in_errors() -> None:
    transform = TrainAugment("resnet").file_transform(64)
    out = transform(PHOTO.read_bytes(), name="shard-0/china.jpg")
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    with pytest.raises(ImageDecodeError, match="shard-0/broken.jpg"):
        transform(PHOTO.read_bytes()[:2000], name="shard-0/broken.jpg")


def test_colour_lighting_presets_refuse_grayscale_decoding() -> None:
    with pytest.raises(ValueError, match="train_augment='vgg' adds PCA colour lighting, which"):
        TrainAugment("vgg").file_transform(64, mode="L")
    gray = TrainAugment("inception", "autoaugment").file_transform(64, mode="L")
    assert gray(str(PHOTO)).shape == (1, 64, 64)
