"""STL10DataModule on binary files written here in the official format."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import STL10_NAMES, add_to_tar, write_stl10
from torch.utils.data import DistributedSampler

from datamodules import STL10DataModule
from datamodules.stl10 import STL10Images, compute_mean_std, main


@pytest.fixture
def stl10(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_stl10(tmp_path)


def plain(data_dir: Path, **kwargs: object) -> STL10DataModule:
    """No augmentation, native size: loaders return the stored pixels unchanged."""
    kwargs.setdefault("val_split", 10)
    return STL10DataModule(str(data_dir), augment=False, num_workers=0, **kwargs)  # type: ignore[arg-type]


def test_properties_before_setup(tmp_path: Path) -> None:
    dm = STL10DataModule(str(tmp_path))  # nothing downloaded yet: facts still available
    assert dm.num_classes == 10
    assert dm.class_names == STL10_NAMES
    assert (dm.in_channels, dm.image_size) == (3, 96)
    assert dm.hparams["val_split"] == 0.1


def test_pixels_labels_and_class_names_read_exactly(stl10) -> None:
    data_dir, expected = stl10
    (data_dir / "stl10_binary" / "class_names.txt").write_text("\n".join(reversed(STL10_NAMES)))
    dm = plain(data_dir)
    dm.setup("fit")
    assert dm.class_names == list(reversed(STL10_NAMES))  # class_names.txt order, not a copy
    test = dm.test_dataset
    assert len(test) == 20
    for i in (0, 7, 19):
        image, label = test[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 96, 96)
        # a transposed, flipped or channel-swapped reader fails this
        np.testing.assert_array_equal(image.numpy(), expected["test_images"][i])
        assert label == expected["test_labels"][i]  # 1..10 on disk -> 0..9
    assert {test[i][1] for i in range(len(test))} == set(range(10))


def test_stratified_holdout_is_seeded_and_disjoint(stl10) -> None:
    data_dir, expected = stl10
    a, b, c = plain(data_dir, seed=1), plain(data_dir, seed=1), plain(data_dir, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    train, val = a.train_dataset.indices, a.val_dataset.indices
    assert len(val) == 10 and len(train) == 30
    assert not set(train) & set(val) and set(train) | set(val) == set(range(40))
    # stratified: one image of each class held out
    assert sorted(expected["train_labels"][val]) == list(range(10))
    np.testing.assert_array_equal(val, b.val_dataset.indices)  # same seed, same split
    assert not np.array_equal(val, c.val_dataset.indices)
    # validation uses evaluation transforms and the test set is the official one
    image, _ = a.val_dataset[0]
    np.testing.assert_array_equal(image.numpy(), expected["train_images"][val[0]])
    assert len(a.test_dataset) == 20


def test_fraction_val_split(stl10) -> None:
    data_dir, _ = stl10
    dm = plain(data_dir, val_split=0.25)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (30, 10)


def test_val_split_zero_validates_on_test_set(stl10) -> None:
    data_dir, _ = stl10
    dm = plain(data_dir, val_split=0)
    dm.setup()
    assert len(dm.train_dataset) == 40 and dm.val_dataset is dm.test_dataset


def test_fold_uses_official_fold_indices(stl10) -> None:
    data_dir, expected = stl10
    dm = plain(data_dir, fold=3, val_split=0.2)
    dm.setup()
    used = np.concatenate([dm.train_dataset.indices, dm.val_dataset.indices])
    assert sorted(used) == sorted(expected["folds"][3])
    assert len(dm.val_dataset) == 4


def test_images_are_memory_mapped_not_copied(stl10) -> None:
    data_dir, _ = stl10
    dm = plain(data_dir)
    dm.setup()
    source = dm.train_dataset.images
    assert isinstance(source, STL10Images)
    assert isinstance(source.array, np.memmap)
    assert Path(source.array.filename) == (data_dir / "stl10_binary" / "train_X.bin").resolve()
    assert dm.val_dataset.images is source  # splits are views of one map
    # what goes to a worker or DDP process is a path, not 40 images (1.1 MB)
    assert len(pickle.dumps(dm.train_dataset)) < 4000


def test_dataloader_with_two_workers_over_memmap(stl10) -> None:
    data_dir, expected = stl10
    dm = STL10DataModule(str(data_dir), val_split=10, batch_size=8, num_workers=2)
    dm.setup()
    images, labels = [], []
    for x, y in dm.test_dataloader():
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        images.append(x)
        labels.append(y)
    np.testing.assert_array_equal(torch.cat(images).numpy(), expected["test_images"])
    np.testing.assert_array_equal(torch.cat(labels).numpy(), expected["test_labels"])
    x, y = next(iter(dm.train_dataloader()))  # augmented: same shape and dtype
    assert x.shape == (8, 3, 96, 96) and x.dtype == torch.uint8


def test_every_ddp_rank_gets_same_split_and_own_share(stl10) -> None:
    data_dir, _ = stl10
    shares = []
    for rank in range(2):
        dm = plain(data_dir, seed=5)  # each rank builds its own datamodule
        dm.setup()
        sampler = DistributedSampler(dm.train_dataset, num_replicas=2, rank=rank, shuffle=False)
        shares.append({int(dm.train_dataset.indices[i]) for i in sampler})
    assert not shares[0] & shares[1]
    assert len(shares[0] | shares[1]) == 30


def test_augmentation_and_resize(stl10) -> None:
    data_dir, _ = stl10
    dm = STL10DataModule(str(data_dir), val_split=10, image_size=64, num_workers=0)
    dm.setup()
    torch.manual_seed(0)
    image, _ = dm.train_dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert dm.val_dataset[0][0].shape == (3, 64, 64)


def test_unlabeled_images_available_but_not_in_training(stl10) -> None:
    data_dir, expected = stl10
    dm = plain(data_dir)
    dm.setup()
    unlabeled = dm.unlabeled_dataset()
    assert len(unlabeled) == 10
    image, label = unlabeled[4]
    assert label == -1
    np.testing.assert_array_equal(image.numpy(), expected["unlabeled_images"][4])
    assert dm.train_dataset.images.path.name == "train_X.bin"
    x, y = next(iter(dm.unlabeled_dataloader()))
    assert x.shape[1:] == (3, 96, 96) and bool((y == -1).all())


def test_normalisation_constants_function(stl10, capsys) -> None:
    data_dir, expected = stl10
    mean, std = compute_mean_std(data_dir, chunk=7)  # several chunks
    pixels = expected["train_images"].astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), atol=1e-9)
    main([str(data_dir)])
    assert "mean = (" in capsys.readouterr().out


def test_normalize_hook(stl10) -> None:
    data_dir, _ = stl10
    dm = plain(data_dir)
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = dm.on_after_batch_transfer([images, torch.zeros(2, dtype=torch.int64)], 0)
    assert isinstance(out, list) and out[0].dtype == torch.float32
    # The STL-10 statistics in common use, R, G, B (tests/test_facts_data.py says where from).
    want = (1 - torch.tensor([0.4467, 0.4398, 0.4066])) / torch.tensor([0.2603, 0.2566, 0.2713])
    torch.testing.assert_close(out[0][1, :, 2, 3], want)
    torch.testing.assert_close(dm.normalize(images.float() / 255), out[0])
    with pytest.raises(ValueError, match="expected images of shape"):
        dm.normalize(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------------------- bad files
def test_image_file_of_wrong_size_names_file(stl10) -> None:
    data_dir, _ = stl10
    bad = data_dir / "stl10_binary" / "train_X.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"train_X\.bin.*multiple of 27648"):
        plain(data_dir).setup()


def test_label_count_mismatch_names_file(stl10) -> None:
    data_dir, _ = stl10
    bad = data_dir / "stl10_binary" / "test_y.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"test_y\.bin holds 19 labels.*20 images"):
        plain(data_dir).setup()


def test_label_out_of_range(stl10) -> None:
    data_dir, _ = stl10
    (data_dir / "stl10_binary" / "test_y.bin").write_bytes(bytes([0] * 20))
    with pytest.raises(ValueError, match=r"test_y\.bin: labels must be in 1\.\.10"):
        plain(data_dir).setup()


def test_fold_file_with_index_out_of_range(stl10) -> None:
    data_dir, _ = stl10
    folds = data_dir / "stl10_binary" / "fold_indices.txt"
    lines = folds.read_text().splitlines()
    lines[2] += " 40"
    folds.write_text("\n".join(lines))
    with pytest.raises(
        ValueError, match=r"fold_indices\.txt: fold 2 must hold indices in \[0, 40\)"
    ):
        plain(data_dir, fold=2, val_split=0).setup()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fold"):
        STL10DataModule(fold=10)
    with pytest.raises(ValueError, match="val_split"):
        STL10DataModule(val_split=1.5)
    with pytest.raises(ValueError, match="val_split"):
        STL10DataModule(fold=0, val_split=1000)
    with pytest.raises(ValueError, match="batch_size"):
        STL10DataModule(batch_size=0)


# ---------------------------------------------------------------------------- download
def _archive(tmp_path: Path, extra: dict[str, bytes] | None = None) -> tuple[Path, str]:
    source = tmp_path / "source"
    write_stl10(source)
    archive = tmp_path / "served" / "stl10_binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "stl10_binary", arcname="stl10_binary")
        for name, data in (extra or {}).items():
            add_to_tar(tar, name, data)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_missing_files_without_download_say_where_to_get_them(tmp_path: Path) -> None:
    dm = STL10DataModule(str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"ai\.stanford\.edu.*stl10_binary\.tar\.gz"):
        dm.prepare_data()
    with pytest.raises(FileNotFoundError, match="train_X.bin"):
        dm.setup()


def test_download_checks_md5_and_extracts(tmp_path: Path, monkeypatch) -> None:
    archive, md5 = _archive(tmp_path)
    monkeypatch.setattr(STL10DataModule, "url", archive.as_uri())
    monkeypatch.setattr(STL10DataModule, "md5", md5)
    data_dir = tmp_path / "data"
    dm = STL10DataModule(str(data_dir), download=True, val_split=10, num_workers=0)
    dm.prepare_data()
    assert (data_dir / "stl10_binary" / "train_X.bin").is_file()
    assert not list(data_dir.glob(".*partial*")) and not list(data_dir.glob("*.part"))
    dm.setup()
    assert len(dm.test_dataset) == 20
    dm.prepare_data()  # second call: nothing to do


def test_download_md5_mismatch(tmp_path: Path, monkeypatch) -> None:
    archive, _ = _archive(tmp_path)
    monkeypatch.setattr(STL10DataModule, "url", archive.as_uri())
    dm = STL10DataModule(str(tmp_path / "data"), download=True)
    with pytest.raises(ValueError, match="md5"):
        dm.prepare_data()
    assert not (tmp_path / "data" / "stl10_binary.tar.gz").exists()


def test_offline_download_error_says_where_to_put_archive(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(STL10DataModule, "url", (tmp_path / "nowhere.tar.gz").as_uri())
    dm = STL10DataModule(str(tmp_path / "data"), download=True)
    with pytest.raises(FileNotFoundError, match=r"could not download.*put the archive at .*data"):
        dm.prepare_data()


def test_local_archive_is_verified_and_extracted_without_download(
    tmp_path: Path, monkeypatch
) -> None:
    archive, md5 = _archive(tmp_path)
    monkeypatch.setattr(STL10DataModule, "md5", md5)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "stl10_binary.tar.gz").write_bytes(archive.read_bytes())
    STL10DataModule(str(data_dir)).prepare_data()
    assert (data_dir / "stl10_binary" / "test_y.bin").is_file()


def test_archive_member_escaping_target_is_refused(tmp_path: Path, monkeypatch) -> None:
    archive, md5 = _archive(tmp_path, {"stl10_binary/../../evil.txt": b"pwned"})
    monkeypatch.setattr(STL10DataModule, "url", archive.as_uri())
    monkeypatch.setattr(STL10DataModule, "md5", md5)
    data_dir = tmp_path / "data"
    with pytest.raises(ValueError, match=r"refusing to extract .*evil\.txt"):
        STL10DataModule(str(data_dir), download=True).prepare_data()
    assert not (tmp_path / "evil.txt").exists() and not (data_dir / "evil.txt").exists()
    assert not (data_dir / "stl10_binary").exists()  # nothing half-extracted left behind
    assert not list(data_dir.glob(".*partial*"))


def test_pickled_images_reopen_map(stl10) -> None:
    data_dir, expected = stl10
    images = STL10Images(data_dir / "stl10_binary" / "test_X.bin")
    _ = images.array
    clone = pickle.loads(pickle.dumps(images))
    assert clone._array is None
    np.testing.assert_array_equal(clone[3], expected["test_images"][3])
    assert io.BytesIO(pickle.dumps(images)).getbuffer().nbytes < 1000
