"""Train the DiT denoiser on the digits as a DDPM (epsilon prediction, MSE, AdamW, EMA) with JAX on CPU and
write a Hugging Face-style directory: config.json, model.safetensors (EMA weights, F32, [out, in] linears),
jax_reference.npz (inputs and JAX outputs for the numpy forward's test) and README.md (provenance).

    python diffusion/train.py --out DIR [--steps N] [--seed S]
"""
import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from diffusion import model as M  # noqa: E402
from diffusion.data import digits  # noqa: E402


def init_params(cfg, key):
    """DiT init: xavier-uniform linears, N(0, 0.02) time MLP, zero adaLN and output (adaLN-Zero)."""
    p = {}
    for i, (name, (o, n)) in enumerate(sorted(M.layer_shapes(cfg).items())):
        k = jax.random.fold_in(key, i)
        if "adaLN_modulation" in name or name == "proj_out":
            w = jnp.zeros((o, n))
        elif name.startswith("time_embed"):
            w = 0.02 * jax.random.normal(k, (o, n))
        else:
            lim = math.sqrt(6 / (n + o))
            w = jax.random.uniform(k, (o, n), minval=-lim, maxval=lim)
        p[name + ".weight"], p[name + ".bias"] = w.astype(jnp.float32), jnp.zeros((o,), jnp.float32)
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=M.CONFIG["num_layers"])
    ap.add_argument("--heads", type=int, default=M.CONFIG["num_attention_heads"])
    ap.add_argument("--head-dim", type=int, default=M.CONFIG["attention_head_dim"])
    ap.add_argument("--patch", type=int, default=M.CONFIG["patch_size"])
    ap.add_argument("--beta-schedule", default=M.CONFIG["beta_schedule"], choices=["linear", "squaredcos_cap_v2"])
    args = ap.parse_args()

    cfg = dict(M.CONFIG, num_layers=args.layers, num_attention_heads=args.heads,
               attention_head_dim=args.head_dim, patch_size=args.patch, beta_schedule=args.beta_schedule)
    sch = M.Schedule(cfg)
    train_x, _, _, _ = digits()
    data = jnp.asarray(train_x)
    ab_all = jnp.asarray(sch.alphas_cumprod, jnp.float32)
    key = jax.random.PRNGKey(args.seed)
    params = init_params(cfg, jax.random.fold_in(key, 1))
    n_params = sum(int(v.size) for v in params.values())
    decay = {k: k.endswith(".weight") for k in params}  # no weight decay on biases

    def loss_fn(p, x0, t, noise):
        ab = ab_all[t][:, None, None, None]
        xt = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise
        return jnp.mean((M.forward(p, cfg, xt, t, xp=jnp) - noise) ** 2)

    def lr_at(i):  # linear warmup, cosine decay to 0
        warm = jnp.minimum(1.0, (i + 1) / args.warmup)
        return args.lr * warm * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(i / args.steps, 1.0)))

    @jax.jit
    def step(state, i):
        p, m, v, ema = state
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 1000 + i), 3)
        x0 = data[jax.random.randint(k1, (args.batch,), 0, data.shape[0])]
        t = jax.random.randint(k2, (args.batch,), 0, sch.T)
        loss, g = jax.value_and_grad(loss_fn)(p, x0, t, jax.random.normal(k3, x0.shape))
        gn = jnp.sqrt(sum(jnp.sum(x * x) for x in g.values()))
        clip = jnp.minimum(1.0, 1.0 / (gn + 1e-6))  # global-norm clipping at 1
        lr, b1, b2 = lr_at(i), 0.9, 0.999
        c1, c2 = 1 - b1 ** (i + 1.0), 1 - b2 ** (i + 1.0)
        np_, nm, nv, ne = {}, {}, {}, {}
        for k in p:
            gk = g[k] * clip
            nm[k] = b1 * m[k] + (1 - b1) * gk
            nv[k] = b2 * v[k] + (1 - b2) * gk * gk
            upd = (nm[k] / c1) / (jnp.sqrt(nv[k] / c2) + 1e-8)
            if decay[k]:
                upd = upd + args.weight_decay * p[k]
            np_[k] = p[k] - lr * upd
            ne[k] = args.ema * ema[k] + (1 - args.ema) * np_[k]
        return (np_, nm, nv, ne), loss

    zeros = {k: jnp.zeros_like(x) for k, x in params.items()}
    state = (params, zeros, dict(zeros), dict(params))
    load0 = os.getloadavg()
    print(f"{n_params:,} params; {args.steps} steps of batch {args.batch}; load {load0[0]:.2f}", flush=True)
    t0 = time.time()
    losses = []
    for i in range(args.steps):
        state, loss = step(state, jnp.asarray(i, jnp.int32))
        losses.append(loss)
        if (i + 1) % 500 == 0 or i + 1 == args.steps:
            recent = float(np.mean(np.asarray(jax.device_get(losses[-500:]))))
            print(f"step {i + 1}: loss {recent:.4f} ({time.time() - t0:.0f} s)", flush=True)
    losses = np.asarray(jax.device_get(losses))
    train_s = time.time() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    load1 = os.getloadavg()
    ema = {k: np.asarray(v, np.float32) for k, v in state[3].items()}

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    M.save_safetensors(os.path.join(args.out, "model.safetensors"), ema, {"format": "pt"})

    # Reference outputs of the JAX forward (EMA weights) for the numpy forward's test.
    rng = np.random.default_rng(123)
    rx = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    rt = np.array([0, 1, 50, 250, 500, 750, 998, 999], np.int64)
    ry = np.asarray(jax.jit(lambda p, x, t: M.forward(p, cfg, x, t, xp=jnp))(ema, rx, rt))
    np.savez(os.path.join(args.out, "jax_reference.npz"), x=rx, t=rt, eps=ry)

    final = float(losses[-500:].mean())
    versions = {"python": platform.python_version(), "jax": jax.__version__,
                "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "", "numpy": np.__version__}
    try:
        import sklearn
        versions["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = ""
    prov = {"command": "python diffusion/train.py " + " ".join(sys.argv[1:]), "git_commit": commit,
            "seed": args.seed, "params": n_params, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "weight_decay": args.weight_decay, "ema": args.ema, "warmup": args.warmup,
            "train_seconds": round(train_s, 1), "process_cpu_seconds": round(ru.ru_utime + ru.ru_stime, 1),
            "load_avg_1min_start_end": [round(load0[0], 2), round(load1[0], 2)],
            "cpus": os.cpu_count(), "final_loss_last500": round(final, 5),
            "loss_first500": round(float(losses[:500].mean()), 5), "versions": versions,
            "platform": platform.platform()}
    with open(os.path.join(args.out, "provenance.json"), "w") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()
