"""ArrowQuant's Flight throughput against a minimal pyarrow Flight server (bench/pyarrow_server.py), same client,
same batches, same run:

- DoPut: the same BF16 record batches (input schema, --gb of values) pushed to the baseline (raw ingest) and to
  `arrowquant serve` (ingest + quantization with --profile, committed to its store); ratio = ours / baseline.
- DoGet: the quantized model streamed by ArrowQuant, and the same bytes (its model.arrow) streamed by the
  baseline from a memory map; ratio = ours / baseline.

Each is the best of --runs (DoGet: --get-runs, as its transfers are short and a shared machine's noise is
large next to them), alternating servers. Prints a JSON summary with the load average.

    python bench/flight_ratio.py [--gb 1] [--runs 3] [--get-runs 10] [--profile local] [--serve-arg=FLAG ...]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE)
    while True:
        line = p.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"{cmd[0]} did not start")
        m = re.search(r"(grpc://\S+)", line)
        if m:
            return p, m.group(1).rstrip(")")


def batches(gb, rows_per_batch=1 << 20):
    """BF16 values as the input schema: tensors of 16M elements, rows of 1M."""
    schema = pa.schema([("name", pa.utf8()), ("shape", pa.list_(pa.int64())), ("dtype", pa.utf8()),
                        ("chunk_offset", pa.int64()), ("values", pa.list_(pa.uint16()))])
    total = int(gb * (1 << 30) / 2)
    per_tensor = 16 << 20
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(rows_per_batch).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    out, done, t = [], 0, 0
    while done < total:
        n = min(per_tensor, total - done)
        for off in range(0, n, rows_per_batch):
            k = min(rows_per_batch, n - off)
            vals = pa.ListArray.from_arrays(pa.array([0, k], pa.int32()), pa.array(pool[:k]))
            out.append(pa.record_batch([pa.array([f"w{t}.weight"]), pa.array([[n // 4096, 4096]], pa.list_(pa.int64())),
                                        pa.array(["BF16"]), pa.array([off], pa.int64()), vals], schema=schema))
        done += n
        t += 1
    return schema, out


def put(location, descriptor, schema, bs):
    c = fl.connect(location)
    t0 = time.perf_counter()
    w, r = c.do_put(descriptor, schema)
    for b in bs:
        w.write_batch(b)
    w.done_writing()
    while r.read() is not None:
        pass
    w.close()
    return time.perf_counter() - t0


def get(location, ticket):
    c = fl.connect(location)
    t0 = time.perf_counter()
    n = 0
    for chunk in c.do_get(ticket):
        n += chunk.data.nbytes
    return time.perf_counter() - t0, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("ARROW_QUANT_BIN") or os.path.join(ROOT, "bin", "arrowquant"))
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--get-runs", type=int, default=10)
    ap.add_argument("--profile", default="local")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="an extra flag of `arrowquant serve` (repeat it: --serve-arg=--spool-memory-mb --serve-arg=1200)")
    args = ap.parse_args()
    schema, bs = batches(args.gb)
    nbytes = sum(b.nbytes for b in bs)
    with tempfile.TemporaryDirectory() as tmp:
        aq, aq_loc = start([args.bin, "serve", "--addr", "127.0.0.1:0", "--data", os.path.join(tmp, "data"),
                            "--exit-on-stdin-eof", *args.serve_arg])
        base, base_loc = start([sys.executable, os.path.join(ROOT, "bench", "pyarrow_server.py")])
        try:
            cfg = {"modality": "text"}
            put_ours, put_base = [], []
            for i in range(args.runs):
                d = fl.FlightDescriptor.for_command(json.dumps({"model": "m", "profile": args.profile, "config": cfg,
                                                                "overwrite": True}))
                put_ours.append(put(aq_loc, d, schema, bs))
                put_base.append(put(base_loc, fl.FlightDescriptor.for_path("m"), schema, bs))
            # DoGet: ours streams the stored model; the baseline the same file from a memory map.
            art = os.path.join(tmp, "out")
            subprocess.run([args.bin, "pull", "--server", aq_loc, "--name", "m", "--output", art], check=True,
                           capture_output=True)
            base.terminate()
            base.wait()
            base, base_loc = start([sys.executable, os.path.join(ROOT, "bench", "pyarrow_server.py"), "--serve",
                                    os.path.join(art, "model.arrow")])
            get_ours, get_base = [], []
            for i in range(args.get_runs):
                get_ours.append(get(aq_loc, fl.Ticket(json.dumps({"model": "m"}).encode())))
                get_base.append(get(base_loc, fl.Ticket(b"m")))
        finally:
            for p in (aq, base):
                p.terminate()
                p.wait()
    gbs = lambda n, s: n / s / 1e9  # noqa: E731
    res = {
        "values_gb": round(nbytes / 1e9, 3), "profile": args.profile, "runs": args.runs, "get_runs": args.get_runs,
        "serve_args": args.serve_arg,
        "doput_gbps": {"arrowquant": round(gbs(nbytes, min(put_ours)), 3), "pyarrow": round(gbs(nbytes, min(put_base)), 3)},
        "doget_gbps": {"arrowquant": round(gbs(get_ours[0][1], min(s for s, _ in get_ours)), 3),
                       "pyarrow": round(gbs(get_base[0][1], min(s for s, _ in get_base)), 3)},
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }
    res["doput_ratio"] = round(res["doput_gbps"]["arrowquant"] / res["doput_gbps"]["pyarrow"], 3)
    res["doget_ratio"] = round(res["doget_gbps"]["arrowquant"] / res["doget_gbps"]["pyarrow"], 3)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
