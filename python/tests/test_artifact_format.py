"""The artifact is plain Arrow: pyarrow + numpy alone reproduce Go's dequantization bit for bit."""
import json
import pathlib
import struct
import subprocess

import numpy as np
import pyarrow.ipc as ipc
import pytest


FORMAT_MD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def format_reader():
    """The pyarrow-only reader of docs/FORMAT.md, executed as written: (namespace, run(path) -> weights)."""
    text = FORMAT_MD.read_text()
    section = text[text.index("## Reading an artifact with pyarrow only"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    assert 'ipc.open_file("out/model.arrow")' in code
    defs, _, main = code.partition('reader = ipc.open_file("out/model.arrow")')
    ns = {}
    exec(defs, ns)

    def run(path):
        scope = dict(ns, reader=ipc.open_file(str(path)))
        exec(main, scope)
        return scope["weights"]
    return ns, run


dequantize_row = format_reader()[0]["dequantize_row"]


def read_safetensors_f32(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, t in header.items():
            if name == "__metadata__":
                continue
            assert t["dtype"] == "F32"
            b, e = t["data_offsets"]
            f.seek(base + b)
            out[name] = np.frombuffer(f.read(e - b), np.float32).reshape(t["shape"])
    return out


def write_calibration(model_dir, path, rows=64):
    """JSONL calibration for every 2-D weight of layer 1 of the tiny model: per-channel log-normal scales and
    every 16th input channel an outlier growing with the timestep (where smoothing pays)."""
    with open(model_dir / "model.safetensors", "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    rng = np.random.default_rng(7)
    layers = {k[:-len(".weight")]: v["shape"][1] for k, v in header.items()
              if k.startswith("model.layers.1.") and k.endswith(".weight") and len(v["shape"]) == 2}
    with open(path, "w") as f:
        for name, ch in sorted(layers.items()):
            base = np.exp(0.5 * rng.standard_normal(ch))
            for k in range(rows):
                t = k / (rows - 1)
                s = base * np.where(np.arange(ch) % 16 == 0, 1 + 30 * t, 1)
                f.write(json.dumps({"layer": name, "timestep": t,
                                    "activation": (rng.standard_normal(ch) * s).astype(np.float32).tolist()}) + "\n")
    return sorted(layers)


VARIANTS = {
    "edge": ["--profile", "edge"], "local": ["--profile", "local"], "cloud": ["--profile", "cloud"],
    "dq-int2": ["--method", "dq", "--bit-width", "2"], "dq-int4": ["--method", "dq", "--bit-width", "4"],
    "dq-int8": ["--method", "dq", "--bit-width", "8"],
    "spatial-int4": ["--bit-width", "4", "--spatial", "--calibration"],
    "spatial-dq-int4": ["--method", "dq", "--bit-width", "4", "--spatial", "--calibration"],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_numpy_dequantize_matches_go(tmp_path, arrowquant_bin, tiny_model, variant):
    """FORMAT.md's reader, run as written, and the package's reader equal Go's dequantize bit for bit."""
    from arrow_quant_v2 import artifact
    q, d = tmp_path / "q", tmp_path / "d"
    args = list(VARIANTS[variant])
    calibrated = []
    if args[-1] == "--calibration":
        calibrated = write_calibration(tiny_model, tmp_path / "calib.jsonl")
        args.append(str(tmp_path / "calib.jsonl"))
    res = subprocess.run([arrowquant_bin, "quantize", "--model", str(tiny_model), "--output", str(q), "--json", *args],
                         check=True, capture_output=True, text=True)
    result = json.loads(res.stdout)
    subprocess.run([arrowquant_bin, "dequantize", "--input", str(q), "--output", str(d)], check=True)

    reader = ipc.open_file(q / "model.arrow")
    meta = {k.decode(): v.decode() for k, v in reader.schema.metadata.items()}
    assert meta["arrowquant.format"] == "arrowquant" and meta["arrowquant.format_version"] == "2"
    assert json.loads(meta["arrowquant.config"])["bit_width"] == result["bit_width"]
    index = json.loads(meta["arrowquant.index"])
    assert [e["name"] for e in index] == [l["name"] for l in result["layers"]]

    go = read_safetensors_f32(d / "model.safetensors")
    ours = format_reader()[1](q / "model.arrow")
    package = artifact.dequantize(q)
    assert set(go) == set(ours) == set(package)
    for name in go:
        assert ours[name].shape == package[name].shape == go[name].shape
        assert np.array_equal(ours[name].view(np.uint32), go[name].view(np.uint32)), name
        assert np.array_equal(package[name].view(np.uint32), go[name].view(np.uint32)), name

    rows = reader.read_all().to_pylist()
    for r in rows:
        if r["method"] in ("fp16", "bf16"):
            continue
        # Codes really are packed: INT2 rows hold n/4 bytes, INT4 n/2.
        assert len(r["codes"]) == (r["chunk_elems"] * r["bit_width"] + 7) // 8
        if r["method"] == "dq":
            sub, p = {2: (16, 4), 4: (32, 6), 8: (32, 8)}[r["bit_width"]]
            assert r["group_size"] == sub and r["scales"] == [] and r["mins"] == []
            assert len(r["group_params"]) == -(-r["chunk_elems"] // 256) * (4 + 2 * (256 // sub) * p // 8)
        else:
            assert r["group_params"] is None
            assert len(r["scales"]) == -(-r["chunk_elems"] // r["group_size"])
    smoothed = {r["name"]: r for r in rows if r["channel_scales"] is not None}
    assert all(r["chunk_offset"] == 0 and len(r["channel_scales"]) == r["shape"][1] for r in smoothed.values())
    layers = {l["name"]: l for l in result["layers"]}
    # Channel scales come from channel equalization (DFQ pairs, calibration-free) and AWQ smoothing.
    equalized = {c for p in (result["equalization"] or {"pairs": []})["pairs"] for c in p["consumers"]}
    awq = {n for n, l in layers.items() if l.get("smoothing", "").startswith("AWQ smoothing α=")}
    assert set(smoothed) == equalized | awq
    assert all("DFQ" in layers[n]["equalization"] for n in equalized)
    assert result["spatial"]["applied"] is bool(smoothed)
    if calibrated:
        assert awq and awq <= {n + ".weight" for n in calibrated}
    elif result["config"]["enable_spatial"]:
        assert not awq and equalized  # the generated model has outlier input columns: equalization pays
    else:
        assert result["equalization"] is None and not smoothed
    if variant.startswith("dq"):
        bits = result["bit_width"]
        # Every byte counted: a quantized tensor's bytes are exactly its codes, super-block params and
        # channel scales.
        for l in result["layers"]:
            if l["bit_width"] == bits:
                n = l["params"]
                extra = 4 * l["shape"][1] if l["name"] in smoothed else 0  # float32 channel scales
                assert l["bytes"] == (n * bits + 7) // 8 + -(-n // 256) * {2: 20, 4: 16, 8: 20}[bits] + extra


def test_one_tensor_via_index(tmp_path, arrowquant_bin, tiny_model):
    q = tmp_path / "q"
    subprocess.run([arrowquant_bin, "quantize", "--model", str(tiny_model), "--output", str(q)], check=True)
    reader = ipc.open_file(q / "model.arrow")
    index = json.loads(reader.schema.metadata[b"arrowquant.index"])
    entry = next(e for e in index if e["name"].endswith("mlp.down_proj.weight"))
    batches = [reader.get_batch(i) for i in range(entry["first_batch"], entry["first_batch"] + entry["num_batches"])]
    assert all(b.num_rows == 1 and b.column("name")[0].as_py() == entry["name"] for b in batches)
    values = np.concatenate([dequantize_row(b.to_pylist()[0]) for b in batches])
    assert values.size == np.prod(entry["shape"])
