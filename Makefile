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

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

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

# The main job, on the embedded corpora: train a keyword teacher (CNN) on hard labels, teach
# it once into a target store (top-8), then train the same small student (pooled DNN) on
# hard labels and on the teacher's soft targets, and compare all three on held-out voices.
KWF := $(DATA)/feats/keywords-$(SIZE).zarr
demo: setup corpora
	$(KD) corpus info $(KWF)
	$(KD) learn --config pipelines/baselines/keywords-cnn.yaml --epochs 8 \
		--corpus $(KWF) --out $(EXP)/teacher-cnn --overwrite
	$(KD) teach --model $(EXP)/teacher-cnn --corpus $(KWF) --split train --topk 8 \
		--out $(EXP)/teacher-cnn-top8.zarr --overwrite
	$(KD) learn --config pipelines/baselines/keywords-dnn.yaml --epochs 12 \
		--corpus $(KWF) --out $(EXP)/student-hard --overwrite
	$(KD) learn --config pipelines/baselines/keywords-dnn.yaml --epochs 12 \
		--targets $(EXP)/teacher-cnn-top8.zarr --temperature 2 --alpha 0.5 \
		--corpus $(KWF) --out $(EXP)/student-kd --overwrite
	$(KD) eval --corpus $(KWF) --split test \
		--model $(EXP)/teacher-cnn --model $(EXP)/student-hard --model $(EXP)/student-kd

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
