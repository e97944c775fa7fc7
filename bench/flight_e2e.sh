#!/usr/bin/env bash
# Flight end to end on the real Dream 7B layout: start `arrowquant serve`
# under /usr/bin/time -v, push the generated dream-7b model (15.2 GB BF16)
# with a profile, pull it back, and report push/pull wall time, throughput
# and the CPU time and peak RSS of the server and of the push client. Needs
# ~25 GB of free disk.
#   bash bench/flight_e2e.sh [profile] [workdir]     (defaults: edge, a temp dir)
#   AQ_BIN=/path/to/arrowquant bash bench/flight_e2e.sh ...   (that binary, not built: A/B runs)
#   SERVE_ARGS="--spool-memory-mb 1200" bash bench/flight_e2e.sh ...   (extra serve flags)
# The model is read once before the push, so the page cache holds it. The
# server's store and the pulled copy are removed after the report
# (AQ_E2E_KEEP=1 keeps them): outputs left on disk compete with the model
# for the page cache in later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-edge}
work=${2:-$(mktemp -d -p "${TMPDIR:-/tmp}" aq-flight-e2e-XXXX)}
bin=${AQ_BIN:-./bin/arrowquant}
[ -n "${AQ_BIN:-}" ] || go build -o "$bin" ./cmd/arrowquant
export ARROW_QUANT_NO_PROGRESS=1
if [ ! -f "$work/dream-7b/model.safetensors.index.json" ]; then
  "$bin" gen-model --preset dream-7b --dtype bf16 --output "$work/dream-7b" --seed 1
fi
rm -rf "$work/data" "$work/pulled-$profile"
cat "$work"/dream-7b/*.safetensors >/dev/null
port=$((20000 + RANDOM % 20000))
# shellcheck disable=SC2086
/usr/bin/time -v -o "$work/serve-time.txt" "$bin" --log-level info serve ${SERVE_ARGS:-} --addr 127.0.0.1:$port --data "$work/data" >"$work/serve.log" 2>"$work/serve-log.json" &
server=$!
for _ in $(seq 100); do grep -q serving "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
src_bytes=$(du -cb "$work"/dream-7b/*.safetensors | tail -1 | cut -f1)
echo "load average before the push: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s.%N)
/usr/bin/time -v -o "$work/push-time.txt" "$bin" push --server grpc://127.0.0.1:$port --model "$work/dream-7b" --name dream-7b --profile "$profile" --json >"$work/push-$profile.json"
t1=$(date +%s.%N)
"$bin" pull --server grpc://127.0.0.1:$port --name dream-7b --output "$work/pulled-$profile" >/dev/null
t2=$(date +%s.%N)
pkill -TERM -P $server   # the server is /usr/bin/time's child
wait $server || true
python3 - "$work" "$profile" "$src_bytes" "$t0" "$t1" "$t2" <<'PY'
import json, os, sys
work, profile, src, t0, t1, t2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:])
r = json.load(open(f"{work}/push-{profile}.json"))
art = os.path.getsize(f"{work}/pulled-{profile}/model.arrow")
def usage(path):
    kv = {l.split(":", 1)[0].strip(): l.rsplit(":", 1)[-1].strip() for l in open(path) if ":" in l}
    return float(kv["User time (seconds)"]), float(kv["System time (seconds)"]), int(kv["Maximum resident set size (kbytes)"]) / 1024
su, ss, rss = usage(f"{work}/serve-time.txt")
committed = [json.loads(l) for l in open(f"{work}/serve-log.json") if '"model committed"' in l]
spilled = committed[-1].get("spilled_bytes", 0) if committed else 0
cu, cs, crss = usage(f"{work}/push-time.txt")
print(f"push --profile {profile}: {t1-t0:.1f} s for {src/1e9:.2f} GB of BF16 -> {src/(t1-t0)/1e9:.3f} GB/s (quantization included)")
print(f"pull: {t2-t1:.1f} s for {art/1e9:.2f} GB -> {art/(t2-t1)/1e9:.3f} GB/s")
print(f"server peak RSS: {rss:.0f} MB; server CPU {su:.1f} user + {ss:.1f} sys s (push and pull)")
if "--spool-memory-mb" in os.environ.get("SERVE_ARGS", ""):
    print(f"spool memory: {spilled/1e9:.2f} GB of the upload spilled to files")
print(f"push client: {cu:.1f} user + {cs:.1f} sys s, peak RSS {crss:.0f} MB")
print(f"cosine {r['cosine_similarity']:.4f}, artifact {r['model_size_mb']:.0f} MB, fallbacks {len(r['fallbacks'])}")
PY
[ "${AQ_E2E_KEEP:-}" = 1 ] || rm -rf "$work/data" "$work/pulled-$profile"
echo "(work dir: $work)"
