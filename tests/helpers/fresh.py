"""One fresh interpreter for the checks of what a new process imports or warns, each made and
reported on its own, in the order that keeps each one's process as fresh as it needs:

1. ``import datamodules`` (every CLI start) neither needs nor loads litdata (test_streaming.py);
2. the decoder's fast path raises no warning in a process started with ``-W error``
   (test_decoding_fast.py);
3. ``prepare``'s conversion never imports the model package (test_prepare_processes.py);
4. ``ClassifierModule.load_from_checkpoint`` refuses dangerous hyperparameters before importing
   anything they name (test_checkpoint_io.py);
5. the trainer each task of the SLURM example sets up (test_multinode.py): last, as each task
   changes the process's environment, working folder and Lightning's rank.

The process starts with ``-W error``, as step 2 needs from its first import on, and step 1 is
that first import; steps 3 and 4 then run as in a process started without it (its filter is
dropped). Each step only adds to what the process has imported: litdata comes with step 3,
after step 1 looked; lit_classifiers with step 4, after step 3 looked; nothing imports ``this``
but a checkpoint that step 4 refuses. A new interpreter costs ~5 s of imports (torch,
Lightning): one for the five instead of one each. Run by the session fixture
``fresh_interpreter`` (conftest.py), once per session, also under xdist.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
import json, os, sys, traceback, warnings
START_ENV = dict(os.environ)
args = json.loads(sys.argv[1])
report = {}


def without_error_filter():
    # From here on, as in a process started without -W error: its filter goes; the catch-all
    # "default" appended is what a warning that no filter matches gets anyway, and it tells the
    # warnings machinery that the filters changed.
    sys.warnoptions[:] = [option for option in sys.warnoptions if option != "error"]
    warnings.filters[:] = [f for f in warnings.filters if f[:3] != ("error", None, Warning)]
    warnings.simplefilter("default", append=True)


# 1 and 2. Under -W error: `import datamodules` as the first import, then the fast path.
try:
    import datamodules
except Exception:  # a warning of the import itself, raised: step 2 fails, step 1 goes on
    report["fast_path"] = {"error": traceback.format_exc()}
    without_error_filter()
    import datamodules
report["litdata_after_import_datamodules"] = "litdata" in sys.modules
if "fast_path" not in report:
    try:
        from PIL import Image
        from datamodules.decoding import decode_crop, decoder_for
        box = (0, 0, 160, 120)
        assert decoder_for(Image.open(args["jpeg"]), box, (128, 96)) == "torchvision"
        decode_crop(args["jpeg"], lambda _: box, (128, 96))
        decode_crop(open(args["jpeg"], "rb").read(), lambda _: box, (128, 96))
        report["fast_path"] = {"error": None}
    except Exception:
        report["fast_path"] = {"error": traceback.format_exc()}
    without_error_filter()

# 3. A conversion, then which modules of the model package it imported.
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

# 4. Checkpoints loaded through the Python API; a refusal is a CheckpointError.
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
"""

STEP_5 = """
# 5. The SLURM tasks (slurm_tasks: test_multinode.SLURM_PROBE, above).
try:
    report["slurm"] = {"results": slurm_tasks(args["slurm"], START_ENV)}
except Exception:
    report["slurm"] = {"error": traceback.format_exc()}

print("REPORT " + json.dumps(report))
"""


def run_fresh_interpreter(folder: Path) -> None:
    """Make the inputs of the five checks in ``folder``, run them (:data:`PROBE`, then the SLURM
    step) in a new interpreter and write its ``returncode``, ``stdout`` and ``stderr`` there."""
    # Imported here: the scripts that import the test modules (for a kill -9) need none of it.
    import torch

    from helpers.cli import cli_env
    from helpers.data import jpeg_bytes, noise_jpeg_bytes, write
    from helpers.modules import NUM_CLASSES, fit_registered

    for k in range(4):
        write(folder / "photos" / "train" / f"c{k % 2}" / f"{k}.jpg", jpeg_bytes(size=(8, 8)))
    good = fit_registered(folder, "resnet20", NUM_CLASSES)
    checkpoint = torch.load(good, weights_only=True)
    checkpoints = [str(good)]
    for name, change in DANGEROUS_HPARAMS.items():
        hparams = {**checkpoint["hyper_parameters"], **change}
        torch.save({**checkpoint, "hyper_parameters": hparams}, folder / f"{name}.ckpt")
        checkpoints.append(str(folder / f"{name}.ckpt"))
    jpeg = write(folder / "noise.JPEG", noise_jpeg_bytes())
    args = {
        "jpeg": str(jpeg),
        "photos": str(folder / "photos"),
        "lit": str(folder / "lit"),
        "checkpoints": checkpoints,
    }
    multinode = importlib.import_module("test_multinode")
    (folder / "slurm").mkdir()
    args["slurm"] = multinode.slurm_cases(folder / "slurm")
    env = cli_env(
        OMP_NUM_THREADS="1",
        LIT_CLASSIFIERS_CACHE=str(folder / "cache"),
        PYTHONPATH=str(REPO),  # this checkout's datamodules and lit_classifiers
    )  # PYTHONWARNINGS=ignore
    for name in [*multinode.LAUNCH_VARIABLES, "MASTER_PORT"]:  # no launcher's, no SLURM's
        env.pop(name, None)
    env = {name: value for name, value in env.items() if not name.startswith("SLURM_")}
    script = PROBE + multinode.SLURM_PROBE + STEP_5
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, json.dumps(args)],
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
