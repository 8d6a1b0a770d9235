# bpfscope: `make run` and `make test` install what they need on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The main job watches the interface of the default route unless IFACE= says otherwise.
IFACE ?= $(shell awk '$$2 == "00000000" { print $$1; exit }' /proc/net/route)
DURATION ?=
APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 python3-venv gcc make nftables bpftrace nginx curl openssl prometheus prometheus-node-exporter
PYTEST_ARGS ?=

.PHONY: run test bpf deps wheel lint bench clean

run: bpf
	$(BIN)/bpfscope packets --iface $(IFACE) $(if $(DURATION),--duration $(DURATION))

test: bpf lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: bpf
	$(BIN)/bpfscope bench all

bpf: deps
	$(MAKE) -C bpf all-arches

deps: $(BIN)/.installed

.stamp-apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(BIN)/.installed: pyproject.toml .stamp-apt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

wheel: bpf
	$(BIN)/pip wheel --no-deps -w dist .

lint: deps
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict src/bpfscope

clean:
	$(MAKE) -C bpf clean
	rm -rf dist build .stamp-apt
