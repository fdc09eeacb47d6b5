# lockstep — see README.md. `make test` is what CI runs.
GO ?= go
SEEDS ?= 200

.PHONY: all build test test-short bench lint campaign clean

all: build

build:
	$(GO) build -o bin/lockstep ./cmd/lockstep

## test: every test, including the simulated campaigns and the determinism checks.
test: lint
	$(GO) test -count=1 ./...

## test-short: the quick subset.
test-short:
	$(GO) test -short ./...

## bench: scheduler and end-to-end simulator benchmarks.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./sim/ ./scenarios/

## lint: gofmt and go vet must be clean.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt: not formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## campaign: the main job, a simulated fault campaign.
campaign:
	$(GO) run ./cmd/lockstep campaign --scenario all --seeds $(SEEDS)

clean:
	rm -rf bin
