"""Writing predictions to a CSV file: one row per image, its top-k classes and probabilities."""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["PredictionCSVWriter", "PredictionWriteError", "readable_text"]


class PredictionWriteError(OSError):
    """The predictions CSV could not be written; the message names the file."""


def readable_text(text: Any) -> str:
    """``str(text)`` as valid UTF-8: bytes of a file name that are not UTF-8 become ``\\xNN``.

    Linux file names are bytes, and Python hands back the undecodable ones as surrogate escapes
    (``os.fsdecode(b"caf\\xe9") == "caf\\udce9"``), which no UTF-8 writer accepts. Those become
    ``"caf\\\\xe9"`` (UTF-8 decoding with ``backslashreplace``, the same rule as
    ``datamodules.files.display_name``); valid text is unchanged.
    """
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``predict`` results of :class:`~lit_classifiers.ClassifierModule` to a CSV file.

    Columns: ``file`` (or the sample's index when the batch carries no paths), then
    ``class_1``, ``prob_1`` … ``class_k``, ``prob_k`` with class names where the model knows
    them. The file is written to a new temporary file beside it (created exclusively, so a link
    planted there is never followed) and renamed when prediction ends, so an interrupted run
    leaves no half-written CSV behind. It defaults to ``predictions.csv`` in the run's log
    directory, or ``predictions-N.csv`` where earlier ones exist. An existing ``output_path`` is
    refused before anything is predicted unless ``overwrite`` is set. Under DDP each rank writes
    its own part (``.rankN`` suffix).

    The CSV is UTF-8. Paths and class names are written by :func:`readable_text`: a file name
    that is not valid UTF-8 (``b"caf\\xe9.jpg"``) appears as ``caf\\xe9.jpg``, backslash and
    hex digits, so every image gets its row. If writing fails, the temporary file is removed
    and :class:`PredictionWriteError` names the CSV file.
    """

    def __init__(self, output_path: str | None = None, overwrite: bool = False) -> None:
        """
        Args:
            output_path: Where to write the CSV; default: predictions.csv in the run's folder
                (predictions-N.csv where earlier ones exist).
            overwrite: Replace an existing output_path instead of refusing it.
        """
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self.overwrite = overwrite
        self.written_path: Path | None = None
        self._target_path: Path | None = None
        self._rows: list[list[Any]] = []
        self._top_k = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "predict":  # refused now, not after every image has been classified
            self._target_path = self._target(trainer)
            target = self._target_path
            if not self.overwrite and os.path.lexists(target) and not target.is_dir():
                raise PredictionWriteError(_exists_message(target))

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(prediction, dict) or "topk_probs" not in prediction:
            return
        top_probs = prediction["topk_probs"].tolist()
        labels = prediction.get("topk_names") or prediction["topk_indices"].tolist()
        paths = prediction.get("paths")
        if paths is None:
            start = batch_idx * len(top_probs)
            paths = list(batch_indices or range(start, start + len(top_probs)))
        self._top_k = max(self._top_k, len(top_probs[0]) if top_probs else 0)
        for path, names, probs in zip(paths, labels, top_probs, strict=True):
            row: list[Any] = [readable_text(path)]
            for name, prob in zip(names, probs, strict=True):
                row += [readable_text(name), f"{prob:.6f}"]
            self._rows.append(row)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = self._target_path or self._target(trainer)
        header = ["file"]
        for rank in range(1, self._top_k + 1):
            header += [f"class_{rank}", f"prob_{rank}"]
        partial = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
            )
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the CSV from others
            with open(fd, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(self._rows)
            _publish(partial, target, self.overwrite)
        except BaseException as error:
            if partial is not None:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
            if not isinstance(error, Exception):  # KeyboardInterrupt and the like pass as they are
                raise
            reason = _exists_message(target) if isinstance(error, FileExistsError) else error
            raise PredictionWriteError(
                f"could not write {len(self._rows)} predictions to {readable_text(target)}: "
                f"{readable_text(reason)}"
            ) from error
        self.written_path = target
        if trainer.is_global_zero or trainer.world_size > 1:
            print(f"wrote {len(self._rows)} predictions to {readable_text(target)}")

    def _target(self, trainer: pl.Trainer) -> Path:
        if self.output_path is not None:
            target = Path(self.output_path)
        else:
            target = free_name(Path(trainer.log_dir or trainer.default_root_dir))
        if trainer.world_size > 1:
            target = target.with_name(f"{target.name}.rank{trainer.global_rank}")
        return target


def free_name(folder: Path, stem: str = "predictions", suffix: str = ".csv") -> Path:
    """``folder/predictions.csv``, or ``predictions-N.csv`` where earlier ones exist."""
    target, k = folder / f"{stem}{suffix}", 0
    while os.path.lexists(target):
        k += 1
        target = folder / f"{stem}-{k}{suffix}"
    return target


def _exists_message(target: Path) -> str:
    return (
        f"{readable_text(target)} exists; pass --predictions.overwrite true to replace it, or "
        "choose another --predictions.output_path"
    )


def _publish(partial: str, target: Path, overwrite: bool) -> None:
    """Rename the finished file to ``target``; without ``overwrite``, only if nothing is there.

    ``os.link`` fails if ``target`` exists (a file that appeared while predicting included),
    where ``os.replace`` would replace it.
    """
    if overwrite:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if os.path.lexists(target):
            raise FileExistsError(str(target)) from None
        os.replace(partial, target)
        return
    os.unlink(partial)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask
