# m3lit — `make help` lists the targets. Every target creates .venv first when it is missing or stale.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.m3lit-installed
# torch is installed first, and an importable torch is never replaced. On a machine without nvidia-smi, PyTorch's
# CPU index is added so pip picks the CPU build (2.13.0+cpu, also found in a local wheel folder when pip's
# find-links has one) instead of PyPI's multi-GB CUDA build. GPU users: install your CUDA torch into .venv first,
# set TORCH_SPEC=skip, or TORCH_INDEX=<index url> to use that index only.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_CPU_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
ARGS ?=

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null || [ "$(TORCH_SPEC)" = skip ]; then \
		echo "torch already present: $$($(BIN)/python -c 'import torch; print(torch.__version__)' 2>/dev/null)"; \
	else \
		$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),$(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX))) "$(TORCH_SPEC)"; \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv with m3lit (editable), CPU torch and the test/dev extras

# pytest-xdist: one worker per core, each with its own cache and output folders (tests/conftest.py). worksteal
# balances the minute-long integration tests: an idle worker takes queued tests from a busy one.
PARALLEL ?= -n auto --dist worksteal
test: $(STAMP) ## Run the whole offline test suite in parallel on every core (what CI runs)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not gpu" $(ARGS)

test-fast: $(STAMP) ## Skip tests/integration (multi-process DDP, resume, full recipe, training CLI runs, docs site)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not gpu and not slow" $(ARGS)

train: $(STAMP) ## Fine-tune multilingual-e5-small on the compact Bible benchmark and print its tables (about 6 min on 2 idle cores once cached, 8 on a first run)
	$(BIN)/python -m m3lit.train $(ARGS)

train-full: $(STAMP) ## The full Bible benchmark: 10 languages, MIRACL/MKQA/MLDR-like tables (docs/results.md has the time)
	$(BIN)/python -m m3lit.train experiment=bible_full $(ARGS)

# multilingual-e5-small as released, with its own pooling and prefixes: the reference row of calibrate's table
E5_REFERENCE := {name_or_path: "m3lit:multilingual-e5-small-q4", label: multilingual-e5-small, retrieval: {pooling: mean, query_prefix: "query: ", passage_prefix: "passage: "}}
calibrate: $(STAMP) ## Issue 16's calibration (English Gospels -> Acts-Revelation cross-references): make calibrate MODEL=<export> OUT=<dir>
	@test -n "$(MODEL)" || { echo "error: make calibrate needs MODEL=<export folder>, e.g. logs/bible_full/runs/<time>/export"; exit 2; }
	suite=$$($(BIN)/python -m m3lit.corpora.bible.calibration path_only=true) && \
	$(BIN)/python -m m3lit.evaluate model=$(MODEL) suite=$$suite reference='$(E5_REFERENCE)' output_dir=$(or $(OUT),outputs/calibrate) $(ARGS)

demo: $(STAMP) ## The tiny from-scratch demo (random 1.3M-parameter model on stdlib docstrings; ~4 min)
	$(BIN)/python -m m3lit.train experiment=demo $(ARGS)

eval: $(STAMP) ## Evaluate a model: make eval ARGS="model=PATH data=DIR output_dir=OUT"
	$(BIN)/python -m m3lit.evaluate $(ARGS)

compare: $(STAMP) ## Paired significance of two table rows: make compare ARGS="run=RUN a=all b=bm25 [task=MIRACL-like]"
	$(BIN)/python -m m3lit.compare $(ARGS)

export: $(STAMP) ## Export a checkpoint: make export ARGS="model=CKPT output_dir=DIR"
	$(BIN)/python -m m3lit.export $(ARGS)

bench: $(STAMP) ## Run every benchmark, m3lit side (tables on stdout, JSON in bench_results/; ~10 min on 2 cores)
	$(BIN)/python -m benchmarks.run_all $(ARGS)

bench-flag: $(STAMP) ## Every benchmark side by side with FlagEmbedding (needs make flag-env; ~15 min on 2 cores)
	$(BIN)/python -m benchmarks.run_all --flag $(ARGS)

gpu-check: $(STAMP) ## On a lent GPU: GPU tests, train, real model, 8192-token step/MFU, FSDP/DeepSpeed, encode, fp16/bf16 parity (<= 8 min)
	$(BIN)/python -m scripts.gpu_check $(ARGS)

FLAG_VENV := .venv-flag
flag-env: ## Separate .venv-flag with FlagEmbedding==1.4.2 for parity runs (never an m3lit dependency)
	@test -x $(FLAG_VENV)/bin/python || $(PYTHON) -m venv $(FLAG_VENV)
	$(FLAG_VENV)/bin/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(FLAG_VENV)/bin/pip install -q "FlagEmbedding==1.4.2"
	$(FLAG_VENV)/bin/python -c "import FlagEmbedding, torch, transformers; print('FlagEmbedding OK: torch', torch.__version__, 'transformers', transformers.__version__)"

flag-parity: $(STAMP) ## M3Embedder vs BGEM3FlagModel: max |diff| per output <= 1e-5 (pytest -m flag; needs flag-env)
	$(BIN)/python -m pytest -q -m flag tests/integration/test_flag_parity.py -rs $(ARGS)

demo-data: $(STAMP) ## Build the offline demo corpus and tokenizer only (ARGS="out=DIR force=true"; --help)
	$(BIN)/python -m m3lit.corpora.demo.build $(ARGS)

SITE ?= site
docs: $(STAMP) ## Build the documentation site into $(SITE)/ with mkdocs --strict (offline; any warning fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)

docs-serve: $(STAMP) ## Serve the documentation site on http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

lint: $(STAMP) ## Ruff lint + format check
	$(BIN)/ruff check m3lit tests benchmarks scripts docs/hooks
	$(BIN)/ruff format --check m3lit tests benchmarks scripts docs/hooks

format: $(STAMP) ## Ruff autofix + format
	$(BIN)/ruff check --fix m3lit tests benchmarks scripts docs/hooks
	$(BIN)/ruff format m3lit tests benchmarks scripts docs/hooks

clean: ## Remove caches and run outputs (keeps .venv)
	rm -rf logs outputs bench_results site .pytest_cache .ruff_cache .cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-all: clean ## Also remove .venv
	rm -rf $(VENV)

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

.PHONY: install test test-fast train train-full calibrate demo eval compare export bench bench-flag gpu-check flag-env flag-parity demo-data docs docs-serve lint format clean clean-all help
