"""GGUF export checked by llama.cpp's own Python package (gguf-py, ``pip install gguf``): the real binary's
``arrowquant export`` output opens with ``gguf.GGUFReader``, its names/types/shapes are the export report's,
``gguf.quants.dequantize`` of every exact tensor equals ``arrowquant dequantize`` bit for bit, and every
re-encoded tensor's cosine against the artifact is the one reported."""
import json
import struct
import subprocess

import gguf  # llama.cpp's gguf-py (PyPI), a test dependency (Makefile PYDEPS)
import numpy as np
import pyarrow.ipc as ipc
import pytest

from test_artifact_format import read_safetensors_f32, write_calibration

VARIANTS = {
    "dq-int4": ["--method", "dq", "--bit-width", "4", "--spatial=false"],
    "dq-int2": ["--method", "dq", "--bit-width", "2", "--spatial=false"],
    "lsq-int4-g32": ["--method", "lsq", "--bit-width", "4", "--group-size", "32", "--spatial=false"],
    "q8_0-int8": ["--method", "q8_0", "--bit-width", "8", "--group-size", "32", "--spatial=false"],
    "local": ["--profile", "local"],
    "edge": ["--profile", "edge"],
    "spatial-dq-int4": ["--method", "dq", "--bit-width", "4", "--spatial"],
    "awq-int4": ["--bit-width", "4", "--spatial", "--calibration"],
    "target-gguf-int4": ["--target", "gguf", "--bit-width", "4"],
    "target-gguf-int2": ["--target", "gguf", "--bit-width", "2"],
    "target-gguf-int8": ["--target", "gguf", "--bit-width", "8"],
}

# What each variant must show (besides the per-tensor checks that hold for all).
EXACT_ONLY = {"dq-int4": False, "dq-int2": False, "lsq-int4-g32": True, "q8_0-int8": True,
              "target-gguf-int4": True, "target-gguf-int2": True, "target-gguf-int8": True}


def run(binary, *args, check=True):
    return subprocess.run([binary, *map(str, args)], check=check, capture_output=True, text=True)


def channel_scales(artifact_path):
    """The channel_scales of every smoothed tensor (first row), read with plain pyarrow."""
    out = {}
    for batch in _batches(artifact_path):
        for r in batch.to_pylist():
            if r["chunk_offset"] == 0 and r["channel_scales"] is not None:
                out[r["name"]] = np.asarray(r["channel_scales"], np.float32)
    return out


def _batches(path):
    reader = ipc.open_file(path)
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def cosine(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    aa, bb = a @ a, b @ b
    if aa == 0 and bb == 0:
        return 1.0
    return float(a @ b / np.sqrt(aa * bb))


def check_export(binary, q, out_dir, exact=False, extra=()):
    """Export q, open the file with gguf-py, and check it against `arrowquant dequantize`."""
    gg = out_dir / "model.gguf"
    args = ["export", "--input", q, "--format", "gguf", "--output", gg, "--json", *extra]
    if exact:
        args.append("--exact")
    report = json.loads(run(binary, *args).stdout)
    assert json.loads((out_dir / "model.gguf.report.json").read_text()) == report
    d = out_dir / "deq"
    run(binary, "dequantize", "--input", q, "--output", d)
    ours = read_safetensors_f32(d / "model.safetensors")
    scales = channel_scales(q / "model.arrow")

    reader = gguf.GGUFReader(gg)
    assert reader.fields["general.alignment"].contents() == 32
    assert reader.fields["general.architecture"].contents() == report["architecture"]
    export_kv = json.loads(reader.fields["arrowquant.export"].contents())
    assert [t["gguf_name"] for t in export_kv["tensors"]] == [t["gguf_name"] for t in report["tensors"]]
    assert [t["exact"] for t in export_kv["tensors"]] == [t["exact"] for t in report["tensors"]]
    assert reader.fields["arrowquant.format_version"].contents() == 2

    folded_into = {}  # producer -> the channel scales folded into it
    for f in report["folds"]:
        if f["folded"]:
            folded_into[f["producer"]] = scales[f["consumers"][0]]
            for c in f["consumers"]:
                assert np.array_equal(scales[c].view(np.uint32), folded_into[f["producer"]].view(np.uint32))

    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors) == [t["gguf_name"] for t in report["tensors"]]
    types = {}
    for rt in report["tensors"]:
        t = tensors[rt["gguf_name"]]
        assert t.tensor_type.name == rt["gguf_type"], rt["name"]
        assert [int(x) for x in t.shape] == rt["ne"], rt["name"]
        assert int(t.n_bytes) == rt["bytes"], rt["name"]
        types[rt["gguf_type"]] = types.get(rt["gguf_type"], 0) + 1
        got = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).ravel()
        want = ours[rt["name"]].ravel()
        assert got.shape == want.shape, rt["name"]
        if rt.get("channel_scales") == "folded into the producer":
            # The blocks are the stored W·diag(s); the artifact's values are them times 1/s.
            cs = scales[rt["name"]]
            got = got * np.tile(cs, got.size // cs.size)
        if rt["name"] in folded_into:
            want = want * folded_into[rt["name"]]  # γ·(1/s), the fold
            assert rt["how"] == "fold"
        if rt["exact"]:
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
                f"{rt['name']} ({rt['gguf_type']}): {np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))[:5]}"
            assert rt["cosine_artifact"] == 1
        else:
            assert rt["how"] == "re-encode" and rt["cosine_measured"]
            assert abs(cosine(want, got) - rt["cosine_artifact"]) < 1e-6, rt["name"]
            assert rt["cosine_source_lower_bound"] <= rt["cosine_artifact"]
    assert report["exact_tensors"] + report["reencoded_tensors"] == len(report["tensors"]) == len(tensors)
    return report, types


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_matches_llama_cpp_gguf(tmp_path, arrowquant_bin, tiny_model, variant):
    args = list(VARIANTS[variant])
    if args[-1] == "--calibration":
        write_calibration(tiny_model, tmp_path / "calib.jsonl")
        args.append(str(tmp_path / "calib.jsonl"))
    q = tmp_path / "q"
    result = json.loads(run(arrowquant_bin, "quantize", "--model", tiny_model, "--output", q, "--json", *args).stdout)
    target = variant.startswith("target-gguf")
    report, types = check_export(arrowquant_bin, q, tmp_path, exact=target)
    assert report["architecture"] == "dream"  # config.json model_type "Dream", lower-cased
    if target:
        assert result["target"] == "gguf" and result["config"]["target"] == "gguf"
        assert report["reencoded_tensors"] == 0
    if variant in EXACT_ONLY:
        assert (report["reencoded_tensors"] == 0) == EXACT_ONLY[variant]
    # The type each variant's weights take (the tiny model's down_proj rows are 704 = 2.75 x 256).
    expect = {"dq-int4": {"Q4_K", "Q4_1", "F32"}, "dq-int2": {"Q2_K", "Q4_1", "F32"},
              "lsq-int4-g32": {"Q4_1", "F32"}, "q8_0-int8": {"Q8_0", "F32"},
              "target-gguf-int4": {"Q4_K", "Q4_1", "F32"}, "target-gguf-int2": {"Q2_K", "Q4_1", "F32"},
              "target-gguf-int8": {"Q8_0", "F32"}}.get(variant)
    if expect:
        assert set(types) == expect, types
    if variant in ("spatial-dq-int4", "local"):
        assert any(f["folded"] for f in report["folds"])  # norm pairs fold
    if variant == "awq-int4":
        # AWQ multiplies a consumer's own factors in: its pair cannot fold, and it is re-encoded with them.
        awq = {l["name"] for l in result["layers"] if l.get("smoothing", "").startswith("AWQ smoothing α=")}
        assert awq
        by = {t["name"]: t for t in report["tensors"]}
        assert all(by[n]["channel_scales"] == "applied (no exact fold)" and not by[n]["exact"] for n in awq)
        assert all(not f["folded"] for f in report["folds"] if set(f["consumers"]) & awq)
    if variant == "edge":
        assert types.get("Q2_K") and report["reencoded_tensors"] > 0  # INT2 g256 is re-encoded as Q2_K


def write_safetensors(path, tensors):
    """A BF16 safetensors file (numpy only)."""
    header, blobs, off = {}, [], 0
    for name, x in tensors.items():
        b = (np.asarray(x, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    """Rows that divide neither 256 (320) nor 32 (100, and a 3x3 convolution)."""
    d = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(5)
    write_safetensors(d / "model.safetensors", {
        "blocks.0.ff.proj_in.weight": rng.standard_normal((96, 320)) * 0.05,
        "blocks.0.ff.proj_out.weight": rng.standard_normal((40, 100)) * 0.05,
        "blocks.0.conv.weight": rng.standard_normal((16, 8, 3, 3)) * 0.1,
        "blocks.0.norm.weight": 1 + 0.1 * rng.standard_normal(100),
    })
    (d / "config.json").write_text(json.dumps({"_class_name": "OddNet", "in_channels": 8}))
    return d


@pytest.mark.parametrize("variant", ["target-gguf", "dq-int4"])
def test_export_odd_rows(tmp_path, arrowquant_bin, odd_model, variant):
    args = ["--target", "gguf"] if variant == "target-gguf" else ["--method", "dq"]
    q = tmp_path / "q"
    run(arrowquant_bin, "quantize", "--model", odd_model, "--output", q, "--modality", "image", "--bit-width", "4", *args)
    report, types = check_export(arrowquant_bin, q, tmp_path, exact=variant == "target-gguf")
    assert report["architecture"] == "oddnet"  # _class_name, lower-cased
    by = {t["name"]: t for t in report["tensors"]}
    assert by["blocks.0.norm.weight"]["gguf_type"] == "F32"
    if variant == "target-gguf":
        # 320-element rows: INT4 groups of 32 (Q4_1); rows of 100 and 3: kept at 16 bits (BF16).
        assert by["blocks.0.ff.proj_in.weight"]["gguf_type"] == "Q4_1"
        assert by["blocks.0.ff.proj_out.weight"]["gguf_type"] == by["blocks.0.conv.weight"]["gguf_type"] == "BF16"
        assert report["reencoded_tensors"] == 0
    else:
        # dq super-blocks cross rows of 320: re-encoded as Q4_1; rows of 100 and 3: F16 (llama.cpp's fallback).
        assert by["blocks.0.ff.proj_in.weight"]["gguf_type"] == "Q4_1" and not by["blocks.0.ff.proj_in.weight"]["exact"]
        assert by["blocks.0.ff.proj_out.weight"]["gguf_type"] == by["blocks.0.conv.weight"]["gguf_type"] == "F16"
        assert by["blocks.0.conv.weight"]["ne"] == [3, 3, 8, 16]
        assert by["blocks.0.conv.weight"]["cosine_artifact"] > 0.999999


def test_export_refusals(tmp_path, arrowquant_bin, tiny_model):
    q = tmp_path / "q"
    run(arrowquant_bin, "quantize", "--model", tiny_model, "--output", q, "--profile", "edge")
    out = tmp_path / "m.gguf"
    r = run(arrowquant_bin, "export", "--input", q, "--output", out, "--exact", check=False)
    assert r.returncode == 2 and "re-encoded" in r.stderr and "model.embed_tokens.weight" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    run(arrowquant_bin, "export", "--input", q, "--output", out)
    r = run(arrowquant_bin, "export", "--input", q, "--output", out, check=False)
    assert r.returncode == 2 and "exists" in r.stderr
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(b"GGUF but not really")
    r = run(arrowquant_bin, "export", "--input", bad, "--output", tmp_path / "x.gguf", check=False)
    assert r.returncode == 2 and "bad.arrow" in r.stderr
