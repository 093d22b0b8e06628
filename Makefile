# meshctl — one entry point per action. Every target is idempotent and works on a fresh Debian 12 machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := $(shell grep -v '^\#' deps/apt.txt | tr '\n' ' ')
PYTEST := .ci/pytest-tier

.PHONY: help bootstrap apt venv rootfs lint test test-unit test-integration test-e2e test-nix demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

bootstrap: apt venv ## system packages, the virtualenv with meshctl installed editable
	@echo "bootstrap: ok ($(BIN)/meshctl)"

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "apt: need root to install: $$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq -e '.[test]'
	@touch $(STAMP)

rootfs: bootstrap ## build (once) the cached Debian rootfs the lab boots from
	@$(BIN)/meshctl lab rootfs

lint: bootstrap ## ruff + mypy --strict on toolkit/
	@$(BIN)/ruff check toolkit tests bench roles inventories
	@$(BIN)/mypy --strict toolkit/meshctl

test: bootstrap lint test-unit rootfs test-integration test-nix test-e2e ## bootstrap, lint and every test tier
	@echo "make test: all tiers passed"

test-unit: bootstrap ## pure tests (milliseconds each)
	@$(PYTEST) unit tests/unit

test-integration: bootstrap ## real servers and agents on loopback / test-made namespaces
	@$(PYTEST) integration tests/integration

test-nix: bootstrap ## nix-instantiate --parse on every .nix file; evaluation when NIXPKGS_LIB is set
	@$(PYTEST) nix tests/nix

test-e2e: rootfs ## lab hosts over SSH with real systemd, sshd and WireGuard
	@$(PYTEST) e2e tests/e2e

demo: bootstrap ## a whole mesh on the local lab: deployed, verified and shown
	@$(BIN)/python -m meshctl.demo

bench: bootstrap ## benchmarks; each prints ratios against a baseline measured in the same run
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: ## remove the virtualenv and build output (labs: meshctl lab down)
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
