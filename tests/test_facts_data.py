"""The datamodules checked against facts from outside their code.

Every expected value here comes from somewhere the implementation cannot change: constants
published upstream (copied below as data, with where they come from), pixels the test wrote
itself in the documented on-disk formats, or what a transform must do to an image whose pixels
encode their own coordinates (see ``helpers/facts.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import jpeg_bytes, make_tar, tar_bytes
from helpers.facts import (
    REAL_SYNSETS,
    coordinate_png,
    id_ordered_meta_mat,
    measure_crop,
    stl10_coordinate_image,
    write_stl10_split,
)
from PIL import Image

from datamodules import (
    DigitsDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    STL10DataModule,
)

# torchvision's ImageNet normalisation: the defaults of ``torchvision.transforms._presets.
# ImageClassification`` (torchvision 0.29.1), what every torchvision classification weight's
# ``.transforms()`` uses, and what pretrained weights expect.
TORCHVISION_IMAGENET_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_IMAGENET_STD = (0.229, 0.224, 0.225)
# STL-10's per-channel statistics in R, G, B order as they circulate in public PyTorch code's
# dataset-statistics tables (e.g. next to CIFAR-10's (0.4914, 0.4822, 0.4465)); the STL-10 page
# and paper publish none. Blue is the smallest mean, as in every natural-image dataset.
STL10_RGB_MEAN = (0.4467, 0.4398, 0.4066)
STL10_RGB_STD = (0.2603, 0.2566, 0.2713)
# The published md5 of the official archives, as torchvision checks them
# (torchvision/datasets/imagenet.py ARCHIVE_META and torchvision/datasets/stl10.py tgz_md5).
TORCHVISION_ARCHIVE_MD5 = {
    "ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
    "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622",
    "ILSVRC2012_devkit_t12.tar.gz": "fa75699e90414af021442c21a62c3abf",
}
TORCHVISION_STL10_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"

DRAWS_EPOCHS = 10  # epochs over a 4-image training set: 40 draws of the random transform


def expected_normalised(rgb: tuple[int, int, int], mean, std) -> torch.Tensor:
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, mean, std, strict=True)])


def normalised_batch(dm, loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw uint8 images, normalised images, labels) of the first batch, normalised the way a
    Trainer does it (the datamodule's ``on_after_batch_transfer`` hook)."""
    images, labels = next(iter(loader))
    normalised, _ = dm.on_after_batch_transfer([images.clone(), labels], 0)
    return images, normalised, labels


# ---------------------------------------------------------------------------- 1. STL-10 stats
def stl10_dir(root: Path, train: np.ndarray, test: np.ndarray) -> Path:
    folder = root / "stl10_binary"
    write_stl10_split(folder, "train", train, np.arange(len(train)) % 10)
    write_stl10_split(folder, "test", test, np.arange(len(test)) % 10)
    return root


def test_stl10_normalises_red_green_blue_with_the_published_statistics(tmp_path: Path) -> None:
    rgb = (200, 100, 30)  # every channel different, so a swapped channel shows
    images = np.empty((10, 3, 96, 96), dtype=np.uint8)
    for c, value in enumerate(rgb):
        images[:, c] = value
    dm = STL10DataModule(
        str(stl10_dir(tmp_path, images, images)), val_split=0, batch_size=10, num_workers=0
    )
    assert dm.mean == pytest.approx(STL10_RGB_MEAN, abs=5e-5)
    assert dm.std == pytest.approx(STL10_RGB_STD, abs=5e-5)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        raw, normalised, _ = normalised_batch(dm, loader)
        assert raw[:, :, 40, 40].tolist() == [list(rgb)] * 10  # channel 0 is the red plane
        want = expected_normalised(rgb, STL10_RGB_MEAN, STL10_RGB_STD)
        torch.testing.assert_close(
            normalised.mean(dim=(0, 2, 3)), want, atol=2e-4, rtol=0, check_dtype=False
        )


# ---------------------------------------------------------------------------- 3. STL-10 crops
def test_stl10_training_images_are_shifted_and_mirrored_but_evaluation_images_are_not(
    tmp_path: Path,
) -> None:
    image = stl10_coordinate_image()
    images = np.repeat(image[None], 4, axis=0)
    dm = STL10DataModule(
        str(stl10_dir(tmp_path, images, images)), val_split=0, batch_size=4, num_workers=0
    )
    dm.setup("fit")
    torch.manual_seed(0)
    draws = [im for _ in range(DRAWS_EPOCHS) for im in next(iter(dm.train_dataloader()))[0]]
    # red rises left to right in the stored image, so a mirrored draw has it falling
    mirrored = [bool(d[0, :, :24].float().mean() > d[0, :, 72:].float().mean()) for d in draws]
    assert 0 < sum(mirrored) < len(draws), f"{sum(mirrored)} of {len(draws)} draws mirrored"
    distinct = {d.numpy().tobytes() for d in draws}
    assert len(distinct) >= len(draws) // 2, f"only {len(distinct)} distinct training crops"
    unmirrored = [d for d, m in zip(draws, mirrored, strict=True) if not m]
    # the centre pixel's red/green values say where the crop was taken from
    assert len({int(d[0, 48, 48]) for d in unmirrored}) > 1, "no horizontal shift"
    assert len({int(d[1, 48, 48]) for d in draws}) > 1, "no vertical shift"
    for _ in range(3):
        shown = next(iter(dm.test_dataloader()))[0]
        assert torch.equal(shown, torch.from_numpy(images)), "evaluation images were changed"


# ---------------------------------------------------------------------------- 3/4. file crops
def file_dm(kind: str, root: Path, **kwargs) -> ImageFolderDataModule | ImageNetDataModule:
    """Two classes of two copies of the coordinate image in train/, one of each in val/."""
    classes = ["n01440764", "n02102040"]
    for cls in classes:
        for k in range(2):
            coordinate_png(root / "train" / cls / f"{cls}_{k}.png")
        coordinate_png(root / "val" / cls / f"{cls}_val.png")
    module = ImageNetDataModule if kind == "imagenet" else ImageFolderDataModule
    return module(
        str(root),
        image_size=32,
        batch_size=4,
        num_workers=0,
        cache_dir=str(root.parent / f"{root.name}-cache"),
        **kwargs,
    )


@pytest.mark.filterwarnings("ignore:no ILSVRC2012_devkit")
@pytest.mark.parametrize("kind", ["imagenet", "image_folder"])
def test_random_resized_crops_vary_in_place_and_scale_and_half_are_mirrored(
    kind: str, tmp_path: Path
) -> None:
    min_scale = 0.3
    dm = file_dm(kind, tmp_path / "data", min_scale=min_scale)
    dm.setup("fit")
    torch.manual_seed(0)
    draws = [im for _ in range(DRAWS_EPOCHS) for im in next(iter(dm.train_dataloader()))[0]]
    boxes = [measure_crop(d) for d in draws]
    areas = [w * h for w, h, _ in boxes]
    ratios = [w / h for w, h, _ in boxes]
    mirrored = [m for _, _, m in boxes]

    # RandomResizedCrop: area fraction uniform in [min_scale, 1] (a few percent for the
    # integer box and the measurement), aspect ratio in [3/4, 4/3]
    assert min(areas) >= min_scale * 0.9 and max(areas) <= 1.02, (min(areas), max(areas))
    assert min(ratios) >= 0.75 * 0.95 and max(ratios) <= 4 / 3 * 1.05, (min(ratios), max(ratios))
    assert sum(a < 0.6 for a in areas) >= 5, f"too few small crops: {sorted(areas)}"
    assert sum(a > 0.7 for a in areas) >= 5, f"too few large crops: {sorted(areas)}"
    # not the whole image: PIL's own resize of the full file is what a crop-free pipeline gives
    source = Image.open(tmp_path / "data" / "train" / "n01440764" / "n01440764_0.png")
    whole = torch.from_numpy(np.array(source.resize((32, 32), Image.Resampling.BILINEAR)))
    whole = whole.permute(2, 0, 1)
    assert sum(not torch.equal(d, whole) and not torch.equal(d, whole.flip(-1)) for d in draws) >= (
        len(draws) - 2
    )
    assert 0 < sum(mirrored) < len(draws), f"{sum(mirrored)} of {len(draws)} draws mirrored"
    assert len({d.numpy().tobytes() for d in draws}) >= len(draws) - 2

    # evaluation: the same centre crop every time, never mirrored; its side is
    # image_size / eval_resize of the shorter side (the 224/256 protocol: 32 of 37 px)
    evals = [im for _ in range(3) for im in next(iter(dm.val_dataloader()))[0]]
    assert all(torch.equal(e, evals[0]) for e in evals)
    width, height, flipped = measure_crop(evals[0])
    assert not flipped
    assert width == pytest.approx(32 / round(32 * 256 / 224), abs=0.01)
    assert height == pytest.approx(width, abs=0.01)
    assert sum(torch.equal(d, evals[0]) for d in draws) <= 1


# ---------------------------------------------------------------------------- 6. devkit order
def test_archives_with_a_devkit_in_ilsvrc_id_order_give_sorted_classes_and_right_val_labels(
    tmp_path: Path,
) -> None:
    ids = {wnid: i for i, wnid, _ in REAL_SYNSETS}
    names = {wnid: words.split(",")[0] for _, wnid, words in REAL_SYNSETS}
    in_id_order = [wnid for _, wnid, _ in REAL_SYNSETS]
    by_wnid = sorted(in_id_order)
    assert by_wnid != in_id_order  # the devkit's order differs from torchvision's
    # each class gets the colour of its torchvision (sorted-wnid) index: red, green, blue
    colours = {
        wnid: tuple(230 if c == k else 20 for c in range(3)) for k, wnid in enumerate(by_wnid)
    }
    per_class = {
        f"{wnid}.tar": tar_bytes({f"{wnid}_{k}.JPEG": jpeg_bytes(colours[wnid]) for k in range(2)})
        for wnid in by_wnid
    }
    val_truth = ["n02119789", "n02100735", "n02110185", "n02119789", "n02110185", "n02100735"]
    val_names = [f"ILSVRC2012_val_{k:08d}.JPEG" for k in range(1, len(val_truth) + 1)]
    root = tmp_path / "imagenet"
    make_tar(root / "ILSVRC2012_img_train.tar", per_class)
    make_tar(
        root / "ILSVRC2012_img_val.tar",
        {n: jpeg_bytes(colours[w]) for n, w in zip(val_names, val_truth, strict=True)},
    )
    ground_truth = "".join(f"{ids[w]}\n" for w in val_truth).encode()
    make_tar(
        root / "ILSVRC2012_devkit_t12.tar.gz",
        {
            "ILSVRC2012_devkit_t12/data/meta.mat": id_ordered_meta_mat(),
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": ground_truth,
        },
        mode="w:gz",
    )

    def make() -> ImageNetDataModule:
        return ImageNetDataModule(
            str(root),
            image_size=16,
            batch_size=6,
            num_workers=0,
            verify_archives=False,
            cache_dir=str(tmp_path / "cache"),
        )

    before = make()  # classes known from the devkit alone, before anything is extracted
    assert before.class_names == [names[w] for w in by_wnid]
    assert before.class_names == ["English setter", "Siberian husky", "kit fox"]
    before.prepare_data()
    for wnid, name in zip(by_wnid, ["English setter", "Siberian husky", "kit fox"], strict=True):
        held = sorted(p.name for p in (root / "val" / wnid).iterdir())
        assert held == [n for n, w in zip(val_names, val_truth, strict=True) if w == wnid], name

    dm = make()
    assert dm.class_names == ["English setter", "Siberian husky", "kit fox"]
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()))
    assert len(labels) == len(val_truth)
    assert sorted(labels.tolist()) == sorted(by_wnid.index(w) for w in val_truth)
    colour_index = images.float().mean(dim=(2, 3)).argmax(dim=1)
    assert colour_index.tolist() == labels.tolist()


# ---------------------------------------------------------------------------- 7. constants
@pytest.mark.filterwarnings("ignore:no ILSVRC2012_devkit")
@pytest.mark.parametrize("kind", ["imagenet", "image_folder"])
def test_file_datamodules_normalise_with_torchvisions_imagenet_statistics(
    kind: str, tmp_path: Path
) -> None:
    from torchvision.models import ResNet18_Weights

    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()  # torchvision's own, as installed
    assert tuple(preset.mean) == TORCHVISION_IMAGENET_MEAN
    assert tuple(preset.std) == TORCHVISION_IMAGENET_STD

    rgb = (200, 100, 30)
    root = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("n01440764", "n02102040"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (40, 40), rgb).save(folder / "a.png")
    module = ImageNetDataModule if kind == "imagenet" else ImageFolderDataModule
    dm = module(str(root), image_size=16, batch_size=2, num_workers=0)
    assert dm.mean == pytest.approx(TORCHVISION_IMAGENET_MEAN, abs=1e-9)
    assert dm.std == pytest.approx(TORCHVISION_IMAGENET_STD, abs=1e-9)
    dm.setup("fit")
    raw, normalised, _ = normalised_batch(dm, dm.val_dataloader())
    assert raw[:, :, 8, 8].tolist() == [list(rgb)] * 2
    want = expected_normalised(rgb, TORCHVISION_IMAGENET_MEAN, TORCHVISION_IMAGENET_STD)
    torch.testing.assert_close(
        normalised.mean(dim=(0, 2, 3)), want, atol=1e-5, rtol=0, check_dtype=False
    )


def test_digits_statistics_standardise_the_training_split() -> None:
    """DigitsDataModule measures mean/std on its training split: normalised, that split has
    mean 0 and standard deviation 1 (whatever the split, resize or rounding)."""
    dm = DigitsDataModule(image_size=16, batch_size=512, augment=False)
    dm.setup("fit")
    pixels = torch.cat([dm.normalize(images).double() for images, _ in dm.train_dataloader()])
    assert pixels.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert pixels.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("present", ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"])
def test_imagenet_archives_are_checked_against_torchvisions_md5(
    present: str, tmp_path: Path
) -> None:
    make_tar(tmp_path / present, {"x.tar": b""})
    make_tar(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", {"a": b"not the devkit"}, mode="w:gz")
    dm = ImageNetDataModule(str(tmp_path), num_workers=0, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError) as devkit_error:  # checked first: it is the smallest
        dm.prepare_data()
    assert TORCHVISION_ARCHIVE_MD5["ILSVRC2012_devkit_t12.tar.gz"] in str(devkit_error.value)
    (tmp_path / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    with pytest.raises(ValueError) as archive_error:
        dm.prepare_data()
    assert present in str(archive_error.value)
    assert TORCHVISION_ARCHIVE_MD5[present] in str(archive_error.value)


def test_stl10_archive_is_checked_against_torchvisions_md5(tmp_path: Path) -> None:
    archive = tmp_path / "stl10_binary.tar.gz"
    make_tar(archive, {"stl10_binary/readme.txt": b"not STL-10"}, mode="w:gz")
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(ValueError) as error:
        STL10DataModule(str(tmp_path), num_workers=0).prepare_data()
    assert actual in str(error.value) and TORCHVISION_STL10_MD5 in str(error.value)
