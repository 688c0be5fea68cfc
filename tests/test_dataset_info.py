"""One declared description of the data (DatasetInfo), resolved once, read by everyone; one
transform contract for every datamodule."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers.cli import assert_one_line_error, run_cli
from helpers.data import (
    CLASS_COLORS,
    NAMES,
    WNIDS,
    jpeg_bytes,
    make_archives,
    make_devkit,
    make_folder_layout,
    write,
    write_stl10,
)
from torch import nn

from datamodules import (
    DatasetInfo,
    DigitsDataModule,
    ImageClassificationDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    STL10DataModule,
    dataset_info,
)
from datamodules.imagenet import IMAGENET_MEAN, IMAGENET_STD

HUMAN_NAMES = ["tench", "English springer", "chain saw"]
FOLDER_CLASSES = ["ant", "bee", "cat"]


def info(**changes: object) -> DatasetInfo:
    fields: dict[str, object] = {
        "name": "toy",
        "class_names": ("a", "b"),
        "in_channels": 3,
        "image_size": 8,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
    }
    return DatasetInfo(**{**fields, **changes})  # type: ignore[arg-type]


def image_tree(root: Path, splits: tuple[str, ...] = ("train",), per_class: int = 2) -> Path:
    for split in splits:
        for label, name in enumerate(FOLDER_CLASSES):
            for k in range(per_class):
                write(root / split / name / f"{k}.jpg", jpeg_bytes(CLASS_COLORS[label], (12, 10)))
    return root


def folder_dm(root: Path, **kwargs: object) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 8)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("cache_dir", str(root / ".cache"))
    return ImageFolderDataModule(str(root), **kwargs)  # type: ignore[arg-type]


def imagenet_dm(root: Path, **kwargs: object) -> ImageNetDataModule:
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("cache_dir", str(root / ".cache"))
    kwargs.setdefault("verify_archives", False)  # the tiny archives are not the official ones
    return ImageNetDataModule(str(root), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- DatasetInfo
def test_dataset_info_holds_the_facts_immutably() -> None:
    facts = info(class_names=["a", "b", "c"], mean=[0.5, 0.5, 0.5], std=[1, 1, 1])
    assert facts.class_names == ("a", "b", "c") and facts.num_classes == 3  # lists become tuples
    assert facts.std == (1.0, 1.0, 1.0) and all(type(v) is float for v in facts.std)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.in_channels = 1  # type: ignore[misc]
    # ImageNet's devkit names two synsets "crane": names are labels, not keys
    assert info(class_names=("crane", "crane")).num_classes == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, r"name must be a non-empty str"),
        ({"class_names": ("a",)}, r"'toy'.*at least 2 classes, got \['a'\]"),
        ({"class_names": "ab"}, r"class_names must be a tuple or list, got 'ab'"),
        ({"class_names": ("a", "")}, r"class names must be non-empty str"),
        ({"class_names": ("a", 3)}, r"class names must be non-empty str, got \[3\]"),
        ({"in_channels": True}, r"in_channels must be a positive int, got True"),
        ({"image_size": 0}, r"image_size must be a positive int, got 0"),
        ({"mean": (0.5, 0.5)}, r"mean has 2 values .* one per channel \(in_channels=3\)"),
        ({"std": (0.2,) * 4}, r"std has 4 values"),
        ({"mean": (0.5, float("nan"), 0.5)}, r"mean must be finite numbers"),
        ({"std": (0.2, 0.0, 0.2)}, r"std must be positive, got \(0\.2, 0\.0, 0\.2\)"),
        ({"std": (0.2, -1.0, 0.2)}, r"std must be positive"),
    ],
)
def test_dataset_info_rejects_what_cannot_be_right(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        info(**changes)
    assert "\n" not in str(error.value)


def test_every_datamodule_declares_its_info(tmp_path: Path) -> None:
    make_folder_layout(tmp_path / "imagenet")
    make_devkit(tmp_path / "imagenet" / "ILSVRC2012_devkit_t12.tar.gz")
    write_stl10(tmp_path / "stl10")
    modules = {
        "digits": DigitsDataModule(image_size=8),
        "stl10": STL10DataModule(str(tmp_path / "stl10"), image_size=32, num_workers=0),
        "imagefolder": folder_dm(image_tree(tmp_path / "folders")),
        "imagenet": imagenet_dm(tmp_path / "imagenet"),
    }
    expected_names = {
        "digits": [str(d) for d in range(10)],
        "stl10": [
            "airplane",
            "bird",
            "car",
            "cat",
            "deer",
            "dog",
            "horse",
            "monkey",
            "ship",
            "truck",
        ],
        "imagefolder": FOLDER_CLASSES,
        "imagenet": HUMAN_NAMES,
    }
    for name, dm in modules.items():
        facts = dm.info
        assert facts.name == name and dm.info is facts  # resolved once, the same object after
        assert dataset_info(dm) is facts
        # the old attributes are read-only views of it
        assert dm.class_names == list(facts.class_names) == expected_names[name]
        assert (dm.num_classes, dm.in_channels, dm.image_size) == (
            facts.num_classes,
            facts.in_channels,
            facts.image_size,
        )
        assert (dm.mean, dm.std) == (facts.mean, facts.std)
        with pytest.raises(AttributeError):
            dm.num_classes = 3  # type: ignore[misc]
    assert modules["imagenet"].info.mean == IMAGENET_MEAN
    assert modules["imagefolder"].info.std == IMAGENET_STD
    assert (modules["digits"].info.in_channels, modules["stl10"].info.image_size) == (1, 32)


def test_a_subclass_must_resolve_a_dataset_info() -> None:
    class NoFacts(ImageClassificationDataModule):
        pass

    class WrongFacts(ImageClassificationDataModule):
        def _resolve_info(self):
            return {"class_names": ["a", "b"]}

    with pytest.raises(NotImplementedError, match=r"NoFacts must implement _resolve_info"):
        _ = NoFacts(num_workers=0).num_classes
    with pytest.raises(TypeError, match=r"WrongFacts._resolve_info\(\) must return a DatasetInfo"):
        _ = dataset_info(WrongFacts(num_workers=0))


# ---------------------------------------------------------------------------- resolved once
def test_image_folder_classes_are_read_once_and_a_later_change_is_an_error(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "data", splits=("train", "val"))
    dm = folder_dm(root)
    before = dm.info
    shutil.rmtree(root / "train" / "cat")
    shutil.rmtree(root / "val" / "cat")
    assert dm.info is before and dm.class_names == FOLDER_CLASSES  # no second listing
    # the data no longer matches the classes the model was given: setup says so
    with pytest.raises(
        ValueError,
        match=r"train: the class folders changed .*now 2 folders, 3 classes; gone \[.cat.\]",
    ):
        dm.setup()
    fresh = folder_dm(root)
    assert fresh.class_names == ["ant", "bee"]  # a new datamodule reads the data afresh
    fresh.setup()
    assert len(fresh.train_dataset) == 4


def test_imagenet_classes_are_read_once_and_checked_against_the_folders(tmp_path: Path) -> None:
    make_folder_layout(tmp_path)
    make_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz")
    dm = imagenet_dm(tmp_path)
    before = dm.info
    write(tmp_path / "train" / "n09999999" / "a.JPEG", jpeg_bytes())
    assert dm.info is before and dm.wnids == WNIDS
    with pytest.raises(ValueError, match=r"has 4 class folders but 3 classes .*\['n09999999'\]"):
        dm.setup()


def test_stl10_class_names_that_change_after_they_were_read_are_an_error(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    names_file = tmp_path / "stl10_binary" / "class_names.txt"
    names = names_file.read_text().split()
    dm = STL10DataModule(str(tmp_path), val_split=10, num_workers=0)
    assert dm.class_names == names
    names_file.write_text("\n".join(reversed(names)))
    with pytest.raises(ValueError, match=r"class_names\.txt names the classes \['truck'.*"):
        dm.setup()
    assert STL10DataModule(str(tmp_path), num_workers=0).class_names == names[::-1]


# ---------------------------------------------------------------------------- errors propagate
class RecordsDatasetInfo(pl.LightningModule):
    """Reads the data's facts in ``setup``, as ClassifierModule does."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.seen: list[DatasetInfo | None] = []

    def setup(self, stage: str) -> None:
        self.seen.append(dataset_info(self.trainer))

    def validation_step(self, batch: object, batch_idx: int) -> None:
        pass


def quiet_trainer() -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        fast_dev_run=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_an_error_resolving_the_facts_propagates_instead_of_meaning_unknown(
    tmp_path: Path,
) -> None:
    make_folder_layout(tmp_path)
    # Kaggle's name table without an entry for one class folder
    mapping = "".join(f"{w} {NAMES[w]}\n" for w in WNIDS[:2])
    (tmp_path / "LOC_synset_mapping.txt").write_text(mapping)
    dm = imagenet_dm(tmp_path)
    with pytest.raises(ValueError, match=r"LOC_synset_mapping\.txt has no entry .*n03000684"):
        dataset_info(dm)
    module = RecordsDatasetInfo()
    with pytest.raises(ValueError, match=r"LOC_synset_mapping\.txt has no entry .*n03000684"):
        quiet_trainer().validate(module, datamodule=dm)  # raised in the module's setup
    assert module.seen == []
    with pytest.raises(ValueError, match="no entry"):  # and again: a failure is not cached
        _ = dm.num_classes


def test_dataset_info_is_none_only_without_declared_facts(tmp_path: Path) -> None:
    class Plain(pl.LightningDataModule):
        num_classes = 5

    class OtherInfo(pl.LightningDataModule):
        info = {"written by": "someone else"}

    class Broken(pl.LightningDataModule):
        @property
        def info(self) -> DatasetInfo:
            raise FileNotFoundError("labels.txt is missing")

    assert dataset_info(None) is None
    assert dataset_info(quiet_trainer()) is None  # a trainer with no datamodule attached
    assert dataset_info(Plain()) is None
    assert dataset_info(OtherInfo()) is None  # an `info` that is not a DatasetInfo is not ours
    with pytest.raises(FileNotFoundError, match=r"labels\.txt"):
        dataset_info(Broken())

    dm = DigitsDataModule(image_size=8, batch_size=64)
    module = RecordsDatasetInfo()
    quiet_trainer().validate(module, datamodule=dm)
    assert module.seen == [dm.info]  # through the trainer, the same object


# ---------------------------------------------------------------------------- transforms
def test_every_datamodule_has_transform_attributes_none_or_callable(tmp_path: Path) -> None:
    make_folder_layout(tmp_path / "imagenet")
    modules = [
        DigitsDataModule(image_size=8),
        DigitsDataModule(image_size=8, augment=False),
        STL10DataModule(str(tmp_path), num_workers=0),
        STL10DataModule(str(tmp_path), image_size=64, augment=False, num_workers=0),
        folder_dm(image_tree(tmp_path / "folders")),
        imagenet_dm(tmp_path / "imagenet"),
    ]
    for dm in modules:
        for name in ("train_transform", "eval_transform"):
            assert name in vars(dm), f"{type(dm).__name__}.{name} is not an attribute"
            value = vars(dm)[name]
            assert value is None or callable(value), (type(dm).__name__, name, value)
    digits, plain_digits, stl10, small_stl10, folders, imagenet = modules
    # "nothing to do" is None everywhere
    assert digits.eval_transform is None and plain_digits.train_transform is None
    assert stl10.eval_transform is None and small_stl10.train_transform is not None
    assert small_stl10.eval_transform is not None
    # files must be decoded: never None there
    assert all(dm.train_transform and dm.eval_transform for dm in (folders, imagenet))


def test_a_none_transform_leaves_the_stored_images_as_they_are(tmp_path: Path) -> None:
    expected = write_stl10(tmp_path)
    dm = STL10DataModule(str(tmp_path), val_split=0, augment=False, num_workers=0)
    assert dm.train_transform is None and dm.eval_transform is None
    dm.setup()
    image, label = dm.test_dataset[3]
    assert torch.equal(image, torch.from_numpy(expected["test_images"][3]))
    assert label == expected["test_labels"][3]
    train_image, _ = dm.train_dataset[0]
    assert torch.equal(train_image, torch.from_numpy(expected["train_images"][0]))

    digits = DigitsDataModule(image_size=8, augment=False)
    digits.setup()
    index = int(digits.data.val_indices[0])
    assert torch.equal(digits.val_dataset[0][0], digits.data.images[index])


def test_a_file_datamodule_without_a_decoding_transform_says_so(tmp_path: Path) -> None:
    dm = folder_dm(image_tree(tmp_path, splits=("train", "val")))
    dm.train_transform = None
    with pytest.raises(ValueError, match=r"ImageFolderDataModule\.train_transform is None"):
        dm.setup()


# ---------------------------------------------------------------------------- ImageNet layout
def test_imagenet_layout_is_detected_once_and_again_after_prepare_data(tmp_path: Path) -> None:
    make_archives(tmp_path)
    other_rank = imagenet_dm(tmp_path)  # another DDP rank's copy: it never runs prepare_data
    assert other_rank.layout.kind == "archives" and other_rank.class_names == HUMAN_NAMES
    dm = imagenet_dm(tmp_path)
    assert dm.layout.kind == "archives"
    facts = dm.info  # from the devkit, before anything is unpacked
    (tmp_path / "train").mkdir()
    assert dm.layout.kind == "archives"  # cached: not detected on every access
    (tmp_path / "train").rmdir()

    dm.prepare_data()
    assert dm.layout.kind == "folders" and dm.layout.train_dir == tmp_path / "train"
    assert dm.info is facts
    dm.setup()
    assert len(dm.train_dataset) == 9 and len(dm.test_dataset) == 6

    assert other_rank.layout.kind == "archives"  # still what it saw, until setup looks again
    other_rank.setup()
    assert other_rank.layout.kind == "folders"
    labels = sorted(int(other_rank.test_dataset[i][1]) for i in range(6))
    assert labels == [0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------------------- the CLI
def test_the_cli_gives_the_model_the_datamodules_facts(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "data", splits=("train", "val"))
    run_cli(
        "fit",
        "--model.backbone=resnet20",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={root}",
        "--data.image_size=8",
        "--data.batch_size=6",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    (run_dir,) = (tmp_path / "runs").glob("*/version_0")
    hparams = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)[
        "hyper_parameters"
    ]
    assert hparams["num_classes"] == 3 and hparams["in_channels"] == 3
    assert hparams["class_names"] == FOLDER_CLASSES


def test_the_cli_reports_an_error_resolving_the_facts_in_one_line(tmp_path: Path) -> None:
    make_folder_layout(tmp_path / "imagenet")
    mapping = "".join(f"{w} {NAMES[w]}\n" for w in WNIDS[:2])
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").write_text(mapping)
    result = run_cli(
        "fit",
        "--model.backbone=resnet20",
        "--data=ImageNetDataModule",
        f"--data.data_dir={tmp_path / 'imagenet'}",
        "--trainer.fast_dev_run=true",
        cwd=tmp_path,
        check=False,
    )
    assert_one_line_error(result, r"LOC_synset_mapping\.txt has no entry .*n03000684")
