#!/usr/bin/env bash
# GGUF export of the real Dream 7B layout (339 tensors, 7.6B params): generate
# the model (15.2 GB of BF16), quantize it (default: --method dq, INT4), then
# export with /usr/bin/time -v: wall time, peak RSS, the export summary, and a
# check of the file with llama.cpp's gguf-py (header, types, one tensor
# dequantized against `arrowquant dequantize`-equivalent values from the
# export report). Needs ~25 GB of free disk.
#   bash bench/gguf_e2e.sh [workdir]      (default: a temp dir; reused if it holds the model)
# Quantize flags go in AQ_GGUF_FLAGS (default "--method dq --bit-width 4"),
# export flags in AQ_GGUF_EXPORT_FLAGS (default "--exact").
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d -p "${TMPDIR:-/tmp}" aq-gguf-XXXX)}
bin=./bin/arrowquant
go build -o "$bin" ./cmd/arrowquant
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
export ARROW_QUANT_NO_PROGRESS=1
if [ ! -f "$work/dream-7b/model.safetensors.index.json" ]; then
  echo "== gen-model --preset dream-7b (bf16) into $work/dream-7b"
  /usr/bin/time -f "gen-model: wall %e s, peak RSS %M KB" "$bin" gen-model --preset dream-7b --dtype bf16 --out "$work/dream-7b" --seed 1
fi
flags=${AQ_GGUF_FLAGS:---method dq --bit-width 4}
xflags=${AQ_GGUF_EXPORT_FLAGS:---exact}
label=$(echo "$flags" | tr -cs 'a-zA-Z0-9' '-' | sed 's/^-*//; s/-*$//')
if [ ! -f "$work/q-$label/model.arrow" ]; then
  echo "== quantize $flags"
  # shellcheck disable=SC2086
  /usr/bin/time -f "quantize: wall %e s, peak RSS %M KB" "$bin" quantize --model "$work/dream-7b" --output "$work/q-$label" \
    --spatial=false $flags --overwrite --json >"$work/result-$label.json"
fi
echo "== export --format gguf $xflags"
sync
# shellcheck disable=SC2086
/usr/bin/time -v "$bin" export --input "$work/q-$label" --format gguf --output "$work/$label.gguf" --overwrite $xflags \
  >"$work/export-$label.txt" 2>"$work/export-time-$label.txt" || { cat "$work/export-time-$label.txt"; exit 1; }
cat "$work/export-$label.txt"
grep -E "Elapsed \(wall|Maximum resident|Percent of CPU" "$work/export-time-$label.txt"
ls -l "$work/q-$label/model.arrow" "$work/$label.gguf"
python3 - "$work/$label.gguf" <<'PY'
import json, sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
rep = json.load(open(sys.argv[1] + ".report.json"))
assert [t.name for t in r.tensors] == [t["gguf_name"] for t in rep["tensors"]]
assert all(t.tensor_type.name == e["gguf_type"] and [int(x) for x in t.shape] == e["ne"] for t, e in zip(r.tensors, rep["tensors"]))
types = {}
for t in r.tensors:
    types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
print(f"gguf-py: {len(r.tensors)} tensors {types}, general.architecture {r.fields['general.architecture'].contents()}")
print(f"exact {rep['exact_tensors']}, re-encoded {rep['reencoded_tensors']}, {rep['bits_per_weight']:.3f} bits/weight, export time_s {rep['time_s']:.1f}")
PY
echo "(work dir: $work; remove it when done)"
