"""ImageFolderDataModule on small class-folder trees of real JPEG/PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.data import CLASS_COLORS, jpeg_bytes, png_bytes, write

from datamodules import ImageFolderDataModule

CLASSES = ["cat", "dog", "emu"]  # sorted folder names are the labels


def make_tree(root: Path, splits: dict[str, int]) -> Path:
    for split, per_class in splits.items():
        for label, name in enumerate(CLASSES):
            for k in range(per_class):
                data = jpeg_bytes(CLASS_COLORS[label]) if k % 2 else png_bytes(CLASS_COLORS[label])
                write(root / split / name / f"{k}.{'jpg' if k % 2 else 'png'}", data)
    return root


def make_dm(root: Path, **kwargs: object) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("cache_dir", str(root / ".cache"))
    return ImageFolderDataModule(str(root), **kwargs)  # type: ignore[arg-type]


def test_train_val_test_folders(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    dm = make_dm(tmp_path, batch_size=6)
    assert dm.class_names == CLASSES and dm.num_classes == 3
    # torchvision's ImageNet statistics (transforms/_presets.py), the default for own data.
    assert (dm.mean, dm.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (12, 6, 6)
    for dataset in (dm.val_dataset, dm.test_dataset):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert int(image.float().mean(dim=(1, 2)).argmax()) == label
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]  # not shuffled
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (6, 3, 32, 32)


def test_training_and_validation_loaders_keep_their_workers_by_default(tmp_path: Path) -> None:
    # Training samples are seeded one by one (datamodules.sampling), so kept training workers
    # still resume bitwise; validation draws no random numbers. Test loaders run once.
    make_tree(tmp_path, {"train": 2, "val": 1, "test": 1})
    dm = make_dm(tmp_path, num_workers=1)
    dm.setup()
    persistent = [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()]
    assert [loader.persistent_workers for loader in persistent] == [True, True, False]
    dm = make_dm(tmp_path, num_workers=1, persistent_workers=False)
    dm.setup()
    assert not dm.train_dataloader().persistent_workers and dm.val_dataloader().persistent_workers
    dm = make_dm(tmp_path, num_workers=0)  # torch refuses persistent workers without workers
    dm.setup()
    assert not dm.train_dataloader().persistent_workers
    assert not dm.val_dataloader().persistent_workers


def test_without_val_a_seeded_stratified_split(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 4})
    a, b = make_dm(tmp_path, val_split=3, seed=1), make_dm(tmp_path, val_split=3, seed=1)
    for dm in (a, b):
        dm.setup()
    assert len(a.train_dataset) == 9 and sorted(a.val_dataset.labels.tolist()) == [0, 1, 2]
    assert a.val_dataset.paths.tolist() == b.val_dataset.paths.tolist()
    assert not set(a.val_dataset.paths.tolist()) & set(a.train_dataset.paths.tolist())
    with pytest.raises(ValueError, match=r"no test split: create .*test/<class>/"):
        a.test_dataloader()


def test_custom_normalisation(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    dm = make_dm(tmp_path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = dm.normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    torch.testing.assert_close(out, torch.full((1, 3, 2, 2), 2.0))
    with pytest.raises(ValueError, match="std must be positive"):
        make_dm(tmp_path, std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="mean must be 3"):
        make_dm(tmp_path, mean=(0.5,))  # type: ignore[arg-type]


def test_missing_train_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected training images in .*train/<class>/"):
        ImageFolderDataModule(str(tmp_path))


def test_no_class_folders(tmp_path: Path) -> None:
    write(tmp_path / "train" / "loose.jpg", jpeg_bytes())
    dm = make_dm(tmp_path)
    with pytest.raises(ValueError, match="has no class folders"):
        _ = dm.class_names


def test_empty_class_folder(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    (tmp_path / "train" / "fox").mkdir()
    write(tmp_path / "train" / "fox" / "notes.txt", b"no images here")
    with pytest.raises(ValueError, match=r"class folder\(s\) with no image files: .*train/fox"):
        make_dm(tmp_path).setup()


def test_no_images_at_all(tmp_path: Path) -> None:
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no image files in .*train"):
        make_dm(tmp_path).setup()


def test_mismatched_class_sets(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    write(tmp_path / "val" / "fox" / "0.jpg", jpeg_bytes())
    (tmp_path / "val" / "emu" / "0.png").unlink()
    (tmp_path / "val" / "emu").rmdir()
    with pytest.raises(ValueError, match=r"missing \['emu'\], not in train \['fox'\]"):
        make_dm(tmp_path).setup()


def test_no_val_and_no_holdout(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2})
    with pytest.raises(ValueError, match="add val/ or set val_split > 0"):
        make_dm(tmp_path, val_split=0).setup()
