# Two commands on a fresh Debian machine (run as root, or with sudo available):
#   make run    install everything, then deploy and verify the quickstart lab on local libvirt
#   make test   install everything, then lint, type-check and run the whole test suite
#   make bench  install everything and every peer the benchmarks compare against, then run them
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
LAB ?= labs/quickstart/lab.yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-daemon-system \
  qemu-system-x86 qemu-utils dnsmasq-base mmdebstrap e2fsprogs openssh-server openssh-client iproute2 nftables procps \
  ca-certificates libseccomp-dev wabt containerd runc keepalived curl openssl
# the bundle: libseccomp-dev for a static runc, wabt's wat2wasm for the Wasm image; Debian's containerd and runc
# let the tests import the bundle's images into a real containerd on the host
# keepalived (with curl for its check and openssl s_server as the API servers) for the HA tests

# the peers of bench/*.py: Debian's Vagrant with its libvirt plugin (and kcli's ISO writer),
# ansible-core and kcli from PyPI into the venv
BENCH_DEBIAN_PACKAGES := vagrant vagrant-libvirt xorriso
BENCH_PIP_PACKAGES := ansible-core kcli
BENCHMARKS := bench/plan_scale.py bench/noop_redeploy.py bench/vm_scale.py bench/bundle.py bench/cluster_up.py bench/addons.py bench/vsphere_fanout.py

.PHONY: run test e2e setup system python services go vcsim lint typecheck pytest destroy clean bench bench-peers

run: setup
	$(BIN)/deploy up $(LAB)

destroy: setup
	$(BIN)/deploy destroy $(LAB)

test: setup lint typecheck pytest

setup: go system python services vcsim

# govmomi's vCenter simulator for the vSphere tests (our own main in go/vcsim/), built once into the cache
# the bundle's Go builds share; tests/integration/vcsim_fixtures.py runs it
LABDEPLOY_CACHE ?= $(HOME)/.cache/labdeploy
VCSIM := $(LABDEPLOY_CACHE)/bin/vcsim
$(VCSIM): $(wildcard go/vcsim/*.go) go/vcsim/go.mod go/vcsim/go.sum | go
	mkdir -p $(dir $@)
	cd go/vcsim && GOMODCACHE=$(LABDEPLOY_CACHE)/go/mod GOCACHE=$(LABDEPLOY_CACHE)/go/build GOFLAGS=-mod=readonly \
	  GOTOOLCHAIN=local go build -trimpath -o $@ .
vcsim: $(VCSIM)

# Debian packages (idempotent; the stamp changes when the package list does)
$(STAMPS)/system-$(shell echo '$(DEBIAN_PACKAGES)' | md5sum | cut -c1-8):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(DEBIAN_PACKAGES)
	mkdir -p $(STAMPS) && touch $@
system: $(STAMPS)/system-$(shell echo '$(DEBIAN_PACKAGES)' | md5sum | cut -c1-8)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
$(STAMPS)/python: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,vsphere]'
	mkdir -p $(STAMPS) && touch $@
python: $(STAMPS)/python

# Go for the bundle's builds (the machine's own; make stops with how to get one if it is missing or old)
go:
	@scripts/check-go.sh

# libvirtd and virtlogd: through systemd where it runs, started by hand where no init does
services:
	@scripts/ensure-services.sh

lint:
	$(BIN)/ruff check deploy tests bench

typecheck:
	$(BIN)/mypy deploy

pytest:
	$(BIN)/pytest -q --timeout=1800 -m "not e2e" tests; rc=$$?; [ $$rc -eq 5 ] && { echo "no tests collected"; rc=0; }; exit $$rc

# what does not fit make test's hour: growing and shrinking the real cluster (a third TCG VM), the NetworkPolicy
# fault, the add-on releases through deploy up
e2e: setup
	$(BIN)/pytest -q --timeout=3600 -m e2e tests

bench: setup bench-peers
	rc=0; for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python $$b || rc=1; done; exit $$rc

$(STAMPS)/bench-peers-$(shell echo '$(BENCH_DEBIAN_PACKAGES) $(BENCH_PIP_PACKAGES)' | md5sum | cut -c1-8): $(STAMPS)/python | system
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(BENCH_DEBIAN_PACKAGES)
	$(BIN)/pip install --quiet $(BENCH_PIP_PACKAGES)
	mkdir -p $(STAMPS) && touch $@
bench-peers: $(STAMPS)/bench-peers-$(shell echo '$(BENCH_DEBIAN_PACKAGES) $(BENCH_PIP_PACKAGES)' | md5sum | cut -c1-8)

clean:
	rm -rf $(VENV) $(STAMPS) .mypy_cache .ruff_cache .pytest_cache
