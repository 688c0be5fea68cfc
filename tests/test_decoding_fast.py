"""The fast training decode path (torchvision decode + torch uint8 resize): same images and same
errors as the PIL path, from paths and from bytes; the batched device decoder's CPU fallback."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from helpers.data import cmyk_jpeg_bytes, gray_jpeg_bytes, noise_jpeg_bytes, png_bytes, write
from helpers.fresh import read_report
from PIL import Image
from torchvision import transforms as T

from datamodules.datasets import FileImageDataset
from datamodules.decoding import (
    Header,
    ImageDecodeError,
    decode_crop,
    decode_crops,
    decoder_for,
    read_header,
)
from datamodules.transforms import (
    RandomResizedCropDecode,
    decode_encoded,
    random_resized_crop_box,
)

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


def photo_jpegs(folder: Path, count: int = 6) -> list[Path]:
    """Real photographs (scikit-learn's bundled two) cut to ImageNet's usual 500x375/375x500."""
    sources = [Image.open(PHOTOS / n).convert("RGB") for n in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        photo = sources[i % 2]
        size = (500, 375) if i % 3 else (375, 500)
        left = int(rng.integers(0, photo.width - size[0] // 2))
        top = int(rng.integers(0, photo.height - size[1] // 2))
        region = photo.crop((left, top, left + size[0] // 2 * 2, top + size[1] // 2 * 2))
        path = folder / f"photo{i}.JPEG"
        region.resize(size).save(path, quality=95)
        files.append(path)
    return files


def full(image: Image.Image) -> tuple[int, int, int, int]:
    return (0, 0, *image.size)


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8
    return (a.int() - b.int()).abs()


# ------------------------------------------------------------------------- same images
def test_training_crops_match_torchvision_reference(tmp_path: Path) -> None:
    files = photo_jpegs(tmp_path)
    ours = RandomResizedCropDecode(224)
    pil = RandomResizedCropDecode(224, backend="pil")
    reference = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    decoders = []
    for i, path in enumerate(files * 4):
        torch.manual_seed(i)
        with Image.open(path) as header:
            decoders.append(decoder_for(header, ours._box(header), (224, 224)))
        torch.manual_seed(i)
        fast = ours(str(path))
        torch.manual_seed(i)
        expected = reference(Image.open(path).convert("RGB"))
        torch.manual_seed(i)
        before = pil(str(path))
        assert grey_levels(fast, expected).float().mean() < 0.5, path
        if decoders[-1] == "torchvision":
            # it slices before resizing, like the reference: at most 1 grey level anywhere
            assert grey_levels(fast, expected).max() <= 1, path
        # the PIL path's box resampling differs at the crop border only: close on average
        assert grey_levels(fast, before).float().mean() < 1.0, path
    # the test really exercised the fast path (and DCT-scaled crops still go to PIL)
    assert decoders.count("torchvision") >= len(decoders) // 2


def test_the_crop_box_is_torchvisions_draw() -> None:
    cases = [
        ((500, 375), (0.08, 1.0), (3 / 4, 4 / 3)),  # ImageNet's usual
        ((375, 500), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((300, 200), (0.25, 1.0), (0.5, 2.0)),
        ((64, 64), (0.5, 0.5), (1.0, 1.0)),
        ((1000, 12), (0.08, 1.0), (3 / 4, 4 / 3)),  # ten misses: the centre, wide
        ((12, 1000), (0.08, 1.0), (3 / 4, 4 / 3)),  # and tall
    ]
    for (width, height), scale, ratio in cases:
        for seed in range(100):
            torch.manual_seed(seed)
            image = torch.empty(3, height, width)
            top, left, h, w = T.RandomResizedCrop.get_params(image, list(scale), list(ratio))
            after_torchvision = torch.rand(())
            torch.manual_seed(seed)
            box = random_resized_crop_box(width, height, scale, ratio)
            assert box == (left, top, left + w, top + h), (width, height, seed)
            assert torch.rand(()) == after_torchvision  # it drew the same random numbers


def test_bytes_give_the_same_image_and_random_stream_as_the_path(tmp_path: Path) -> None:
    path = photo_jpegs(tmp_path, 1)[0]
    crop = RandomResizedCropDecode(96)
    torch.manual_seed(3)
    from_path = [crop(str(path)) for _ in range(3)]
    torch.manual_seed(3)
    from_bytes = [crop(path.read_bytes(), name="shard-0.tar:photo0.JPEG") for _ in range(3)]
    torch.manual_seed(3)
    from_buffer = [crop(memoryview(bytearray(path.read_bytes()))) for _ in range(3)]
    for a, b, c in zip(from_path, from_bytes, from_buffer, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not all(torch.equal(from_path[0], x) for x in from_path[1:])  # random crops


def test_quirk_files_give_the_pil_result(tmp_path: Path) -> None:
    box = (8, 6, 104, 78)  # 96x72 to 80x60: no DCT scaling, the fast path's territory
    out = (80, 60)
    quirks = {
        "cmyk.JPEG": (cmyk_jpeg_bytes((120, 90)), "pil"),  # Adobe CMYK stays with PIL
        "gray.JPEG": (gray_jpeg_bytes(90, (120, 90)), "torchvision"),
        "png.JPEG": (png_bytes((20, 220, 20), (120, 90)), "pil"),  # detected from the bytes
        "rgb.JPEG": (noise_jpeg_bytes((120, 90)), "torchvision"),
    }
    for name, (data, decoder) in quirks.items():
        path = write(tmp_path / name, data)
        for mode, channels in (("RGB", 3), ("L", 1)):
            with Image.open(path) as header:
                assert decoder_for(header, box, out, mode) == decoder, (name, mode)
            fast = decode_crop(str(path), lambda _: box, out, mode)
            before = decode_crop(str(path), lambda _: box, out, mode, backend="pil")
            assert fast.shape == (channels, 60, 80), (name, mode)
            assert grey_levels(fast, before).float().mean() <= 1.0, (name, mode)
    red = decode_crop(str(tmp_path / "cmyk.JPEG"), lambda _: box, out)
    assert red[0].float().mean() > 200 and red[1:].float().mean() < 40  # not inverted
    grey = decode_crop(str(tmp_path / "gray.JPEG"), lambda _: box, out)
    assert torch.equal(grey[0], grey[1]) and abs(grey.float().mean() - 90) < 3


def test_crops_the_fast_path_leaves_to_pil(tmp_path: Path) -> None:
    path = write(tmp_path / "big.JPEG", noise_jpeg_bytes((800, 600)))
    with Image.open(path) as header:
        assert decoder_for(header, (0, 0, 800, 600), (224, 224)) == "pil"  # 1/2 DCT scaling
        assert decoder_for(header, (0, 0, 400, 300), (224, 224)) == "torchvision"
        assert decoder_for(header, (0.5, 0, 400.5, 300), (224, 224)) == "pil"  # fractional
        assert decoder_for(header, (0, 0, 400, 300), (224, 224), "RGBA") == "pil"
    with Image.open(write(tmp_path / "p.png", png_bytes(size=(300, 300)))) as header:
        assert decoder_for(header, (0, 0, 300, 300), (224, 224)) == "pil"


# -------------------------------------------------------------------------------- header
def with_frame(data: bytes, width: int, height: int, precision: int = 8) -> bytes:
    """A baseline JPEG whose frame header claims another size (or sample precision)."""
    at = data.index(b"\xff\xc0")
    return data[: at + 4] + struct.pack(">BHH", precision, height, width) + data[at + 9 :]


def jpeg_variant(**save: object) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(noise_jpeg_bytes((96, 64)))).save(buf, "JPEG", **save)
    return buf.getvalue()


def test_a_box_function_receives_the_header_pil_reads() -> None:
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation: neither decoder applies it
    files = {
        "grey": gray_jpeg_bytes(90, (120, 90)),
        "progressive": jpeg_variant(progressive=True),
        "EXIF segment first": jpeg_variant(exif=rotated),
        "CMYK": cmyk_jpeg_bytes(),
        "PNG": png_bytes(),
    }
    for name, data in files.items():
        with Image.open(io.BytesIO(data)) as image:
            expected = Header(image.format, image.mode, image.size)
        seen: list[Header] = []
        decode_crop(data, lambda h: seen.append(h) or (0, 0, *h.size), (16, 16))  # noqa: B023
        assert seen == [expected], name


def test_a_decompression_bomb_is_refused_as_pil_refuses_it() -> None:
    # 400 Mpx claimed in a few KB: above twice PIL's MAX_IMAGE_PIXELS, so PIL raises at open;
    # the fast header reader must not hand such a frame to libjpeg
    bomb = with_frame(noise_jpeg_bytes(), 20_000, 20_000)
    for backend in ("auto", "pil"):
        with pytest.raises(ImageDecodeError, match="bomb.JPEG: .*decompression bomb"):
            decode_crop(bomb, full, (224, 224), name="bomb.JPEG", backend=backend)


# ---------------------------------------------------------------------------- same errors
def test_truncated_and_junk_files_raise_the_pil_path_errors(tmp_path: Path) -> None:
    good = noise_jpeg_bytes((160, 120))
    box, out = (0, 0, 160, 120), (128, 96)
    cases = {
        "cut.JPEG": good[: len(good) // 2],
        "cut_end.JPEG": good[:-2],  # only the end-of-image marker missing
        "empty.JPEG": b"",
        "html.JPEG": b"<html>not an image</html>",
    }
    for name, data in cases.items():
        path = write(tmp_path / name, data)
        errors = []
        for source in (str(path), data):
            for backend in ("auto", "pil"):
                with pytest.raises(ImageDecodeError) as caught:
                    decode_crop(source, lambda _: box, out, name=str(path), backend=backend)
                errors.append(str(caught.value))
        assert len(set(errors)) == 1, errors
        assert errors[0].startswith(f"cannot decode image file {path}: ") and "\n" not in errors[0]
    with Image.open(tmp_path / "cut.JPEG") as header:  # the header is intact: fast path tried
        assert decoder_for(header, box, out) == "torchvision"
    missing = str(tmp_path / "missing.JPEG")
    for backend in ("auto", "pil"):
        with pytest.raises(FileNotFoundError):
            decode_crop(missing, full, out, backend=backend)


def test_bytes_without_a_name_say_what_they_are() -> None:
    with pytest.raises(ImageDecodeError, match=r"cannot decode image file <6 bytes in memory>: "):
        decode_crop(b"<html>", full, (8, 8))


def test_a_truncated_training_file_fails_naming_it_in_the_dataset(tmp_path: Path) -> None:
    data = noise_jpeg_bytes((300, 200))
    write(tmp_path / "bad.JPEG", data[: len(data) * 2 // 3])
    dataset = FileImageDataset(
        tmp_path, np.array([b"bad.JPEG"]), np.array([0]), RandomResizedCropDecode(160)
    )
    with pytest.raises(ImageDecodeError, match=f"cannot decode image file {tmp_path}/bad.JPEG"):
        dataset[0]


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="expected a file path or the image's bytes, got int"):
        decode_crop(3, full, (8, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend must be one of"):
        decode_crop(b"x", full, (8, 8), backend="cv2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"out_size must be \(width, height\)"):
        decode_crop(b"x", full, (8, 0))
    with pytest.raises(ValueError, match="backend must be 'auto' or 'pil', got 'turbo'"):
        RandomResizedCropDecode(8, backend="turbo")  # type: ignore[arg-type]


# slow: a fresh interpreter with -W error (one for the checks of five modules,
# helpers/fresh.py)
@pytest.mark.slow
def test_the_fast_path_does_not_warn(fresh_interpreter: Path) -> None:
    # torchvision 0.29 deprecates its decoders with a DeprecationWarning per call; importing the
    # decoder silences that one message, also in a process that turns warnings into errors
    report = read_report(fresh_interpreter)["fast_path"]
    assert report["error"] is None, report["error"]


# ------------------------------------------------------------------ batched device decode
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_device_decode_without_cuda_falls_back_or_says_so(tmp_path: Path) -> None:
    files = photo_jpegs(tmp_path, 3)
    boxes = [(0, 0, 300, 200), (50, 20, 250, 220), (10, 10, 200, 150)]
    batch = decode_crops([str(f) for f in files], boxes, (112, 112))  # device=None: the CPU
    assert batch.shape == (3, 3, 112, 112) and batch.device.type == "cpu"
    for image, path, box in zip(batch, files, boxes, strict=True):
        assert torch.equal(image, decode_crop(str(path), lambda _, b=box: b, (112, 112)))
    with pytest.raises(ValueError, match=r"device='cuda' asks to decode on a GPU, but torch\.cuda"):
        decode_crops([str(files[0])], boxes[:1], (112, 112), device="cuda")


def test_encoded_crops_decode_to_what_the_transform_gives(tmp_path: Path) -> None:
    files = photo_jpegs(tmp_path, 3)
    crop = RandomResizedCropDecode(64)
    torch.manual_seed(5)
    direct = torch.stack([crop(str(f)) for f in files])
    torch.manual_seed(5)
    encoded = [crop.encode(str(f)) for f in files]
    assert encoded[0].name == str(files[0]) and encoded[0].data == files[0].read_bytes()
    assert torch.equal(decode_encoded(encoded, 64, device="cpu"), direct)
    assert decode_encoded([], 64, device="cpu").shape == (0, 3, 64, 64)
    bad = write(tmp_path / "bad.JPEG", b"<html>")
    with pytest.raises(ImageDecodeError, match=f"cannot decode image file {bad}: "):
        crop.encode(str(bad))
    data, header, label = read_header(files[0].read_bytes(), "x.tar:a.JPEG")
    assert data == files[0].read_bytes()
    assert header.size == Image.open(files[0]).size and label == "x.tar:a.JPEG"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_decode_on_cuda_matches_the_cpu(tmp_path: Path) -> None:
    files = photo_jpegs(tmp_path, 4)
    truncated = write(tmp_path / "cut.JPEG", files[0].read_bytes()[:5000])
    boxes = [(0, 0, 300, 200), (50, 20, 250, 220), (10, 10, 200, 150), (0, 0, 375, 375)]
    sources = [str(f) for f in files]
    on_gpu = decode_crops(sources, boxes, (112, 112), device="cuda")
    on_cpu = decode_crops(sources, boxes, (112, 112), device="cpu")
    assert on_gpu.device.type == "cuda"
    assert grey_levels(on_gpu.cpu(), on_cpu).float().mean() <= 1.0
    with pytest.raises(ImageDecodeError, match=str(truncated)):
        decode_crops([*sources[:1], str(truncated)], boxes[:2], (112, 112), device="cuda")
