"""Evaluation on two DDP processes gives exactly the single-process metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.modules import (
    CLASS_NAMES,
    NUM_CLASSES,
    TinyNet,
    make_loader,
    make_trainer,
    run_two_ranks,
)

from lit_classifiers.module import ClassifierModule

FIXTURES = Path(__file__).parent / "helpers" / "modules.py"


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_two_processes_match_one_process(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, class_names=CLASS_NAMES)
    state_path = tmp_path / "state.pt"
    torch.save(model.state_dict(), state_path)

    # 37 samples in batches of 4: divisible by neither the batch size nor the 2 processes.
    trainer = make_trainer()
    single_val = trainer.validate(model, make_loader(37, batch_size=4), verbose=False)[0]
    single_test = trainer.test(model, make_loader(37, batch_size=4), verbose=False)[0]

    ranks = run_two_ranks(FIXTURES, "ddp-eval", state_path, tmp_path, out_dir=tmp_path, timeout=240)

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
