# Each target sets up what it needs: on a fresh machine `make demo` and `make test` just work.
# The virtual environment sees system packages, so a machine that already has torch keeps it;
# one without gets torch==2.13.0, the CPU build, before the project (never a CUDA download).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,hf,plot,harness]'
	touch $(STAMP)

demo: install
	$(PY) -m minidml demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench

lint: install
	$(PY) -m ruff check minidml plugins tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
