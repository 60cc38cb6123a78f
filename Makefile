# Tailor: the two commands that matter are `make demo` and `make test`; both set up what they
# need (Debian packages, the Go binaries, the virtualenv) and cache it outside the clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help
TAILOR_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tailor
export TAILOR_CACHE
VENV := $(TAILOR_CACHE)/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: prereqs
prereqs: ## check (as root: install) the Debian packages the stack needs
	@hack/prereqs.sh

.PHONY: binaries
binaries: ## build the pinned Go binaries (control plane, kubectl, the node, etcd, MinIO) into the cache
	@hack/build-binaries.sh kubernetes node etcd minio pause containerd runc cni coredns

.PHONY: images
images: prereqs binaries ## build the operator, trainer and pause images without a daemon (buildah), cached
	@hack/build-images.sh build

.PHONY: venv
venv: ## create or update the virtualenv in the cache
	@hack/ensure-venv.sh

.PHONY: setup
setup: prereqs binaries venv images

.PHONY: up
up: setup ## start the local stack in the background (idempotent); writes .tailor/env
	@$(PY) -m tailor_devstack up

.PHONY: down
down: ## stop the local stack; leaves no processes, mounts, namespaces or bridges
	@if [ -x $(PY) ]; then $(PY) -m tailor_devstack down; fi

.PHONY: status
status: ## show the local stack's components and their health
	@$(PY) -m tailor_devstack status

.PHONY: operator
operator: up ## run the operator in the foreground against the local stack (all namespaces)
	@source .tailor/env && $(PY) -m tailor --bind-address 127.0.0.1

.PHONY: demo
demo: up ## the whole story: train, promote, serve, drift, retrain, promote the retrain (about 3 minutes on 2 CPUs)
	@$(PY) -m tests.support.demo

.PHONY: demo-smoke
demo-smoke: up ## a one-minute distributed smoke test through the operator
	@$(PY) -m tests.support.demo --smoke

.PHONY: lint
lint: venv ## ruff, mypy and the import layers (import-linter)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports --no-logo --cache-dir $(TAILOR_CACHE)/import-linter

.PHONY: test
test: setup chart-tools lint ## lint, then unit, integration and end-to-end tests (starts the stack if needed)
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: chaos
chaos: setup ## the chaos suite (tests/chaos, issue 16) on a private stack of its own; ~20-30 min
	@TAILOR_CHAOS=1 $(VENV)/bin/pytest tests/chaos -s

.PHONY: chart-tools
chart-tools: prereqs ## build the chart tests' tools: Helm, kubeconform, kstatus, Prometheus Operator CRDs
	@hack/build-binaries.sh helm kubeconform kstatus monitoring-crds

.PHONY: chart-crds
chart-crds: ## regenerate the Helm chart's CRDs from crds/
	@python3 hack/gen_chart_crds.py
