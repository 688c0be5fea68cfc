"""The notebook of issue 6, ``notebooks/alexnet_vgg_resnet.ipynb``.

It is executed from a clean kernel in quick mode (``LIT_NOTEBOOK_QUICK=1``: two backbones, two
short epochs) on a copy in ``tmp_path``; the stored notebook, with the outputs of a full run, is
never rewritten. Any cell that raises fails the test. The kernel runs this very interpreter
(``sys.executable``): its kernel spec is written into ``tmp_path`` by the installed ipykernel, so
whatever ``python3`` kernel a machine has installed elsewhere plays no part.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from lit_classifiers import list_backbones  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "alexnet_vgg_resnet.ipynb"
CELL_TIMEOUT_S = 240  # generous: the machine running the tests may be shared
QUICK_BACKBONES = {"resnet20", "alexnet_owt"}  # what the settings cell trains in quick mode
MAX_STORED_BYTES = 2_000_000

# Appended to the executed copy only: reports what the notebook left behind as JSON.
PROBE = """
import json as _json, sys as _sys
print("PROBE" + _json.dumps({
    "executable": _sys.executable,
    "quick": QUICK,
    "runs_dir": str(RUNS_DIR.resolve()),
    "table_names": [row["name"] for row in rows],
    "results": {
        name: {
            "checkpoint": str(r["checkpoint"].resolve()),
            "log_dir": str(r["log_dir"].resolve()),
            "best_val_acc1": r["best_val_acc1"],
            "test_acc1": r["test_acc1"],
        }
        for name, r in results.items()
    },
    "val_acc1_points": {name: len(e.Scalars("val/acc1")) for name, e in events.items()},
    "confusion_total": int(matrix.sum()),
    "topk_names": names,
    "topk_probs": probs,
}))
"""


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return str(output.get("data", {}).get("text/plain", ""))


def _source_cell(nb, needle: str):
    matches = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(matches) == 1, f"expected one code cell containing {needle!r}, got {len(matches)}"
    return matches[0]


def _table_names(cell) -> set[str]:
    """Backbone names in the first column of the printed ``format_table``."""
    text = "".join(_text(output) for output in cell.outputs)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name "))
    return {line.split()[0] for line in lines[start + 2 :] if line.strip()}


def _kernel_manager(tmp_path: Path):
    """A kernel manager for a kernel spec that runs ``sys.executable -m ipykernel_launcher``."""
    from ipykernel.kernelspec import KERNEL_NAME, write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path / "kernels"
    write_kernel_spec(kernels / KERNEL_NAME)  # argv[0] is sys.executable
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernels)])
    assert spec_manager.get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)


@pytest.fixture(scope="module")
def stored():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_stored_notebook_is_valid_executed_and_portable(stored) -> None:
    nbformat.validate(stored)
    assert NOTEBOOK.stat().st_size < MAX_STORED_BYTES
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    # Executed top to bottom in one go, with outputs kept, and no cell failed.
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # The stored outputs are those of the full settings, not a quick run.
    settings = "".join(_text(o) for o in _source_cell(stored, "LIT_NOTEBOOK_QUICK").outputs)
    assert "quick=False" in settings
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    # Nothing from the machine that ran it: paths are printed relative to runs/.
    text = "\n".join(_text(o) for o in outputs)
    assert not re.search(r"(?<![\w.])/(home|root|tmp|work|Users|var)/", text), "absolute path"
    assert "site-packages" not in text
    assert _table_names(_source_cell(stored, "backbone_summary()")) == set(list_backbones())


@pytest.mark.slow
def test_notebook_executes_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    copy = workdir / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:  # start from a clean notebook, as a reader's "run all" does
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))

    monkeypatch.setenv("LIT_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("LIT_NOTEBOOK_RUNS", raising=False)  # the default: runs/ beside it
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},  # the kernel's working directory
    )
    try:
        client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # to look at after a failure

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    probe_text = "".join(_text(o) for o in nb.cells[-1].outputs)
    probe = json.loads(probe_text[probe_text.index("PROBE") + len("PROBE") :])

    assert Path(probe["executable"]).resolve() == Path(sys.executable).resolve()
    assert probe["quick"] is True
    assert Path(probe["runs_dir"]) == (workdir / "runs").resolve()

    # The parameter/FLOP table lists every registered backbone, as printed and as computed.
    assert set(probe["table_names"]) == set(list_backbones())
    assert _table_names(_source_cell(nb, "backbone_summary()")) == set(list_backbones())

    # Each quick run trained, wrote its TensorBoard events and a best checkpoint in runs/.
    assert set(probe["results"]) == QUICK_BACKBONES
    for name, result in probe["results"].items():
        checkpoint = Path(result["checkpoint"])
        assert checkpoint.suffix == ".ckpt" and checkpoint.is_file(), name
        assert checkpoint.is_relative_to((workdir / "runs").resolve()), checkpoint
        assert list(Path(result["log_dir"]).glob("events.out.tfevents.*")), name
        assert probe["val_acc1_points"][name] == 2  # one validation per quick epoch

    # The confusion matrix counts every test image; the prediction names its top 3 classes.
    assert probe["confusion_total"] == 270
    assert len(probe["topk_names"]) == 3 and set(probe["topk_names"]) <= set("0123456789")
    assert probe["topk_probs"] == sorted(probe["topk_probs"], reverse=True)
    assert sum(probe["topk_probs"]) <= 1.0 + 1e-6
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    # AlexNet's checkpoint alone is ~230 MB: don't leave it in pytest's kept temporary folders.
    for checkpoint in (workdir / "runs").rglob("*.ckpt"):
        checkpoint.unlink()
