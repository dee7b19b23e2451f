"""Shared pytest setup: the `slow` marker, skipped unless REVSSL_SLOW=1 (e.g. `REVSSL_SLOW=1 pytest -q tests -k slow`)."""
import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of CPU time (paper-size models); runs only when REVSSL_SLOW=1")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU, skipped without one (`pytest -m gpu tests/test_gpu.py`)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("REVSSL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set REVSSL_SLOW=1 to run")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
