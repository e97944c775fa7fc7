# ArrowQuant — see README.md. Every target works on a fresh clone.
GO        ?= go
PYTHON    ?= python3
BIN       := bin/arrowquant
DATA      ?= data
BENCHTIME ?= 1s

.PHONY: all build test gotest arm64test pytest pydeps readme-test lint vet bench bench-e2e bench-flight run clean quality compare \
	fuzz diffusion-venv diffusion-model diffusion-report diffusion-eval bench-s3 seaweedfs

all: build

# The commit goes into `arrowquant --version` (+dirty with local changes).
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty)
build:
	$(GO) build -ldflags "-X main.commit=$(COMMIT)" -o $(BIN) ./cmd/arrowquant

# gofmt check, go vet, the race-enabled Go suite, the kernel and quant
# tests on arm64 under qemu (NEON and pure Go), and the Python suite
# (pyarrow against the real binary, in .venv).
test: lint vet gotest arm64test pytest readme-test

# The S3 store and cluster tests run a real SeaweedFS (built once into
# .cache/seaweedfs by scripts/seaweedfs.sh) and the arrowquant binary.
gotest: build seaweedfs
	ARROW_QUANT_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 ./...

# SeaweedFS, the S3 server of the tests (Apache-2.0), built once from the
# Go module proxy into .cache/seaweedfs/bin/weed.
seaweedfs:
	@bash scripts/seaweedfs.sh >/dev/null

# The Python suite runs in the project-local virtualenv .venv (created and
# kept in step with python/test-requirements.txt by scripts/venv.sh; the
# system interpreter is never touched).
VENV ?= .venv
VENV_PY = $(VENV)/bin/python
pydeps:
	@VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/venv.sh >/dev/null

pytest: build pydeps
	ARROW_QUANT_BIN=$(CURDIR)/$(BIN) $(VENV_PY) -m pytest -q -o faulthandler_timeout=300 python/tests

# The README's bash blocks, run as written in a temporary copy of the repo.
readme-test: build
	bash scripts/readme_test.sh

vet:
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./kernels/... ./internal/fp

# kernels/... and quant's short tests cross-compiled for arm64 and run under
# qemu-aarch64-static (installed with apt-get when missing), once with the
# NEON kernels and once with -tags purego.
arm64test:
	bash scripts/arm64_test.sh

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }

# Every Go fuzz target for FUZZTIME each (CI: 30s on the seed corpus);
# prints executions and new corpus entries per target.
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# Kernel throughput (GB/s of fp32 input, one core) and pipeline benchmarks;
# bench/pipes: the clock and the vector pipes each instruction kind uses.
bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -cpu 1 ./bench/ ./bench/pipes/

# Quality of every quantization method (cosine, rel MSE, bits/weight, GB/s on
# one core) on synthetic weights; regenerates docs/QUALITY.md.
quality:
	$(GO) run ./bench/quality -out docs/QUALITY.md

# ArrowQuant against llama.cpp, by llama.cpp's own code (not part of `make test`
# or CI): same-run quality and speed on the data of `make quality` (the
# comparison section of docs/QUALITY.md, README's dq figures), llama.cpp's
# dequantization of our GGUF exports bit for bit and llama.cpp running them
# (the proof section of docs/GGUF.md). The first run builds llama.cpp into
# $(LLAMA_VENV) (about 15-20 minutes on 2 cores); later runs take about 2.
LLAMA_VENV ?= .cache/llama-cpp/venv
compare: build
	LLAMA_VENV=$(LLAMA_VENV) PYTHON=$(PYTHON) GO=$(GO) BIN=$(BIN) bash bench/compare/run.sh

# End to end on the real Dream 7B layout (15 GB of BF16): wall time and peak RSS.
bench-e2e: build
	bash bench/e2e.sh

# The Flight server on localhost with the embedded local store in $(DATA)/.
ADDR ?= 127.0.0.1:8815
# Flight on the Dream 7B layout: push/pull throughput and the server's peak RSS.
bench-flight: build
	bash bench/flight_e2e.sh

# The S3 store against the local store on loopback (SeaweedFS of the tests):
# DoPut+quantize, DoGet, 8 concurrent pulls from one or two servers, raw GETs.
# bash bench/s3_e2e.sh pushes the Dream 7B layout into S3 (peak RSS).
bench-s3: seaweedfs
	$(GO) test -run '^$$' -bench . -benchtime $(S3BENCHTIME) ./bench/s3bench/
S3BENCHTIME ?= 5x

run: build
	./$(BIN) serve --addr $(ADDR) --data $(DATA) --log-level info

# The digits DiT (diffusion/README.md): train it with JAX on CPU in a project-local virtualenv and write
# the Hugging Face-style checkpoint (committed as testdata/dit-digits, so tests never train), then report
# its sample quality (Fréchet distance, classifier confidence) with the numpy forward.
DIFFUSION_VENV ?= .venv-diffusion
DIFFUSION_OUT  ?= testdata/dit-digits
DIFFUSION_PY   := $(DIFFUSION_VENV)/bin/python
DIFFUSION_DEPS := "jax[cpu]==0.10.2" scikit-learn==1.9.1 numpy==2.4.6 pyarrow==26.0.1
diffusion-venv: $(DIFFUSION_VENV)/.installed
$(DIFFUSION_VENV)/.installed:
	$(PYTHON) -m venv $(DIFFUSION_VENV)
	$(DIFFUSION_PY) -m pip install --quiet --disable-pip-version-check $(DIFFUSION_DEPS)
	touch $@

diffusion-model: diffusion-venv
	$(DIFFUSION_PY) diffusion/train.py --out $(DIFFUSION_OUT)

# Quantized digits DiT through the real Flight path: W/A settings, time groups vs one range, weighting and
# timestep-layer protection, per-timestep SQNR and sample quality -> docs/DIFFUSION.md (29 min wall on 2 cores).
diffusion-eval: build pydeps
	ARROW_QUANT_BIN=$(CURDIR)/$(BIN) $(VENV_PY) diffusion/eval_quant.py --model testdata/dit-digits --out docs/DIFFUSION.md

diffusion-report: diffusion-venv
	$(DIFFUSION_PY) diffusion/evaluate.py --model $(DIFFUSION_OUT) --samples 1000 --steps 50 \
		--grid $(DIFFUSION_OUT)/samples.png

clean:
	rm -rf bin $(VENV)
