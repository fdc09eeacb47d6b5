# lockstep — see README.md. `make test` is what CI runs.
GO ?= go
SEEDS ?= 200

.PHONY: all build test test-short bench lint campaign images clean soak compare-debezium

all: build

build:
	$(GO) build -o bin/lockstep ./cmd/lockstep

## test: every test. When a Docker daemon is reachable it first builds the
## container images (cached), so the container scenarios run too; without
## Docker they skip, or fail when LOCKSTEP_REQUIRE_DOCKER=1 (CI sets it).
test: lint
	@if docker info >/dev/null 2>&1; then bash images/build.sh && bash images/build-debezium.sh; \
	else echo "make test: no Docker daemon: container tests will skip (or fail with LOCKSTEP_REQUIRE_DOCKER=1)"; fi
	LOCKSTEP_KAFKA_LIBS=$${LOCKSTEP_KAFKA_LIBS:-$$(ls -d $${LOCKSTEP_CACHE:-/var/cache/lockstep}/kafka-libs-* 2>/dev/null | head -1)} \
		$(GO) test -count=1 -timeout 60m ./...

## test-short: the quick subset (no containers, no real services).
test-short:
	$(GO) test -short ./...

## images: build the container images offline (debootstrap, Maven Central).
images:
	bash images/build.sh
	bash images/build-debezium.sh

## bench: scheduler and end-to-end simulator benchmarks, at the GOGC the CLI's
## tuner gives a swarm seed's small heap (cmd/lockstep/gc.go).
bench:
	GOGC=1600 $(GO) test -run '^$$' -bench . -benchmem ./sim/ ./scenarios/

## lint: gofmt and go vet must be clean, and actionlint must pass on the
## workflow files (.github/workflows), which cannot run here: lint is their
## test. actionlint is pinned in tools/go.mod; it runs shellcheck on the
## workflows' scripts when shellcheck is installed (.ci/setup installs it).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt: not formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v shellcheck >/dev/null || echo "make lint: shellcheck not installed: actionlint skips the workflows' scripts"
	$(GO) tool -modfile=tools/go.mod actionlint

## campaign: the main job, a simulated fault campaign.
campaign:
	$(GO) run ./cmd/lockstep campaign --scenario all --seeds $(SEEDS)

clean:
	rm -rf bin

## soak: ten minutes of pgbench on real PostgreSQL, Kafka and Redis under the
## faults of scenarios/containers/soak.plan; reports throughput, lag and the
## time to catch up after each fault (needs Docker and the images).
soak:
	$(GO) run ./cmd/lockstep run --world containers --scenario pgbench --bench --plan scenarios/containers/soak.plan --seed 1

## compare-debezium: the side-by-side benchmark, lockstep's capture, stock
## Debezium and tuned Debezium (poll 10 ms, flush 1 s) on one PostgreSQL and
## Kafka under one pgbench load, all killed -9 at 30 s of 60, then 30 s at the
## maximum rate; one table, every system's figures from the same run (needs
## Docker, the images and images/build-debezium.sh; about 10 min, Debezium
## draining the maximum-rate backlog; not in make test).
compare-debezium:
	$(GO) run ./cmd/lockstep bench --world containers --compare debezium
