# gptmill: `make train` and `make test` work from a fresh clone; every target sets itself up.
PYTHON ?= python3
# torch goes in first and pinned, so that pip never swaps in a multi-gigabyte CUDA build on a CPU box.
# Override for your machine, e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cu124".
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DATASET ?= stdlib
NAME ?= $(basename $(notdir $(patsubst %/,%,$(DATASET))))
DATA := data/$(NAME)
PREPARE_ARGS ?=

.PHONY: setup prepare test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# `make prepare DATASET=stdlib|tinystories|fineweb-edu|PATH [PREPARE_ARGS=...]` -> data/NAME
prepare: $(STAMP)
	$(BIN)/python -m prepare build $(DATASET) --out $(DATA) $(PREPARE_ARGS)

$(DATA)/manifest.json: | $(STAMP)
	$(MAKE) prepare DATASET=$(DATASET)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/prepare_bench.py

clean:
	rm -rf $(VENV) *.egg-info
