"""The base class every datamodule shares: loader settings, dataset facts, normalisation, predict.

Loaders yield ``(images, labels)`` with images as uint8 ``(N, C, H, W)``. Floats are made only
after the batch reaches the accelerator, in :meth:`on_after_batch_transfer` (Lightning calls a
datamodule's hook automatically). uint8 is a quarter of the bytes of float32 through worker IPC,
pinned memory and the host-to-device copy, and the conversion is free on a GPU.

Splits are pure functions of ``seed``. The evaluation loaders are plain ``DataLoader``\\ s, so
that Lightning's default distributed-sampler injection gives every DDP rank its own share of the
same split; the training loader brings its own ``DistributedSampler``
(:class:`~datamodules.sampling.SeededShuffle`), which Lightning leaves in place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.augment import TrainAugment
from datamodules.datasets import (
    EncodedCollate,
    FileImageDataset,
    OnBadImage,
    SkipCollate,
    decode_or_skip,
)
from datamodules.eval_views import (
    ExactCenterCrop,
    check_eval_protocol,
    eval_batch_size,
    eval_views,
    with_views,
)
from datamodules.files import default_cache_dirs, index_images
from datamodules.info import DatasetInfo
from datamodules.normalization import BatchNormalizer
from datamodules.sampling import SeededSamples, SeededShuffle
from datamodules.transforms import (
    EncodedCrop,
    RandomResizedCropDecode,
    decode_encoded,
    default_resize_size,
)

__all__ = [
    "DecodeDevice",
    "FileImageDataModule",
    "ImageClassificationDataModule",
    "check_batch_fits",
    "check_decode_device",
    "check_image_size",
    "check_min_scale",
    "check_num_workers",
    "check_on_bad_image",
    "default_num_workers",
    "usable_cpus",
]


def default_num_workers() -> int:
    """One loader worker per CPU this process may run on (its affinity mask), at most 8.

    Beyond about 8 workers a single GPU's input pipeline stops scaling while memory keeps
    growing; users with faster storage or more GPUs can raise it explicitly.
    """
    return max(1, min(8, usable_cpus()))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: Loader workers allowed per usable CPU. Each worker decodes on one core, so beyond a few per
#: core they only queue for the same cores (and torch warns above one), while each one is a
#: process with its own memory and prefetched batches; 4 leaves room for workers that wait on
#: slow storage.
WORKERS_PER_CPU = 4


def check_num_workers(num_workers: int | None) -> int | None:
    """``num_workers`` if this machine can run that many loader workers usefully, else a
    one-line error saying what fits (:data:`WORKERS_PER_CPU` per usable CPU)."""
    if num_workers is None:
        return None
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}")
    cpus = usable_cpus()
    if num_workers > WORKERS_PER_CPU * cpus:
        raise ValueError(
            f"num_workers={num_workers} is more loader processes than this machine can run: it "
            f"has {cpus} usable CPUs, so at most {WORKERS_PER_CPU * cpus} workers "
            f"({WORKERS_PER_CPU} per CPU); leave num_workers unset for {default_num_workers()}"
        )
    return num_workers


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the OS tells (POSIX ``sysconf``)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_batch_fits(batch_size: int, channels: int, image_size: int) -> None:
    """Refuse an ``image_size`` whose normalised batch (float32) alone would not fit in this
    machine's memory, in one line, before any loader or model is built: such a run can only
    end in an allocation error after everything else was set up."""
    memory = physical_memory()
    batch_bytes = 4 * batch_size * channels * image_size * image_size
    if memory is None or batch_bytes <= memory:
        return
    largest = math.isqrt(memory // (4 * batch_size * channels))
    raise ValueError(
        f"image_size={image_size} cannot work here: one batch of {batch_size} such images is "
        f"{_gib(batch_bytes)} as float32, more than this machine's {_gib(memory)} of memory "
        f"(image_size <= {largest} fits at batch_size={batch_size}, before the model's own "
        "memory)"
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def check_image_size(
    image_size: int, minimum: int = 8, *, batch_size: int = 1, channels: int = 1
) -> int:
    """``image_size`` if it is an int >= ``minimum`` whose batch (``batch_size`` images of
    ``channels``) fits in memory (:func:`check_batch_fits`), else a one-line error."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < minimum:
        raise ValueError(f"image_size must be an int >= {minimum}, got {image_size!r}")
    check_batch_fits(batch_size, channels, image_size)
    return image_size


def check_min_scale(min_scale: float) -> float:
    if isinstance(min_scale, bool) or not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must be a float in (0, 1], got {min_scale!r}")
    return min_scale


def check_on_bad_image(on_bad_image: str) -> str:
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    return on_bad_image


DecodeDevice = Literal["worker", "cpu", "cuda", "auto"]
_DECODE_DEVICES = ("worker", "cpu", "cuda", "auto")


def check_decode_device(decode_device: str) -> str:
    if decode_device not in _DECODE_DEVICES:
        expected = ", ".join(repr(d) for d in _DECODE_DEVICES)
        raise ValueError(f"decode_device must be one of {expected}, got {decode_device!r}")
    return decode_device


class ImageClassificationDataModule(LightningDataModule):
    """Shared behaviour of the image-classification datamodules.

    Args:
        batch_size: Images per batch (per device under DDP).
        num_workers: DataLoader worker processes; ``None`` picks :func:`default_num_workers`
            (datamodules whose data already sits in memory may pick 0).
        pin_memory: Pin host memory for faster host-to-GPU copies; ignored without a GPU.
        persistent_workers: Keep the training loader's workers alive between epochs (as timm's
            loaders do), rather than starting new ones at every epoch; ignored when
            ``num_workers=0``. Safe for resuming: every training sample is augmented from a
            seed of its own (:mod:`datamodules.sampling`), not from a worker's stream. The
            validation loader, which draws no random numbers, always keeps its workers.
        seed: Seed of every random split, so all DDP ranks agree on the splits. The training
            order and augmentation take their seed from torch's generator instead (drawn once,
            so ``seed_everything`` decides it; the same on every rank; kept in checkpoints).
        predict_dir: A folder whose images (found recursively, sorted) ``predict_dataloader``
            yields as ``(images, paths)`` with the evaluation transform.
        eval_protocol: How validation, test and predict see each image: ``"center"`` (resize +
            centre crop, batches ``(N, C, H, W)``), ``"ten_crop"`` (corners, centre and their
            mirrors, batches ``(N, 10, C, H, W)``), ``"dense"`` or ``"dense:Q1,Q2,..."`` (the
            whole image at several shorter sides Q and mirrored, one image per batch); see
            :mod:`datamodules.eval_views`. The model averages its probabilities over the views.

    A subclass implements :meth:`_resolve_info` (its :class:`~datamodules.info.DatasetInfo`)
    and :meth:`_build_datasets`, and sets ``train_transform`` and ``eval_transform`` in its
    ``__init__``: each a callable applied to every image of its splits, or ``None`` for "leave
    the image as it is".
    """

    #: What to do with an undecodable file: "error" (raise naming it) or "skip" (warn, drop it).
    on_bad_image: OnBadImage = "error"

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        predict_dir: str | None = None,
        eval_protocol: str = "center",
    ) -> None:
        super().__init__()
        self.eval_protocol = check_eval_protocol(eval_protocol)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        check_num_workers(num_workers)
        if predict_dir is not None and not Path(predict_dir).is_dir():
            raise FileNotFoundError(f"predict_dir={predict_dir!r} is not a folder")
        self.batch_size = batch_size
        self.num_workers = self._default_num_workers() if num_workers is None else num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed
        self._train_seed: int | None = None
        self._loaders_made = 0  # training loaders made without a trainer (_next_epoch)
        self.predict_dir = predict_dir
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self._built = False
        self._info: DatasetInfo | None = None
        self.train_transform: Callable[[Any], Tensor] | None = None
        self.eval_transform: Callable[[Any], Tensor] | None = None
        self._normalizer: BatchNormalizer | None = None  # built from info's mean and std

    # ------------------------------------------------------------------ dataset facts
    @property
    def info(self) -> DatasetInfo:
        """What this datamodule serves (:class:`~datamodules.info.DatasetInfo`), resolved on
        first access and then fixed: the model, the CLI and the callbacks all read this one
        object. Whatever goes wrong while resolving it is raised, every time it is asked for."""
        if self._info is None:
            info = self._resolve_info()
            if not isinstance(info, DatasetInfo):
                raise TypeError(
                    f"{type(self).__name__}._resolve_info() must return a DatasetInfo, got "
                    f"{type(info).__name__}"
                )
            self._info = info
        return self._info

    def _resolve_info(self) -> DatasetInfo:
        """Work out the :class:`DatasetInfo`; called once, by :attr:`info`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _resolve_info() returning a DatasetInfo"
        )

    # Read-only views of ``info``: users, LightningCLI links and older code read these names.
    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

    @property
    def image_size(self) -> int:
        """Side of the (square) images the loaders produce."""
        return self.info.image_size

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean in [0, 1] units, subtracted by :meth:`normalize`."""
        return self.info.mean

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation in [0, 1] units, divided out by :meth:`normalize`."""
        return self.info.std

    @property
    def eval_resize_size(self) -> int:
        """Shorter-side resize before the evaluation centre crop (files only)."""
        return default_resize_size(self.image_size)

    def _default_num_workers(self) -> int:
        return default_num_workers()

    # ------------------------------------------------------------------ normalisation
    def normalize(self, images: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """uint8 ``(..., C, H, W)`` images to normalised floats (``dtype``, float32 by default),
        on the images' device.

        Float input is taken to be in [0, 1] already and only standardised. This is what the
        loaders' batches need before they reach a model, for use outside Lightning.
        """
        if self._normalizer is None:
            self._normalizer = BatchNormalizer(self.mean, self.std)
        return self._normalizer(images, dtype)

    def _input_dtype(self) -> torch.dtype | None:
        """The floating dtype the trainer's precision plugin gives the step (bfloat16 under
        ``bf16-true``, float64 under ``64-true``), asked through its public ``convert_input``:
        Lightning converts a batch before this hook runs, when the images are still uint8."""
        trainer = self.trainer
        if trainer is None:
            return None
        return trainer.precision_plugin.convert_input(torch.zeros((), dtype=torch.float32)).dtype

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, (list, tuple)) or not batch:
            return batch
        first = batch[0]
        if isinstance(first, Tensor):
            images: Any = self.normalize(first, self._input_dtype())
        elif (  # dense evaluation: one tensor of views per scale (datamodules.eval_views)
            isinstance(first, (list, tuple))
            and first
            and all(isinstance(views, Tensor) for views in first)
        ):
            dtype = self._input_dtype()
            images = [self.normalize(views, dtype) for views in first]
        else:
            return batch
        return [images, *batch[1:]] if isinstance(batch, list) else (images, *batch[1:])

    # ------------------------------------------------------------------ splits
    def setup(self, stage: str | None = None) -> None:
        # All splits at once: they are cheap views, and building them together guarantees that
        # fit/validate/test in one process see the same split.
        if not self._built:
            self._build_datasets()
            self._built = True

    def _build_datasets(self) -> None:
        """Set ``train_dataset``, ``val_dataset`` and ``test_dataset``."""
        raise NotImplementedError

    def _dataset(self, name: str) -> Dataset:
        if not self._built:
            self.setup()
        dataset = getattr(self, f"{name}_dataset")
        if dataset is None:
            raise ValueError(self._missing_split_message(name))
        return dataset

    def _missing_split_message(self, name: str) -> str:
        return f"{type(self).__name__} has no {name} split"

    # ------------------------------------------------------------------ loaders
    @property
    def uses_pin_memory(self) -> bool:
        """``pin_memory`` as actually applied: only when batches go to a CUDA device."""
        if not self.pin_memory or not torch.cuda.is_available():
            return False
        trainer = self.trainer
        return trainer is None or trainer.strategy.root_device.type == "cuda"

    def _collate(self, paths: bool = False) -> Callable[[list[Any]], Any]:
        return SkipCollate((self.in_channels, self.image_size, self.image_size), paths=paths)

    def _loader(
        self,
        dataset: Dataset,
        shuffle: bool,
        paths: bool = False,
        batch_size: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        persistent: bool | None = None,
    ) -> DataLoader:
        persistent = self.persistent_workers if persistent is None else persistent
        sampler = None
        if shuffle:
            dataset = SeededSamples(dataset)
            sampler = SeededShuffle(dataset, self.train_seed(), self._next_epoch())
        return DataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.uses_pin_memory,
            persistent_workers=persistent and self.num_workers > 0,
            collate_fn=self._collate(paths) if collate_fn is None else collate_fn,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train"), shuffle=True)

    def _next_epoch(self) -> int:
        """The epoch a new training loader starts at: under a trainer, the one its loop runs
        next (what it will pass to ``set_epoch``; in a resumed fit not yet
        ``trainer.current_epoch`` when the loader is made); without one, the count of loaders
        made before, so that a loop asking for a new loader every epoch gets new epochs."""
        if self.trainer is not None:
            return self.trainer.fit_loop.epoch_progress.current.processed
        self._loaders_made += 1
        return self._loaders_made - 1

    def train_seed(self) -> int:
        """The seed of the training order and augmentation (:mod:`datamodules.sampling`).

        Drawn from torch's generator at the first training loader, so that ``seed_everything``
        decides it and an unseeded run differs from the last; rank 0's on every rank; saved in
        checkpoints (:meth:`state_dict`), so that a resumed fit goes on with the same one.
        """
        if self._train_seed is None:
            seed = int(torch.randint(2**62, ()))
            if self.trainer is not None:
                seed = self.trainer.strategy.broadcast(seed)
            elif dist.is_available() and dist.is_initialized():
                shared = [seed]
                dist.broadcast_object_list(shared, src=0)
                seed = shared[0]
            self._train_seed = seed
        return self._train_seed

    def state_dict(self) -> dict[str, Any]:
        return {} if self._train_seed is None else {"train_seed": self._train_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        seed = state_dict.get("train_seed") if isinstance(state_dict, dict) else state_dict
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(
                f"the checkpoint's {type(self).__name__} state has train_seed={seed!r}; "
                "expected an int (the seed of the training order), or no such entry"
            )
        self._train_seed = seed

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._dataset("val"), persistent=True)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._dataset("test"))

    def _eval_loader(
        self, dataset: Dataset, paths: bool = False, persistent: bool = False
    ) -> DataLoader:
        """An evaluation loader yielding the views of each image that ``eval_protocol`` asks
        for (see :mod:`datamodules.eval_views`)."""
        views = eval_views(self.eval_protocol, self.image_size)
        mode = "RGB" if self.in_channels == 3 else "L"
        dataset = with_views(dataset, views, self.image_size, self.eval_resize_size, mode)
        batch_size = eval_batch_size(views, self.batch_size)
        return self._loader(
            dataset, shuffle=False, paths=paths, batch_size=batch_size, persistent=persistent
        )

    def predict_transform(self) -> Callable[[str], Tensor]:
        """The evaluation transform, applied to an arbitrary image file."""
        mode = "RGB" if self.in_channels == 3 else "L"
        return ExactCenterCrop(self.image_size, self.eval_resize_size, mode=mode)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            raise ValueError(
                f"{type(self).__name__}: set predict_dir to a folder of images to predict on"
            )
        index = index_images(self.predict_dir)
        if len(index) == 0:
            raise ValueError(f"predict_dir={self.predict_dir!r} contains no image files")
        dataset = FileImageDataset(
            index.root, index.paths, None, self.predict_transform(), self.on_bad_image
        )
        return self._eval_loader(dataset, paths=True)


class FileImageDataModule(ImageClassificationDataModule):
    """What the datamodules that decode image files share (ImageNet, ImageFolder).

    Training images get the ``train_augment`` preset (RandomResizedCrop + flip by default; see
    :mod:`datamodules.augment`), evaluation images resize + centre crop, both fused into decoding
    (:mod:`datamodules.transforms`); file listings are cached (:mod:`datamodules.files`).

    ``train_augment``, ``train_policy`` and ``random_erasing`` are checked here, when the
    datamodule is made; ``erase_fill`` is the colour (per channel, in [0, 1]) that random erasing
    paints: subclasses pass their normalisation mean, which normalises to 0 as in torchvision's
    references (erasing after ``Normalize`` with value 0).

    ``decode_device`` says where training images are decoded (evaluation, test and predict
    images are always decoded in the loader workers):

    * ``"worker"`` (default): in the DataLoader workers, with the crop fused into decoding.
    * ``"cuda"``: on the training GPU. The workers only read each file and draw its crop and flip
      (:meth:`~datamodules.transforms.RandomResizedCropDecode.encode`, the same random numbers as
      decoding there), the batch carries the encoded crops, and :meth:`on_after_batch_transfer`
      decodes them together with nvJPEG on the device the labels arrived on, then normalises as
      usual. For when the CPUs, not the GPU, limit training speed.
    * ``"cpu"``: the same path, decoding in the main process on the CPU: for testing and
      debugging it without a GPU, slower than ``"worker"``.
    * ``"auto"``: ``"cuda"`` when training on a CUDA device with a training transform that can
      be encoded, ``"worker"`` otherwise.

    ``"cuda"`` and ``"cpu"`` are checked when :meth:`setup` prepares fitting: they need
    ``train_augment='inception'`` without ``train_policy`` or ``random_erasing`` (the only crops
    drawn before decoding), and ``"cuda"`` a CUDA device to train on. ``on_bad_image='skip'``
    works on either path: a file that is not an image is skipped in the worker, a truncated one
    when its batch is decoded (that batch is then decoded crop by crop, and comes out smaller).
    """

    def __init__(
        self,
        data_dir: str,
        image_size: int = 224,
        eval_resize: int | None = None,
        min_scale: float = 0.08,
        on_bad_image: Literal["error", "skip"] = "error",
        cache_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        predict_dir: str | None = None,
        eval_protocol: str = "center",
        train_augment: str = "inception",
        train_policy: str | None = None,
        random_erasing: float = 0.0,
        erase_fill: tuple[float, ...] = (0.5, 0.5, 0.5),
        decode_device: DecodeDevice = "worker",
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            seed=seed,
            predict_dir=predict_dir,
            eval_protocol=eval_protocol,
        )
        check_image_size(image_size, batch_size=batch_size, channels=3)
        check_min_scale(min_scale)
        check_on_bad_image(on_bad_image)
        self.decode_device = check_decode_device(decode_device)
        self.data_dir = data_dir
        self.eval_resize = eval_resize
        self.min_scale = min_scale
        self.on_bad_image = on_bad_image
        self.cache_dir = cache_dir
        self._image_size = image_size
        augment = TrainAugment(train_augment, train_policy, random_erasing)
        self.train_augment = train_augment
        self.train_policy = train_policy
        self.random_erasing = random_erasing
        # Exactly torchvision's Resize + CenterCrop (datamodules.eval_views); checks eval_resize.
        eval_crop = ExactCenterCrop(image_size, eval_resize)
        self._eval_resize_size = eval_crop.resize_size
        # Files need decoding, so here neither transform is ever None.
        self.train_transform = augment.file_transform(image_size, min_scale, erase_fill)
        self.eval_transform = eval_crop

    @property
    def eval_resize_size(self) -> int:
        return self._eval_resize_size

    def _cache_dirs(self) -> list[Path]:
        return [Path(self.cache_dir)] if self.cache_dir else default_cache_dirs()

    def _file_dataset(
        self, root: str | Path, paths: np.ndarray, labels: np.ndarray, train: bool
    ) -> FileImageDataset:
        name = "train_transform" if train else "eval_transform"
        transform = getattr(self, name)
        if transform is None:
            raise ValueError(
                f"{type(self).__name__}.{name} is None, but image files must be decoded: set it "
                "to a callable path -> (C, H, W) uint8 tensor"
            )
        return FileImageDataset(root, paths, labels, transform, self.on_bad_image)

    # ------------------------------------------------------------------ decode_device
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):  # a decode_device that cannot work fails before any batch
            self._train_decoding()
        super().setup(stage)

    def _train_decoding(self) -> Literal["worker", "cpu", "cuda"]:
        """Where training images are decoded, as ``decode_device`` resolves for this trainer."""
        choice = check_decode_device(self.decode_device)
        encodable = isinstance(self.train_transform, RandomResizedCropDecode)
        on_cuda = torch.cuda.is_available() and (
            self.trainer is None or self.trainer.strategy.root_device.type == "cuda"
        )
        if choice == "auto":
            return "cuda" if encodable and on_cuda else "worker"
        if choice == "worker":
            return choice
        if not encodable:
            raise ValueError(
                f"decode_device={choice!r} needs training crops drawn before decoding, which only "
                "train_augment='inception' without train_policy or random_erasing gives (got "
                f"train_augment={self.train_augment!r}, train_policy={self.train_policy!r}, "
                f"random_erasing={self.random_erasing!r}); use those, or decode_device='worker'"
            )
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "decode_device='cuda' decodes training images on the GPU, but "
                "torch.cuda.is_available() is False; use decode_device='worker' (or 'cpu' to run "
                "the same path on the CPU)"
            )
        if choice == "cuda" and not on_cuda:
            raise ValueError(
                "decode_device='cuda' decodes on the training device, but the trainer trains on "
                f"{self.trainer.strategy.root_device}; use decode_device='worker' or a GPU"
            )
        return choice

    def train_dataloader(self) -> DataLoader:
        if self._train_decoding() == "worker":
            return super().train_dataloader()
        encoded = self._encoding(self._dataset("train"))
        return self._loader(encoded, shuffle=True, collate_fn=EncodedCollate())

    def _encoding(self, dataset: Dataset) -> FileImageDataset:
        """The training files again, each yielding its encoded crop instead of its image."""
        if not isinstance(dataset, FileImageDataset):
            raise TypeError(
                f"decode_device={self.decode_device!r} needs the training set to be a "
                f"FileImageDataset, but {type(self).__name__} built a {type(dataset).__name__}; "
                "use decode_device='worker'"
            )
        transform = self.train_transform
        assert isinstance(transform, RandomResizedCropDecode)  # _train_decoding checked it
        return FileImageDataset(
            dataset.root, dataset.paths, dataset.labels, transform.encode, self.on_bad_image
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if _carries_encoded_crops(batch):
            batch = [*self._decode(batch[0], batch[1])]
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def _decode(self, crops: list[EncodedCrop], labels: Tensor) -> tuple[Tensor, Tensor]:
        """A training batch's encoded crops as uint8 images on the labels' device."""
        transform = self.train_transform
        if not isinstance(transform, RandomResizedCropDecode):
            raise TypeError(
                "a batch of encoded crops needs train_transform to be a RandomResizedCropDecode, "
                f"got {type(transform).__name__}; use decode_device='worker'"
            )
        device = torch.device("cpu") if self.decode_device == "cpu" else labels.device

        def decode(some: list[EncodedCrop]) -> Tensor:
            images = decode_encoded(some, transform.size, transform.mode, device)
            return images.to(labels.device)

        return decode_or_skip(crops, labels, decode, self.on_bad_image)


def _carries_encoded_crops(batch: Any) -> bool:
    """Whether ``batch`` is :class:`~datamodules.datasets.EncodedCollate`'s ``[crops, labels]``."""
    return (
        isinstance(batch, list)
        and len(batch) == 2
        and isinstance(batch[0], list)
        and isinstance(batch[1], Tensor)
        and all(isinstance(crop, EncodedCrop) for crop in batch[0])
    )
