"""The datamodules' normalisation: the reference formula's values, in the dtype asked for, a new
tensor every call."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from datamodules.datasets import SkipCollate
from datamodules.normalization import BatchNormalizer

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


def test_every_call_returns_a_tensor_of_its_own_in_the_asked_dtype() -> None:
    normalize = BatchNormalizer(MEAN, STD)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    first = normalize(images)
    second = normalize(images)
    assert first.data_ptr() != second.data_ptr()  # a step may keep its batch
    for dtype, rtol in ((torch.bfloat16, 2**-8), (torch.float64, 0.0)):  # bf16: rounded once
        out = normalize(images, dtype)
        assert out.dtype == dtype and out.is_contiguous()
        torch.testing.assert_close(out.double(), reference(images).double(), rtol=rtol, atol=1e-6)
    assert normalize(images.float() / 255, torch.float64).dtype == torch.float64
    with torch.inference_mode():  # constants made here still serve outside inference mode
        fresh = BatchNormalizer(MEAN, STD)
        fresh(images)
    out = fresh(images)
    assert not out.is_inference()
    out.add_(1)  # an ordinary tensor: in-place updates are allowed


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
