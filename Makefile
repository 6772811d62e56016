# The two newcomer commands:  make demo   and   make test
# Each creates .venv, installs the CPU build of torch first (a bare `torch` may pull a multi-GB
# CUDA build), then the project.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e '.[test,mnist]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/physnn train

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n auto --dist loadfile

benchmarks: $(VENV)/.installed-test
	$(BIN)/python benchmarks/main_job.py

clean:
	rm -rf $(VENV) build *.egg-info
