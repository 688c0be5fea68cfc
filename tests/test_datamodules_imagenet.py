"""ImageNetDataModule on every supported layout, built here from real JPEG bytes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import (
    CLASS_COLORS,
    ILSVRC_IDS,
    VAL_WNIDS,
    WNIDS,
    backdate,
    cmyk_jpeg_bytes,
    gray_jpeg_bytes,
    jpeg_bytes,
    make_archives,
    make_devkit,
    make_folder_layout,
    make_kaggle_layout,
    make_tar,
    png_bytes,
    synset_mapping_text,
    tar_bytes,
    truncated_jpeg_bytes,
    val_files,
    val_name,
    val_solution_text,
    write,
)

from datamodules import ImageNetDataModule
from datamodules.decoding import ImageDecodeError
from datamodules.imagenet import PREPARE_LOCK, read_devkit

HUMAN_NAMES = ["tench", "English springer", "chain saw"]


def make_dm(root: Path, **kwargs: object) -> ImageNetDataModule:
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("cache_dir", str(root / ".cache"))
    # The tiny archives cannot match the md5 of the official ones (tests/test_archives_hostile.py).
    kwargs.setdefault("verify_archives", False)
    return ImageNetDataModule(str(root), **kwargs)  # type: ignore[arg-type]


def colour_label(image: torch.Tensor) -> int:
    """The class a test image was painted as (each class has its own dominant channel)."""
    return int(image.float().mean(dim=(1, 2)).argmax())


def assert_labels_match_pixels(dataset) -> None:
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert colour_label(image) == label, dataset.path(i)


def test_folder_layout_with_devkit_names(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz")
    dm = make_dm(tmp_path)
    assert dm.layout.kind == "folders"
    assert dm.wnids == WNIDS  # sorted wnids: torchvision's class order
    assert dm.class_names == HUMAN_NAMES
    assert (dm.num_classes, dm.in_channels, dm.image_size, dm.mean) == (
        3,
        3,
        32,
        (0.485, 0.456, 0.406),
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 9 and len(dm.test_dataset) == 6
    assert dm.val_dataset is dm.test_dataset  # official val is the evaluation set
    assert_labels_match_pixels(dm.test_dataset)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8


def test_folder_layout_without_name_source_falls_back_to_wnids(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    dm = make_dm(tmp_path)
    with pytest.warns(UserWarning, match="class names are the WordNet ids"):
        assert dm.class_names == WNIDS


def test_alexnet_crop_size(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    dm = make_dm(tmp_path, image_size=227)
    assert dm.eval_resize_size == 259
    dm.setup()
    assert dm.train_dataset[0][0].shape == (3, 227, 227)
    assert dm.test_dataset[0][0].shape == (3, 227, 227)


def test_flat_val_labelled_by_devkit_ilsvrc_ids(tmp_path: Path) -> None:
    """The ground truth holds ILSVRC2012_IDs (here 1 = n03000684), not sorted-wnid indices."""
    make_folder_layout(tmp_path, flat_val=True)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz")
    dm = make_dm(tmp_path)
    dm.setup()
    labels = [dm.test_dataset[i][1] for i in range(6)]
    assert labels == [WNIDS.index(w) for w in VAL_WNIDS]
    assert_labels_match_pixels(dm.test_dataset)


def test_flat_val_labelled_by_extracted_devkit_folder(tmp_path: Path) -> None:
    make_folder_layout(tmp_path, flat_val=True)
    devkit = make_devkit(tmp_path / "devkit.tar.gz")
    shutil.unpack_archive(devkit, tmp_path)
    devkit.unlink()
    dm = make_dm(tmp_path)
    assert dm.class_names == HUMAN_NAMES
    dm.setup()
    assert_labels_match_pixels(dm.test_dataset)


def test_flat_val_labelled_by_kaggle_solution(tmp_path: Path) -> None:
    make_folder_layout(tmp_path, flat_val=True)
    (tmp_path / "LOC_val_solution.csv").write_text(val_solution_text())
    (tmp_path / "LOC_synset_mapping.txt").write_text(synset_mapping_text())
    dm = make_dm(tmp_path)
    assert dm.class_names == HUMAN_NAMES
    dm.setup()
    assert_labels_match_pixels(dm.test_dataset)


def test_kaggle_tree(tmp_path: Path) -> None:
    make_kaggle_layout(tmp_path)
    dm = make_dm(tmp_path)
    assert dm.layout.kind == "kaggle"
    assert dm.class_names == HUMAN_NAMES
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_dataset) == 9 and len(dm.test_dataset) == 6
    assert_labels_match_pixels(dm.test_dataset)
    assert_labels_match_pixels(dm.val_dataset)


def test_data_dir_pointing_into_kaggle_tree(tmp_path: Path) -> None:
    make_kaggle_layout(tmp_path)
    dm = make_dm(tmp_path / "ILSVRC" / "Data" / "CLS-LOC")
    assert dm.layout.kind == "folders" and dm.class_names == HUMAN_NAMES
    dm.setup()
    assert_labels_match_pixels(dm.test_dataset)


def test_original_archives_are_prepared_once(tmp_path: Path) -> None:
    make_archives(tmp_path)
    dm = make_dm(tmp_path)
    assert dm.layout.kind == "archives"
    assert dm.class_names == HUMAN_NAMES  # from the devkit, before anything is extracted
    with pytest.raises(FileNotFoundError, match="call prepare_data"):
        dm.setup()
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == WNIDS
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == WNIDS  # val sorted by class
    assert (tmp_path / "val" / VAL_WNIDS[0] / val_name(1)).is_file()
    assert not list(tmp_path.glob(".*partial*"))
    dm = make_dm(tmp_path)
    assert dm.layout.kind == "folders"
    dm.setup()
    assert len(dm.train_dataset) == 9
    assert_labels_match_pixels(dm.test_dataset)
    mtime = (tmp_path / "train").stat().st_mtime_ns
    dm.prepare_data()  # already prepared: untouched
    assert (tmp_path / "train").stat().st_mtime_ns == mtime


# slow: another process holds the lock
@pytest.mark.slow
def test_nodes_sharing_the_folder_extract_the_archives_once(tmp_path: Path) -> None:
    """Lightning prepares once per node: a node that finds another extracting waits for it, and
    then leaves the folders that node made alone instead of extracting over them."""
    make_archives(tmp_path / "done")
    make_dm(tmp_path / "done").prepare_data()  # what the first node will have made
    for waiting_for in ("a node that finishes", "a node that fails"):
        root = make_archives(tmp_path / waiting_for.replace(" ", "-"))
        other_node = subprocess.Popen(  # holds the lock as a node extracting would
            [
                sys.executable,
                "-c",
                "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
                "print('held', flush=True); sys.stdin.read()",
                str(root / PREPARE_LOCK),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert other_node.stdout.readline() == "held\n"
        this_node = threading.Thread(target=make_dm(root).prepare_data)
        this_node.start()
        this_node.join(timeout=1.0)
        assert this_node.is_alive()  # waiting for the lock, nothing extracted
        assert not (root / "train").exists() and not list(root.glob(".*partial*"))
        if waiting_for == "a node that finishes":
            for folder in ("train", "val"):
                shutil.copytree(tmp_path / "done" / folder, root / folder)
            made = {p: p.stat().st_mtime_ns for p in (root / "train").rglob("*")}
        other_node.communicate(timeout=30)  # the other node is done: the lock is released
        this_node.join(timeout=60)
        assert not this_node.is_alive()
        if waiting_for == "a node that finishes":  # left alone
            assert {p: p.stat().st_mtime_ns for p in (root / "train").rglob("*")} == made
        else:  # this node extracts them itself
            assert sorted(p.name for p in (root / "train").iterdir()) == WNIDS
        assert not (root / PREPARE_LOCK).exists() and not list(root.glob(".*partial*"))


@pytest.mark.parametrize(
    ("where", "member"),
    [("outer", "../evil.tar"), ("inner", "../../evil.JPEG"), ("val", "../evil.JPEG")],
)
def test_archive_member_outside_target_is_refused(tmp_path: Path, where: str, member: str) -> None:
    root = tmp_path / "imagenet"
    if where == "outer":
        make_archives(root, train_extra={member: tar_bytes({"x.JPEG": jpeg_bytes()})})
    elif where == "inner":
        make_archives(root, train_extra={"n09999999.tar": tar_bytes({member: jpeg_bytes()})})
    else:
        make_archives(root)
        make_tar(root / "ILSVRC2012_img_val.tar", {**val_files(), member: jpeg_bytes()})
    with pytest.raises(ValueError, match=r"refusing to extract .*evil"):
        make_dm(root).prepare_data()
    assert not list(tmp_path.rglob("evil*"))
    assert not list(root.glob(".*partial*"))
    assert not (root / ("val" if where == "val" else "train")).exists()


def test_holdout_from_train_is_seeded_and_stratified(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    a = make_dm(tmp_path, val_split=3, seed=4)
    b = make_dm(tmp_path, val_split=3, seed=4)
    for dm in (a, b):
        dm.setup()
    assert len(a.train_dataset) == 6 and len(a.val_dataset) == 3
    assert sorted(a.val_dataset.labels.tolist()) == [0, 1, 2]
    assert a.val_dataset.paths.tolist() == b.val_dataset.paths.tolist()
    assert not set(a.val_dataset.paths.tolist()) & set(a.train_dataset.paths.tolist())
    assert len(a.test_dataset) == 6  # the official val set stays the evaluation set
    assert_labels_match_pixels(a.val_dataset)


# ---------------------------------------------------------------------------- quirks
def test_imagenet_quirks_decode_to_rgb(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    red = WNIDS[0]
    write(tmp_path / "train" / red / "cmyk.JPEG", cmyk_jpeg_bytes())
    write(tmp_path / "train" / red / "gray.JPEG", gray_jpeg_bytes(128))
    write(tmp_path / "train" / WNIDS[1] / "png.JPEG", png_bytes())
    dm = make_dm(tmp_path)
    dm.setup()
    train = dm.train_dataset
    paths = [train.path(i) for i in range(len(train))]
    decoded = {Path(p).name: dm.eval_transform(p) for p in paths}
    for i in range(len(train)):  # and through the training transform
        assert train[i][0].shape == (3, 32, 32)
    cmyk, gray, png = decoded["cmyk.JPEG"], decoded["gray.JPEG"], decoded["png.JPEG"]
    for image in (cmyk, gray, png):
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert cmyk[0].float().mean() > 200 and cmyk[1:].float().mean() < 40  # red, not inverted
    assert (gray.float().mean(dim=(1, 2)) - 128).abs().max() < 3  # three equal channels
    assert colour_label(png) == 1


@pytest.mark.filterwarnings("ignore:no ILSVRC2012_devkit")
def test_truncated_file_is_an_error_naming_it(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    bad = write(
        tmp_path / "val" / WNIDS[2] / "ILSVRC2012_val_00000099.JPEG", truncated_jpeg_bytes()
    )
    dm = make_dm(tmp_path, batch_size=16)
    with pytest.raises(ImageDecodeError, match=str(bad)):
        next(iter(dm.val_dataloader()))


@pytest.mark.filterwarnings("ignore:no ILSVRC2012_devkit")
def test_truncated_file_skipped_with_counting_warning(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    write(tmp_path / "val" / WNIDS[2] / "ILSVRC2012_val_00000099.JPEG", truncated_jpeg_bytes())
    write(tmp_path / "val" / WNIDS[2] / "ILSVRC2012_val_00000098.JPEG", b"not an image at all")
    dm = make_dm(tmp_path, batch_size=16, on_bad_image="skip")
    with pytest.warns(
        RuntimeWarning, match=r"skipped an undecodable image \(\d+ skipped"
    ) as record:
        images, labels = next(iter(dm.val_dataloader()))
    assert len(images) == len(labels) == 6  # the 8 files minus the 2 bad ones
    skips = [w for w in record if issubclass(w.category, RuntimeWarning)]  # not the names one
    counts = [int(str(w.message).split("(")[1].split()[0]) for w in skips]
    assert len(counts) == 2 and counts[1] == counts[0] + 1


# ---------------------------------------------------------------------------- caching
def test_index_is_cached_and_invalidated_when_folders_change(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    make_folder_layout(root)
    backdate(root)
    dm = make_dm(root)
    dm.prepare_data()  # builds the caches
    cache_files = sorted((root / ".cache").glob("index-*.npz"))
    assert len(cache_files) == 2
    dm = make_dm(root)
    dm.setup()
    from datamodules.files import index_images

    assert index_images(root / "train", [root / ".cache"]).from_cache
    # a new file changes its folder's mtime: the cache must not hide it
    write(root / "train" / WNIDS[1] / "new.JPEG", jpeg_bytes(CLASS_COLORS[1]))
    dm = make_dm(root)
    dm.setup()
    assert len(dm.train_dataset) == 10


def test_default_cache_goes_to_the_user_cache_not_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIT_CLASSIFIERS_CACHE", str(tmp_path / "user-cache"))
    make_folder_layout(tmp_path / "data")
    dm = ImageNetDataModule(str(tmp_path / "data"), image_size=32, num_workers=0)
    dm.setup()
    assert len(list((tmp_path / "user-cache" / "index").glob("index-*.npz"))) == 2
    assert not list((tmp_path / "data").rglob("*.npz"))


# ---------------------------------------------------------------------------- bad inputs
def test_missing_data_dir_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ImageNetDataModule(str(tmp_path / "nope"))
    dm = make_dm(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no ImageNet found .*ILSVRC2012_img_train\.tar"):
        dm.setup()


def test_flat_val_without_labels(tmp_path: Path) -> None:
    make_folder_layout(tmp_path, flat_val=True)
    with pytest.raises(
        FileNotFoundError, match=r"ILSVRC2012_devkit_t12\.tar\.gz.*LOC_val_solution"
    ):
        make_dm(tmp_path).setup()


def test_flat_val_file_without_ground_truth(tmp_path: Path) -> None:
    make_folder_layout(tmp_path, flat_val=True)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz")
    extra = write(tmp_path / "val" / val_name(77), jpeg_bytes())
    with pytest.raises(ValueError, match=f"{extra}.* has no label"):
        make_dm(tmp_path).setup()


def test_flat_val_file_with_unexpected_name(tmp_path: Path) -> None:
    make_folder_layout(tmp_path, flat_val=True)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz")
    write(tmp_path / "val" / "holiday.jpg", jpeg_bytes())
    with pytest.raises(ValueError, match=r"holiday\.jpg.*ILSVRC2012_val_<number>"):
        make_dm(tmp_path).setup()


def test_ground_truth_id_not_in_meta(tmp_path: Path) -> None:
    make_folder_layout(tmp_path, flat_val=True)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", ground_truth=[1, 2, 3, 1, 2, 999])
    with pytest.raises(ValueError, match="line 6 is ILSVRC2012_ID 999"):
        make_dm(tmp_path).setup()


def test_val_class_not_in_train(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    write(tmp_path / "val" / "n09999999" / val_name(50), jpeg_bytes())
    with pytest.raises(ValueError, match=r"class folders that train does not: \['n09999999'\]"):
        make_dm(tmp_path).setup()


def test_empty_train_class_folder(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    (tmp_path / "train" / "n09999999").mkdir()
    with pytest.raises(ValueError, match=r"no image files: .*n09999999"):
        make_dm(tmp_path).setup()


def test_devkit_without_meta_and_names_missing_a_class(tmp_path: Path) -> None:
    bad = make_tar(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", {"readme.txt": b"hi"}, mode="w:gz")
    with pytest.raises(ValueError, match=r"has no member ILSVRC2012_devkit_t12/data/meta\.mat"):
        read_devkit(bad)
    make_folder_layout(tmp_path)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", wnids=WNIDS[:2])
    with pytest.raises(ValueError, match=r"no entry for the class folder\(s\) \['n03000684'\]"):
        _ = make_dm(tmp_path).class_names


def test_archives_without_devkit(tmp_path: Path) -> None:
    make_archives(tmp_path)
    (tmp_path / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    dm = make_dm(tmp_path)
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_devkit_t12.tar.gz"):
        dm.prepare_data()
    assert (tmp_path / "train").is_dir()  # train needs no labels; val cannot be sorted


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eval_resize"):
        ImageNetDataModule(str(tmp_path), image_size=224, eval_resize=200)
    with pytest.raises(ValueError, match="on_bad_image"):
        ImageNetDataModule(str(tmp_path), on_bad_image="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_scale"):
        ImageNetDataModule(str(tmp_path), min_scale=0.0)
    make_folder_layout(tmp_path)
    with pytest.raises(ValueError, match=r"val_split=9 must be a count in \[0, 9\)"):
        make_dm(tmp_path, val_split=9).setup()


def test_ilsvrc_ids_are_not_sorted_order() -> None:
    """Guard the fixture itself: the test data must be able to catch the classic bug."""
    assert [ILSVRC_IDS[w] for w in WNIDS] != [1, 2, 3]
    assert np.unique(VAL_WNIDS).tolist() == WNIDS
