# Each target sets up what it needs: on a fresh machine `make demo` and `make test` just work.
# The virtual environment sees system packages, so a machine that already has torch keeps it;
# one without gets torch==2.13.0, the CPU build, before the project (never a CUDA download).
# `make demo` installs the core alone; `make test` (and lint, bench) every extra the tests use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := dev,hf,babylm,aoa,plot,harness,tensorboard,wandb,mlflow
CORE := $(VENV)/.installed-core
FULL := $(VENV)/.installed-full

.PHONY: install install-core demo test test-fast bench lint docs clean

install: $(FULL)
install-core: $(CORE)

$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0

$(CORE): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q -e .
	touch $(CORE)

$(FULL): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(FULL) $(CORE)

demo: $(CORE)
	$(PY) -m minidml demo

test: $(FULL)
	$(PY) -m pytest -q -n auto --dist loadscope

test-fast: $(FULL)
	$(PY) -m pytest -q -n auto --dist loadscope -m "not slow"

bench: $(FULL)
	$(PY) -m bench

docs: $(CORE)
	$(PY) -m minidml.cli.reference .

lint: $(FULL)
	$(PY) -m ruff check minidml plugins tests bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
