#!/usr/bin/env bash
# Flight end to end on the S3 store: start the tests' SeaweedFS
# (bench/s3server), `arrowquant serve --store s3://...`, push a generated
# model (default: the Dream 7B layout, 15.2 GB BF16), pull it back, and
# report push/pull wall time and throughput and the server's peak RSS
# (VmHWM). Needs the SeaweedFS binary (bash scripts/seaweedfs.sh) and, for
# dream-7b, ~50 GB of free disk (model, the server's upload spool, the
# artifact in the scratch directory and in SeaweedFS, the pulled copy).
#   bash bench/s3_e2e.sh [preset] [profile] [workdir]   (defaults: dream-7b, edge, a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-dream-7b}
profile=${2:-edge}
work=${3:-$(mktemp -d -p "${TMPDIR:-/tmp}" aq-s3-e2e-XXXX)}
bin=./bin/arrowquant
go build -o "$bin" ./cmd/arrowquant
go build -o ./bin/s3server ./bench/s3server
export ARROW_QUANT_NO_PROGRESS=1
if [ ! -f "$work/$preset/config.json" ]; then
  "$bin" gen-model --preset "$preset" --dtype bf16 --output "$work/$preset" --seed 1
fi
rm -rf "$work/scratch" "$work/pulled-$profile"
mkdir -p "$work/scratch"
# SeaweedFS until this script ends (closing its stdin stops it).
coproc S3 { ./bin/s3server; }
while read -r line <&"${S3[0]}"; do
  [ "$line" = READY ] && break
  export "${line?}"
done
port=$((20000 + RANDOM % 20000))
"$bin" serve --addr 127.0.0.1:$port --store "s3://$AQ_S3_BUCKET/e2e-$$" --s3-path-style --scratch-dir "$work/scratch" \
  --startup-gc 0 >"$work/serve.log" 2>"$work/serve.err" &
server=$!
for _ in $(seq 300); do grep -q serving "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
peak() { awk '/VmHWM/ {print $2}' /proc/$server/status; }
src_bytes=$(du -cb "$work/$preset"/*.safetensors | tail -1 | cut -f1)
t0=$(date +%s.%N)
"$bin" push --server grpc://127.0.0.1:$port --model "$work/$preset" --name "$preset" --profile "$profile" --json >"$work/push-$profile.json"
t1=$(date +%s.%N)
rss_push=$(peak)
"$bin" pull --server grpc://127.0.0.1:$port --name "$preset" --output "$work/pulled-$profile" >/dev/null
t2=$(date +%s.%N)
rss_all=$(peak)
kill -TERM $server
wait $server || true
exec {S3[1]}>&-
wait "$S3_PID" 2>/dev/null || true
python3 - "$work" "$profile" "$src_bytes" "$t0" "$t1" "$t2" "$rss_push" "$rss_all" "$preset" <<'PY'
import json, os, sys
work, profile, src, t0, t1, t2, rss_push, rss_all, preset = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:7]), int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
r = json.load(open(f"{work}/push-{profile}.json"))
art = os.path.getsize(f"{work}/pulled-{profile}/model.arrow")
print(f"{preset} on the S3 store (SeaweedFS on loopback)")
print(f"push --profile {profile}: {t1-t0:.1f} s for {src/1e9:.2f} GB of BF16 -> {src/(t1-t0)/1e9:.3f} GB/s (quantization and S3 upload included)")
print(f"pull: {t2-t1:.1f} s for {art/1e9:.2f} GB -> {art/(t2-t1)/1e9:.3f} GB/s")
print(f"server peak RSS (VmHWM): {rss_push/1024:.0f} MB after the push, {rss_all/1024:.0f} MB after the pull")
print(f"cosine {r['cosine_similarity']:.4f}, artifact {r['model_size_mb']:.0f} MB, fallbacks {len(r['fallbacks'])}")
PY
echo "(work dir: $work)"
