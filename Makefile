# dvlab — distributed validator node + devnet lab.
# `make devnet` sets up and runs the main job; `make test` runs every check CI runs.

SHELL := /bin/bash
CARGO ?= cargo
SHARED_DIR ?= $(abspath $(CURDIR)/../shared)
export SHARED_DIR
export EIP3076_VECTORS_DIR ?= $(SHARED_DIR)/vectors/slashing-protection-interchange/tests/generated
# Lodestar v1.5.1 (BN + VC) from the shared npm recipe, cached outside the clone and keyed by the
# recipe's lock file so a changed pin reinstalls.
LODESTAR_RECIPE := $(SHARED_DIR)/clients/lodestar-1.5.1
LODESTAR_KEY := $(shell cat $(LODESTAR_RECIPE)/pnpm-lock.yaml $(LODESTAR_RECIPE)/package.json 2>/dev/null | sha256sum | cut -c1-12)
LODESTAR_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/dvlab/lodestar-1.5.1-$(LODESTAR_KEY)
export LODESTAR_BIN ?= $(LODESTAR_DIR)/bin/lodestar
# Seeds for the QBFT simulation: `make test` runs 1,000, `make soak` many more.
SOAK_SEEDS ?= 20000

.PHONY: all build test setup k8s-venv lint fmt unit soak bench bench-scale devnet check-shared lodestar e2e-local e2e-docker chaos k8s-validate fuzz fuzz-build fuzz-smoke

all: build

build:
	$(CARGO) build --workspace --release --locked

check-shared:
	@test -d "$(EIP3076_VECTORS_DIR)" || { echo "error: EIP-3076 vectors not found at $(EIP3076_VECTORS_DIR) (set SHARED_DIR or EIP3076_VECTORS_DIR)" >&2; exit 1; }

## lodestar: install Lodestar v1.5.1 into the cache (npm registry only) unless it already runs.
lodestar: check-shared
	@if "$(LODESTAR_BIN)" --version >/dev/null 2>&1; then echo "lodestar: cached at $(LODESTAR_DIR)"; \
	else rm -rf "$(LODESTAR_DIR)" && bash "$(LODESTAR_RECIPE)/install.sh" "$(LODESTAR_DIR)"; fi

## test: formatting, lints, unit + property + simulation + loopback + EIP-3076 tests, real-Lodestar tests,
## e2e-local-remote, e2e-docker, and every fuzz target for FUZZ_SMOKE_SECONDS (fuzz-smoke).
## The real-Lodestar e2e runs the cluster in remote-signer mode (every check of e2e-local plus
## aggregation, sync contributions and an exit); middleware mode is covered end to end by
## e2e-docker (attestations, proposals, sync messages of a Lodestar VC holding key shares).
## The stages run one after the other (scripts/stages.sh); a table of their wall times ends the output.
## `setup` (the installs: network-bound) runs in the background beside lint (CPU-bound) and is
## waited for before unit, whose real-Lodestar tests need it.
test: check-shared
	MAKE="$(MAKE)" ./scripts/stages.sh 'setup&' lint wait unit k8s-validate e2e-local-remote e2e-docker fuzz-smoke

## setup: everything `make test` installs on a fresh machine besides crates: Lodestar, the Docker
## engine (+ debootstrap, jq), chromium and the kubernetes-validate venv. Each part is cached.
setup: lodestar k8s-venv
	./scripts/setup-docker.sh
	./scripts/setup-chromium.sh

lint:
	$(CARGO) fmt --all --check
	cd fuzz && $(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

unit:
	$(CARGO) test --workspace --locked

## UNIT_BINS: target/debug's binaries from what the unit stage built (the dev profile is the test
## profile, and with --tests the features are those `cargo test --workspace` unifies): after
## `make unit` it compiles only dvlab-netem's binary (docs/PERFORMANCE.md, "CI time").
UNIT_BINS = $(CARGO) build --locked --workspace --bins --tests

## k8s-validate: renders every devnets/*.yaml with `dvlab k8s render` and validates the manifests
## offline (no API server can be installed here): built-in objects with `kubernetes-validate
## --strict` (Kubernetes 1.30 and 1.37 schemas), Chaos Mesh objects (also those inside the fault
## timer's ConfigMap) against the CRD schemas of $(SHARED_DIR)/k8s/chaos-mesh-crds.yaml, strict.
## The validator comes from PyPI into a venv under ~/.cache/dvlab.
K8S_VALIDATE_VERSION := 1.37.0
K8S_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/dvlab/k8s-validate-$(K8S_VALIDATE_VERSION)
## Scenarios with a fault Chaos Mesh cannot express (one-way loss, bn_errors): their render must
## be refused (it names the fault and its line). dkg.yaml renders (ceremony and genesis Jobs).
K8S_DOCKER_ONLY := bn-errors one-way-loss
k8s-venv:
	@[ -e $(K8S_VENV)/.installed ] || { rm -rf $(K8S_VENV) && python3 -m venv $(K8S_VENV) && \
	  $(K8S_VENV)/bin/pip install -q kubernetes-validate==$(K8S_VALIDATE_VERSION) && touch $(K8S_VENV)/.installed; }

k8s-validate: k8s-venv
	$(UNIT_BINS)
	rm -rf target/k8s-render
	for f in devnets/*.yaml; do n=$$(basename $$f .yaml); \
	  case " $(K8S_DOCKER_ONLY) " in *" $$n "*) \
	    ! ./target/debug/dvlab k8s render $$f --out target/k8s-render-refused/$$n 2>/dev/null || exit 1; continue;; esac; \
	  ./target/debug/dvlab k8s render $$f --out target/k8s-render/$$n || exit 1; done
	$(K8S_VENV)/bin/python scripts/k8s_validate.py --crds $(SHARED_DIR)/k8s/chaos-mesh-crds.yaml \
	  --k8s-version 1.30.0 --k8s-version 1.37.0 target/k8s-render/*

## soak: the QBFT simulation over many more seeds (release build).
soak:
	QBFT_SIM_SEEDS=$(SOAK_SEEDS) $(CARGO) test --release --locked -p dvnode --test qbft_sim

## bench: criterion benchmarks (crypto, slashing DB, consensus, DKG ceremonies).
bench:
	$(CARGO) bench --locked -p dvnode
	$(CARGO) run --release --locked -p dvnode -- --log warn bench consensus
	$(CARGO) run --release --locked -p dvnode -- --log warn bench dkg

## bench-scale: four release dvnodes over loopback libp2p (real slashing DBs, real blst) driven by a
## simulated mainnet-preset beacon node and simulated Lodestar-like validator clients, one run per
## validator count; prints a table and writes target/bench-scale/summary.json. Not part of `make
## test`. On the shared machine build first, then run it under the heavy lock:
## `flock /tmp/dvlab-heavy.lock make bench-scale`. Knobs (env or make variables):
## BENCH_SCALE_VALIDATORS=100,1000 BENCH_SCALE_EPOCHS=2 BENCH_SCALE_SECONDS_PER_SLOT=12
## BENCH_SCALE_NETWORK_VALIDATORS=N BENCH_SCALE_APPEND=true (keep the summary's other rows).
export BENCH_SCALE_VALIDATORS BENCH_SCALE_EPOCHS BENCH_SCALE_SECONDS_PER_SLOT BENCH_SCALE_MODES \
	BENCH_SCALE_NETWORK_VALIDATORS BENCH_SCALE_APPEND
bench-scale:
	$(CARGO) build --release --locked -p dvnode -p dvlab-tests
	./target/release/bench-scale --out target/bench-scale

## devnet: Docker engine + Lodestar + images (cached), then a devnet run with its report:
## two Lodestar beacon nodes with keepers, a baseline VC and a 4-node dvnode cluster (threshold
## 3) with one Lodestar VC per node. DEVNET picks another devnet file.
DEVNET ?= devnets/basic.yaml
export DVLAB_LODESTAR_DIR := $(LODESTAR_DIR)
## dvnode and the dvlab-netem delayer go into images as release builds; dvlab itself runs as a
## debug build (its work is light, and a release build of polars takes ~20 min on 2 cores).
devnet: lodestar
	./scripts/setup-docker.sh
	$(CARGO) build --release --locked -p dvnode -p dvlab-netem
	$(CARGO) build --locked -p dvlab
	./target/debug/dvlab images build --shared "$(SHARED_DIR)"
	./target/debug/dvlab run $(DEVNET)

## e2e-local: dvnode with real, unmodified Lodestar clients as local processes (no Docker):
## a `lodestar dev` BN with keepers, a baseline VC, a 4-node dvnode cluster with one Lodestar VC
## each; one dvnode is SIGKILLed for 2 epochs. Writes target/e2e-local/summary.json and logs.
## E2E_ARGS passes extra flags, e.g. `make e2e-local E2E_ARGS="--epochs 10"` or "--no-dv".
## The figures come from dvlab's analyser: the run is written as a dvlab run directory and
## `target/debug/dvlab report` analyses it (target/e2e-local/report.html).
E2E_ARGS ?=
e2e-local: lodestar
	$(CARGO) build --release --locked -p dvnode -p dvlab-tests
	$(CARGO) build --locked -p dvlab
	./target/release/e2e-local --out target/e2e-local $(E2E_ARGS)

## e2e-local-remote: e2e-local with the cluster in remote-signer mode (each Lodestar VC signs through
## its dvnode's Web3Signer API with the DV keys): also checks that every aggregation and sync
## contribution duty implied by the DVs' selection proofs is performed and that a voluntary exit asked
## for by every operator (`dvnode exit`) is accepted. Writes target/e2e-local-remote/summary.json.
## Like e2e-docker it runs the debug binaries (see UNIT_BINS), e2e-local the release ones.
e2e-local-remote: lodestar
	$(UNIT_BINS)
	./target/debug/e2e-local --signer remote --out target/e2e-local-remote $(E2E_ARGS)

## e2e-docker: the Docker end-to-end test (tests/tests/docker_devnet.rs): builds the images
## (cached), runs a short devnet with a 4-node dvnode cluster through the dvlab library and
## checks its report, the kept devnet's Prometheus (every target up, every query of
## dashboards/dvnode.json answered), report.html in headless chromium, and that nothing of the
## run is left in Docker.
## Its images take target/debug's dvnode and dvlab-netem (DVLAB_DVNODE_BINARY; `make devnet`,
## `make chaos` and `dvlab images build` keep the release ones).
e2e-docker: lodestar
	./scripts/setup-docker.sh
	./scripts/setup-chromium.sh
	$(UNIT_BINS)
	DVLAB_E2E=1 $(CARGO) test --workspace --locked --test faults_lab -- --nocapture
	DVLAB_E2E=1 DVLAB_DVNODE_BINARY=$(CURDIR)/target/debug/dvnode \
	  $(CARGO) test --workspace --locked --test docker_devnet -- --nocapture

## chaos: the whole scenario library (devnets/*.yaml except baseline-only) one after the other
## with the debug dvlab binary, then a summary table; the exit code is the worst scenario's
## (0 pass, 1 assertion failed, 2 run failed). CHAOS picks scenarios, e.g.
## `make chaos CHAOS="partition-2-2 leader-crash"`; reports go to CHAOS_OUT/<scenario>/.
## CHAOS_SIGNER=remote runs every cluster in remote-signer mode (`dvlab run --signer remote`); the
## table's aggr/contrib columns are dv0's submitted/duties (– in middleware mode); the failed column
## marks an assertion that was not evaluated (it does not fail the run) "(not evaluated)".
CHAOS ?= basic partition-2-2 partition-minority leader-crash node-down-1-of-4 bn-down \
	latency-200ms loss-10pct clock-skew clock-skew-behind clock-skew-two rolling-restarts chaos-mix \
	bn-errors bn-latency one-way-loss bn-fallback
CHAOS_OUT ?= target/chaos
CHAOS_SIGNER ?=
chaos: lodestar
	./scripts/setup-docker.sh
	$(CARGO) build --release --locked -p dvnode -p dvlab-netem
	$(CARGO) build --locked -p dvlab
	./target/debug/dvlab images build --shared "$(SHARED_DIR)"
	@mkdir -p $(CHAOS_OUT); worst=0; rows=""; \
	for s in $(CHAOS); do \
	  echo "=== chaos: $$s"; \
	  ./target/debug/dvlab run devnets/$$s.yaml --out $(CHAOS_OUT)/$$s $(if $(CHAOS_SIGNER),--signer $(CHAOS_SIGNER)); rc=$$?; \
	  [ $$rc -gt $$worst ] && worst=$$rc; \
	  r=$(CHAOS_OUT)/$$s/report.json; \
	  fig=$$(jq -r '[(.groups.dv0.inclusion_rate // "-"), (.outside_faults.dv0.inclusion_rate // "-"), \
	    (.during_faults.dv0.inclusion_rate // "-"), ((.assertions[] | select(.name=="max_recovery_slots") | .value) // "-"), \
	    (.slashing_audit.violations | length), \
	    (if .groups.dv0.aggregation_duties == null then "-" else "\(.groups.dv0.aggregations_submitted)/\(.groups.dv0.aggregation_duties)" end), \
	    (if .groups.dv0.sync_contribution_duties == null then "-" else "\(.groups.dv0.sync_contributions_submitted)/\(.groups.dv0.sync_contribution_duties)" end), \
	    ([.assertions[] | select(.passed | not) | .name + (if .not_evaluated then "(not evaluated)" else "" end)] | join(","))] \
	    | map(if type=="number" then (.*1000|round/1000|tostring) else tostring end) | join("\t")' $$r 2>/dev/null || echo "no report"); \
	  rows="$$rows$$s\t$$rc\t$$fig\n"; \
	done; \
	printf "\nscenario\texit\tdv_incl\toutside\tduring\trecovery\tslashable\taggr\tcontrib\tfailed\n$$rows" | column -t -s "$$(printf '\t')"; \
	exit $$worst

## fuzz: coverage-guided fuzzing (libFuzzer via cargo-fuzz on the stable toolchain, fuzz/) of
## every byte dvnode and dvlab take from outside; docs/FUZZING.md lists the targets and their
## properties. Each target runs FUZZ_SECONDS (default 600) on its corpus under FUZZ_OUT
## (default target/fuzz, kept between runs); a table of executions, exec/s, coverage, corpus
## and crashes follows; exit 1 on any crash (inputs in FUZZ_OUT/artifacts/). FUZZ_TARGETS picks
## targets. On the shared machine: `nice -n 19 flock /tmp/dvlab-fuzz.lock make fuzz`.
## fuzz-smoke (in `make test`): every target for FUZZ_SMOKE_SECONDS from its seeds only.
## One build serves every target; 16 codegen units (cargo-fuzz's default is 1) let both cores
## compile the big crates. cargo-fuzz itself (a launcher: its speed does not matter) is installed as
## a debug build: 0.58x the CPU of its release build (docs/PERFORMANCE.md, "CI time").
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_OUT ?= target/fuzz
FUZZ_TARGETS ?= $(sort $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs))))
CARGO_FUZZ_VERSION := 0.13.2
export FUZZ_ARGS
fuzz-build: check-shared
	@cargo fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)" || \
	  $(CARGO) install --locked --debug cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	cd fuzz && $(CARGO) fuzz build -s none --codegen-units 16

fuzz: fuzz-build
	FUZZ_OUT=$(FUZZ_OUT) ./scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## The smoke runs one target per core at a time (FUZZ_SMOKE_JOBS): each still gets a core for
## FUZZ_SMOKE_SECONDS, in half the wall time on CI's 2 cores.
FUZZ_SMOKE_JOBS ?= $(shell nproc)
fuzz-smoke: fuzz-build
	rm -rf target/fuzz-smoke
	FUZZ_OUT=target/fuzz-smoke FUZZ_JOBS=$(FUZZ_SMOKE_JOBS) ./scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)
