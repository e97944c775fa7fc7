"""Quantized digits DiT, through the real path: the checkpoint is pushed over Arrow Flight to an `arrowquant
serve` (the Python package's embedded server) with calibration data captured from the FP model, pulled back,
dequantized with `arrow_quant_v2.artifact.dequantize`, and its activations quantized at run time with the
artifact's own per-layer, per-time-group INT8 parameters (`arrow_quant_v2.activation_quantizer`).

For each weight setting (W16/W8/W4/W2, dq INT4/INT2) and activation setting (A16, or A8 with (a) one range over
all timesteps, num_time_groups 1; (b) per time group, 5/10/20; (c) per timestep, one group per sampler
timestep), it measures the denoiser's per-timestep output SQNR against FP on held-out noised digits, and the
quality of DDIM samples: Fréchet distance in a digits classifier's features and its confidence. Then the
mechanisms one at a time: time groups vs one range for the activation params; per-time-group vs pooled
importance weighting of the weight search; timestep-conditioned layers kept at >= 8 bits vs quantized.

    python diffusion/eval_quant.py --model testdata/dit-digits --out docs/DIFFUSION.md [--samples 1000]
        [--steps 50] [--quick]

--quick (what CI runs) takes fewer samples, images and settings.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from diffusion.calibrate import capture  # noqa: E402
from diffusion.evaluate import DigitsClassifier, denoiser_sqnr, sample_quality  # noqa: E402
from diffusion.model import DiT, ddim_sample  # noqa: E402


def quantize(q, model_dir, out, cfg, calib, method=None):
    """Push model_dir with cfg and calibration over Flight, pull it into out; the result dict."""
    return q.quantize_diffusion_model(model_dir, out, cfg, calibration=calib, method=method, overwrite=True,
                                      force=True)


def weights_of(out):
    import arrow_quant_v2 as aq
    return aq.dequantize(out)


def eval_setting(fp, model, hook, images, eval_t, clf, samples, steps):
    """Per-timestep SQNR vs fp (mean, min over eval_t) and sample quality."""
    mod = (lambda x, t: model(x, t, hook=hook)) if hook else model
    sq = denoiser_sqnr(fp, mod, images, eval_t)
    v = np.array(list(sq.values()))
    res = {"sqnr_mean": float(v.mean()), "sqnr_min": float(v.min()), "sqnr": {int(k): round(float(s), 2) for k, s in sq.items()}}
    if samples:
        x = ddim_sample(model, samples, steps=steps, seed=0, hook=hook)
        res.update(sample_quality(clf, x))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="testdata/dit-digits")
    ap.add_argument("--out", help="write the report (markdown) here; JSON goes next to it")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of sampling and of the per-timestep SQNR")
    ap.add_argument("--images", type=int, default=256, help="held-out images noised for the per-timestep SQNR")
    ap.add_argument("--calib-seeds", type=int, default=64, help="noise seeds of the calibration trajectories")
    ap.add_argument("--calib-per-call", type=int, default=16, help="input vectors kept per layer per call")
    ap.add_argument("--quick", action="store_true", help="CI: fewer samples, images and settings")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.steps, args.images, args.calib_seeds, args.calib_per_call = 128, 20, 64, 32, 8

    from threadpoolctl import threadpool_limits

    import arrow_quant_v2 as aq

    t_start, c_start = time.time(), time.process_time()
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp, aq.ArrowQuantV2() as q:
        fp = DiT.load(args.model)
        clf = DigitsClassifier()
        images = clf.test_x[:args.images]
        eval_t = fp.schedule.ddim_timesteps(args.steps)
        # Calibration over the sampler's own timesteps (trailing spacing), so per-timestep params exist.
        calib = os.path.join(tmp, "calib.parquet")
        import pyarrow.parquet as pq
        pq.write_table(capture(fp, seeds=args.calib_seeds, samples_per_call=args.calib_per_call, steps=args.steps),
                       calib)
        runs = {}

        def run(name, cfg, method=None, act_groups=None, weights_from=None, quantized=True, weigh=True, samples=True):
            """Quantize (with the calibration data when weigh) and evaluate the weights (or those of the run
            weights_from names), with A8 params from an artifact quantized with act_groups time groups (None:
            A16)."""
            if not isinstance(cfg, dict):
                cfg = cfg.to_dict()
            out = os.path.join(tmp, name)
            res = quantize(q, args.model, out, cfg, calib if weigh else None, method)
            params = weights_of(out if weights_from is None else runs[weights_from]["out"])
            model = DiT(fp.cfg, params) if quantized else fp
            hook = None
            if act_groups is not None:
                aout = os.path.join(tmp, f"{name}-act{act_groups}")
                quantize(q, args.model, aout, dict(cfg, num_time_groups=act_groups, bit_width=8), calib)
                hook = aq.activation_quantizer(aout)
            r = eval_setting(fp, model, hook, images, eval_t, clf, args.samples if samples else 0, args.steps)
            r.update(out=out, weight_bits=res["actual_bit_width"], bits_per_weight=res["bits_per_weight"],
                     fallbacks=len(res["fallbacks"]), cosine=res["cosine_similarity"], time_aware=res["time_aware"],
                     protected=(res.get("time_groups") or {}).get("protected_layers", []))
            runs[name] = r
            print(f"{name:34s} SQNR {r['sqnr_mean']:6.2f} (min {r['sqnr_min']:6.2f})"
                  + (f"  Fréchet {r['frechet']:.3f} conf {r['confidence']:.3f}" if "frechet" in r else ""), flush=True)

        base = {"enable_spatial": False, "min_accuracy": 0.0}
        T = len(eval_t)
        run("FP", dict(base, bit_width=8), quantized=False)
        groups_b = (10,) if args.quick else (5, 10, 20)
        sampled = (1, 10, T)  # samples for these groups; the per-timestep SQNR for every G
        for G in (1, *groups_b, T):
            run(f"W16A8 G={G}", dict(base, bit_width=8), act_groups=G, quantized=False, samples=G in sampled)
        run("W8A16", dict(base, bit_width=8))
        run("W4A16", dict(base, bit_width=4, group_size=128))
        for G in (1, *groups_b, T):
            run(f"W4A8 G={G}", dict(base, bit_width=4, group_size=128), act_groups=G, weights_from="W4A16",
                samples=G in sampled)
        if not args.quick:
            run("W8A8 G=10", dict(base, bit_width=8), act_groups=10, weights_from="W8A16")
            run("W2A16 (edge profile)", aq.DiffusionQuantConfig.from_profile("edge"))
            run("W2A8 G=10", dict(base, bit_width=2), act_groups=10, weights_from="W2A16 (edge profile)")
            run("dq4A16", dict(base, bit_width=4), method="dq")
            run("dq4A8 G=10", dict(base, bit_width=4), act_groups=10, weights_from="dq4A16")
            run("dq2A16", dict(base, bit_width=2), method="dq")
            # Mechanisms one at a time.
            run("W4A16 unweighted", dict(base, bit_width=4, group_size=128), weigh=False)
            run("W4A16 pooled weighting (G=1)", dict(base, bit_width=4, group_size=128, num_time_groups=1))
            run("W4A16 timestep layers at 4 bits", dict(base, bit_width=4, group_size=128, enable_time_aware=False),
                weigh=False)
            run("W4A8 G=10 timestep layers at 4 bits", dict(base, bit_width=4, group_size=128),
                act_groups=10, weights_from="W4A16 timestep layers at 4 bits")
        wall, cpu = time.time() - t_start, time.process_time() - c_start
    meta = {"model": args.model, "samples": args.samples, "steps": args.steps, "images": args.images,
            "calibration": {"seeds": args.calib_seeds, "per_call": args.calib_per_call, "timesteps": T},
            "wall_s": round(wall), "cpu_s": round(cpu), "load_avg_1min": round(os.getloadavg()[0], 1),
            "classifier_test_accuracy": clf.test_accuracy}
    for r in runs.values():
        r.pop("out", None)
    if args.out:
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"meta": meta, "runs": runs}, f, indent=1)
        with open(args.out, "w") as f:
            f.write(report(meta, runs))
    print(json.dumps(meta))
    return runs


def report(meta, runs):
    from diffusion.report import render
    return render(meta, runs)


if __name__ == "__main__":
    main()
