# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA ?= data
SIZE ?= small

.PHONY: setup test lint format demo clean bench

# torch is pinned so pip takes the local CPU wheel; an unpinned torch pulls CUDA packages.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/kdpipe corpus synth keywords --size $(SIZE) --out $(DATA)/keywords-$(SIZE)
	$(BIN)/kdpipe corpus synth phones --size $(SIZE) --out $(DATA)/phones-$(SIZE)
	$(BIN)/kdpipe corpus prepare $(DATA)/keywords-$(SIZE) --out $(DATA)/keywords-$(SIZE)/feats.zarr
	$(BIN)/kdpipe corpus prepare $(DATA)/phones-$(SIZE) --out $(DATA)/phones-$(SIZE)/feats.zarr
	$(BIN)/kdpipe corpus info $(DATA)/keywords-$(SIZE)/feats.zarr
	$(BIN)/kdpipe corpus info $(DATA)/phones-$(SIZE)/feats.zarr

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
