"""Every notebook runs top to bottom in a real Jupyter kernel, as JupyterLab's "Run All" does it on a CPU-only machine.

nbclient (the executor Jupyter itself uses) starts an ipykernel in `nbs/` and runs every cell with no flags: `#| gpu`
cells skip themselves without CUDA and `#| slow` cells without `REVSSL_SLOW=1`. A notebook fails on an invalid
nbformat file, on any error, or on any warning printed to stderr (a `DeprecationWarning`, tqdm's `IProgress`, ...).
`nbdev_test` runs the same cells in-process, with its flags; `make test` runs the notebooks once, here."""
import os, re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NBS = Path(__file__).resolve().parent.parent/"nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))
WARNING = re.compile(r"\b[A-Z]\w*Warning\b")
CELL_TIMEOUT = 900   # seconds for one cell; the slowest default cell takes about a minute on 2 cores
SHARED_GENERATORS = {"14a_report"}   # its smoke run's §5 generators are the CLI's and the study's (conftest.py)


def problems(nb) -> list:
    "Every error output and every stderr text naming a warning, as 'cell N (id): first line'."
    out = []
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []):
            if o.output_type == "error": text = f"{o.ename}: {o.evalue}"
            elif o.output_type == "stream" and o.name == "stderr" and WARNING.search(o.text): text = o.text
            else: continue
            out.append(f"cell {i} ({c.get('id')}): {text.strip()[:500]}")
    return out


def test_problems_finds_errors_and_warnings():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", id=f"c{i}") for i in range(4)])
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="KeyError", evalue="'a'", traceback=[])]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stderr", text="a.py:3: DeprecationWarning: old\n")]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stderr", text="epoch 1: 100%|####| 3/3\n")]
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="no Warning here: stdout\n")]
    assert problems(nb) == ["cell 0 (c0): KeyError: 'a'", "cell 1 (c1): a.py:3: DeprecationWarning: old"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_clean_in_a_kernel(path, monkeypatch, shared_generators):
    nb = nbformat.read(path, as_version=4)
    if path.stem in SHARED_GENERATORS: monkeypatch.setenv("REVSSL_GENERATORS", str(shared_generators))
    nbformat.validate(nb)                       # JupyterLab and nbconvert refuse or warn on an invalid file
    monkeypatch.delenv("IN_TEST", raising=False)   # set by nbdev_test: it would make `#| slow` cells run
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(NBS)}})
    try: client.execute()
    except CellExecutionError as e: pytest.fail(f"{path.name} stopped with an error:\n{str(e)[-3000:]}")
    nbformat.validate(nb)
    found = problems(nb)
    assert not found, f"{path.name}:\n" + "\n".join(found)
