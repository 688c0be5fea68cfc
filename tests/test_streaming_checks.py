"""What a streamed dataset's files may not get past: labels outside the class list, repeated class
names, a damaged label or key, a wrong chunk size, a foreign ``data_spec``; each one line naming
the file. And ``prepare`` killed with ``kill -9`` takes its conversion processes with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.data import jpeg_bytes, write

pytest.importorskip("litdata")

from datamodules import ImageFolderDataModule, StreamingDataModule
from datamodules.prepare import convert_datamodule

THIS = Path(__file__).resolve()
CLASSES = ["cat", "dog", "eel"]


def three_classes(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(CLASSES):
        for k in range(per_class):
            write(root / "train" / name / f"img{k}.jpg", jpeg_bytes((60 * c, 30 * k, 9), (12, 10)))
    return root


@pytest.fixture(scope="module")
def converted_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("converted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("LIT_CLASSIFIERS_CACHE", str(root / "cache"))
        data = three_classes(root / "photos")
        source = ImageFolderDataModule(str(data), num_workers=0, val_split=3)
        return convert_datamodule(
            source, root / "lit", num_workers=1, chunk_bytes="1KB", progress=False
        )


@pytest.fixture()
def converted(converted_once: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A conversion of its own for a test to damage: a copy of one made once per module."""
    monkeypatch.setenv("LIT_CLASSIFIERS_CACHE", str(tmp_path / "cache"))
    return shutil.copytree(converted_once, tmp_path / "lit")


def stream(out: Path) -> StreamingDataModule:
    return StreamingDataModule(str(out), image_size=8, batch_size=4, num_workers=0)


def edit_json(path: Path, edit: object) -> None:
    content = json.loads(path.read_text())
    edit(content)  # type: ignore[operator]
    path.write_text(json.dumps(content))


def chunks(out: Path, split: str = "train") -> list[Path]:
    index = json.loads((out / split / "index.json").read_text())
    return [out / split / chunk["filename"] for chunk in index["chunks"]]


# ------------------------------------------------------------------------------------ labels
def test_labels_beyond_the_class_list_are_refused_at_setup(converted: Path) -> None:
    meta_file = converted / "dataset.json"
    assert json.loads(meta_file.read_text())["splits"]["train"]["label_counts"] == [2, 2, 2]
    edit_json(meta_file, lambda m: m.update(class_names=["cat", "dog"]))
    with pytest.raises(
        ValueError, match=r"lit/dataset.json: split 'train' has labels of 3 classes"
    ):
        stream(converted).setup("fit")


def test_a_label_beyond_the_class_list_names_its_chunk_when_read(converted: Path) -> None:
    """Without prepare's label counts (an older conversion, or removed), each label read is
    checked: an error naming the chunk, not ``IndexError: Target 2 is out of bounds``."""

    def two_classes(meta: dict) -> None:
        meta["class_names"] = ["cat", "dog"]
        for entry in meta["splits"].values():
            entry.pop("label_counts", None)

    edit_json(converted / "dataset.json", two_classes)
    data_module = stream(converted)
    data_module.setup("fit")
    with pytest.raises(
        ValueError,
        match=r"chunk file .*train/chunk-.*\.bin: the sample of .* has "
        r"label 2, but dataset.json names 2 classes",
    ):
        list(data_module.train_dataloader())


def test_repeated_class_names_are_refused(converted: Path) -> None:
    edit_json(converted / "dataset.json", lambda m: m.update(class_names=["cat", "dog", "cat"]))
    with pytest.raises(ValueError, match=r"dataset.json: class names \['cat'\] appear more than"):
        stream(converted)


# ------------------------------------------------------------------------------------ CRC
@pytest.mark.parametrize("field", ["label", "key"])
def test_the_checksum_covers_the_stored_label_and_key(converted: Path, field: str) -> None:
    """One byte of a sample's label or key changed (its image untouched): the CRC-32 tells."""
    chunk = chunks(converted)[0]
    content = bytearray(chunk.read_bytes())
    key = content.find(b"train/") if b"train/" in content else content.find(b"cat/img")
    key = content.find(b"/img", key) - 3  # "cat", "dog" or "eel": 3 bytes before "/img"
    if field == "key":
        content[key] ^= 0x01  # "cat" -> "bat": same length, another path
    else:
        # litdata stores the int label as 8 little-endian bytes just before the key.
        label = int.from_bytes(content[key - 8 : key], "little")
        assert label in (0, 1, 2)
        content[key - 8] = (label + 1) % 3  # still a valid class: only the checksum can tell
    chunk.write_bytes(bytes(content))
    data_module = stream(converted)
    data_module.setup("fit")
    with pytest.raises(ValueError, match=rf"chunk file .*{chunk.name} is damaged: .*CRC-32"):
        list(data_module.train_dataloader())


# ------------------------------------------------------------------------------------ index
def test_a_wrong_chunk_size_is_one_line_naming_the_index(converted: Path) -> None:
    def shift(index: dict) -> None:  # the total unchanged: only the chunks can tell
        index["chunks"][0]["chunk_size"] += 1
        index["chunks"][1]["chunk_size"] -= 1

    assert len(chunks(converted)) >= 2
    edit_json(converted / "train" / "index.json", shift)
    with pytest.raises(
        ValueError,
        match=r"chunk file .*\.bin holds \d+ samples but .*train/"
        r"index.json says \d+",
    ) as error:
        stream(converted).setup("fit")
    assert "\n" not in str(error.value)


def test_a_foreign_data_spec_is_one_line_naming_the_index(converted: Path) -> None:
    def foreign(index: dict) -> None:
        index["config"]["data_spec"] = json.dumps(
            [1, {"type": "os.system", "context": "[]", "children_spec": []}]
        )

    edit_json(converted / "train" / "index.json", foreign)
    with pytest.raises(ValueError, match=r"train/index.json: its data_spec .*os.system") as error:
        stream(converted).setup("fit")
    assert "\n" not in str(error.value)
