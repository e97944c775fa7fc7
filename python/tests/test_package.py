"""arrow_quant_v2 against the real server: layouts and dtypes, equality with the local CLI, progress,
cancellation, output handling, errors, authentication, the embedded server's life cycle, bounded memory."""
import json
import os
import pathlib
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import arrow_quant_v2 as aq
from arrow_quant_v2 import ArrowQuantV2, DiffusionQuantConfig, dequantize, load_quantized
from arrow_quant_v2 import errors

ROOT = pathlib.Path(__file__).resolve().parents[2]
NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def to_bytes(a, dtype):
    if dtype == "BF16":
        return (np.asarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.asarray(a, NP[dtype]).astype(np.dtype(NP[dtype]).newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype, float array)}."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, a) in tensors.items():
        b = to_bytes(a, dtype)
        header[name] = {"dtype": dtype, "shape": list(np.shape(a)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rand(shape, seed, scale=0.02):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def make_model(d, shards, config=None, index_name="model.safetensors.index.json", extra_files=None):
    """shards: {file: {name: (dtype, array)}}; an index is written when there is more than one file."""
    d.mkdir(parents=True)
    for fname, tensors in shards.items():
        write_safetensors(d / fname, tensors)
    if len(shards) > 1:
        wm = {t: f for f, ts in shards.items() for t in ts}
        (d / index_name).write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (d / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    for name, data in (extra_files or {}).items():
        (d / name).write_bytes(data)
    return d


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg-models")
    out = {}
    out["sharded-f16"] = make_model(root / "sharded-f16", {
        "model-00001-of-00002.safetensors": {"a.weight": ("F16", rand((300, 256), 1)), "a.bias": ("F16", rand((300,), 2))},
        "model-00002-of-00002.safetensors": {"b.weight": ("F16", rand((128, 384), 3)), "norm.weight": ("F16", 1 + rand((384,), 4))},
    }, extra_files={"tokenizer.json": b'{"vocab": {}}', "special_tokens_map.json": b"{}"})
    out["mixed"] = make_model(root / "mixed", {"model.safetensors": {
        "w32": ("F32", rand((96, 160), 5)), "w16": ("F16", rand((64, 128), 6)), "wbf": ("BF16", rand((64, 256), 7)),
        "w64": ("F64", rand((32, 128), 8)), "b64": ("F64", rand((32,), 9)),
        "empty": ("F32", np.zeros((0, 8), np.float32))}})
    out["diffusers"] = make_model(root / "diffusers", {
        "diffusion_pytorch_model-00001-of-00002.safetensors": {"conv_in.weight": ("F32", rand((64, 4, 3, 3), 10))},
        "diffusion_pytorch_model-00002-of-00002.safetensors": {
            "time_embedding.linear_1.weight": ("F32", rand((256, 64), 11)),
            "up.weight": ("F32", rand((2048, 1024), 12))}},  # 2M elements: three chunk rows of up to 1M
        config={"_class_name": "UNet2DConditionModel"}, index_name="diffusion_pytorch_model.safetensors.index.json")
    out["f32"] = make_model(root / "f32", {"model.safetensors": {"w": ("F32", rand((256, 512), 13))}})
    out["scalar"] = make_model(root / "scalar", {"model.safetensors": {"w": ("BF16", rand((64, 128), 14)),
                                                                       "temperature": ("BF16", np.float32(0.5))}})
    return out


@pytest.fixture(scope="module")
def server(start_server):
    with start_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def q(server):
    with ArrowQuantV2(server=server.location) as quantizer:
        yield quantizer


def local_quantize(binary, model, out, profile="local"):
    res = subprocess.run([binary, "quantize", "--model", str(model), "--output", str(out), "--profile", profile,
                          "--json"], check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


@pytest.mark.parametrize("name", ["sharded-f16", "mixed", "diffusers", "f32"])
def test_push_pull_equals_local_quantize(q, models, name, tmp_path, arrowquant_bin):
    """Streaming a model through the server gives the same artifact data as `arrowquant quantize`."""
    ours = q.quantize_diffusion_model(models[name], tmp_path / "ours", DiffusionQuantConfig.from_profile("local"))
    theirs = local_quantize(arrowquant_bin, models[name], tmp_path / "theirs")
    a, b = load_quantized(tmp_path / "ours"), load_quantized(tmp_path / "theirs")
    assert a.schema.equals(b.schema, check_metadata=False)
    assert a.equals(b), name
    ma, mb = a.schema.metadata, b.schema.metadata
    for key in (b"arrowquant.index", b"arrowquant.config", b"arrowquant.modality", b"arrowquant.model",
                b"arrowquant.time_groups"):
        assert ma[key] == mb[key], key
    for k in ("layers", "cosine_similarity", "source_bytes", "num_params", "modality", "actual_bit_width",
              "bits_per_weight", "fallbacks", "compression_basis"):
        assert ours[k] == theirs[k], k
    size = (tmp_path / "ours" / "model.arrow").stat().st_size
    assert ours["model_size_mb"] == size / 2**20
    assert ours["compression_ratio"] == ours["source_bytes"] / size
    assert ours["quantized_path"] == str(tmp_path / "ours" / "model.arrow")
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs"))
    for f in os.listdir(tmp_path / "theirs"):
        if f not in ("model.arrow", "report.json"):
            assert (tmp_path / "ours" / f).read_bytes() == (tmp_path / "theirs" / f).read_bytes(), f
    assert "server_model" in ours  # an external server keeps the model
    assert json.loads((tmp_path / "ours" / "report.json").read_text()) == {
        k: v for k, v in ours.items() if k != "server_model"}


def test_scalar_tensor_shape(q, models, tmp_path, arrowquant_bin):
    ours = q.quantize_diffusion_model(models["scalar"], tmp_path / "ours")
    theirs = local_quantize(arrowquant_bin, models["scalar"], tmp_path / "theirs")
    assert load_quantized(tmp_path / "ours").equals(load_quantized(tmp_path / "theirs"))
    assert [layer["shape"] for layer in theirs["layers"]] == [[64, 128], []]
    assert ours["layers"] == theirs["layers"]


def test_modalities_and_layouts(q, models, tmp_path):
    r = q.quantize_diffusion_model(models["diffusers"], tmp_path / "o")
    assert r["modality"] == "image" and "UNet2DConditionModel" in r["modality_source"]
    assert {layer["name"] for layer in r["layers"]} == {"conv_in.weight", "time_embedding.linear_1.weight", "up.weight"}
    assert load_quantized(tmp_path / "o").num_rows == 1 + 1 + 2  # 2,097,152 elements: two 1M rows
    r = q.quantize_diffusion_model(models["mixed"], tmp_path / "m", {"modality": "code", "bit_width": 8})
    dtypes = {layer["name"]: layer["dtype"] for layer in r["layers"]}
    assert dtypes == {"w32": "F32", "w16": "F16", "wbf": "BF16", "w64": "F64", "b64": "F64", "empty": "F32"}
    assert r["modality"] == "code" and r["bit_width"] == 8


def test_dequantize_matches_go_bit_for_bit(q, models, tmp_path, arrowquant_bin):
    for name in ("sharded-f16", "mixed"):
        out = tmp_path / name
        q.quantize_diffusion_model(models[name], out, {"bit_width": 2, "group_size": 32})
        subprocess.run([arrowquant_bin, "dequantize", "--input", str(out), "--output", str(tmp_path / f"{name}-deq")],
                       check=True, capture_output=True)
        go = {}
        path = tmp_path / f"{name}-deq" / "model.safetensors"
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            data = f.read()
        for t, e in hdr.items():
            if t != "__metadata__":
                b, end = e["data_offsets"]
                go[t] = np.frombuffer(data[b:end], np.float32).reshape(e["shape"])
        ours = dequantize(out)
        assert set(ours) == set(go)
        for t in go:
            assert ours[t].shape == go[t].shape and ours[t].dtype == np.float32
            assert np.array_equal(ours[t].view(np.uint32), go[t].view(np.uint32)), t
        assert set(dequantize(out, names=["w16"] if name == "mixed" else ["a.weight"])) <= set(go)


def test_progress_callback(q, models, tmp_path):
    seen = []
    r = q.quantize_diffusion_model(models["diffusers"], tmp_path / "o", progress_callback=seen.append)
    phases = [p["phase"] for p in seen]
    assert phases[0] == "upload" and phases[-1] == "done" and "download" in phases
    up = [p for p in seen if p["phase"] == "upload"]
    assert [float(p) for p in up] == sorted(float(p) for p in up) and float(up[-1]) == 1.0
    assert up[-1]["bytes_done"] == up[-1]["bytes_total"] == r["source_bytes"]
    assert len(up) >= 2  # 8 MiB of float32 goes in several batches
    down = [p for p in seen if p["phase"] == "download"]
    assert down[-1]["batches_done"] == down[-1]["batches_total"] == load_quantized(tmp_path / "o").num_rows
    assert seen[-1]["result"] is r and float(seen[-1]) == 1.0
    assert all(0.0 <= float(p) <= 1.0 for p in seen)


def test_failing_callback_cancels_the_upload(q, models, tmp_path):
    before = q.stats()["models"]

    def boom(p):
        if p["phase"] == "upload":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        q.quantize_diffusion_model(models["diffusers"], tmp_path / "o", progress_callback=boom, name="cancelled")
    assert not (tmp_path / "o").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".o.tmp")]
    stats = q.stats()
    assert stats["models"] == before
    with pytest.raises(errors.NotFound):
        q.delete("cancelled")


def test_output_directory_rules(q, models, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(errors.OutputExistsError, match="not empty"):
        q.quantize_diffusion_model(models["f32"], out)
    assert (out / "keep.txt").exists()
    with pytest.raises(errors.NotOursError, match="not created by ArrowQuant"):
        q.quantize_diffusion_model(models["f32"], out, overwrite=True)
    assert (out / "keep.txt").exists()
    r = q.quantize_diffusion_model(models["f32"], out, overwrite=True, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.arrow").exists()
    assert r["quantized_path"] == str(out / "model.arrow")
    assert (out / ".arrowquant-output.json").exists()
    q.quantize_diffusion_model(models["f32"], out, {"bit_width": 8}, overwrite=True)  # ours now: no force needed
    src = pathlib.Path(models["f32"])
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for target in (src, src / "out", src.parent):
        with pytest.raises(errors.PathConflictError, match=str(src.resolve())):
            q.quantize_diffusion_model(src, target, overwrite=True, force=True)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(errors.OutputExistsError, match="not a directory"):
        q.quantize_diffusion_model(models["f32"], f)
    empty = tmp_path / "empty"
    empty.mkdir()
    q.quantize_diffusion_model(models["f32"], empty)  # an empty directory is fine
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_named_models_on_the_server(q, models, tmp_path):
    r = q.quantize_diffusion_model(models["f32"], tmp_path / "a", name="team/f32-int4")
    assert r["server_model"] == "team/f32-int4"
    listed = {m["model"]: m for m in q.list_models("team/")}
    assert listed["team/f32-int4"]["bit_width"] == 4 and listed["team/f32-int4"]["total_bytes"] > 0
    with pytest.raises(errors.AlreadyExists, match="already exists"):
        q.quantize_diffusion_model(models["f32"], tmp_path / "b", name="team/f32-int4")
    assert not (tmp_path / "b").exists()
    r = q.quantize_diffusion_model(models["f32"], tmp_path / "b", {"bit_width": 8}, name="team/f32-int4",
                                   overwrite=True)
    assert r["bit_width"] == 8
    q.pull("team/f32-int4", tmp_path / "c")
    assert load_quantized(tmp_path / "c").equals(load_quantized(tmp_path / "b"))
    q.delete("team/f32-int4")
    with pytest.raises(errors.NotFound):
        q.delete("team/f32-int4")
    before = q.list_models("f32-")
    r = q.quantize_diffusion_model(models["f32"], tmp_path / "d", keep_on_server=False)
    assert "server_model" not in r and q.list_models("f32-") == before


def test_server_errors_as_quant_errors(q, models, tmp_path):
    nan = make_model(tmp_path / "nan", {"model.safetensors": {"w": ("F32", np.full((16, 32), np.nan, np.float32))}})
    with pytest.raises(errors.InvalidArgument, match="NaN") as e:
        q.quantize_diffusion_model(nan, tmp_path / "o")
    assert isinstance(e.value, aq.QuantError) and e.value.code == "InvalidArgument"
    assert "gRPC client debug context" not in str(e.value)
    strict = {"bit_width": 2, "min_accuracy": 0.99, "fail_fast": True}
    with pytest.raises(errors.FailedPrecondition, match="fail_fast: tensor") as e:
        q.quantize_diffusion_model(models["f32"], tmp_path / "o", strict)
    assert not (tmp_path / "o").exists()
    with pytest.raises(errors.InvalidBitWidth) as e:
        q.validate_config({"bit_width": 3})
    assert isinstance(e.value, errors.InvalidArgument) and str(e.value) == "InvalidBitWidth(3): bit_width must be 2, 4 or 8"
    assert q.validate_config(profile="edge")["bit_width"] == 2
    assert set(q.profiles()) == {"edge", "local", "cloud"}


def test_local_validation_before_upload(q, models, tmp_path):
    bad = DiffusionQuantConfig.default()
    bad.group_size = 100
    with pytest.raises(errors.InvalidGroupSize, match=r"^InvalidGroupSize\(100\)"):
        q.quantize_diffusion_model(models["f32"], tmp_path / "o", bad)
    nomodel = tmp_path / "nomodel"
    nomodel.mkdir()
    with pytest.raises(errors.ModelFormatError, match="no .safetensors"):
        q.quantize_diffusion_model(nomodel, tmp_path / "o")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b'{"x": 1}  ')
    with pytest.raises(errors.ModelFormatError, match="safetensors"):
        q.quantize_diffusion_model(broken, tmp_path / "o")


def test_mode_and_missing_binary(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match='mode must be "diffusion" or "base"'):
        ArrowQuantV2(mode="video")
    monkeypatch.setenv("ARROW_QUANT_BIN", str(tmp_path / "nope"))
    with pytest.raises(errors.BinaryNotFound, match="make build") as e:
        ArrowQuantV2()
    assert "ARROW_QUANT_BIN" in str(e.value) and isinstance(e.value, aq.QuantError)
    monkeypatch.delenv("ARROW_QUANT_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from arrow_quant_v2 import server as srvmod
    monkeypatch.setattr(srvmod, "_checkout_binaries", lambda: [])
    with pytest.raises(errors.BinaryNotFound, match="make build"):
        ArrowQuantV2()


def test_embedded_server_life_cycle(models, tmp_path):
    with ArrowQuantV2(mode="base") as qz:
        proc, data = qz._server.proc, qz._server.data_dir
        assert qz.embedded and qz.location.startswith("grpc://127.0.0.1:")
        r = qz.quantize_diffusion_model(models["f32"], tmp_path / "o")
        assert r["config"]["enable_time_aware"] is False  # base mode's default
        assert qz.list_models() == []  # the embedded store does not keep models
    assert proc.poll() is not None and not os.path.exists(data)
    qz.close()  # idempotent


def test_embedded_server_stops_at_exit(tmp_path):
    code = textwrap.dedent("""
        import os, sys
        sys.path.insert(0, sys.argv[1])
        from arrow_quant_v2 import ArrowQuantV2
        q = ArrowQuantV2()
        print(q._server.proc.pid, q._server.data_dir, flush=True)
    """)
    res = subprocess.run([sys.executable, "-c", code, str(ROOT / "python")], capture_output=True, text=True,
                         check=True, timeout=60)
    pid, data = res.stdout.split()
    assert not os.path.exists(data)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


def test_environment_server(server, models, tmp_path, monkeypatch):
    monkeypatch.setenv("ARROW_QUANT_SERVER", server.location.replace("grpc://", ""))
    with ArrowQuantV2() as qz:
        assert not qz.embedded and qz._server is None
        r = qz.quantize_diffusion_model(models["f32"], tmp_path / "o", name="via-env")
        assert r["server_model"] == "via-env"


def test_authentication(start_server, arrowquant_bin, models, tmp_path, monkeypatch):
    users = tmp_path / "users.txt"
    subprocess.run([arrowquant_bin, "users", "add", str(users), "bob"], check=True, capture_output=True,
                   env=dict(os.environ, ARROW_QUANT_PASSWORD="pw-bob"), stdin=subprocess.DEVNULL)
    with start_server("--auth-basic", str(users)) as srv:
        with pytest.raises(errors.Unauthenticated):
            ArrowQuantV2(server=srv.location, username="bob", password="wrong")
        with pytest.raises(errors.Unauthenticated):
            with ArrowQuantV2(server=srv.location) as anon:
                anon.stats()
        monkeypatch.setenv("ARROW_QUANT_PASSWORD", "pw-bob")
        with ArrowQuantV2(server=srv.location, username="bob") as qz:
            r = qz.quantize_diffusion_model(models["f32"], tmp_path / "o")
            assert r["layers"] and qz.stats()["models"] == 1
    with start_server("--auth-token", "t0k") as srv:
        with ArrowQuantV2(server=srv.location, token="t0k") as qz:
            assert qz.quantize_diffusion_model(models["f32"], tmp_path / "t")["layers"]


def test_memory_stays_bounded(tmp_path, arrowquant_bin):
    """A 256 MiB F32 model streams through a process whose peak RSS grows by far less than that."""
    model = tmp_path / "big"
    n = 32 << 20  # 32M float32 elements per tensor, 2 tensors
    model.mkdir()
    header = {"a": {"dtype": "F32", "shape": [8192, 4096], "data_offsets": [0, 4 * n]},
              "b": {"dtype": "F32", "shape": [8192, 4096], "data_offsets": [4 * n, 8 * n]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(model / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        chunk = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float32).tobytes()
        for _ in range(8 * n // len(chunk)):
            f.write(chunk)
    (model / "config.json").write_text('{"model_type": "llama"}')
    code = textwrap.dedent("""
        import resource, sys, json
        sys.path.insert(0, sys.argv[1])
        from arrow_quant_v2 import ArrowQuantV2
        with ArrowQuantV2() as q:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            r = q.quantize_diffusion_model(sys.argv[2], sys.argv[3], {"bit_width": 8})
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"base_kb": base, "peak_kb": peak, "params": r["num_params"]}))
    """)
    res = subprocess.run([sys.executable, "-c", code, str(ROOT / "python"), str(model), str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["params"] == 2 * n
    growth_mb = (m["peak_kb"] - m["base_kb"]) / 1024
    print(f"client peak RSS growth for a 256 MiB F32 model: {growth_mb:.1f} MiB")
    assert growth_mb < 96, f"client peak RSS grew by {growth_mb:.0f} MiB for a 256 MiB model"


def test_limits_and_unreachable_servers(start_server, models, tmp_path):
    with start_server("--max-upload-gb", "0.0001") as srv:  # about 100 KiB
        with ArrowQuantV2(server=srv.location) as qz:
            with pytest.raises(errors.ResourceExhausted, match="--max-upload-gb") as e:
                qz.quantize_diffusion_model(models["diffusers"], tmp_path / "o")
            assert e.value.code == "ResourceExhausted" and not (tmp_path / "o").exists()
            assert qz.list_models() == []
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with ArrowQuantV2(server=f"127.0.0.1:{port}", timeout=5) as qz:
        with pytest.raises(errors.Unavailable):
            qz.stats()


def test_server_failure_mid_upload_does_not_hang(q, tmp_path):
    """The server rejects the first tensor while later ones are still being sent."""
    tensors = {"bad": ("F32", np.full((64, 64), np.inf, np.float32))}
    for i in range(6):
        tensors[f"w{i}"] = ("F32", rand((1024, 1024), 20 + i))
    model = make_model(tmp_path / "late", {"model.safetensors": tensors})
    with pytest.raises(errors.InvalidArgument, match="bad"):
        q.quantize_diffusion_model(model, tmp_path / "o", name="late-failure")
    with pytest.raises(errors.NotFound):
        q.delete("late-failure")


def test_calibration_argument(q, tiny_model, tmp_path):
    """Calibration activations sent with quantize_diffusion_model weigh the matching layer."""
    import json as _json
    path = tmp_path / "calib.jsonl"
    with open(path, "w") as f:
        for k in range(16):
            f.write(_json.dumps({"layer": "model.layers.1.mlp.down_proj", "timestep": k,
                                 "activation": [float((j * 5 + k) % 11 - 5) for j in range(704)]}) + "\n")
    r = q.quantize_diffusion_model(tiny_model, tmp_path / "out", calibration=path)
    weighted = [l for l in r["layers"] if l.get("weighting")]
    assert [l["name"] for l in weighted] == ["model.layers.1.mlp.down_proj.weight"]
    assert 0 < weighted[0]["output_cosine_similarity"] <= 1
    assert r["time_groups"]["calibration"]["rows_read"] == 16
    assert r["time_aware"]["applied"] is True


def test_method_dq_over_flight_equals_local(q, tiny_model, tmp_path, arrowquant_bin):
    """method="dq" travels in the DoPut command: the pulled artifact equals `arrowquant quantize --method dq`."""
    cfg = DiffusionQuantConfig.from_profile("local")
    ours = q.quantize_diffusion_model(tiny_model, tmp_path / "ours", cfg, method="dq")
    res = subprocess.run([arrowquant_bin, "quantize", "--model", str(tiny_model), "--output", str(tmp_path / "theirs"),
                          "--profile", "local", "--method", "dq", "--json"], check=True, capture_output=True, text=True)
    theirs = json.loads(res.stdout)
    assert ours["method"] == theirs["method"] == "dq"
    assert any("group_size 128 does not apply" in w for w in ours["warnings"])
    a, b = load_quantized(tmp_path / "ours"), load_quantized(tmp_path / "theirs")
    assert a.equals(b)
    gp = a.column("group_params").to_pylist()
    assert any(v is not None for v in gp)
    assert ours["bits_per_weight"] == theirs["bits_per_weight"]


def test_unknown_method_refused_before_upload(q, tiny_model, tmp_path):
    with pytest.raises(errors.InvalidArgument, match="method: .*unknown quantization method \"nope\""):
        q.quantize_diffusion_model(tiny_model, tmp_path / "o", method="nope")
    assert not (tmp_path / "o").exists()
