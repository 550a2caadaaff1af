# mlplab: every target installs what it needs first, so any of them works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Real MNIST/Fashion-MNIST for the tests that need them (they skip with a reason without).
export MLPLAB_TEST_DATA ?= $(wildcard ../shared/data)

.DEFAULT_GOAL := help
.PHONY: help install train sweep demos test test-all bench lint format clean

help:  ## show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv, if on PATH or in .venv (a dev tool of this project): `make install UV=` takes pip's way.
UV ?= $(or $(shell command -v uv 2> /dev/null),$(wildcard $(VENV)/bin/uv))

$(STAMP): pyproject.toml lib/pyproject.toml constraints.txt uv.lock
ifneq ($(UV),)
	# uv: exactly uv.lock's versions (constraints.txt's pins, the CPU torch of [tool.uv]),
	# the mlplab library editable from lib/; tests/test_lock.py keeps the lock and the pins one
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --compile-bytecode --extra dev --python $(PYTHON)
else
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch would pull several GB of CUDA wheels
	$(PY) -m pip install --quiet "torch==$$(sed -n 's/^torch==//p' constraints.txt)"
	# the mlplab library from lib/ (until it is published), then this project on it
	$(PY) -m pip install --quiet -c constraints.txt -e ./lib -e ".[dev]"
endif
	touch $(STAMP)

install: $(STAMP)  ## create .venv: the mlplab library, this project and its dev tools (pinned)

train: $(STAMP)  ## train on the bundled offline digits (ARGS="key=value ..." for overrides)
	$(PY) train.py $(ARGS)

sweep: $(STAMP)  ## Optuna (TPE) search of lr, optimizer, dropout, weight decay, widths (ARGS=...)
	$(PY) train.py -m hparams_search=optuna $(ARGS)

DEMOS := lr_too_high,lr_too_low,shuffled_labels,deep_sigmoid,overfit_small_data
demos: $(STAMP)  ## the training doctor's five failure demos as one sweep (see summary.md)
	$(PY) train.py -m experiment=$(DEMOS) logger=csv $(ARGS)

# Tests in parallel processes, one per core (pytest-xdist); an idle worker takes tests from a
# busy one (worksteal), so the long ones (a docs page, a sweep) spread instead of queueing
# behind their file's. The commands run in the worker's process (mlplab.testing.run_command):
# torch and Lightning are imported once per worker. The library's tests (lib/tests: its
# machinery, run on this project) and the project's own (tests/) run in one session.
# TEST_JOBS=0 runs them in this process, one after the other.
TEST_JOBS ?= auto
PYTEST := $(PY) -m pytest -n $(TEST_JOBS) --dist worksteal lib/tests src tests

test: $(STAMP)  ## fast tests of the library and the project (no slow end-to-end runs)
	$(PYTEST) -m "not slow" $(ARGS)

test-all: $(STAMP)  ## all tests, including slow ones (full MNIST, sweeps, DDP, kill-and-resume)
	$(PYTEST) $(ARGS)

MNIST_DIR ?= $(if $(MLPLAB_TEST_DATA),$(MLPLAB_TEST_DATA)/mnist,data/mnist)
bench: $(STAMP)  ## mlplab vs a plain loop and Lightning; serving; memory at scale; pruning (MNIST_DIR=...)
	$(PY) benchmarks/bench.py --data-dir $(MNIST_DIR) --full-run $(ARGS)
	$(PY) benchmarks/serving.py --data-dir $(MNIST_DIR)
	$(PY) benchmarks/table_bench.py
	$(PY) benchmarks/memory_bench.py
	$(PY) benchmarks/pruning_bench.py

# The hooks of .pre-commit-config.yaml on every file git tracks, with this .venv's tools
# (the hooks run `python -m ...`): ruff, mypy on src/ and on the library, the library's
# import contracts, the template's render.
lint: $(STAMP)  ## the pre-commit hooks on every file: ruff, mypy, the template's render
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pre_commit run --all-files

format: $(STAMP)  ## ruff fix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:  ## remove run outputs and caches (keeps .venv and data/)
	rm -rf outputs multirun lightning_logs wandb .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
