"""The Flight server with plain pyarrow.flight, as docs/FLIGHT.md promises: no arrow_quant_v2 import here.

Also pins down which pyarrow exception each gRPC status code arrives as (the table in python/README.md).
"""
import base64
import json
import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl
import pytest


def input_schema(t=pa.float32()):
    return pa.schema([("name", pa.string()), ("shape", pa.list_(pa.int64())), ("dtype", pa.string()),
                      ("chunk_offset", pa.int64()), ("values", pa.list_(t))])


def row_batch(name, shape, dtype, offset, values, t=pa.float32()):
    return pa.record_batch([pa.array([name]), pa.array([list(shape)], pa.list_(pa.int64())), pa.array([dtype]),
                            pa.array([offset], pa.int64()), pa.array([values], pa.list_(t))], schema=input_schema(t))


def weights(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.02).astype(np.float32)


def command(model, **kw):
    kw.setdefault("config", {"modality": "text"})
    return fl.FlightDescriptor.for_command(json.dumps(dict(model=model, **kw)).encode())


def upload(client, model, tensors, chunk=65536, how="write_batch", options=None, **kw):
    """DoPut tensors ({name: float32 array}); returns the acks (the last is the result)."""
    writer, reader = client.do_put(command(model, **kw), input_schema(), options=options)
    for name, w in tensors.items():
        flat = w.reshape(-1)
        for off in range(0, flat.size, chunk):
            b = row_batch(name, w.shape, "F32", off, flat[off:off + chunk])
            if how == "write_with_metadata":
                writer.write_with_metadata(b, f"client note {off}".encode())
            else:
                writer.write_batch(b)
            if how == "write_metadata":
                writer.write_metadata(b"metadata only, ignored")
    writer.done_writing()
    acks = []
    while True:
        buf = reader.read()
        if buf is None:
            break
        acks.append(json.loads(buf.to_pybytes()))
    writer.close()
    return acks


def action(client, kind, body=None, options=None):
    payload = json.dumps(body).encode() if body is not None else b""
    res = list(client.do_action(fl.Action(kind, payload), options=options))
    assert len(res) == 1
    return json.loads(res[0].body.to_pybytes())


@pytest.fixture(scope="module")
def server(start_server):
    with start_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = fl.FlightClient(server.location)
    yield c
    c.close()


@pytest.fixture(scope="module")
def demo(client):
    """A stored model of two tensors, uploaded as in docs/FLIGHT.md."""
    tensors = {"layer.weight": weights((256, 1024)), "other.weight": weights((64, 96), 1)}
    acks = upload(client, "demo", tensors, files={"config.json": base64.b64encode(b'{"model_type": "llama"}').decode(),
                                                   "tokenizer.json": base64.b64encode(b'{"v": 1}').decode()},
                  profile="local", config={"modality": "text", "bit_width": 4})
    return tensors, acks


# ---- DoPut -----------------------------------------------------------------------------------------

def test_do_put_acks_and_result(demo):
    tensors, acks = demo
    *progress, result = acks
    per_batch = [a for a in progress if "elements_received" in a]
    quantized = [a for a in progress if "tensors_quantized" in a]
    assert len(per_batch) == 4 + 1  # 256*1024/65536 batches + one for the small tensor
    assert [q["tensors_quantized"] for q in quantized] == [1, 2]  # the server's progress, one per tensor
    assert {q["quantized"] for q in quantized} == {"layer.weight", "other.weight"}
    assert per_batch[0] == {"tensor": "layer.weight", "elements_received": 65536, "batches": 1}
    assert per_batch[3]["elements_received"] == 256 * 1024
    assert per_batch[-1] == {"tensor": "other.weight", "elements_received": 64 * 96, "batches": 5}
    for k in ("model_size_mb", "cosine_similarity", "compression_ratio", "fallback_occurred", "actual_bit_width",
              "fallback_reason", "layers"):
        assert k in result, k
    assert result["layers"][0]["name"] == "layer.weight" and result["layers"][0]["bit_width"] == 4
    assert result["cosine_similarity"] > 0.98 and result["modality"] == "text"


@pytest.mark.parametrize("how", ["write_with_metadata", "write_metadata"])
def test_do_put_with_metadata(client, how):
    w = weights((128, 512), 2)
    acks = upload(client, f"meta-{how}", {"w": w}, chunk=16384, how=how)
    assert acks[-1]["layers"][0]["params"] == w.size
    assert [a["elements_received"] for a in acks[:-1] if "elements_received" in a] == [16384 * (i + 1) for i in range(4)]


def test_do_put_batch_over_4mib(client):
    w = weights((1536, 1024), 3)  # 6 MiB of float32 in one message: over grpc-go's default 4 MiB
    acks = upload(client, "big-batch", {"big": w}, chunk=w.size)
    assert acks[0]["elements_received"] == w.size
    assert acks[-1]["layers"][0]["params"] == w.size


def test_do_put_bf16_several_rows_per_batch(client):
    w = weights((64, 256), 4)
    bits = (w.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bf16
    schema = input_schema(pa.uint16())
    writer, reader = client.do_put(command("bf16"), schema)
    flat = bits.reshape(-1)
    half = flat.size // 2
    writer.write_batch(pa.record_batch([
        pa.array(["a", "a"]), pa.array([[64, 256], [64, 256]], pa.list_(pa.int64())), pa.array(["BF16", "BF16"]),
        pa.array([0, half], pa.int64()),
        pa.ListArray.from_arrays(pa.array([0, half, flat.size], pa.int32()), pa.array(flat))], schema=schema))
    writer.done_writing()
    acks = []
    while (buf := reader.read()) is not None:
        acks.append(json.loads(buf.to_pybytes()))
    writer.close()
    assert acks[0]["elements_received"] == flat.size
    layer = acks[-1]["layers"][0]
    assert layer["dtype"] == "BF16" and layer["params"] == flat.size


# ---- reads -----------------------------------------------------------------------------------------

def test_get_flight_info(client, demo):
    info = client.get_flight_info(fl.FlightDescriptor.for_path("demo"))
    md = {k.decode(): v.decode() for k, v in info.schema.metadata.items()}
    assert md["arrowquant.format"] == "arrowquant" and md["arrowquant.model"] == "demo"
    assert json.loads(md["arrowquant.config"])["bit_width"] == 4
    assert [f.name for f in info.schema][:4] == ["name", "shape", "dtype", "chunk_offset"]
    assert info.total_records == 2  # one batch per chunk row: 256K elements and 6K elements
    assert info.total_bytes > 0 and len(info.endpoints) >= 1
    meta = json.loads(info.app_metadata)
    assert meta["model"] == "demo" and meta["cosine_similarity"] == demo[1][-1]["cosine_similarity"]
    assert {"config.json", "tokenizer.json"} <= set(meta["files"])
    assert meta["time_groups"]["num_time_groups"] == 10 and meta["fallbacks"] == []
    assert client.get_schema(fl.FlightDescriptor.for_path("demo")).schema.equals(info.schema)


def test_do_get_whole_model_and_dequantized_tensor(client, demo):
    tensors, _ = demo
    info = client.get_flight_info(fl.FlightDescriptor.for_path("demo"))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.num_rows == info.total_records
    assert set(table.column("name").to_pylist()) == set(tensors)
    assert set(table.column("bit_width").to_pylist()) == {4}
    t = json.dumps({"model": "demo", "tensor": "layer.weight", "dequantize": True}).encode()
    rows = client.do_get(fl.Ticket(t)).read_all().to_pylist()
    w_hat = np.concatenate([np.asarray(r["values"], np.float32) for r in rows]).reshape(rows[0]["shape"])
    w = tensors["layer.weight"]
    cos = float(np.dot(w.ravel(), w_hat.ravel()) / np.linalg.norm(w) / np.linalg.norm(w_hat))
    assert w_hat.shape == w.shape and cos > 0.98
    assert np.max(np.abs(w - w_hat)) < 0.02  # within half a step of a 4-bit group


def test_do_get_file(client, demo):
    t = fl.Ticket(json.dumps({"model": "demo", "file": "config.json"}).encode())
    table = client.do_get(t).read_all()
    assert table.column_names == ["name", "data"]
    assert table.to_pylist() == [{"name": "config.json", "data": b'{"model_type": "llama"}'}]


def test_list_flights(client, demo):
    names = [tuple(i.descriptor.path) for i in client.list_flights(b"")]
    assert (b"demo",) in names or ("demo",) in names
    only = list(client.list_flights(b"dem"))
    assert len(only) == 1 and json.loads(only[0].app_metadata)["model"] == "demo"
    assert list(client.list_flights(b"nothing-like-this")) == []


# ---- actions ---------------------------------------------------------------------------------------

def test_list_actions(client):
    types = {a.type for a in client.list_actions()}
    assert types == {"validate_config", "profiles", "delete", "stats", "quantize"}


def test_action_validate_config(client):
    res = action(client, "validate_config", {"config": {"bit_width": 2}})
    assert res["valid"] is True and res["config"]["bit_width"] == 2 and res["config"]["group_size"] == 128
    res = action(client, "validate_config", {"profile": "edge", "config": {"min_accuracy": 0.7}})
    assert res["config"]["bit_width"] == 2 and res["config"]["group_size"] == 256
    assert res["config"]["min_accuracy"] == 0.7


def test_action_profiles(client):
    res = action(client, "profiles")
    assert set(res) == {"edge", "local", "cloud"}
    assert [res[p]["bit_width"] for p in ("edge", "local", "cloud")] == [2, 4, 8]
    assert res["edge"]["enable_streaming"] is True and res["cloud"]["calibration_samples"] == 512


def test_action_stats_and_delete(client):
    upload(client, "to-delete", {"w": weights((32, 64), 5)})
    before = action(client, "stats")
    assert {"models", "bytes", "pending_uploads", "uptime_s", "defaults", "keep_source"} <= set(before)
    assert before["keep_source"] is False and before["defaults"]["deployment_profile"] == "local"
    assert action(client, "delete", {"model": "to-delete"}) == {"deleted": "to-delete"}
    after = action(client, "stats")
    assert after["models"] == before["models"] - 1 and after["bytes"] < before["bytes"]
    with pytest.raises(pa.ArrowKeyError, match='model "to-delete": not found'):
        client.get_flight_info(fl.FlightDescriptor.for_path("to-delete"))


def test_action_quantize_with_keep_source(start_server):
    with start_server("--keep-source") as srv:
        c = fl.FlightClient(srv.location)
        w = weights((128, 256), 6)
        first = upload(c, "src", {"w": w}, config={"modality": "text", "bit_width": 4})[-1]
        res = action(c, "quantize", {"model": "src", "name": "src-int8", "config": {"bit_width": 8}})
        assert res["layers"][0]["bit_width"] == 8 and res["cosine_similarity"] > first["cosine_similarity"]
        assert action(c, "stats")["keep_source"] is True
        info = c.get_flight_info(fl.FlightDescriptor.for_path("src-int8"))
        assert set(c.do_get(info.endpoints[0].ticket).read_all().column("bit_width").to_pylist()) == {8}
        with pytest.raises(pa.ArrowException, match="already exists"):
            action(c, "quantize", {"model": "src", "name": "src-int8", "config": {"bit_width": 2}})
        c.close()


# ---- authentication ------------------------------------------------------------------------------

def test_basic_auth(start_server, arrowquant_bin, tmp_path):
    users = tmp_path / "users.txt"
    env = dict(os.environ, ARROW_QUANT_PASSWORD="s3cret pass")
    subprocess.run([arrowquant_bin, "users", "add", str(users), "alice"], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    with start_server("--auth-basic", str(users)) as srv:
        c = fl.FlightClient(srv.location)
        with pytest.raises(fl.FlightUnauthenticatedError):
            list(c.list_actions())
        with pytest.raises(fl.FlightUnauthenticatedError):
            c.authenticate_basic_token("alice", "wrong")
        pair = c.authenticate_basic_token("alice", "s3cret pass")
        assert pair[0].lower() == b"authorization" and pair[1].startswith(b"Bearer ")
        opts = fl.FlightCallOptions(headers=[pair])
        assert "stats" in {a.type for a in c.list_actions(options=opts)}
        acks = upload(c, "authed", {"w": weights((32, 64), 7)}, options=opts)
        assert acks[-1]["layers"][0]["params"] == 32 * 64
        bad = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-token")])
        with pytest.raises(fl.FlightUnauthenticatedError):
            c.get_flight_info(fl.FlightDescriptor.for_path("authed"), options=bad)
        c.close()


def test_token_auth(start_server):
    with start_server("--auth-token", "tok-123") as srv:
        c = fl.FlightClient(srv.location)
        with pytest.raises(fl.FlightUnauthenticatedError):
            action(c, "stats")
        opts = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer tok-123")])
        assert action(c, "stats", options=opts)["models"] == 0
        c.close()


# ---- error codes as pyarrow exceptions (python/README.md) -------------------------------------------

def test_invalid_argument_is_arrow_invalid(client):
    with pytest.raises(pa.ArrowInvalid, match=r"InvalidBitWidth\(3\): bit_width must be 2, 4 or 8"):
        action(client, "validate_config", {"config": {"bit_width": 3}})
    with pytest.raises(pa.ArrowInvalid, match=r"InvalidGroupSize\(100\)"):
        upload(client, "bad-config", {"w": weights((8, 8))}, config={"modality": "text", "group_size": 100})
    with pytest.raises(pa.ArrowInvalid, match="ticket must be JSON"):
        client.do_get(fl.Ticket(b"not json")).read_all()
    res = upload(client, "no-modality", {"w": weights((8, 8))}, config={})[-1]  # recorded as undetected, not refused
    assert res["modality"] == "" and res["modality_source"].startswith("not detected") and res["modality_effect"]
    w = weights((8, 8))
    w[3, 4] = np.nan
    with pytest.raises(pa.ArrowInvalid, match="NaN"):
        upload(client, "nan", {"w": w})


def test_not_found_is_arrow_key_error(client):
    with pytest.raises(pa.ArrowKeyError, match='store: model "missing": not found'):
        client.get_flight_info(fl.FlightDescriptor.for_path("missing"))
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        client.do_get(fl.Ticket(json.dumps({"model": "missing"}).encode())).read_all()
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        action(client, "delete", {"model": "missing"})


def test_already_exists_is_arrow_exception(client, demo):
    with pytest.raises(pa.ArrowException, match=r'model "demo": already exists') as e:
        upload(client, "demo", {"w": weights((8, 8))})
    # pyarrow has no class of its own for ALREADY_EXISTS: the base ArrowException, message "Unknown: ...".
    assert type(e.value) is pa.ArrowException
    assert "Flight returned already exists error" in str(e.value)
    upload(client, "demo-copy", {"w": weights((8, 8))})
    assert upload(client, "demo-copy", {"w": weights((8, 8), 9)}, overwrite=True)[-1]["layers"]


def test_resource_exhausted(start_server):
    with start_server("--max-upload-gb", "0.001") as srv:  # about 1 MiB
        c = fl.FlightClient(srv.location)
        with pytest.raises(pa.ArrowInvalid, match=r"upload limit of 1073741 bytes \(--max-upload-gb\)") as e:
            upload(c, "too-big", {"w": weights((512, 1024))}, chunk=131072)
        assert "gRPC returned resource exhausted error" in str(e.value)
        assert list(c.list_flights(b"")) == []
        c.close()


def test_failed_precondition_from_fail_fast(client):
    cfg = {"modality": "text", "bit_width": 2, "min_accuracy": 0.99, "fail_fast": True}
    with pytest.raises(pa.ArrowInvalid, match=r"fail_fast: tensor \"w\" at INT2 has cosine similarity") as e:
        upload(client, "strict", {"w": weights((64, 128))}, config=cfg)
    assert "precondition failed" in str(e.value)
    with pytest.raises(pa.ArrowKeyError):
        client.get_flight_info(fl.FlightDescriptor.for_path("strict"))  # nothing committed


def test_failed_precondition_quantize_without_keep_source(client, demo):
    with pytest.raises(pa.ArrowInvalid, match="keep-source") as e:
        action(client, "quantize", {"model": "demo", "name": "demo-2", "config": {"bit_width": 8}})
    assert "precondition failed" in str(e.value)


def test_unavailable_when_nothing_listens():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = fl.FlightClient(f"grpc://127.0.0.1:{port}")
    with pytest.raises(fl.FlightUnavailableError):
        list(c.list_actions(options=fl.FlightCallOptions(timeout=5)))
    c.close()


def llama_block(hidden=256, inter=512, seed=5):
    """One Llama-family block whose q/k/v and gate/up share outlier input columns (as LLMs do)."""
    rng = np.random.default_rng(seed)
    cols = np.ones(hidden, np.float32)
    cols[rng.choice(hidden, 3, replace=False)] = 12
    p = "model.layers.0."
    t = {p + "input_layernorm.weight": (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32),
         p + "post_attention_layernorm.weight": (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)}
    for name, shape in [("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden // 2, hidden)),
                        ("self_attn.v_proj", (hidden // 2, hidden)), ("mlp.gate_proj", (inter, hidden)),
                        ("mlp.up_proj", (inter, hidden)), ("mlp.down_proj", (hidden, inter))]:
        w = rng.standard_normal(shape).astype(np.float32) * 0.02
        if shape[1] == hidden:
            w *= cols
        t[p + name + ".weight"] = w
    return t


def test_equalized_dq_model_over_plain_flight(client):
    """A streamed upload gets channel equalization and dq super-blocks; the quantized rows (group_params,
    channel_scales) decoded with numpy equal the server's own dequantize ticket bit for bit."""
    from arrow_quant_v2 import artifact
    tensors = llama_block()
    *_, result = upload(client, "block-dq", tensors, profile="local", method="dq",
                        config={"modality": "text", "bit_width": 4})
    assert result["method"] == "dq" and result["spatial"]["applied"] is True
    pairs = result["equalization"]["pairs"]
    assert {p["producer"].rsplit(".", 2)[-2] for p in pairs} >= {"input_layernorm", "post_attention_layernorm"}
    table = client.do_get(fl.Ticket(json.dumps({"model": "block-dq"}).encode())).read_all()
    assert "group_params" in table.column_names and "channel_scales" in table.column_names
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        rows = [r for r in table.to_pylist() if r["name"] == name]
        mine = []
        for r in rows:
            v = artifact.dequantize_chunk(r["method"], r["bit_width"], r["group_size"], r["chunk_elems"], r["codes"],
                                          r["scales"], r["mins"], r["group_params"])
            if r["chunk_offset"] == 0:
                cs = np.asarray(r["channel_scales"] or [1], np.float32)
            mine.append(v * cs[(r["chunk_offset"] + np.arange(v.size)) % cs.size])
        mine = np.concatenate(mine)
        t = json.dumps({"model": "block-dq", "tensor": name, "dequantize": True}).encode()
        theirs = np.concatenate([np.asarray(r["values"], np.float32)
                                 for r in client.do_get(fl.Ticket(t)).read_all().to_pylist()])
        assert np.array_equal(mine.view(np.uint32), theirs.view(np.uint32)), name
        w = tensors[name].ravel()
        assert float(np.dot(w, theirs) / np.linalg.norm(w) / np.linalg.norm(theirs)) > 0.99  # W itself comes back
