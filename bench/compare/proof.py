"""llama.cpp's own code on ArrowQuant's GGUF exports (`make compare`, parts b and c).

(b) For exports of the generated tiny models, every exact tensor's blocks, read from the file with gguf-py's
    GGUFReader, go through llama.cpp's dequantize_row_q4_K / q2_K / q4_1 / q8_0 (ctypes on libggml-base.so) and
    must equal `arrowquant dequantize` (float32) bit for bit; re-encoded tensors must have the reported cosine.
    Whether this build's dequantization fuses multiply-adds is checked twice: in the disassembly of the
    dequantize_row_* functions, and on random blocks against an unfused and a fused reference.
(c) llama.cpp (llama_cpp.Llama) runs the exported tiny Llama-family model; its logits on fixed prompts are
    compared with the BF16 GGUF of the same source weights (every tensor kept at 16 bits by
    `quantize --min-accuracy 1`, exported the same way): top-1 agreement and mean KL, asserted within bounds.

Writes the section "llama.cpp-proof" of docs/GGUF.md and prints a summary. Runs in the llama.cpp virtualenv:
    python bench/compare/proof.py --bin bin/arrowquant --doc docs/GGUF.md
"""
import argparse
import ctypes
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gguf
import llama_cpp
import numpy as np

LIB_DIR = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")

# (b): the quantize variants whose exports are checked, on both tiny presets.
VARIANTS = {
    "dq INT4": ["--method", "dq", "--bit-width", "4", "--spatial=false"],
    "dq INT2": ["--method", "dq", "--bit-width", "2", "--spatial=false"],
    "lsq INT4 g32": ["--method", "lsq", "--bit-width", "4", "--group-size", "32", "--spatial=false"],
    "minmax INT4 g32": ["--method", "minmax", "--bit-width", "4", "--group-size", "32", "--spatial=false"],
    "q8_0 INT8": ["--method", "q8_0", "--bit-width", "8", "--group-size", "32", "--spatial=false"],
    "target gguf INT4": ["--target", "gguf", "--bit-width", "4", "--spatial=false"],
    "target gguf INT2": ["--target", "gguf", "--bit-width", "2", "--spatial=false"],
    "target gguf INT8": ["--target", "gguf", "--bit-width", "8", "--spatial=false"],
    "kept at 16 bits": ["--min-accuracy", "1", "--spatial=false"],
}
PRESETS = ["tiny", "tiny-llama"]
DEQUANT = {"Q4_K": "dequantize_row_q4_K", "Q2_K": "dequantize_row_q2_K", "Q4_1": "dequantize_row_q4_1",
           "Q8_0": "dequantize_row_q8_0", "F16": "ggml_fp16_to_fp32_row", "BF16": "ggml_bf16_to_fp32_row"}

# (c): the quantized models run by llama.cpp against the BF16 reference, with the bounds the script asserts
# (measured values with margin, docs/GGUF.md): name -> (quantize flags, min top-1 agreement, max mean KL in nats).
RUNS = {
    "dq INT4": (["--method", "dq", "--bit-width", "4", "--spatial=false"], 0.55, 0.008),
    "dq INT4, spatial (DFQ)": (["--method", "dq", "--bit-width", "4"], 0.6, 0.005),
    "target gguf INT4": (["--target", "gguf", "--bit-width", "4"], 0.6, 0.005),
    "dq INT2": (["--method", "dq", "--bit-width", "2", "--spatial=false"], 0.2, 0.05),
    "dq INT2, spatial (DFQ)": (["--method", "dq", "--bit-width", "2"], 0.3, 0.04),
    "target gguf INT2": (["--target", "gguf", "--bit-width", "2"], 0.3, 0.04),
    "q8_0 INT8": (["--method", "q8_0", "--bit-width", "8", "--group-size", "32", "--spatial=false"], 0.9, 0.0002),
}
# The same BF16 reference quantized by llama.cpp itself (llama_model_quantize, what llama-quantize runs; no
# importance matrix), for context: name -> (llama_ftype, pure). "pure" puts every tensor in the type (rows of 704
# fall back to Q5_0 / Q4_0 as llama.cpp does); the Q4_K_M / Q2_K mixes keep some tensors at more bits.
LLAMA_RUNS = {
    "llama.cpp Q4_K (--pure)": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", True),
    "llama.cpp Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", False),
    "llama.cpp Q2_K (--pure)": ("LLAMA_FTYPE_MOSTLY_Q2_K", True),
    "llama.cpp Q2_K": ("LLAMA_FTYPE_MOSTLY_Q2_K", False),
}
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little model that learned to read and write in the small hours of the night.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>",
    "In the beginning the universe was created. This has made a lot of people very angry and been widely regarded "
    "as a bad move.",
    "Numbers and dates: 1, 2, 3, 10, 100, 1000, 3.14159, 2026-12-01; prices from $5 to $1,250.",
    "Quantization maps each weight to one of a few levels, and a good quantizer chooses the levels so that the "
    "network's outputs change as little as possible.<|end_of_text|>",
    "She opened the door, looked at the rain, and decided that the walk to the station could wait for another hour.",
]


def run(*args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def read_safetensors(path):
    """name -> float32 array (F32) or uint16 array (BF16/F16 bits), numpy only."""
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        for name, t in header.items():
            if name == "__metadata__":
                continue
            b, e = t["data_offsets"]
            f.seek(base + b)
            dt = {"F32": np.float32, "BF16": np.uint16, "F16": np.uint16}[t["dtype"]]
            out[name] = np.frombuffer(f.read(e - b), dt).reshape(t["shape"])
    return out


def rope_permute(w, n_head):
    """llama.cpp's converter's LlamaModel.permute of q/k rows (docs/GGUF.md, the llama rope permutation)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf_order(name, w, arch, cfg):
    """The artifact's tensor (PyTorch order) as the GGUF stores it: llama q/k rows permuted."""
    if arch == "llama" and name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
        heads = cfg["num_attention_heads"] if "q_proj" in name else cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        return rope_permute(w, heads)
    return w


class GGML:
    """ctypes on llama.cpp's libggml-base.so."""

    def __init__(self, lib_dir):
        self.path = os.path.join(lib_dir, "libggml-base.so")
        self.lib = ctypes.CDLL(self.path)
        self.fns = {}
        for t, sym in DEQUANT.items():
            fn = getattr(self.lib, sym)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn.restype = None
            self.fns[t] = fn

    def dequantize(self, type_name, data, n):
        src = np.ascontiguousarray(data)
        y = np.empty(n, np.float32)
        self.fns[type_name](src.ctypes.data, y.ctypes.data, n)
        return y


def cosine(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    aa, bb = a @ a, b @ b
    return 1.0 if aa == 0 and bb == 0 else float(a @ b / np.sqrt(aa * bb))


def check_export(ggml, binary, model_dir, q, work):
    """Part (b) for one quantized model: export, then llama.cpp's dequantize of every tensor's blocks."""
    gg = work / "model.gguf"
    report = json.loads(run(binary, "export", "--model", q, "--output", gg, "--runnable", "--json", "--overwrite"))
    deq = work / "deq"
    run(binary, "dequantize", "--model", q, "--output", deq, "--overwrite")
    ours = read_safetensors(deq / "model.safetensors")
    cfg = json.loads((model_dir / "config.json").read_text())
    tensors = {t.name: t for t in gguf.GGUFReader(gg).tensors}
    stats = {"exact": {}, "reencoded": 0, "reencoded_ok": 0}
    for rt in report["tensors"]:
        t = tensors[rt["gguf_name"]]
        assert t.tensor_type.name == rt["gguf_type"], rt["name"]
        assert rt.get("channel_scales") is None, f"{rt['name']}: channel scales (spatial must be off here)"
        want = to_gguf_order(rt["name"], ours[rt["name"]], report["architecture"], cfg).ravel()
        n = want.size
        if rt["gguf_type"] == "F32":
            got = np.asarray(t.data, np.float32).ravel()  # F32 needs no dequantization
        else:
            got = ggml.dequantize(rt["gguf_type"], t.data, n)
        if rt["exact"]:
            bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
            assert bad.size == 0, f"{rt['name']} ({rt['gguf_type']}): llama.cpp differs from ours at {bad[:5]} of {n}"
            s = stats["exact"].setdefault(rt["gguf_type"], [0, 0])
            s[0] += 1
            s[1] += n
        else:
            stats["reencoded"] += 1
            assert abs(cosine(want, got) - rt["cosine_artifact"]) < 1e-6, rt["name"]
            stats["reencoded_ok"] += 1
    return report, stats


def fma_disassembly(lib_path):
    """Fused multiply-add instructions in each dequantize_row_* of the library (None: no objdump)."""
    if not shutil.which("objdump"):
        return None
    out = {}
    for t, sym in DEQUANT.items():
        if not sym.startswith("dequantize_row_"):
            continue
        asm = run("objdump", "-d", f"--disassemble={sym}", lib_path)
        body = [l for l in asm.splitlines() if re.match(r"\s+[0-9a-f]+:\t", l)]
        out[t] = (len(body), sum(1 for l in body if re.search(r"\bv?f(n)?m(add|sub)[0-9a-z]*\b", l)))
    return out


def fma_probe(ggml, blocks=20000, seed=11):
    """Random Q4_1/Q4_K/Q2_K blocks (fp16 params of every magnitude): llama.cpp's dequantization against gguf-py's
    (products rounded before the sum) and against the same math with a fused multiply-add (the product exact,
    one rounding), computed in float64. Returns type -> (elements, llama.cpp differs from unfused, from fused,
    unfused from fused)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, gt in (("Q4_1", gguf.GGMLQuantizationType.Q4_1), ("Q4_K", gguf.GGMLQuantizationType.Q4_K),
                     ("Q2_K", gguf.GGMLQuantizationType.Q2_K)):
        bs, bb = gguf.GGML_QUANT_SIZES[gt]
        data = rng.integers(0, 256, (blocks, bb), dtype=np.uint8)
        # fp16 params: finite, either sign, exponents spread (no inf/nan).
        params = (rng.integers(0, 0x7BFF, (blocks, 2), dtype=np.uint16) | (rng.integers(0, 2, (blocks, 2), dtype=np.uint16) << 15))
        off = {"Q4_1": 0, "Q4_K": 0, "Q2_K": 80}[name]
        data[:, off:off + 4] = params.view(np.uint8).reshape(blocks, 4)
        n = blocks * bs
        got = ggml.dequantize(name, data, n)
        unfused = gguf.quants.dequantize(data, gt).astype(np.float32).ravel()
        fused = fused_reference(name, data).ravel()
        out[name] = (n, int(np.sum(got.view(np.uint32) != unfused.view(np.uint32))),
                     int(np.sum(got.view(np.uint32) != fused.view(np.uint32))),
                     int(np.sum(unfused.view(np.uint32) != fused.view(np.uint32))))
    return out


def fused_reference(name, data):
    """y = fma(a, q, -b) (or fma(q, d, m)): the product kept exact in float64, one rounding to float32."""
    h = lambda b: b.copy().view(np.float16).astype(np.float64)
    if name == "Q4_1":
        d, m = h(data[:, 0:2]), h(data[:, 2:4])
        qs = data[:, 4:20]
        q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float64)
        return (q * d + m).astype(np.float32)
    if name == "Q4_K":
        d, dmin = h(data[:, 0:2]), h(data[:, 2:4])
        s = data[:, 4:16].astype(np.uint8)
        sc, mn = np.zeros((len(data), 8), np.float64), np.zeros((len(data), 8), np.float64)
        for j in range(8):
            if j < 4:
                sc[:, j], mn[:, j] = s[:, j] & 63, s[:, j + 4] & 63
            else:
                sc[:, j] = (s[:, j + 4] & 15) | ((s[:, j - 4] >> 6) << 4)
                mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
        dl = (d * sc).astype(np.float32).astype(np.float64)  # float32(d·sc): rounded in ggml too
        ml = (dmin * mn).astype(np.float32).astype(np.float64)
        qs = data[:, 16:144].reshape(len(data), 4, 32)
        q = np.stack([qs & 15, qs >> 4], axis=2).reshape(len(data), 8, 32).astype(np.float64)
        return (dl[:, :, None] * q - ml[:, :, None]).astype(np.float32).reshape(len(data), 256)
    # Q2_K
    d, dmin = h(data[:, 80:82]), h(data[:, 82:84])
    sc = data[:, 0:16]
    dl = (d * (sc & 15)).astype(np.float32).astype(np.float64)
    ml = (dmin * (sc >> 4)).astype(np.float32).astype(np.float64)
    qs = data[:, 16:80].reshape(len(data), 2, 32)
    q = np.stack([(qs >> s) & 3 for s in (0, 2, 4, 6)], axis=2)  # [half, shift, 32]
    q = q.reshape(len(data), 2, 4, 2, 16).reshape(len(data), 16, 16).astype(np.float64)
    return (dl[:, :, None] * q - ml[:, :, None]).astype(np.float32).reshape(len(data), 256)


def logits(path, prompts):
    m = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=512, n_threads=1, n_batch=512, verbose=False)
    out = []
    for p in prompts:
        toks = m.tokenize(p.encode(), add_bos=True, special=True)
        m.reset()
        m.eval(toks)
        out.append((toks, np.array(m.scores[:len(toks)], np.float64)))
    arch = m.metadata.get("general.architecture")
    del m
    return arch, out


def llama_quantize(src, dst, ftype, pure):
    """llama.cpp's llama_model_quantize (llama-quantize) of src into dst, one thread, its log silenced."""
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.pure, p.nthread = getattr(llama_cpp, ftype), pure, 1
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    if rc != 0:
        sys.exit(f"proof: llama_model_quantize {ftype} failed ({rc})")
    types, nbytes, n = {}, 0, 0
    for t in gguf.GGUFReader(dst).tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        nbytes, n = nbytes + int(t.n_bytes), n + int(t.n_elements)
    return types, nbytes * 8 / n


def compare_logits(ref, got):
    """Top-1 agreement and KL(P_ref || P_got) per position, over all prompts."""
    top, kls = [], []
    for (tr, lr), (tg, lg) in zip(ref, got):
        assert tr == tg
        top.extend(np.argmax(lr, 1) == np.argmax(lg, 1))
        pr = lr - lr.max(1, keepdims=True)
        pr = pr - np.log(np.exp(pr).sum(1, keepdims=True))
        pg = lg - lg.max(1, keepdims=True)
        pg = pg - np.log(np.exp(pg).sum(1, keepdims=True))
        kls.extend((np.exp(pr) * (pr - pg)).sum(1))
    return float(np.mean(top)), float(np.mean(kls)), float(np.max(kls)), len(top)


def replace_section(path, name, body):
    begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
    doc = open(path, encoding="utf-8").read()
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        sys.exit(f"proof: {path} has no section {name} ({begin})")
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc[:i] + begin + "\n" + body + doc[j:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--doc", help="markdown file with the llama.cpp-proof section (docs/GGUF.md)")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    t0 = time.time()
    load0 = os.getloadavg()[0]
    work = args.keep or tempfile.mkdtemp(prefix="aq-proof-")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    ggml = GGML(LIB_DIR)
    try:
        md = []
        w = md.append
        # (b)
        rows, totals = [], {}
        for preset in PRESETS:
            model = work / preset
            run(binary, "gen-model", "--preset", preset, "--output", model, "--overwrite")
            for vname, vargs in VARIANTS.items():
                q = work / f"{preset}-q"
                run(binary, "quantize", "--model", model, "--output", q, "--overwrite", *vargs)
                vw = work / f"{preset}-x"
                vw.mkdir(exist_ok=True)
                report, st = check_export(ggml, binary, model, q, vw)
                rows.append((preset, report["architecture"], vname, st))
                for t, (nt, ne) in st["exact"].items():
                    tt = totals.setdefault(t, [0, 0])
                    tt[0] += nt
                    tt[1] += ne
                print(f"proof (b): {preset} {vname}: " + ", ".join(f"{t} {nt} tensors / {ne} elements equal" for t, (nt, ne) in st["exact"].items())
                      + f"; {st['reencoded']} re-encoded (cosine as reported)", file=sys.stderr)
        dis = fma_disassembly(ggml.path)
        probe = fma_probe(ggml)
        # (c)
        model = work / "tiny-llama"
        ref_q = work / "ref-q"
        run(binary, "quantize", "--model", model, "--output", ref_q, "--overwrite", "--min-accuracy", "1", "--spatial=false")
        ref_gg = work / "bf16.gguf"
        ref_rep = json.loads(run(binary, "export", "--model", ref_q, "--output", ref_gg, "--runnable", "--json", "--overwrite"))
        assert {t["gguf_type"] for t in ref_rep["tensors"]} == {"BF16", "F32"}, "reference must be BF16 (+ F32 1-D)"
        # The reference's BF16 tensors are the source's bits (rows permuted as llama.cpp's converter does).
        src = read_safetensors(model / "model.safetensors")
        cfg = json.loads((model / "config.json").read_text())
        rt = {t.name: t for t in gguf.GGUFReader(ref_gg).tensors}
        for t in ref_rep["tensors"]:
            if t["gguf_type"] == "BF16":
                want = to_gguf_order(t["name"], src[t["name"]], "llama", cfg).ravel()
                assert np.array_equal(np.asarray(rt[t["gguf_name"]].data).view(np.uint16).ravel(), want), t["name"]
        arch, ref_logits = logits(ref_gg, PROMPTS)
        assert arch == "llama"
        lrows = []
        for name, (qargs, min_top1, max_kl) in RUNS.items():
            q = work / "run-q"
            run(binary, "quantize", "--model", model, "--output", q, "--overwrite", *qargs)
            gg = work / "run.gguf"
            rep = json.loads(run(binary, "export", "--model", q, "--output", gg, "--runnable", "--json", "--overwrite"))
            types = {}
            for t in rep["tensors"]:
                types[t["gguf_type"]] = types.get(t["gguf_type"], 0) + 1
            _, got = logits(gg, PROMPTS)
            top1, kl, kl_max, npos = compare_logits(ref_logits, got)
            lrows.append((name, types, rep["bits_per_weight"], f"{rep['exact_tensors']} / {rep['reencoded_tensors']}",
                          top1, kl, kl_max, npos, min_top1, max_kl))
            print(f"proof (c): {name}: top-1 {top1:.3f}, mean KL {kl:.5f} (max {kl_max:.5f}) over {npos} positions", file=sys.stderr)
        for name, (ftype, pure) in LLAMA_RUNS.items():
            gg = work / "llama-q.gguf"
            types, bpw = llama_quantize(ref_gg, gg, ftype, pure)
            _, got = logits(gg, PROMPTS)
            top1, kl, kl_max, npos = compare_logits(ref_logits, got)
            lrows.append((name, types, bpw, "—", top1, kl, kl_max, npos, None, None))
            print(f"proof (c): {name}: top-1 {top1:.3f}, mean KL {kl:.5f} (max {kl_max:.5f}) over {npos} positions", file=sys.stderr)
        fails = [f"{r[0]}: top-1 {r[4]:.3f} < {r[8]} or KL {r[5]:.5f} > {r[9]}" for r in lrows
                 if r[8] is not None and (r[4] < r[8] or r[5] > r[9])]
        elapsed = time.time() - t0
        # Report.
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        w("### Proof by llama.cpp's own code (`make compare`)\n")
        w(f"Generated by `make compare` (`bench/compare/proof.py`) on {date}: {platform.machine()}, "
          f"llama-cpp-python {llama_cpp.__version__} built from source with `CMAKE_ARGS=-DGGML_NATIVE=OFF`, gguf-py "
          f"{importlib.metadata.version('gguf')}; load average {load0:.2f} → {os.getloadavg()[0]:.2f}; {elapsed:.0f} s. "
          "Do not edit by hand: `make compare` replaces this section.\n")
        w("#### llama.cpp's dequantization of our exports equals ours bit for bit\n")
        w("Each generated tiny model (`gen-model --preset tiny` is Dream/Qwen2-layout, `tiny-llama` Llama) quantized as below, "
          "`export --runnable`; every tensor's blocks read from the GGUF with gguf-py's `GGUFReader` and dequantized by "
          "llama.cpp's `dequantize_row_q4_K / q2_K / q4_1 / q8_0` (`ggml_bf16_to_fp32_row` / `ggml_fp16_to_fp32_row` for 16-bit "
          "tensors; F32 as stored), through ctypes on its `libggml-base.so`, against `arrowquant dequantize` (float32; "
          "llama q/k rows permuted as the export does). Exact tensors: equal bit for bit (asserted). Re-encoded tensors "
          "(`ffn_down`, rows of 704 that do not divide 256, under dq): llama.cpp's dequantization has the cosine the export "
          "report gives, to 1e-6 (asserted).\n")
        w("| model | variant | bit-exact tensors (elements) by type | re-encoded |\n|---|---|---|---|")
        for preset, arch, vname, st in rows:
            ex = ", ".join(f"{t} {nt} ({ne:,})" for t, (nt, ne) in sorted(st["exact"].items()))
            w(f"| {preset} ({arch}) | {vname} | {ex} | {st['reencoded']} |")
        tot_t = sum(v[0] for v in totals.values())
        tot_e = sum(v[1] for v in totals.values())
        q_t = sum(v[0] for k, v in totals.items() if k.startswith("Q"))
        q_e = sum(v[1] for k, v in totals.items() if k.startswith("Q"))
        w("")
        w(f"In all: {tot_t} tensors, {tot_e:,} elements equal bit for bit, of which {q_t} quantized tensors "
          f"({q_e:,} elements: " + ", ".join(f"{k} {v[0]} / {v[1]:,}" for k, v in sorted(totals.items()) if k.startswith("Q"))
          + "); 100% of the exact tensors. Not one element differs.\n")
        fma = ("**Fused multiply-adds.** This build's dequantization does not fuse: ")
        if dis is not None:
            fma += ("the disassembly of its `libggml-base.so` (`objdump -d --disassemble=SYMBOL`) has "
                    + ", ".join(f"{f} FMA instructions in `{DEQUANT[t]}` (of {n})" for t, (n, f) in dis.items())
                    + "; with `GGML_NATIVE=OFF` on x86-64 the library is compiled for the baseline ISA (SSE2), which has no "
                    "FMA, so GCC cannot contract (`libggml-cpu.so`, the CPU backend's matrix kernels, does use FMA; they "
                    "never dequantize our blocks to float32). ")
        fma += ("It would not matter for these four types: every product in their reconstructions is exact in float32 "
                "(an fp16 d or dmin has 11 significant bits, a sub-scale or sub-min at most 6, a code at most 8, so "
                "`d·sc` has at most 17 and `(d·sc)·q` at most 21 of float32's 24; Q8_0's `q·d` 19; Q4_1's `q·d` 15), so "
                "the one rounding is the final add whether or not it is fused. Checked on random blocks (every byte "
                "random, fp16 params of either sign over the whole finite range): "
                + "; ".join(f"{t}: {n:,} elements, llama.cpp differs from the unfused reference (gguf-py's numpy) on {du} "
                            f"and from a fused one (exact product, one rounding) on {df}, the two references from each other on {dd}"
                            for t, (n, du, df, dd) in probe.items())
                + ". So a `-march=native` build (FMA contraction allowed) dequantizes our blocks to the same bits.\n")
        w(fma)
        w("#### llama.cpp runs our models\n")
        w("`gen-model --preset tiny-llama` (LlamaForCausalLM, 2 blocks, hidden 256, vocabulary 1024, BF16 weights), quantized "
          "as below, `export --runnable`, loaded by `llama_cpp.Llama(model_path=..., logits_all=True, n_threads=1)`. Reference: "
          "the same source weights in BF16 (`quantize --min-accuracy 1 --spatial=false` keeps every tensor at 16 bits, "
          "`export --runnable` writes them as BF16 with the same keys and tokenizer; its BF16 tensors are checked equal to the "
          f"source's bits). {len(PROMPTS)} prompts ({lrows[0][7]} token positions in all, "
          "special tokens included), the logits of every position. Top-1: the share of positions whose argmax agrees with the "
          "reference; KL: KL(P_BF16 ‖ P_quantized) in nats, mean (and max) over positions. The script asserts each of our "
          "rows within the bounds shown (the measured values with margin). For context, the last rows are the same BF16 "
          "GGUF quantized by llama.cpp itself (`llama_model_quantize`, what `llama-quantize` runs, without an importance "
          "matrix; `--pure` puts every tensor in the one type, the `ffn_down` rows of 704 falling back to Q5_0 / Q4_0 as "
          "llama.cpp does; the Q4_K_M and Q2_K mixes give some tensors more bits), run the same way. Bits/weight count "
          "every tensor's data. The weights are random, so the distributions are flatter than a trained model's and "
          "top-1 is a harsh measure.\n")
        w("| quantization | GGUF types (tensors) | bits/weight | exact / re-encoded | top-1 agreement | mean KL (max) | asserted |\n|---|---|---|---|---|---|---|")
        for name, types, bpw, exact, top1, kl, kl_max, npos, min_top1, max_kl in lrows:
            ty = ", ".join(f"{k} {v}" for k, v in sorted(types.items()))
            bound = "—" if min_top1 is None else f"top-1 ≥ {min_top1}, KL ≤ {max_kl}"
            w(f"| {name} | {ty} | {bpw:.3f} | {exact} | {top1:.3f} | {kl:.5f} ({kl_max:.4f}) | {bound} |")
        w("")
        body = "\n".join(md) + "\n"
        print(body)
        if args.doc:
            replace_section(args.doc, "llama.cpp-proof", body)
        print(f"proof: {tot_t} tensors / {tot_e:,} elements bit-exact against llama.cpp's dequantize "
              f"({q_t} quantized / {q_e:,}); llama.cpp ran {len(lrows)} exported models; {elapsed:.0f} s", file=sys.stderr)
        if fails:
            sys.exit("proof: outside the asserted bounds: " + "; ".join(fails))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
