#!/usr/bin/env bash
# End-to-end benchmark on the real Dream 7B layout (339 tensors, 7.6B params,
# 15.2 GB of BF16): generate the model, quantize it with a profile, and report
# wall time, CPU time and peak RSS from /usr/bin/time -v, and the machine's
# load average before the run (other tenants' load moves these figures by
# 15-45% on shared hosts). Needs ~20 GB of free disk.
#   bash bench/e2e.sh [profile] [workdir]      (defaults: edge, a temp dir)
# Extra quantize flags go in AQ_E2E_FLAGS, e.g. AQ_E2E_FLAGS="--method dq".
# The quantized output is removed after the report (AQ_E2E_KEEP=1 keeps it):
# outputs left on disk compete with the model for the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-edge}
work=${2:-$(mktemp -d -p "${TMPDIR:-/tmp}" aq-e2e-XXXX)}
bin=./bin/arrowquant
[ -x "$bin" ] || go build -o "$bin" ./cmd/arrowquant
if ! command -v /usr/bin/time >/dev/null; then
  echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1
fi
export ARROW_QUANT_NO_PROGRESS=1
if [ ! -f "$work/dream-7b/model.safetensors.index.json" ]; then
  echo "== gen-model --preset dream-7b (bf16) into $work/dream-7b"
  /usr/bin/time -f "gen-model: wall %e s, peak RSS %M KB" "$bin" gen-model --preset dream-7b --dtype bf16 --output "$work/dream-7b" --seed 1
fi
# Read the model once, so the page cache holds it (as in flight_e2e.sh). On a
# machine with little more memory than the model, outputs of earlier runs left
# on disk compete for the cache: remove them, or the run re-reads the model.
cat "$work"/dream-7b/*.safetensors >/dev/null
flags=${AQ_E2E_FLAGS:-}
label=$profile$(echo "$flags" | tr -cs 'a-zA-Z0-9' '-' | sed 's/-*$//')
rm -rf "$work/q-$label"   # no earlier output next to the new one during the run
echo "== quantize --profile $profile $flags (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
# shellcheck disable=SC2086
/usr/bin/time -v "$bin" quantize --model "$work/dream-7b" --output "$work/q-$label" --profile "$profile" $flags --overwrite --json \
  >"$work/result-$label.json" 2>"$work/time-$label.txt" || { cat "$work/time-$label.txt"; exit 1; }
grep -E "Elapsed \(wall|User time|System time|Maximum resident" "$work/time-$label.txt"
python3 - "$work/result-$label.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"tensors {r['num_tensors']}, params {r['num_params']:,}, source {r['source_bytes']/1e9:.2f} GB")
print(f"artifact {r['model_size_mb']:.1f} MB, {r['bits_per_weight']:.3f} bits/weight, compression {r['compression_ratio']:.2f}x ({r['compression_basis']})")
print(f"cosine mean {r['cosine_similarity']:.4f} min {r['min_cosine_similarity']:.4f}; fallback: {r['fallback_reason']}")
print(f"quantization_time_s {r['quantization_time_s']:.1f}")
eq = r.get("equalization") or {}
print(f"method {r['method']}; spatial: {r['spatial'].get('reason', 'off')}")
if eq.get("pairs"):
    print(f"equalized {len(eq['pairs'])} of {eq['considered']} layer pairs")
PY
[ "${AQ_E2E_KEEP:-}" = 1 ] || rm -rf "$work/q-$label"
echo "(work dir: $work; remove it when done)"
