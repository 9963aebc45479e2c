# aimesh: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Re-install only when a dependency list changes.
DEPS := constraints.txt requirements-dev.txt libs/common/pyproject.toml \
        services/gateway/pyproject.toml services/embedding/pyproject.toml \
        services/retrieval/pyproject.toml services/llm-router/pyproject.toml
STAMP := $(VENV)/.installed
PACKAGES := -e libs/common -e services/gateway -e services/embedding \
            -e services/retrieval -e services/llm-router
PROTO_OUT := libs/common/src
# CPU wheels of torch; where that index is unreachable pip warns and uses what it has.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: help install run test test-fast lint fmt proto proto-check k8s-validate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): $(DEPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
	$(PIP) install --quiet -c constraints.txt --extra-index-url $(TORCH_INDEX) torch==2.13.0
	$(PIP) install --quiet -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install every package (editable) and dev tools

run: install ## Start the whole mesh locally on embedded defaults (Ctrl-C stops it)
	$(BIN)/python scripts/devmesh.py

test: install lint proto-check ## Install, lint, then run the whole test suite
	$(BIN)/python -m pytest

test-fast: install ## Run the tests without the slow real-server ones
	$(BIN)/python -m pytest -m "not slow"

lint: install ## ruff check, ruff format --check, mypy on every package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: install ## Regenerate the committed Python code from protos/
	$(BIN)/python scripts/gen_protos.py --out $(PROTO_OUT)

proto-check: install ## Fail when the committed generated code is stale
	$(BIN)/python scripts/gen_protos.py --check --out $(PROTO_OUT)

k8s-validate: install ## Render k8s/base with kustomize and validate it offline
	$(BIN)/python scripts/k8s_validate.py

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) .aimesh .pytest_cache .mypy_cache .ruff_cache
