"""One fresh interpreter for the checks of what a new process imports, each made and reported on
its own, in the order that keeps each one's process as fresh as it needs:

1. ``import datamodules`` (every CLI start) neither needs nor loads litdata (test_streaming.py);
2. ``prepare``'s conversion never imports the model package (test_prepare_processes.py);
3. ``ClassifierModule.load_from_checkpoint`` refuses dangerous hyperparameters before importing
   anything they name (test_checkpoint_io.py).

Each step only adds to what the process has imported: litdata comes with step 2, after step 1
looked; lit_classifiers with step 3, after step 2 looked; nothing imports ``this`` but a
checkpoint that step 3 refuses. A new interpreter costs ~5 s of imports (torch, Lightning): one
for the three instead of one each. Run by the session fixture ``fresh_interpreter``
(conftest.py), once per session, also under xdist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from helpers.data import jpeg_bytes, write
from helpers.modules import NUM_CLASSES, fit_registered

REPO = Path(__file__).resolve().parents[2]
REPORT = "REPORT "

#: Checkpoint hyperparameters that name code to import; each must be refused before any import.
DANGEROUS_HPARAMS: dict[str, dict[str, Any]] = {
    "class_path": {"backbone": {"class_path": "this.Foo", "init_args": {}}},
    "instantiator": {"_instantiator": "this.Foo"},
    "dotted_backbone": {"backbone": "torch.nn.Identity"},
    "class_path_key": {"_class_path": "this.Foo"},
}

PROBE = """
import json, sys, traceback
args = json.loads(sys.argv[1])
report = {}

# 1. What `import datamodules` loads, as the first import of the process.
import datamodules
report["litdata_after_import_datamodules"] = "litdata" in sys.modules

# 2. A conversion, then which modules of the model package it imported.
try:
    from datamodules import ImageFolderDataModule
    from datamodules.prepare import convert_datamodule
    source = ImageFolderDataModule(args["photos"], num_workers=0, val_split=2)
    convert_datamodule(source, args["lit"], num_workers=1, progress=False)
    report["prepare"] = {
        "model_modules": sorted(m for m in sys.modules if m.split(".")[0] == "lit_classifiers")
    }
except Exception:
    report["prepare"] = {"error": traceback.format_exc()}

# 3. Checkpoints loaded through the Python API; a refusal is a CheckpointError.
try:
    from lit_classifiers.checkpoint_io import CheckpointError
    from lit_classifiers.module import ClassifierModule
    loaded = {}
    for path in args["checkpoints"]:
        try:
            ClassifierModule.load_from_checkpoint(path)
            loaded[path] = "loaded"
        except CheckpointError as error:
            loaded[path] = str(error)
    report["checkpoints"] = {"results": loaded, "imported_this": "this" in sys.modules}
except Exception:
    report["checkpoints"] = {"error": traceback.format_exc()}

print("REPORT " + json.dumps(report))
"""


def run_fresh_interpreter(folder: Path) -> None:
    """Make the inputs of the three checks in ``folder``, run :data:`PROBE` on them in a new
    interpreter and write its ``returncode``, ``stdout`` and ``stderr`` there."""
    for k in range(4):
        write(folder / "photos" / "train" / f"c{k % 2}" / f"{k}.jpg", jpeg_bytes(size=(8, 8)))
    good = fit_registered(folder, "resnet20", NUM_CLASSES)
    checkpoint = torch.load(good, weights_only=True)
    checkpoints = [str(good)]
    for name, change in DANGEROUS_HPARAMS.items():
        hparams = {**checkpoint["hyper_parameters"], **change}
        torch.save({**checkpoint, "hyper_parameters": hparams}, folder / f"{name}.ckpt")
        checkpoints.append(str(folder / f"{name}.ckpt"))
    args = {
        "photos": str(folder / "photos"),
        "lit": str(folder / "lit"),
        "checkpoints": checkpoints,
    }
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "LIT_CLASSIFIERS_CACHE": str(folder / "cache"),
        "PYTHONPATH": str(REPO),  # this checkout's datamodules and lit_classifiers
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (folder / "returncode").write_text(str(result.returncode))
    (folder / "stdout").write_text(result.stdout)
    (folder / "stderr").write_text(result.stderr)


def read_report(folder: Path) -> dict[str, Any]:
    """The probe's report; fails with its stderr if it did not finish."""
    stderr = (folder / "stderr").read_text()
    assert (folder / "returncode").read_text() == "0", stderr[-3000:]
    lines = [x for x in (folder / "stdout").read_text().splitlines() if x.startswith(REPORT)]
    assert lines, stderr[-3000:]
    return json.loads(lines[-1][len(REPORT) :])
