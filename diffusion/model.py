"""A DiT-style denoiser for the 8x8 scikit-learn digits, its DDPM schedule and DDIM sampler.

One forward pass serves numpy (evaluation, calibration: float32, no JAX) and jax.numpy (training): the
array module is a parameter. Parameters are a flat dict keyed by their safetensors names, linear weights
stored PyTorch-style [out, in]. Every linear layer goes through one function that can call a hook
`hook(layer, x, t) -> None | x'` with the layer's input (named like its weight without `.weight`), so the
same forward captures calibration data and can simulate activation quantization (return a modified input).
"""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

F32 = np.float32
FREQ_DIM = 256  # sinusoidal timestep features (as DiT)

# config.json of the trained model (train.py fills in the sizes); diffusers-like keys.
CONFIG = {
    "_class_name": "DiTTransformer2DModel",
    "model_type": "dit",
    "sample_size": 8,
    "patch_size": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 4,
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "mlp_ratio": 4,
    "norm_eps": 1e-6,
    "activation_fn": "gelu-approximate",
    "frequency_embedding_size": FREQ_DIM,
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "timestep_spacing": "trailing",
}


# ---------------------------------------------------------------- safetensors (F32 only)

def save_safetensors(path, tensors, metadata=None):
    header, off = {}, 0
    names = sorted(tensors)
    for n in names:
        a = np.ascontiguousarray(tensors[n], dtype="<f4")
        header[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for n in names:
            f.write(np.ascontiguousarray(tensors[n], dtype="<f4").tobytes())


def load_safetensors(path):
    """{name: float32 array} from a safetensors file (F32, F16 or BF16)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "F32":
            x = np.frombuffer(raw, "<f4")
        elif info["dtype"] == "F16":
            x = np.frombuffer(raw, "<f2").astype(F32)
        elif info["dtype"] == "BF16":
            x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(F32)
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {info['dtype']} not supported")
        out[name] = x.reshape(info["shape"]).astype(F32)
    return out


# ---------------------------------------------------------------- model

def hidden_size(cfg):
    return cfg["num_attention_heads"] * cfg["attention_head_dim"]


def linear_layers(cfg):
    """Names of every linear layer, in forward order (the calibration `layer` names)."""
    names = ["pos_embed.proj", "time_embed.linear_1", "time_embed.linear_2"]
    for i in range(cfg["num_layers"]):
        b = f"transformer_blocks.{i}."
        names += [b + "adaLN_modulation.linear", b + "attn.to_q", b + "attn.to_k", b + "attn.to_v",
                  b + "attn.to_out.0", b + "ff.net.0.proj", b + "ff.net.2"]
    return names + ["norm_out.adaLN_modulation.linear", "proj_out"]


def layer_shapes(cfg):
    """{layer: (out, in)} of every linear layer."""
    d, p, c = hidden_size(cfg), cfg["patch_size"], cfg["in_channels"]
    f = d * cfg["mlp_ratio"]
    s = {"pos_embed.proj": (d, p * p * c), "time_embed.linear_1": (d, cfg["frequency_embedding_size"]),
         "time_embed.linear_2": (d, d), "norm_out.adaLN_modulation.linear": (2 * d, d),
         "proj_out": (p * p * cfg["out_channels"], d)}
    for i in range(cfg["num_layers"]):
        b = f"transformer_blocks.{i}."
        s.update({b + "adaLN_modulation.linear": (6 * d, d), b + "attn.to_q": (d, d), b + "attn.to_k": (d, d),
                  b + "attn.to_v": (d, d), b + "attn.to_out.0": (d, d), b + "ff.net.0.proj": (f, d),
                  b + "ff.net.2": (d, f)})
    return s


def pos_embed_2d(dim, grid):
    """Fixed 2-D sin-cos position embedding [grid*grid, dim] (as DiT), float32."""
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gy, gx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    return np.concatenate([one(dim // 2, gy.ravel()), one(dim // 2, gx.ravel())], axis=1).astype(F32)


def timestep_embedding(t, dim, xp=np):
    half = dim // 2
    freqs = xp.exp(F32(-math.log(10000.0)) * xp.arange(half, dtype=F32) / F32(half))
    args = xp.asarray(t, dtype=F32)[:, None] * freqs[None, :]
    return xp.concatenate([xp.cos(args), xp.sin(args)], axis=-1)


def _silu(x, xp):
    return x / (1 + xp.exp(-x))


def _gelu_tanh(x, xp):
    return F32(0.5) * x * (1 + xp.tanh(F32(math.sqrt(2 / math.pi)) * (x + F32(0.044715) * x * x * x)))


def _layernorm(x, eps, xp):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / xp.sqrt(var + F32(eps))


def forward(params, cfg, x, t, hook=None, xp=np):
    """Predicted noise for images x [B, C, H, W] at integer timesteps t [B]. hook(layer, input, t) sees
    each linear layer's input ([B, tokens, in] or [B, in]) and may return a replacement of the same shape."""
    B, C, H, W = x.shape
    P, D, nh = cfg["patch_size"], hidden_size(cfg), cfg["num_attention_heads"]
    g, hd, eps = H // P, cfg["attention_head_dim"], cfg["norm_eps"]

    def linear(name, h):
        if hook is not None:
            r = hook(name, h, t)
            if r is not None:
                h = r
        w = params[name + ".weight"]
        return (h.reshape(-1, w.shape[1]) @ w.T).reshape(*h.shape[:-1], w.shape[0]) + params[name + ".bias"]

    def modulate(h, shift, scale):
        return _layernorm(h, eps, xp) * (1 + scale[:, None, :]) + shift[:, None, :]

    tokens = x.reshape(B, C, g, P, g, P).transpose(0, 2, 4, 3, 5, 1).reshape(B, g * g, P * P * C)
    h = linear("pos_embed.proj", tokens) + xp.asarray(pos_embed_2d(D, g))[None]
    temb = timestep_embedding(t, cfg["frequency_embedding_size"], xp)
    c = _silu(linear("time_embed.linear_2", _silu(linear("time_embed.linear_1", temb), xp)), xp)
    scale_qk = F32(1 / math.sqrt(hd))
    for i in range(cfg["num_layers"]):
        b = f"transformer_blocks.{i}."
        m = linear(b + "adaLN_modulation.linear", c)
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, k * D:(k + 1) * D] for k in range(6))
        a = modulate(h, sh1, sc1)
        q, k, v = (linear(b + "attn.to_" + n, a).reshape(B, g * g, nh, hd).transpose(0, 2, 1, 3) for n in "qkv")
        s = (q @ k.transpose(0, 1, 3, 2)) * scale_qk  # [B, heads, tokens, tokens]
        s = xp.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        o = (s @ v).transpose(0, 2, 1, 3).reshape(B, g * g, D)
        h = h + g1[:, None, :] * linear(b + "attn.to_out.0", o)
        f = _gelu_tanh(linear(b + "ff.net.0.proj", modulate(h, sh2, sc2)), xp)
        h = h + g2[:, None, :] * linear(b + "ff.net.2", f)
    m = linear("norm_out.adaLN_modulation.linear", c)
    h = modulate(h, m[:, :D], m[:, D:])
    out = linear("proj_out", h)  # [B, tokens, P*P*C_out]
    co = cfg["out_channels"]
    return out.reshape(B, g, g, P, P, co).transpose(0, 5, 1, 3, 2, 4).reshape(B, co, H, W)


class DiT:
    """The numpy model: config + float32 params. Pass any params dict (e.g. dequantized weights)."""

    def __init__(self, cfg, params):
        self.cfg = cfg
        self.params = {k: np.asarray(v, dtype=F32) for k, v in params.items()}
        want = {n + s for n in linear_layers(cfg) for s in (".weight", ".bias")}
        missing = sorted(want - set(self.params))
        if missing:
            raise ValueError(f"missing parameters: {missing[:5]}")
        self.schedule = Schedule(cfg)

    @classmethod
    def load(cls, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        return cls(cfg, load_safetensors(os.path.join(model_dir, "model.safetensors")))

    def __call__(self, x, t, hook=None):
        t = np.broadcast_to(np.asarray(t), (x.shape[0],))
        return forward(self.params, self.cfg, np.asarray(x, F32), t, hook=hook)


# ---------------------------------------------------------------- DDPM schedule and DDIM sampling

class Schedule:
    def __init__(self, cfg):
        T = cfg["num_train_timesteps"]
        if cfg["beta_schedule"] == "linear":
            betas = np.linspace(cfg["beta_start"], cfg["beta_end"], T, dtype=np.float64)
        elif cfg["beta_schedule"] == "squaredcos_cap_v2":
            f = lambda s: np.cos((s / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
            betas = np.minimum(1 - f(np.arange(1, T + 1)) / f(np.arange(T)), 0.999)
        else:
            raise ValueError(f"beta_schedule {cfg['beta_schedule']!r} not supported")
        self.T = T
        self.alphas_cumprod = np.cumprod(1 - betas)
        self.clip = cfg.get("clip_sample", True)

    def add_noise(self, x0, noise, t):
        ab = self.alphas_cumprod[np.asarray(t)].astype(F32).reshape(-1, 1, 1, 1)
        return np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise

    def ddim_timesteps(self, steps):
        """'trailing' spacing: 999, ..., T/steps - 1 (steps=T gives every timestep)."""
        return (np.round(np.arange(self.T, 0, -self.T / steps)) - 1).astype(np.int64)


def ddim_sample(model, n, steps=50, seed=0, batch=500, hook=None):
    """n deterministic DDIM (eta=0) samples in [-1, 1], [n, C, H, W] float32, from N(0, I) noise of `seed`.
    The predicted x0 is clipped to [-1, 1] and the noise recomputed from it (as diffusers'
    use_clipped_model_output): with the raw noise the trajectory diverges at the low-SNR steps."""
    cfg, sch = model.cfg, model.schedule
    shape = (n, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
    x = np.random.default_rng(seed).standard_normal(shape, dtype=F32)
    ts = sch.ddim_timesteps(steps)
    out = []
    for s in range(0, n, batch):
        xb = x[s:s + batch]
        for i, t in enumerate(ts):
            eps = model(xb, np.full(len(xb), t), hook=hook)
            ab = sch.alphas_cumprod[t]
            ab_prev = sch.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else 1.0
            x0 = (xb - F32(math.sqrt(1 - ab)) * eps) / F32(math.sqrt(ab))
            if sch.clip:  # clip the predicted image and take the noise that matches it
                x0 = np.clip(x0, -1, 1)
                eps = (xb - F32(math.sqrt(ab)) * x0) / F32(math.sqrt(1 - ab))
            xb = F32(math.sqrt(ab_prev)) * x0 + F32(math.sqrt(1 - ab_prev)) * eps
        out.append(xb)
    return np.concatenate(out).astype(F32)
