# dllm-eval: one Makefile for setup, tests and the evaluation matrix.
# Override TORCH_SPEC for a GPU build, e.g.  make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
export DLLM_EVAL_DATA_DIR ?= $(abspath ../shared/data)

# eval-all matrix variables (see README "make eval-all")
MODEL      ?=
MODELS     ?=
TASKS      ?=
SCHEDULERS ?=
SEEDS      ?=
LIMIT      ?=
BATCH      ?=
DEVICE     ?=
RUN        ?=
GPUS       ?=
CPU_CELLS  ?=
LAUNCHER   ?=
SEQUENTIAL ?=
LOOKS      ?=

.PHONY: install test test-fast lint eval-all clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check dllm_eval tests tasks
	$(BIN)/python -m pytest -q -m "not gpu" tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check dllm_eval tests tasks

eval-all: $(STAMP)
	$(BIN)/dllm-eval eval-all \
	  $(if $(MODEL),--model "$(MODEL)") $(if $(MODELS),--models "$(MODELS)") $(if $(TASKS),--tasks "$(TASKS)") \
	  $(if $(SCHEDULERS),--schedulers "$(SCHEDULERS)") $(if $(SEEDS),--seeds "$(SEEDS)") \
	  $(if $(LIMIT),--limit "$(LIMIT)") $(if $(BATCH),--batch "$(BATCH)") \
	  $(if $(DEVICE),--device "$(DEVICE)") $(if $(RUN),--run "$(RUN)") \
	  $(if $(GPUS),--gpus "$(GPUS)") $(if $(CPU_CELLS),--cpu-cells "$(CPU_CELLS)") \
	  $(if $(LAUNCHER),--launcher "$(LAUNCHER)") \
	  $(if $(SEQUENTIAL),--sequential) $(if $(LOOKS),--looks "$(LOOKS)")

clean-venv:
	rm -rf $(VENV)
