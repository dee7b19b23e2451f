# Two entry points (README): `make demo` and `make test`. Both set up .venv when missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# PyTorch's OpenMP threads spin while waiting; on a shared 2-core machine that makes small ops up to 10x slower.
export OMP_WAIT_POLICY ?= PASSIVE
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test nbdev-test setup data notebooks smoke clean-venv

$(VENV)/.installed: setup.py settings.ini
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed

# Fashion-MNIST for the demo preset: Debian's dataset-fashion-mnist when we can install it.
data:
	@if [ -f $(FMNIST) ] || [ -n "$$REVSSL_DATA" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "warning: could not install Debian's dataset-fashion-mnist; the demo and the Fashion-MNIST tests need it"; \
	else \
	  echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu),"; \
	  echo "or set REVSSL_DATA to a folder holding FashionMNIST/raw/*-ubyte.gz (revssl downloads it when online)."; \
	fi

demo: setup data
	$(VENV)/bin/revssl reproduce --preset demo --out runs/demo

# Every test and every notebook, once: tests/test_notebooks.py runs each notebook in a Jupyter kernel (nbclient), as
# "Run All" does; two workers, the tests of one module on one worker (tests/conftest.py).
test: setup data
	$(VENV)/bin/pytest -q -n 2 --durations=25 tests

# The notebooks through nbdev's own runner (in-process, flagged cells skipped): `make nbdev-test`, or with the flagged
# cells `$(VENV)/bin/nbdev_test --flags "slow gpu"` on a GPU machine. `make test` covers the same cells (nbclient).
nbdev-test: setup
	$(VENV)/bin/nbdev_test --n_workers 2 --do_print

# Store every notebook's outputs (slow/gpu cells skipped), as committed for readers.
notebooks: setup data
	$(PY) .ci/execute_notebooks.py
	$(VENV)/bin/nbdev_clean
