# bpfscope: `make run` and `make test` install what they need on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The main job watches the interface of the default route unless IFACE= says otherwise.
IFACE ?= $(shell awk '$$2 == "00000000" { print $$1; exit }' /proc/net/route)
DURATION ?=
APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 python3-venv gcc make nftables bpftrace nginx curl openssl prometheus prometheus-node-exporter busybox-static
PYTEST_ARGS ?=
# The kernel matrix (vmtest/): qemu guests for x86-64 and arm64 kernels (APT_PACKAGES has busybox-static
# for their initramfs: the unit tests unpack one with it).
VM_PACKAGES := qemu-system-x86 qemu-system-arm kmod
VMTEST_ARGS ?=
# The container image (tests/image/): podman runs it here with runc (the machine refuses crun), and its
# Debian base is made with debootstrap (no registry is reachable). Prometheus comes with APT_PACKAGES.
IMAGE_PACKAGES := podman runc debootstrap

# Installs the Debian packages named in $(1) that are missing.
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

.PHONY: run test test-floors test-kernels test-image bpf deps wheel lint bench clean

run: bpf
	$(BIN)/bpfscope packets --iface $(IFACE) $(if $(DURATION),--duration $(DURATION))

test: bpf lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Every runtime dependency and the otlp extra's at the lowest version pyproject.toml allows, in a venv of their
# own (made afresh), with the unit and agent tests run there: the floors are versions the code works with.
FLOORS_VENV := .venv-floors
test-floors: bpf
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/pip install -q --upgrade pip
	$(PYTHON) .ci/floors.py otlp > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/pip install -q --constraint $(FLOORS_VENV)/floors.txt -e '.[otlp]' pytest hypothesis
	$(FLOORS_VENV)/bin/pytest tests/unit tests/agent $(PYTEST_ARGS)

# The kernel-marked tests on each kernel in vmtest/kernels.toml, in qemu guests; a table at the end.
test-kernels: bpf .stamp-vm
	$(BIN)/python -m vmtest $(VMTEST_ARGS)

# deploy/Dockerfile built with podman and run as the DaemonSet runs it: Prometheus scrapes it, flows runs on
# clsact in it. Minutes; the base image and the image's layers stay in podman's storage for the next run.
test-image: deps .stamp-image
	BPFSCOPE_IMAGE_TESTS=1 $(BIN)/pytest tests/image $(PYTEST_ARGS)

bench: bpf
	$(BIN)/bpfscope bench all

bpf: deps
	$(MAKE) -C bpf all-arches

deps: $(BIN)/.installed

.stamp-apt:
	$(call apt_install,$(APT_PACKAGES))
	@touch $@

.stamp-vm:
	$(call apt_install,$(VM_PACKAGES))
	@touch $@

.stamp-image:
	$(call apt_install,$(IMAGE_PACKAGES))
	@touch $@

$(BIN)/.installed: pyproject.toml .stamp-apt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# One wheel per architecture, each with that architecture's objects and its platform tag (hatch_build.py).
wheel: bpf
	for arch in x86_64 aarch64; do BPFSCOPE_WHEEL_ARCH=$$arch $(BIN)/pip wheel --no-deps -w dist . || exit 1; done

lint: deps
	$(BIN)/ruff check src tests vmtest
	$(BIN)/mypy --strict src/bpfscope
	$(BIN)/mypy --strict -p vmtest

clean:
	$(MAKE) -C bpf clean
	rm -rf dist build .stamp-apt .stamp-vm .stamp-image $(FLOORS_VENV)
