"""The datamodules' normalisation: the reference formula's values, and the reuse of an earlier
output's memory only when nothing else refers to it (in a real Trainer fit, too)."""

from __future__ import annotations

import weakref

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from datamodules import DigitsDataModule
from datamodules.datasets import SkipCollate
from datamodules.normalization import BatchNormalizer, _blocks

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference(images: Tensor) -> Tensor:
    """torchvision's ToTensor + Normalize, on a batch."""
    mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
    return (images.float() / 255 - mean) / std


def test_uint8_and_float_batches_equal_torchvisions_formula() -> None:
    normalize = BatchNormalizer(MEAN, STD)
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    torch.testing.assert_close(normalize(images), reference(images), rtol=0, atol=1e-6)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        again = normalize(images.contiguous(memory_format=memory_format))
        torch.testing.assert_close(again, reference(images), rtol=0, atol=1e-6)
    as_float = normalize(images.double() / 255)
    assert as_float.dtype == torch.float64
    torch.testing.assert_close(as_float, reference(images).double(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, H, W\), got \(4, 1, 9, 7\)"):
        normalize(images[:, :1])
    with pytest.raises(ValueError, match="uint8 or floating-point images, got dtype torch.int64"):
        normalize(images.long())


def test_a_batch_larger_than_a_block_is_normalised_block_by_block_to_the_same_values() -> None:
    # 7 images of 3x256x256 float32 (0.75 MiB each): blocks of two, the last one of one
    images = torch.randint(0, 256, (7, 3, 256, 256), dtype=torch.uint8)
    assert len(_blocks(images.shape, images.device)) == 4
    out = BatchNormalizer(MEAN, STD)(images.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference(images), rtol=0, atol=1e-6)


def test_an_output_is_reused_only_when_nothing_refers_to_it() -> None:
    normalize = BatchNormalizer(MEAN, STD)
    first = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    second = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    dropped = weakref.ref(normalize(first))  # the caller drops it at once
    out = normalize(second)
    assert out is dropped()  # written into the same tensor: no new memory
    torch.testing.assert_close(out, reference(second), rtol=0, atol=1e-6)

    kept = out  # a Python reference, a view, and a tensor saved for backward each keep it theirs
    assert normalize(first).data_ptr() != kept.data_ptr()
    torch.testing.assert_close(kept, reference(second), rtol=0, atol=1e-6)
    view = normalize(second)[0]
    assert normalize(first).data_ptr() != view.data_ptr()
    torch.testing.assert_close(view, reference(second)[0], rtol=0, atol=1e-6)
    weight = torch.ones(4, 1, requires_grad=True)
    loss = (normalize(second) @ weight).sum()  # the batch is saved for the weight's gradient
    fresh = normalize(first)
    loss.backward()
    expected = reference(second).sum(dim=(0, 1, 2)).view(4, 1)
    torch.testing.assert_close(weight.grad, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fresh, reference(first), rtol=0, atol=1e-6)


class Recorder(pl.LightningModule):
    """Records where each training batch lives; optionally keeps every batch it is given."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep
        self.fc = nn.Linear(64, 10)
        self.batches: list[weakref.ref[Tensor]] = []
        self.kept: list[tuple[Tensor, Tensor]] = []

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        self.batches.append(weakref.ref(images))
        if self.keep:
            self.kept.append((images, images.clone()))
        return nn.functional.cross_entropy(self.fc(images.flatten(1)), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("keep", [False, True], ids=["dropped", "kept"])
def test_a_fit_reuses_the_batch_memory_unless_the_step_keeps_the_batch(keep: bool) -> None:
    datamodule = DigitsDataModule(image_size=8, batch_size=16, num_workers=0)
    model = Recorder(keep)
    trainer = pl.Trainer(
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=datamodule)
    batches = [ref() for ref in model.batches]
    assert len(batches) == 4 and all(batch is not None for batch in batches)
    if keep:
        assert len({batch.data_ptr() for batch in batches}) == 4
        for images, copy in model.kept:  # what a step kept was never written over
            assert torch.equal(images, copy)
    else:  # one tensor, still alive (the datamodule holds it), was every step's batch
        assert all(batch is batches[0] for batch in batches)


def test_decoded_images_are_batched_channels_last_and_normalised_contiguous() -> None:
    decoded = [  # (C, H, W) views of (H, W, C) memory, as PIL arrays and the fast resize give
        torch.randint(0, 256, (5, 4, 3), dtype=torch.uint8).permute(2, 0, 1) for _ in range(3)
    ]
    images, labels = SkipCollate((3, 5, 4))([(image, k) for k, image in enumerate(decoded)])
    assert torch.equal(images, torch.stack([image.contiguous() for image in decoded]))
    assert images.is_contiguous(memory_format=torch.channels_last)  # copied without transposing
    assert labels.tolist() == [0, 1, 2]
    normalised = BatchNormalizer(MEAN, STD)(images)
    assert normalised.is_contiguous()  # what the model got before
    torch.testing.assert_close(normalised, reference(images), rtol=0, atol=1e-6)
    # Anything else keeps default_collate: contiguous images, paths as a list.
    plain = [torch.zeros(3, 5, 4, dtype=torch.uint8), torch.ones(3, 5, 4, dtype=torch.uint8)]
    images, paths = SkipCollate((3, 5, 4), paths=True)([(plain[0], "a"), (plain[1], "b")])
    assert images.is_contiguous() and paths == ["a", "b"]
