"""``lit-classifiers prepare`` and StreamingDataModule: litdata chunks of real tiny JPEGs.

What is checked: the stream decodes every image exactly as the datamodule it was converted from
(labels, class names, pixels, order); DDP evaluation on two processes counts each image once
and gives the single-process metrics; a run killed mid-epoch and resumed from its checkpoint
sees each training image of that epoch once; bad input fails naming the file; an interrupted
conversion resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.cli import run_cli
from helpers.data import (
    NAMES,
    WNIDS,
    make_archives,
    make_devkit,
    make_folder_layout,
    make_kaggle_layout,
    synset_mapping_text,
    write_stl10,
)
from helpers.ddp import read_ranks
from helpers.fresh import read_report
from PIL import Image

pytest.importorskip("litdata")

from datamodules import (
    ImageFolderDataModule,
    ImageNetDataModule,
    STL10DataModule,
    StreamingDataModule,
)
from datamodules.decoding import ImageDecodeError
from datamodules.prepare import convert_datamodule, prepare_main, prepare_streaming

THIS = Path(__file__).resolve()
CLASSES = ["cat", "dog", "eel"]
# Small chunks, so that every split spans several chunk files and both conversion workers.
CHUNK = "1KB"


def unique_folder(root: Path, counts: dict[str, int]) -> Path:
    """``root/<split>/<class>/img<k>.jpg``: every image a different colour and size, so its
    decoded pixels identify it; ``counts`` is images per split (spread over the classes)."""
    k = 0
    for split, count in counts.items():
        for i in range(count):
            k += 1
            folder = root / split / CLASSES[i % len(CLASSES)]
            folder.mkdir(parents=True, exist_ok=True)
            color = ((k * 37) % 256, (k * 91 + 40) % 256, (k * 13 + 90) % 256)
            image = Image.new("RGB", (20 + k % 7, 16 + k % 5), color)
            image.save(folder / f"img{k:03d}.jpg", quality=95)
    return root


def fingerprint(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


def samples(loader: Any) -> list[tuple[str, int]]:
    """(pixel fingerprint, label) of every image a loader yields, in order."""
    out = []
    for images, labels in loader:
        out += [(fingerprint(x), int(y)) for x, y in zip(images, labels, strict=True)]
    return out


def deterministic(data_module: Any) -> Any:
    """Training images through the evaluation transform, so that their pixels identify them."""
    data_module.train_transform = data_module.eval_transform
    return data_module


def train_images(data: Path) -> Counter:
    """Every training image of an image folder, as :func:`samples` of a deterministic loader."""
    folder = ImageFolderDataModule(str(data), image_size=8, batch_size=4, num_workers=0)
    return Counter(samples(deterministic(folder).train_dataloader()))


def convert(source: Any, out: Path, **kwargs: Any) -> Path:
    return convert_datamodule(
        source, out, num_workers=2, chunk_bytes=CHUNK, progress=False, **kwargs
    )


def stream(out: Path, **kwargs: Any) -> StreamingDataModule:
    defaults = {"image_size": 8, "batch_size": 4, "num_workers": 0}
    return StreamingDataModule(str(out), **{**defaults, **kwargs})


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_conversion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image folder and its conversion, made once for the tests that only read them."""
    root = tmp_path_factory.mktemp("small")
    data = unique_folder(root / "photos", {"train": 3, "val": 3, "test": 5})
    return data, convert(
        ImageFolderDataModule(str(data), image_size=8, num_workers=0), root / "lit"
    )


@pytest.mark.parametrize("protocol", ["ten_crop", "dense:8,12"])
def test_streamed_eval_protocol_views_equal_the_folder_datamodules(
    small_conversion: tuple[Path, Path], protocol: str
) -> None:
    """``eval_protocol`` is the streaming datamodule's own argument too: its test batches hold
    the same views as the image folder's it was converted from."""
    data, out = small_conversion
    folder = ImageFolderDataModule(
        str(data), image_size=8, batch_size=4, num_workers=0, eval_protocol=protocol
    )
    streamed = stream(out, eval_protocol=protocol)
    folder.setup()
    streamed.setup()
    pairs = list(zip(folder.test_dataloader(), streamed.test_dataloader(), strict=True))
    assert len(pairs) == (2 if protocol == "ten_crop" else 5)  # dense: one image per batch
    for (images, labels), (views, stream_labels) in pairs:
        assert torch.equal(labels, stream_labels)
        images = [images] if protocol == "ten_crop" else images
        views = [views] if protocol == "ten_crop" else views
        assert [x.shape[1] for x in views] == ([10] if protocol == "ten_crop" else [2, 2])
        assert all(torch.equal(a, b) for a, b in zip(images, views, strict=True))


# ------------------------------------------------------------------------------------------------
def test_streamed_image_folder_equals_the_folder_datamodule(tmp_path: Path) -> None:
    data = unique_folder(tmp_path / "photos", {"train": 21, "val": 10, "test": 7})
    folder = ImageFolderDataModule(str(data), image_size=8, batch_size=4, num_workers=0)
    out = convert(ImageFolderDataModule(str(data), image_size=8, num_workers=0), tmp_path / "lit")

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["splits"] == {
        "train": {"folder": "train", "count": 21, "label_counts": [7, 7, 7]},
        "val": {"folder": "val", "count": 10, "label_counts": [4, 3, 3]},
        "test": {"folder": "test", "count": 7, "label_counts": [3, 2, 2]},
    }
    assert len(list((out / "train").glob("chunk-1-*.bin"))) > 1  # two workers, several chunks

    data_module = stream(out)
    assert data_module.class_names == folder.class_names == CLASSES
    assert data_module.num_classes == 3 and data_module.wnids is None
    assert data_module.info.mean == folder.info.mean
    folder.setup()
    data_module.setup()
    # Evaluation: the same pixels and labels, in the same order.
    assert samples(data_module.val_dataloader()) == samples(folder.val_dataloader())
    assert samples(data_module.test_dataloader()) == samples(folder.test_dataloader())
    # Training: the same random crops and flips from the same random numbers...
    for seed, image in enumerate(sorted((data / "train").rglob("*.jpg"))[:5]):
        torch.manual_seed(seed)
        expected = folder.train_transform(str(image))
        torch.manual_seed(seed)
        assert torch.equal(data_module.train_transform(image.read_bytes(), "x"), expected)
    # A damaged stored image names the sample and its chunk.
    with pytest.raises(ImageDecodeError, match=r"^cannot decode image file a/1\.jpg \(in chunk"):
        data_module.train_transform(image.read_bytes()[:300], "a/1.jpg (in chunk-0-0.bin)")
    # ...of the same images (shuffled), seen here through the evaluation transform.
    streamed = samples(deterministic(stream(out)).train_dataloader())
    assert len(streamed) == 21 and len(data_module.train_dataloader()) == 6
    assert Counter(streamed) == train_images(data)


def _imagenet(layout: str, root: Path) -> dict[str, Any]:
    if layout == "kaggle":
        make_kaggle_layout(root)
        return {}
    if layout == "archives":
        make_archives(root)
        return {"verify_archives": False}  # the test archives are not the published ones
    make_folder_layout(root, flat_val=layout == "flat_val")
    if layout == "flat_val":
        make_devkit(root / "ILSVRC2012_devkit_t12.tar.gz")
    else:
        (root / "LOC_synset_mapping.txt").write_text(synset_mapping_text())
    return {}


@pytest.mark.parametrize("layout", ["folders", "flat_val", "kaggle", "archives"])
def test_every_imagenet_layout_streams_like_imagenet_datamodule(
    tmp_path: Path, layout: str
) -> None:
    options = _imagenet(layout, tmp_path / "imagenet")
    out = prepare_streaming(
        "imagenet",
        str(tmp_path / "imagenet"),
        tmp_path / "lit",
        options=options,
        num_workers=2,
        chunk_bytes=CHUNK,
        progress=False,
    )
    data_module = stream(out)
    assert data_module.wnids == WNIDS
    assert data_module.class_names == [NAMES[w].split(",")[0] for w in WNIDS]
    reference = ImageNetDataModule(
        str(tmp_path / "imagenet"), image_size=8, batch_size=4, num_workers=0, **options
    )
    assert reference.class_names == data_module.class_names
    assert samples(data_module.test_dataloader()) == samples(reference.test_dataloader())
    # The official validation set is both val and test, stored once.
    assert not (out / "test").exists()
    assert data_module.test_dataset is data_module.val_dataset


def test_fit_and_validate_on_the_stream(tmp_path: Path) -> None:
    from helpers.modules import TinyNet, make_trainer, sgd

    from lit_classifiers.module import ClassifierModule

    make_kaggle_layout(tmp_path / "imagenet")
    out = prepare_streaming(
        "imagenet", str(tmp_path / "imagenet"), tmp_path / "lit", num_workers=2, progress=False
    )
    data_module = stream(out, num_workers=2)
    model = ClassifierModule(TinyNet(num_classes=3), num_classes=3, optimizer=sgd)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, datamodule=data_module)
    assert trainer.global_step == 2 * 3  # 9 training images in batches of 4, twice
    assert model.class_names == data_module.class_names  # reached the model in setup
    metrics = trainer.validate(model, datamodule=data_module, verbose=False)[0]
    assert set(metrics) == {"val/loss", "val/acc1", "val/acc5"}


def test_stl10_is_stored_raw_and_streams_its_pixels(tmp_path: Path) -> None:
    write_stl10(tmp_path / "stl", n_train=30, n_test=12)
    out = prepare_streaming("stl10", str(tmp_path / "stl"), tmp_path / "lit", progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["encoding"], meta["raw_shape"]) == ("raw", [3, 96, 96])
    for image_size in (96, 32):
        reference = STL10DataModule(
            str(tmp_path / "stl"), image_size=image_size, batch_size=4, num_workers=0
        )
        data_module = stream(out, image_size=image_size)
        assert data_module.class_names == reference.class_names
        assert samples(data_module.val_dataloader()) == samples(reference.val_dataloader())
        assert samples(data_module.test_dataloader()) == samples(reference.test_dataloader())
    # Training uses STL-10's own augmentation (pad-crop and flip of the 96 px image).
    assert repr(data_module.train_transform.transform) == repr(reference.train_transform)


def test_a_url_streams_through_the_cache(
    small_conversion: tuple[Path, Path], tmp_path: Path
) -> None:
    """``local:`` is litdata's URL for a local folder read like a remote one: chunks are copied
    into ``cache_dir``, as they would be downloaded from s3:// or gs://."""
    _, out = small_conversion
    local = stream(out)
    remote = stream(f"local:{out}", cache_dir=str(tmp_path / "cache"))
    assert remote.class_names == local.class_names
    assert samples(remote.val_dataloader()) == samples(local.val_dataloader())
    assert list((tmp_path / "cache").rglob("chunk-*.bin"))


# ------------------------------------------------------------------------------------------------
# DDP: two processes evaluate every image once and agree with one process.
class Recording(StreamingDataModule):
    """Records the (fingerprint, label) of every image a stage receives, before normalising."""

    def __init__(self, *args: Any, record: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[str, list[tuple[str, int]]] = {}
        self.record = record  # also appended to this file, batch by batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        stage = str(self.trainer.state.stage.value) if self.trainer else "none"
        batch_seen = [
            (fingerprint(x), int(y)) for x, y in zip(batch[0].cpu(), batch[1], strict=True)
        ]
        self.seen.setdefault(stage, []).extend(batch_seen)
        if self.record:
            with open(self.record, "a") as handle:
                handle.write(json.dumps({"stage": stage, "seen": batch_seen}) + "\n")
        return super().on_after_batch_transfer(batch, dataloader_idx)


# slow: two DDP processes (one launch shared with test_module_ddp.py and test_eval_protocols.py,
# helpers/ddp.py)
@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_two_processes_evaluate_every_image_once(two_rank_job: Path) -> None:
    from helpers.modules import TinyNet, make_trainer

    from lit_classifiers.module import ClassifierModule

    ranks = read_ranks(two_rank_job, "streaming")
    model = ClassifierModule(TinyNet(num_classes=3), num_classes=3)
    model.load_state_dict(torch.load(two_rank_job / "streaming" / "state.pt", weights_only=True))

    single = Recording(
        str(two_rank_job / "streaming" / "lit"), image_size=8, batch_size=4, num_workers=2
    )
    trainer = make_trainer()
    single_val = trainer.validate(model, datamodule=single, verbose=False)[0]
    single_test = trainer.test(model, datamodule=single, verbose=False)[0]

    for stage, count in (("validate", 21), ("test", 7)):
        per_rank = [[tuple(s) for s in rank["seen"][stage]] for rank in ranks]
        assert all(per_rank), "a rank evaluated nothing"
        combined = per_rank[0] + per_rank[1]
        assert len(combined) == len(set(combined)) == count  # each image once, none padded
        assert Counter(combined) == Counter(single.seen[stage])
    for rank in ranks:
        for reference, multi, stage in (
            (single_val, rank["val"], "val"),
            (single_test, rank["test"], "test"),
        ):
            assert multi[f"{stage}/acc1"] == reference[f"{stage}/acc1"]
            assert multi[f"{stage}/acc5"] == reference[f"{stage}/acc5"]
            assert multi[f"{stage}/loss"] == pytest.approx(reference[f"{stage}/loss"], abs=1e-6)


# The two-process part of helpers/ddp.py's launch.
def ddp_prepare(folder: Path) -> list[Path]:
    """21 val and 7 test images in batches of 4 over 2 processes x 2 workers: divisible by
    neither the batch size nor the number of processes. 7 is fewer than one batch per rank:
    split a batch at a time (litdata's default), rank 0 would get none and the metrics'
    synchronisation would wait for it forever."""
    from helpers.modules import TinyNet

    from lit_classifiers.module import ClassifierModule

    data = unique_folder(folder / "photos", {"train": 6, "val": 21, "test": 7})
    out = convert(ImageFolderDataModule(str(data), num_workers=0), folder / "lit")
    torch.manual_seed(3)
    model = ClassifierModule(TinyNet(num_classes=3), num_classes=3)
    torch.save(model.state_dict(), folder / "state.pt")
    return [out, folder / "state.pt", folder]


def ddp_main(input_dir: str, state_path: str, out_dir: str) -> None:
    """Validate and test on two ranks; each writes its metrics and the images it saw."""
    from helpers.modules import TinyNet, make_trainer

    from lit_classifiers.module import ClassifierModule

    recorder = Recording(input_dir, image_size=8, batch_size=4, num_workers=2)
    model = ClassifierModule(TinyNet(num_classes=3), num_classes=3)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    trainer = make_trainer(devices=2, strategy="ddp")
    val = trainer.validate(model, datamodule=recorder, verbose=False)[0]
    test = trainer.test(model, datamodule=recorder, verbose=False)[0]
    result = {"val": val, "test": test, "seen": recorder.seen}
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# Killed mid-epoch, resumed from a checkpoint: each training image of the epoch once.
def _fit(input_dir: str, checkpoints: Path, record: Path, ckpt_path: str | None = None) -> Any:
    import lightning.pytorch as pl
    from helpers.modules import TinyNet, make_trainer, sgd
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from lit_classifiers.module import ClassifierModule

    class KillAfterStep4(Callback):
        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            if ckpt_path is None and trainer.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers

    pl.seed_everything(0, verbose=False)
    data_module = Recording(
        input_dir, image_size=8, batch_size=4, num_workers=2, record=str(record)
    )
    deterministic(data_module)  # pixels identify the images
    model = ClassifierModule(TinyNet(num_classes=3), num_classes=3, optimizer=sgd)
    checkpoint = ModelCheckpoint(
        dirpath=checkpoints, filename="{step}", every_n_train_steps=2, save_top_k=-1
    )
    trainer = make_trainer(
        max_epochs=2,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[checkpoint, KillAfterStep4()],
    )
    trainer.fit(model, datamodule=data_module, ckpt_path=ckpt_path)
    return trainer


def _recorded(record: Path) -> list[list[tuple[str, int]]]:
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    return [[tuple(s) for s in line["seen"]] for line in lines if line["stage"] == "train"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_mid_epoch_sees_each_image_once(tmp_path: Path) -> None:
    # 21 training images in batches of 4 from 2 workers: 6 batches an epoch, the last of 1.
    data = unique_folder(tmp_path / "photos", {"train": 21, "val": 3})
    out = convert(ImageFolderDataModule(str(data), num_workers=0), tmp_path / "lit")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    killed = subprocess.run(
        [sys.executable, str(THIS), "fit-killed", str(out), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-5000:]
    first = _recorded(tmp_path / "killed.jsonl")
    assert len(first) == 5  # batches 0-4: killed as the fifth step began
    assert (tmp_path / "checkpoints" / "step=2.ckpt").is_file()

    trainer = _fit(
        str(out),
        tmp_path / "resumed-checkpoints",
        tmp_path / "resumed.jsonl",
        ckpt_path=str(tmp_path / "checkpoints" / "step=2.ckpt"),
    )
    resumed = _recorded(tmp_path / "resumed.jsonl")
    assert trainer.global_step == 12
    # Epoch 1 continues after its second batch with the same batches the killed run had.
    assert resumed[:2] == first[2:4]
    epoch_1 = [s for batch in first[:2] + resumed[:4] for s in batch]
    epoch_2 = [s for batch in resumed[4:] for s in batch]
    every_image = train_images(data)
    assert len(every_image) == 21
    assert Counter(epoch_1) == every_image  # nothing twice, nothing skipped
    assert Counter(epoch_2) == every_image  # and the next epoch is a whole one again


# ------------------------------------------------------------------------------------------------
# Bad input: one error naming the file, before training starts.
@pytest.fixture(scope="module")
def converted_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("converted")
    data = unique_folder(root / "photos", {"train": 9, "val": 6})
    return convert(ImageFolderDataModule(str(data), num_workers=0), root / "lit")


@pytest.fixture()
def converted(converted_once: Path, tmp_path: Path) -> Path:
    """A conversion of its own for a test to damage: a copy of one made once per module."""
    return shutil.copytree(converted_once, tmp_path / "lit")


def _first_chunk(out: Path) -> Path:
    index = json.loads((out / "train" / "index.json").read_text())
    return out / "train" / index["chunks"][0]["filename"]


def test_missing_or_unfinished_conversion(tmp_path: Path, converted: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.*is not a folder"):
        StreamingDataModule(str(tmp_path / "nowhere"))
    (converted / "dataset.json").unlink()  # what an interrupted prepare leaves
    with pytest.raises(FileNotFoundError, match=r"lit/dataset.json does not exist.*run prepare"):
        StreamingDataModule(str(converted))


def test_incompatible_versions(converted: Path) -> None:
    meta = json.loads((converted / "dataset.json").read_text())
    (converted / "dataset.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match=r"dataset.json has format version 99"):
        StreamingDataModule(str(converted))
    (converted / "dataset.json").write_text(json.dumps(meta))

    index_file = converted / "train" / "index.json"
    index = json.loads(index_file.read_text())
    index["config"]["data_format"] = ["bytes", "int", "str", "int"]
    index_file.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"train/index.json was written by an incompatible"):
        stream(converted).setup()


def test_missing_truncated_and_corrupt_chunks(converted: Path) -> None:
    chunk = _first_chunk(converted)
    content = chunk.read_bytes()

    chunk.unlink()
    with pytest.raises(FileNotFoundError, match=rf"chunk file .*{chunk.name} is missing"):
        stream(converted).setup()

    chunk.write_bytes(content[:-10])
    with pytest.raises(ValueError, match=rf"chunk file .*{chunk.name} has \d+ bytes"):
        stream(converted).setup()

    # Same size, one byte of an image changed: only the checksum can tell.
    damaged = bytearray(content)
    damaged[-40] ^= 0xFF
    chunk.write_bytes(bytes(damaged))
    data_module = stream(converted)
    data_module.setup()
    with pytest.raises(ValueError, match=rf"chunk file .*{chunk.name} is damaged"):
        list(data_module.train_dataloader())

    # The chunk's own table of offsets damaged: litdata cannot even find the samples.
    damaged = bytearray(content)
    damaged[4:12] = b"\xff" * 8
    chunk.write_bytes(bytes(damaged))
    data_module = stream(converted)
    data_module.setup()
    with pytest.raises(ValueError, match=rf"chunk file .*{chunk.name}"):
        list(data_module.train_dataloader())


def test_an_index_cannot_point_outside_its_folder(converted: Path) -> None:
    index_file = converted / "val" / "index.json"
    index = json.loads(index_file.read_text())
    index["chunks"][0]["filename"] = "../train/" + index["chunks"][0]["filename"]
    index_file.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"val/index.json lists an invalid chunk"):
        stream(converted).setup()


# ------------------------------------------------------------------------------------------------
# Conversion: interrupted, fixed, run again.
# slow: four conversions with worker processes, one of them interrupted
@pytest.mark.slow
def test_an_interrupted_conversion_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = unique_folder(tmp_path / "photos", {"train": 21, "val": 6})
    bad = sorted((data / "train").rglob("*.jpg"))[15]
    good = bad.read_bytes()
    bad.write_bytes(b"not an image")

    with pytest.raises(ValueError, match=rf"{bad.name}: not an image.*run the same command again"):
        convert(ImageFolderDataModule(str(data), num_workers=0), tmp_path / "lit")
    assert (tmp_path / "lit" / ".train.partial").is_dir()
    assert not (tmp_path / "lit" / "train").exists()
    assert not (tmp_path / "lit" / "dataset.json").exists()  # not streamable yet

    bad.write_bytes(good)
    convert(ImageFolderDataModule(str(data), num_workers=0), tmp_path / "lit")
    assert "resuming the interrupted conversion" in capsys.readouterr().err
    assert not (tmp_path / "lit" / ".train.partial").exists()
    streamed = samples(deterministic(stream(tmp_path / "lit")).train_dataloader())
    assert Counter(streamed) == train_images(data)

    # Again: nothing to do. With other options: refused unless asked to overwrite.
    convert(ImageFolderDataModule(str(data), num_workers=0), tmp_path / "lit")
    assert capsys.readouterr().err.count("already converted, kept") == 2
    changed = ImageFolderDataModule(str(data), num_workers=0, val_split=2)
    (data / "val").rename(tmp_path / "val-aside")
    with pytest.raises(FileExistsError, match=r"lit/train holds a conversion of other data"):
        convert(changed, tmp_path / "lit")
    convert(changed, tmp_path / "lit", overwrite=True)
    assert (
        json.loads((tmp_path / "lit" / "dataset.json").read_text())["splits"]["val"]["count"] == 2
    )


def test_prepare_refuses_to_write_into_the_data(tmp_path: Path) -> None:
    data = unique_folder(tmp_path / "photos", {"train": 6, "val": 3})
    with pytest.raises(ValueError, match="must be separate folders"):
        convert(ImageFolderDataModule(str(data), num_workers=0), data / "lit")


# ------------------------------------------------------------------------------------------------
# slow: a fresh interpreter: what it imported is the point (one for the checks of five
# modules, helpers/fresh.py)
@pytest.mark.slow
def test_importing_the_datamodules_does_not_import_litdata(fresh_interpreter: Path) -> None:
    """litdata is an extra: ``import datamodules`` (every CLI start) neither needs nor loads it."""
    assert read_report(fresh_interpreter)["litdata_after_import_datamodules"] is False


def test_the_command_line(tmp_path: Path) -> None:
    """``lit-classifiers prepare`` then ``fit --data StreamingDataModule``: the class names reach
    the model and its checkpoint."""
    data = unique_folder(tmp_path / "photos", {"train": 9, "val": 6})
    with pytest.raises(FileNotFoundError, match=r"data folder .*nowhere.* does not exist"):
        prepare_main(["imagenet", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    prepared = run_cli(
        "prepare", "imagefolder", data, tmp_path / "lit", "--workers", "2", cwd=tmp_path
    )
    assert "100%" in prepared.stderr  # the progress bar
    assert "--data.input_dir" in prepared.stdout
    run_cli(
        "fit",
        "--model.backbone=resnet20",
        "--data=StreamingDataModule",
        f"--data.input_dir={tmp_path / 'lit'}",
        "--data.image_size=8",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    (checkpoint,) = (tmp_path / "runs").rglob("last.ckpt")
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["class_names"] == CLASSES and hparams["num_classes"] == 3


if __name__ == "__main__":
    if sys.argv[1] == "fit-killed":
        base = Path(sys.argv[3])
        _fit(sys.argv[2], base / "checkpoints", base / "killed.jsonl")
