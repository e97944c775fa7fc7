# ArrowQuant — see README.md. Every target works on a fresh clone.
GO        ?= go
PYTHON    ?= python3
BIN       := bin/arrowquant
DATA      ?= data
BENCHTIME ?= 1s

.PHONY: all build test gotest pytest lint vet bench bench-e2e run clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/arrowquant

# gofmt check, go vet, the race-enabled Go suite, and the Python suite
# (pyarrow against the real binary; needs: pip install pyarrow numpy pyyaml pytest).
test: lint vet gotest pytest

gotest:
	$(GO) test -race -count=1 ./...

pytest: build
	ARROW_QUANT_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -q python/tests

vet:
	$(GO) vet ./...

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Kernel throughput (GB/s of fp32 input, one core) and pipeline benchmarks.
bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -cpu 1 ./bench/

# End to end on the real Dream 7B layout (15 GB of BF16): wall time and peak RSS.
bench-e2e: build
	bash bench/e2e.sh

# Until the Flight server lands, `make run` generates a tiny demo model and
# quantizes it locally into $(DATA)/.
run: build
	@mkdir -p $(DATA)
	@[ -d $(DATA)/demo-model ] || ./$(BIN) gen-model --preset tiny --out $(DATA)/demo-model
	./$(BIN) quantize --model $(DATA)/demo-model --output $(DATA)/demo-quantized --profile local --overwrite

clean:
	rm -rf bin
