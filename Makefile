# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA ?= data
SIZE ?= small

.PHONY: setup test lint format demo corpora clean bench

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
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadscope

KD := $(BIN)/kdpipe
KW := $(DATA)/synth/keywords-$(SIZE)
PH := $(DATA)/synth/phones-$(SIZE)
EXP ?= exp/demo

$(KW)/synth.json: | $(STAMP)
	$(KD) corpus synth keywords $(KW) --size $(SIZE) --overwrite
$(PH)/synth.json: | $(STAMP)
	$(KD) corpus synth phones $(PH) --size $(SIZE) --overwrite
$(DATA)/feats/keywords-$(SIZE).zarr/zarr.json: $(KW)/synth.json
	$(KD) corpus prepare $(KW) --out $(DATA)/feats/keywords-$(SIZE).zarr --overwrite
$(DATA)/feats/phones-$(SIZE).zarr/zarr.json: $(PH)/synth.json
	$(KD) corpus prepare $(PH) --out $(DATA)/feats/phones-$(SIZE).zarr --overwrite

corpora: $(DATA)/feats/keywords-$(SIZE).zarr/zarr.json $(DATA)/feats/phones-$(SIZE).zarr/zarr.json

# The main job, on the embedded corpora: the demo size of the dark-knowledge recipe (Tang et
# al. 2015). 10% of the phone corpus has labels: a DNN teacher learns from them and teaches
# all of train once into a target store; an LSTM student learns (a) from the labelled 10%,
# (b) from the store, then fine-tunes on the labelled 10% (3 seeds). Prints the table.
demo: setup
	$(KD) run pipelines/dark_knowledge_lstm --size demo --workdir $(EXP)

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
