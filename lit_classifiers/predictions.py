"""Writing predictions to a CSV file: one row per image, its top-k classes and probabilities."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["PredictionCSVWriter"]


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``predict`` results of :class:`~lit_classifiers.ClassifierModule` to a CSV file.

    Columns: ``file`` (or the sample's index when the batch carries no paths), then
    ``class_1``, ``prob_1`` … ``class_k``, ``prob_k`` with class names where the model knows
    them. The file is written to a temporary name and renamed when prediction ends, so an
    interrupted run leaves no half-written CSV behind; it defaults to ``predictions.csv`` in
    the run's log directory. Under DDP each rank writes its own part (``.rankN`` suffix).
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
            row: list[Any] = [str(path)]
            for name, prob in zip(names, probs, strict=True):
                row += [name, f"{prob:.6f}"]
            self._rows.append(row)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = self._target(trainer)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            header = ["file"]
            for rank in range(1, self._top_k + 1):
                header += [f"class_{rank}", f"prob_{rank}"]
            writer.writerow(header)
            writer.writerows(self._rows)
        os.replace(partial, target)
        self.written_path = target
        if trainer.is_global_zero or trainer.world_size > 1:
            print(f"wrote {len(self._rows)} predictions to {target}")

    def _target(self, trainer: pl.Trainer) -> Path:
        if self.output_path is not None:
            target = Path(self.output_path)
        else:
            target = Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        if trainer.world_size > 1:
            target = target.with_name(f"{target.name}.rank{trainer.global_rank}")
        return target
