#!/usr/bin/env bash
# The llama.cpp that `make compare` measures against, in a project-local
# virtualenv (LLAMA_VENV, default .cache/llama-cpp/venv, ignored by git):
# llama-cpp-python built from its source distribution on PyPI with
# CMAKE_ARGS=-DGGML_NATIVE=OFF (the portable build a default
# `llama-quantize` is), plus llama.cpp's gguf-py and numpy. Built once when
# absent (about 15-20 minutes on 2 cores; needs cmake and a C++ compiler),
# reused when present. Prints the virtualenv's python.
#   LLAMA_VENV=.cache/llama-cpp/venv PYTHON=python3 bash scripts/llamacpp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pyvenv.sh
VENV=${LLAMA_VENV:-.cache/llama-cpp/venv}
PYTHON=${PYTHON:-python3}
PY="$VENV/bin/python"
LLAMA_CPP_PYTHON=0.3.36
GGUF=0.19.0
have() {
	"$PY" - "$LLAMA_CPP_PYTHON" "$GGUF" <<'PYEOF' 2>/dev/null
import importlib.metadata as m, sys
import llama_cpp, gguf, numpy  # noqa: F401
sys.exit(0 if (m.version("llama-cpp-python"), m.version("gguf")) == tuple(sys.argv[1:3]) else 1)
PYEOF
}
if [ -x "$PY" ] && have; then
	echo "$PY"
	exit 0
fi
for tool in cmake c++; do
	command -v "$tool" >/dev/null || { echo "llamacpp: building llama.cpp needs $tool" >&2; exit 1; }
done
log="$(dirname "$VENV")/build.log"
mkdir -p "$(dirname "$VENV")"
echo "llamacpp: building llama.cpp (llama-cpp-python $LLAMA_CPP_PYTHON from its source distribution, CMAKE_ARGS=-DGGML_NATIVE=OFF) into $VENV" >&2
echo "llamacpp: this takes about 15-20 minutes on 2 free cores (33 min measured on a busy shared 2-core machine), once; log in $log" >&2
start=$(date +%s)
make_venv "$VENV" "$PYTHON"
"$PY" -m pip install --quiet --disable-pip-version-check numpy "gguf==$GGUF" >&2
# --no-binary and --no-cache-dir: built here with these flags, never a cached or prebuilt wheel.
if ! CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
	"$PY" -m pip install --disable-pip-version-check --progress-bar off --no-cache-dir \
	--no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON" >"$log" 2>&1; then
	tail -30 "$log" >&2
	echo "llamacpp: the build failed; see $log" >&2
	exit 1
fi
have || { echo "llamacpp: built, but llama_cpp / gguf do not import; see $log" >&2; exit 1; }
echo "llamacpp: built in $(($(date +%s) - start)) s" >&2
echo "$PY"
