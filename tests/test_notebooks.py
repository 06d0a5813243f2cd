"""Every notebook in ``notebooks/`` runs from top to bottom (at quick sizes: the notebooks read
TINYGRAD_BN_QUICK) and is stored without outputs."""
import os
from pathlib import Path

import pytest

from conftest import STRICT

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        if STRICT:
            pytest.fail(f"{module} is required when TINYGRAD_BN_STRICT=1", pytrace=False)
        pytest.skip(f"{module} is not installed")


def test_the_notebooks_folder_has_notebooks():
    assert len(NOTEBOOKS) >= 4, f"expected notebooks in {NB_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nbformat = _require("nbformat")
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, (
                f"{path.name}: clear the outputs before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    nbformat = _require("nbformat")
    _require("ipykernel")
    nbclient = _require("nbclient")
    _require("matplotlib")
    monkeypatch.setenv("TINYGRAD_BN_QUICK", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # the notebooks import the package from the repository, installed or not
    root = str(NB_DIR.parent)
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
