"""Capture calibration activations from the DiT's DDIM sampling trajectory, in ArrowQuant's calibration format
(docs/FORMAT.md: layer utf8, timestep float64, activation list<float32>; one row per input vector).

A batch of `--seeds` noise images is sampled with DDIM over `--steps` timesteps ('trailing' spacing: 999,
989, ..., 9 at 100 steps; every timestep at 1000); at each call of each linear layer, `--samples-per-call`
of its input vectors (token rows, or sample rows for the time-embedding and adaLN layers) are kept, chosen
at random with a fixed seed.

    python diffusion/calibrate.py --model testdata/dit-digits --out calib.parquet [--seeds 16]
        [--samples-per-call 8] [--steps 100]
"""
import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diffusion.model import DiT, ddim_sample  # noqa: E402


class Capture:
    """A forward hook that keeps k random input vectors of every linear layer per call, with the timestep."""

    def __init__(self, k, seed=0):
        self.k, self.rng = k, np.random.default_rng(seed)
        self.rows = defaultdict(list)  # layer -> [(timestep, [k, in] float32)]

    def __call__(self, layer, x, t):
        v = x.reshape(-1, x.shape[-1])
        pick = np.sort(self.rng.choice(len(v), size=min(self.k, len(v)), replace=False))
        # The call's whole input range travels with its sampled rows (the optional "range" column): a
        # time group's INT8 range then covers every input, not only the k sampled vectors.
        self.rows[layer].append((float(t[0]), v[pick].astype(np.float32), (float(v.min()), float(v.max()))))
        return None  # input unchanged

    def table(self):
        import pyarrow as pa

        layers, steps, values, offsets, ranges = [], [], [], [0], []
        for layer, calls in self.rows.items():
            for t, v, rng in calls:
                layers += [layer] * len(v)
                steps += [t] * len(v)
                values.append(v.ravel())
                offsets += list(offsets[-1] + v.shape[1] * np.arange(1, len(v) + 1))
                ranges += [rng] * len(v)
        act = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(np.concatenate(values), pa.float32()))
        rng = pa.array([list(r) for r in ranges], pa.list_(pa.float32()))
        return pa.table({"layer": pa.array(layers, pa.utf8()), "timestep": pa.array(steps, pa.float64()),
                         "activation": act, "range": rng})


def capture(model, seeds=16, samples_per_call=8, steps=100, seed=0):
    """Run DDIM from `seeds` noise images (noise seed `seed`) and return the calibration pyarrow table."""
    cap = Capture(samples_per_call, seed)
    ddim_sample(model, seeds, steps=steps, seed=seed, batch=seeds, hook=cap)
    return cap.table()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, help=".parquet, or .arrow (Arrow IPC file)")
    ap.add_argument("--seeds", type=int, default=16, help="noise images sampled together (one batch)")
    ap.add_argument("--samples-per-call", type=int, default=8, help="input vectors kept per layer call")
    ap.add_argument("--steps", type=int, default=100, help="DDIM steps over the 1000 training timesteps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tab = capture(DiT.load(args.model), args.seeds, args.samples_per_call, args.steps, args.seed)
    if args.out.endswith(".parquet"):
        import pyarrow.parquet as pq
        pq.write_table(tab, args.out)
    else:
        import pyarrow as pa
        with pa.OSFile(args.out, "wb") as f, pa.ipc.new_file(f, tab.schema) as w:
            w.write_table(tab)
    n_layers = len(set(tab.column("layer").to_pylist()))
    print(f"{args.out}: {tab.num_rows} rows, {n_layers} layers, {args.steps} timesteps, "
          f"{os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
