"""Writing predictions to a CSV file: one row per image, its top-k classes and probabilities."""

from __future__ import annotations

import contextlib
import csv
import os
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
    them. The file is written to a temporary name and renamed when prediction ends, so an
    interrupted run leaves no half-written CSV behind; it defaults to ``predictions.csv`` in
    the run's log directory. Under DDP each rank writes its own part (``.rankN`` suffix).

    The CSV is UTF-8. Paths and class names are written by :func:`readable_text`: a file name
    that is not valid UTF-8 (``b"caf\\xe9.jpg"``) appears as ``caf\\xe9.jpg``, backslash and
    hex digits, so every image gets its row. If writing fails, the temporary file is removed
    and :class:`PredictionWriteError` names the CSV file.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self.written_path: Path | None = None
        self._rows: list[list[Any]] = []
        self._top_k = 0

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
        target = self._target(trainer)
        partial = target.with_name(target.name + ".partial")
        header = ["file"]
        for rank in range(1, self._top_k + 1):
            header += [f"class_{rank}", f"prob_{rank}"]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(self._rows)
            os.replace(partial, target)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            if not isinstance(error, Exception):  # KeyboardInterrupt and the like pass as they are
                raise
            raise PredictionWriteError(
                f"could not write {len(self._rows)} predictions to {readable_text(target)}: "
                f"{readable_text(error)}"
            ) from error
        self.written_path = target
        if trainer.is_global_zero or trainer.world_size > 1:
            print(f"wrote {len(self._rows)} predictions to {readable_text(target)}")

    def _target(self, trainer: pl.Trainer) -> Path:
        if self.output_path is not None:
            target = Path(self.output_path)
        else:
            target = Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        if trainer.world_size > 1:
            target = target.with_name(f"{target.name}.rank{trainer.global_rank}")
        return target
