# dvlab — distributed validator node + devnet lab.
# `make devnet` sets up and runs the main job; `make test` runs every check CI runs.

SHELL := /bin/bash
CARGO ?= cargo
SHARED_DIR ?= $(abspath $(CURDIR)/../shared)
export SHARED_DIR
export EIP3076_VECTORS_DIR ?= $(SHARED_DIR)/vectors/slashing-protection-interchange/tests/generated
# Seeds for the QBFT simulation: `make test` runs 1,000, `make soak` many more.
SOAK_SEEDS ?= 20000

.PHONY: all build test lint fmt unit soak bench devnet check-shared clean-devnet

all: build

build:
	$(CARGO) build --workspace --release --locked

check-shared:
	@test -d "$(EIP3076_VECTORS_DIR)" || { echo "error: EIP-3076 vectors not found at $(EIP3076_VECTORS_DIR) (set SHARED_DIR or EIP3076_VECTORS_DIR)" >&2; exit 1; }

## test: formatting, lints, unit + property + simulation + loopback + EIP-3076 tests.
test: check-shared lint unit

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

unit:
	$(CARGO) test --workspace --locked

## soak: the QBFT simulation over many more seeds (release build).
soak:
	QBFT_SIM_SEEDS=$(SOAK_SEEDS) $(CARGO) test --release --locked -p dvnode --test qbft_sim

## bench: criterion benchmarks (crypto, slashing DB, consensus).
bench:
	$(CARGO) bench --locked -p dvnode

## devnet: until the orchestrator lands, create a 4-node cluster over interop keys and
## run it over loopback libp2p.
DEVNET_DIR ?= target/devnet
devnet: build
	rm -rf $(DEVNET_DIR)
	./target/release/dvnode create-cluster --nodes 4 --threshold 3 --interop-indices 0..8 \
	  --insecure-keys --out $(DEVNET_DIR)/cluster
