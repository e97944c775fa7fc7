"""The artifact is plain Arrow: pyarrow + numpy alone reproduce Go's dequantization bit for bit."""
import json
import struct
import subprocess

import numpy as np
import pyarrow.ipc as ipc
import pytest


def unpack(codes, bits, n):
    b = np.frombuffer(codes, np.uint8)
    if bits == 8:
        return b[:n]
    if bits == 4:
        return np.stack([b & 0xF, b >> 4], 1).reshape(-1)[:n]
    return np.stack([b & 3, (b >> 2) & 3, (b >> 4) & 3, b >> 6], 1).reshape(-1)[:n]


def dequantize_row(r):
    """The reader of docs/FORMAT.md, verbatim."""
    n = r["chunk_elems"]
    if r["method"] == "fp16":
        return np.frombuffer(r["codes"], np.float16).astype(np.float32)
    if r["method"] == "bf16":
        return (np.frombuffer(r["codes"], np.uint16).astype(np.uint32) << 16).view(np.float32)
    g = r["group_size"]
    q = unpack(r["codes"], r["bit_width"], n).astype(np.float32)
    s = np.repeat(np.asarray(r["scales"], np.float16).astype(np.float32), g)[:n]
    m = np.repeat(np.asarray(r["mins"], np.float16).astype(np.float32), g)[:n]
    return (q * s).astype(np.float32) + m


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


@pytest.mark.parametrize("profile", ["edge", "local", "cloud"])
def test_numpy_dequantize_matches_go(tmp_path, arrowquant_bin, tiny_model, profile):
    q, d = tmp_path / "q", tmp_path / "d"
    res = subprocess.run([arrowquant_bin, "quantize", "--model", str(tiny_model), "--output", str(q),
                          "--profile", profile, "--json"], check=True, capture_output=True, text=True)
    result = json.loads(res.stdout)
    subprocess.run([arrowquant_bin, "dequantize", "--input", str(q), "--output", str(d)], check=True)

    reader = ipc.open_file(q / "model.arrow")
    meta = {k.decode(): v.decode() for k, v in reader.schema.metadata.items()}
    assert meta["arrowquant.format"] == "arrowquant" and meta["arrowquant.format_version"] == "1"
    assert json.loads(meta["arrowquant.config"])["bit_width"] == result["bit_width"]
    index = json.loads(meta["arrowquant.index"])
    assert [e["name"] for e in index] == [l["name"] for l in result["layers"]]

    rows = reader.read_all().to_pylist()
    ours = {}
    for r in rows:
        ours.setdefault(r["name"], (r["shape"], []))[1].append(dequantize_row(r))
    go = read_safetensors_f32(d / "model.safetensors")
    assert set(go) == set(ours)
    for name, (shape, parts) in ours.items():
        mine = np.concatenate(parts).reshape(shape)
        assert mine.shape == go[name].shape
        assert np.array_equal(mine.view(np.uint32), go[name].view(np.uint32)), name

    # Codes really are packed: INT2 rows hold n/4 bytes, INT4 n/2.
    for r in rows:
        if r["method"] == "minmax":
            assert len(r["codes"]) == (r["chunk_elems"] * r["bit_width"] + 7) // 8
            assert len(r["scales"]) == -(-r["chunk_elems"] // r["group_size"])


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
