"""Shared pytest setup.

- The `slow` marker: skipped unless REVSSL_SLOW=1 (e.g. `REVSSL_SLOW=1 pytest -q tests -k slow`).
- Parallel runs (`pytest -n 2`, as `make test` does): the tests of one module stay on one worker, so a
  module-scoped fixture (a smoke run, a study) is computed once; each notebook of test_notebooks.py is a unit of its
  own. The longest units start first, so the two workers finish close together.
- `shared_generators`: one `$REVSSL_GENERATORS` folder for the end-to-end runs of both workers (the CLI's smoke
  reproduction, the smoke study, notebook 14a), so the §5 generators they have in common are trained once."""
import os

import pytest

# the longest units, longest first (measured with `pytest -q tests --durations=40`); every other unit follows
NB = "test_notebooks.py::test_notebook_runs_clean_in_a_kernel[{}]"
FIRST = ["test_studies.py", "test_cli.py", NB.format("12_stepwise"), NB.format("14a_report"), NB.format("05c_train"),
         "test_gpu_bench.py", NB.format("10_randomness"), NB.format("08b_analysis")]


@pytest.fixture(scope="session")
def shared_generators(tmp_path_factory):
    "A generator folder common to every worker of this pytest run (the workers' temporary folders share a parent)."
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "generators"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of CPU time (paper-size models); runs only when REVSSL_SLOW=1")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU, skipped without one (`pytest -m gpu tests/test_gpu.py`)")


def unit(nodeid:str) -> str:
    "The scheduling unit of a test: its notebook for test_notebooks.py, else its module."
    name = nodeid.split("/")[-1]
    return name if name.startswith("test_notebooks.py::test_notebook_runs") else name.split("::")[0]


def pytest_xdist_make_scheduler(config, log):
    "pytest-xdist's scheduler, with `unit` as the unit of work."
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid): return unit(nodeid)
    return UnitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {u: i for i, u in enumerate(FIRST)}
    items.sort(key=lambda it: rank.get(unit(it.nodeid), len(FIRST)))   # stable: the rest keep their order
    if os.environ.get("REVSSL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set REVSSL_SLOW=1 to run")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
