# gptmill: `make train` and `make test` work from a fresh clone; every target sets itself up.
PYTHON ?= python3
# torch goes in first and pinned, so that pip never swaps in a multi-gigabyte CUDA build on a CPU box.
# Override for your machine, e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cu124".
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DATASET ?= stdlib
# DATASET="data/web=0.7 data/code=0.3" trains on a mixture of prepared datasets (weights are relative);
# a missing data/NAME of one is made by `make prepare DATASET=NAME`.
MIXTURE := $(findstring =,$(DATASET))
ifdef MIXTURE
MIX_DIRS := $(foreach part,$(DATASET),$(firstword $(subst =, ,$(part))))
NAME ?= $(subst $(eval) ,+,$(notdir $(patsubst %/,%,$(MIX_DIRS))))
DATA_ARGS := $(foreach part,$(DATASET),--data $(part))
DATA_READY := $(addsuffix /manifest.json,$(patsubst %/,%,$(MIX_DIRS)))
else
NAME ?= $(basename $(notdir $(patsubst %/,%,$(DATASET))))
DATA := data/$(NAME)
DATA_ARGS := --data $(DATA)
DATA_READY := $(DATA)/manifest.json
endif
PREPARE_ARGS ?=
# The default corpus gets a vocabulary trained on it (docs/tokenizer.md: at 10 CPU-minutes it reached 1.31
# val bits per byte where gpt2's vocabulary reached 1.59). VOCAB=N trains one of N ids for any DATASET;
# VOCAB= (empty) keeps gpt2. The tokenizer is made once, offline, in seconds, and kept in tokenizers/.
VOCAB ?= $(if $(filter stdlib,$(DATASET)),8192,)
TOKENIZER := tokenizers/$(NAME)-$(VOCAB)

MODEL ?= tiny-llama
MAX_TIME ?= 5m
MAX_STEPS ?=
TRAIN_ARGS ?=
PROMPT ?= The
# `make train NPROC=N`: N processes on this machine under torchrun (one per GPU, or CPU processes).
NPROC ?=
FIT := $(if $(NPROC),$(BIN)/torchrun --standalone --nproc-per-node $(NPROC),$(BIN)/python) -m train fit
# Each `make train` starts a new run directory; `make train RESUME=1` continues the latest one,
# and `make sample` / `make plot` read it (or give RUN=runs/...).
LATEST_RUN := $(patsubst %/config.json,%,$(lastword $(sort $(wildcard runs/$(NAME)-$(MODEL)-*/config.json))))
ifdef RESUME
RUN ?= $(LATEST_RUN)
else
RUN_NEW := runs/$(NAME)-$(MODEL)-$(shell date +%Y%m%d-%H%M%S)
endif

.PHONY: setup prepare train nightly sample plot test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# `make prepare DATASET=stdlib|tinystories|fineweb-edu|PATH [VOCAB=N] [PREPARE_ARGS=...]` -> data/NAME
prepare: $(STAMP) $(if $(VOCAB),$(TOKENIZER)/ranks.tiktoken)
	$(BIN)/python -m prepare build $(DATASET) --out $(DATA) $(if $(VOCAB),--encoding $(TOKENIZER)) $(PREPARE_ARGS)

$(TOKENIZER)/ranks.tiktoken: | $(STAMP)
	$(BIN)/python -m prepare tokenizer $(DATASET) --vocab-size $(VOCAB) --out $(TOKENIZER)

ifndef MIXTURE
$(DATA)/manifest.json: | $(STAMP)
	$(MAKE) prepare DATASET=$(DATASET)
endif

data/%/manifest.json: | $(STAMP)
	$(MAKE) prepare DATASET=$*

# `make train [DATASET=NAME|"data/a=0.7 data/b=0.3"] [MODEL=tiny-llama|tiny|gpt2|llama-small|...] [MAX_TIME=5m] [MAX_STEPS=N] [NPROC=N] [TRAIN_ARGS=...] [RESUME=1]`
train: $(DATA_READY)
ifdef RESUME
	test -n "$(RUN)" || { echo "error: no run of $(NAME)-$(MODEL) to resume in runs/"; exit 1; }
	$(FIT) --out $(RUN) --resume $(TRAIN_ARGS)
	$(BIN)/python -m train sample --run $(RUN) --prompt "$(PROMPT)" --max-new-tokens 100
else
	$(FIT) $(DATA_ARGS) --out $(RUN_NEW) --model $(MODEL) --max-time $(MAX_TIME) $(if $(MAX_STEPS),--max-steps $(MAX_STEPS)) $(TRAIN_ARGS)
	$(BIN)/python -m train sample --run $(RUN_NEW) --prompt "$(PROMPT)" --max-new-tokens 100
endif

RUN ?= $(LATEST_RUN)

# `make nightly [DATASET=NAME|PATH] [MODEL=...] [NIGHT=1h] [EVAL_TASKS=hellaswag] [TRAIN_ARGS=...]`, e.g. from cron:
# prepare what changed, then one night of the run that grows with the corpus, $(NIGHTLY_RUN): fit on for NIGHT
# (the first night starts it), cool down, eval, export to $(NIGHTLY_RUN)/hf (docs/continual.md).
NIGHT ?= 1h
EVAL_TASKS ?=
NIGHTLY_RUN ?= runs/$(NAME)-$(MODEL)-nightly
nightly: $(STAMP) $(if $(MIXTURE),$(DATA_READY),prepare)
	$(BIN)/python -m train nightly $(NIGHTLY_RUN) $(DATA_ARGS) --session-time $(NIGHT) $(if $(EVAL_TASKS),--eval-tasks $(EVAL_TASKS)) --model $(MODEL) $(TRAIN_ARGS)

# `make sample [PROMPT=...] [RUN=runs/...] [SAMPLE_ARGS=...]`
sample: $(STAMP)
	test -n "$(RUN)" || { echo "error: no run in runs/; make train first"; exit 1; }
	$(BIN)/python -m train sample --run $(RUN) --prompt "$(PROMPT)" $(SAMPLE_ARGS)

plot: $(STAMP)
	test -n "$(RUN)" || { echo "error: no run in runs/; make train first"; exit 1; }
	$(BIN)/python -m train plot $(RUN)

# The suite on every core (pytest-xdist, one torch thread a worker), then the load-sensitive tests alone.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not serial"
	$(BIN)/python -m pytest -q -m serial

# Speed and memory figures (minutes); `make bench BENCH=prepare|dedup|filters|format|tokenizer|train|memory|scaling|sharding|sample|scoring|learning` runs one part.
# `make bench BENCH=continual`: a continual run against fresh runs over nightly increments (docs/continual.md; 34 minutes on a shared 2-core VM).
# `make bench BENCH=storage`: object storage clients, push, pull and an epoch from a bucket against local disk, on moto's S3 server (docs/storage.md).
# `make bench BENCH=gpu` is the one-GPU check (bench/gpu_check.py: CUDA tests and the speed table; BENCH_ARGS=--nanogpt DIR).
BENCH ?= prepare dedup format tokenizer train memory scaling sharding sample scoring learning
BENCH_ARGS ?=
bench: $(STAMP)
	for part in $(BENCH); do $(BIN)/python bench/$$(if [ $$part = gpu ]; then echo gpu_check; else echo $${part}_bench; fi).py $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
