#!/usr/bin/env python3
"""Wall time of a push through pyarrow (arrow_quant_v2) versus the Go CLI (`arrowquant push`).

    python python/bench/push_bench.py                       # tiny preset, 7 runs each
    python python/bench/push_bench.py --preset dream-7b --runs 1 --dtype bf16   # ~15 GB on disk

Starts one `arrowquant serve` (binary from --bin, ARROW_QUANT_BIN or bin/arrowquant), generates the model with
`arrowquant gen-model`, then times, alternating:
  - py push:      ArrowQuantV2(server=...).push(model)               (upload + server-side quantization)
  - py quantize:  ArrowQuantV2(server=...).quantize_diffusion_model  (push + pull into an output directory)
  - go push:      `arrowquant push --server ... --model ... --name ...` (a process: includes its start-up)
and prints the median and min of each, and the throughput of the source bytes.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from arrow_quant_v2 import ArrowQuantV2  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("ARROW_QUANT_BIN") or str(ROOT / "bin" / "arrowquant"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--model", help="an existing model directory instead of gen-model")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"no binary at {args.bin}: run `make build` or pass --bin")

    work = pathlib.Path(tempfile.mkdtemp(prefix="aq-bench-"))
    srv = None
    try:
        model = args.model
        if not model:
            model = str(work / f"{args.preset}-{args.dtype}")
            subprocess.run([args.bin, "gen-model", "--preset", args.preset, "--dtype", args.dtype, "--out", model,
                            "--seed", "1"], check=True, capture_output=True)
        src_bytes = sum(f.stat().st_size for f in pathlib.Path(model).glob("*.safetensors"))
        srv = subprocess.Popen([args.bin, "serve", "--addr", "127.0.0.1:0", "--data", str(work / "data")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        line = srv.stdout.readline().decode()
        location = line.split("serving Arrow Flight on ")[1].split()[0]
        times = {"py push": [], "py quantize": [], "go push": []}
        with ArrowQuantV2(server=location) as q:
            for i in range(args.runs):
                t = time.perf_counter()
                q.push(model, name=f"py-{i}")
                times["py push"].append(time.perf_counter() - t)

                out = work / f"out-{i}"
                t = time.perf_counter()
                q.quantize_diffusion_model(model, out, keep_on_server=False)
                times["py quantize"].append(time.perf_counter() - t)
                shutil.rmtree(out)

                t = time.perf_counter()
                subprocess.run([args.bin, "push", "--server", location, "--model", model, "--name", f"go-{i}"],
                               check=True, capture_output=True)
                times["go push"].append(time.perf_counter() - t)
                q.delete(f"py-{i}")
                q.delete(f"go-{i}")
        rows = {k: {"median_s": statistics.median(v), "min_s": min(v),
                    "MB_per_s": src_bytes / statistics.median(v) / 1e6} for k, v in times.items()}
        if args.json:
            print(json.dumps({"model": model, "source_bytes": src_bytes, "runs": args.runs, "results": rows}))
        else:
            print(f"model {args.preset} ({args.dtype}), {src_bytes / 2**20:.1f} MiB of tensors, {args.runs} runs, "
                  f"{os.cpu_count()} CPUs")
            for k, r in rows.items():
                print(f"  {k:12s} median {r['median_s'] * 1000:8.1f} ms   min {r['min_s'] * 1000:8.1f} ms   "
                      f"{r['MB_per_s']:8.1f} MB/s")
    finally:
        if srv is not None:
            srv.terminate()
            srv.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
