"""Evaluation on two DDP processes gives exactly the single-process metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.ddp import read_ranks
from helpers.modules import CLASS_NAMES, NUM_CLASSES, TinyNet, make_loader, make_trainer

from lit_classifiers.module import ClassifierModule


# slow: two DDP processes (one launch shared with test_eval_protocols.py and test_streaming.py,
# helpers/ddp.py)
@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_two_processes_match_one_process(two_rank_job: Path) -> None:
    ranks = read_ranks(two_rank_job, "module")
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, class_names=CLASS_NAMES)
    model.load_state_dict(torch.load(two_rank_job / "module" / "state.pt", weights_only=True))

    # 37 samples in batches of 4: divisible by neither the batch size nor the 2 processes.
    trainer = make_trainer()
    single_val = trainer.validate(model, make_loader(37, batch_size=4), verbose=False)[0]
    single_test = trainer.test(model, make_loader(37, batch_size=4), verbose=False)[0]

    # Lightning did inject its padding sampler: 38 samples were evaluated for 37 images.
    assert ranks[0]["samplers"] == ["DistributedSampler"]
    assert sum(r["seen"]["validate"] for r in ranks) == 38
    assert sum(r["seen"]["test"] for r in ranks) == 38

    for rank in ranks:
        for single, multi, stage in (
            (single_val, rank["val"], "val"),
            (single_test, rank["test"], "test"),
        ):
            assert set(multi) == {f"{stage}/loss", f"{stage}/acc1", f"{stage}/acc5"}
            assert multi[f"{stage}/acc1"] == single[f"{stage}/acc1"]
            assert multi[f"{stage}/acc5"] == single[f"{stage}/acc5"]
            assert multi[f"{stage}/loss"] == pytest.approx(single[f"{stage}/loss"], abs=1e-6)


# ------------------------------------------------------------------------------------------------
# The two-process part of helpers/ddp.py's launch.
def ddp_prepare(folder: Path) -> list[Path]:
    """The weights both ranks and the test evaluate."""
    torch.manual_seed(3)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, class_names=CLASS_NAMES)
    torch.save(model.state_dict(), folder / "state.pt")
    return [folder / "state.pt", folder]


def ddp_main(state_path: str, out_dir: str) -> None:
    """Validate and test on two ranks; each writes what it computed and saw."""
    from lightning.pytorch.callbacks import Callback

    class SeenSamples(Callback):
        def __init__(self) -> None:
            self.seen = {"validate": 0, "test": 0}
            self.samplers: list[str] = []

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
            self.seen["validate"] += len(batch[1])
            if not self.samplers:
                self.samplers.append(type(trainer.val_dataloaders.sampler).__name__)

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
            self.seen["test"] += len(batch[1])

    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, class_names=CLASS_NAMES)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    seen = SeenSamples()
    trainer = make_trainer(devices=2, strategy="ddp", callbacks=[seen])
    val = trainer.validate(model, make_loader(37, batch_size=4), verbose=False)[0]
    test = trainer.test(model, make_loader(37, batch_size=4), verbose=False)[0]
    result = {"val": val, "test": test, "seen": seen.seen, "samplers": seen.samplers}
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
