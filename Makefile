# batchd — see README.md. Every target is bounded in time; nothing here reaches beyond loopback.
GO        ?= go
BIN       := bin/batchd
FUZZTIME  ?= 20000x
BENCHTIME ?= 1s
COUNT     ?= 5
# What batchd -version and batchd_build_info report; without git, "devel" and "unknown".
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.revision=$(REVISION)

.PHONY: all build run test vet unit fuzz-smoke fuzz bench load lint fmt soak clean image compose

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/batchd
	$(GO) build -trimpath -o bin/batchload ./cmd/batchload
	$(GO) build -trimpath -o bin/batchctl ./cmd/batchctl

# make run: the service with the embedded demo API on :8080.
run: build
	./$(BIN) -addr :8080

# make test: vet, the whole suite under the race detector, then every fuzz target briefly.
test: vet unit fuzz-smoke

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz-smoke:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# make fuzz: every fuzz target for longer (FUZZTIME=2m make fuzz for a deeper run).
fuzz: FUZZTIME = 60s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(COUNT) ./planner/ ./runner/ ./transport/... ./metrics/

# make load: the standard scenarios (cmd/batchload/README.md) through the real binary, with the client baselines.
load: build
	./bin/batchload -scenario all -batchd $(BIN) -format markdown

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# make soak: the bounded soak test (SOAK=60s; SOAK_CLIENTS=32): 50-step mixed batches through the real service in proxy
# mode against a loopback upstream; asserts no lost result and no leak, prints batches/s, p50/p99 and peak RSS.
SOAK         ?= 60s
SOAK_CLIENTS ?= 32
soak:
	BATCHD_SOAK=$(SOAK) BATCHD_SOAK_CLIENTS=$(SOAK_CLIENTS) $(GO) test -run '^TestSoak$$' -count=1 -v -timeout 15m ./cmd/batchd

# make image: the container image, tagged with the version; make compose: batchd, Prometheus and Grafana.
image:
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t batchd:$(VERSION) .

compose:
	VERSION=$(VERSION) REVISION=$(REVISION) docker compose -f deploy/docker-compose.yml up --build

clean:
	rm -rf bin
