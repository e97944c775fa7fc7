#!/usr/bin/env bash
# make compare: ArrowQuant against llama.cpp, by llama.cpp's own code.
#   (a) bench/compare (Go, -tags llamacpp, cgo + dlopen of libggml-base.so):
#       the data of `make quality` quantized by llama.cpp's ggml_quantize_chunk
#       and by our kernels in the same process, interleaved on one thread;
#       writes the comparison section of docs/QUALITY.md and README's dq sentence.
#   (b), (c) bench/compare/proof.py (the llama.cpp virtualenv): llama.cpp's
#       dequantize_row_* on our exported blocks equals ours bit for bit, and
#       llama.cpp runs an exported tiny Llama against its BF16 GGUF; writes the
#       proof section of docs/GGUF.md.
# LLAMA_VENV selects the llama.cpp virtualenv (default .cache/llama-cpp/venv,
# built by scripts/llamacpp.sh when absent). REPS: timed runs per quantizer.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
BIN=${BIN:-bin/arrowquant}
start=$(date +%s)
py=$(bash scripts/llamacpp.sh)
lib=$("$py" -c 'import llama_cpp, os; print(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))')
desc=$("$py" -c 'import llama_cpp; print("llama.cpp from llama-cpp-python " + llama_cpp.__version__ + " built from source with CMAKE_ARGS=-DGGML_NATIVE=OFF")')
echo "compare: (a) same-run quality and speed against $lib" >&2
CGO_ENABLED=1 "$GO" run -tags llamacpp ./bench/compare -lib "$lib" -llama "$desc" -reps "${REPS:-5}" \
	-out docs/QUALITY.md -readme README.md
echo "compare: (b), (c) llama.cpp's dequantize and inference on our exports" >&2
"$py" bench/compare/proof.py --bin "$BIN" --doc docs/GGUF.md
echo "compare: done in $(($(date +%s) - start)) s; docs/QUALITY.md, docs/GGUF.md and README.md updated" >&2
