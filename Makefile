# Clowder: pull-through caching registry proxy.
#
#   make run        run the proxy on the embedded default config (127.0.0.1:5000)
#   make test       everything CI runs: vet, gofmt, unit + race, real-client e2e, OCI conformance,
#                   the s3 backend and a 3-replica fleet on SeaweedFS
#   make bench      benchmarks against nginx and the CNCF distribution registry
#   make test-long  the large field cases (GiB blobs, slow upstreams)
#   make fuzz       every fuzz target for 30 s (FUZZTIME=5m for longer)

SHELL   := /bin/bash
GO      ?= go
BIN     ?= bin/clowder
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

include tools.mk
include conformance.mk

.PHONY: all build run test unit lint e2e bench test-long test-s3 clean fuzz fuzz-short

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/clowder

run:
	$(GO) run ./cmd/clowder serve

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 10m ./...

# e2e: real clients (crane, oras, regctl, skopeo, containerd) against a real
# CNCF distribution registry on loopback, through a clowder binary.
e2e: tools build
	CLOWDER_E2E=1 CLOWDER_BIN=$(abspath $(BIN)) $(GO) test -count=1 -timeout 15m -v ./e2e/... 2>&1 | tee .e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)' ; test $${PIPESTATUS[0]} -eq 0

test: lint unit fuzz-short e2e conformance test-s3

# Every fuzz target (hack/fuzz.sh): 2 s each in make test (~50 s for all),
# 30 s each in make fuzz; FUZZTIME=5m make fuzz for a longer run.
FUZZTIME ?= 30s
fuzz:
	GO=$(GO) ./hack/fuzz.sh $(FUZZTIME)

fuzz-short:
	GO=$(GO) ./hack/fuzz.sh 2s

# The s3 backend and a fleet of replicas against SeaweedFS (built once,
# ~7.5 min, cached under $(TOOLS_DIR)): cas/s3store's conformance tests, then
# e2e TestFleet (3 clowder processes on one bucket).
test-s3: tool-seaweedfs tools build
	GO=$(GO) CLOWDER_BIN=$(abspath $(BIN)) bash hack/test-s3.sh

test-long:
	CLOWDER_LONG=1 $(GO) test -count=1 -timeout 60m -run 'Long' -v ./...

bench: tools tool-seaweedfs build
	CLOWDER_BIN=$(abspath $(BIN)) $(GO) run ./bench $(BENCH_FLAGS)

clean:
	rm -rf bin .e2e.log
