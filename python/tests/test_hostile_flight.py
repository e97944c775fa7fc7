"""Hostile input over plain pyarrow.flight (issue 9): every case gets its exact gRPC code, and the server stays up.

One row per case: (name, server, request, expected code). After every case the harness checks that the server
process is alive and answers ListFlights, that the data dir holds only committed models (`models/`) and nothing
of a refused upload (`staging/` empty once the call returned, no `arrowquant-calib-*` in the server's TMPDIR),
and that no error message names a server path (data dir or TMPDIR). Every 20 cases on a server, and at the end,
a normal push of a small model and a DoGet of it must work on the same server. A case that kills the server
fails ("server died") and the next case gets a fresh server.

Servers (one per module, started on first use): "main" (defaults), "limit" (--max-upload-gb 1
--max-message-mb 1, ARROW_QUANT_MODALITY=text so that path descriptors can upload) and "auth" (--auth-token T). Flags that a case needs on its own (idle timeout) get a fresh
server in a test below the table.
"""
import base64
import contextlib
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from _hostile import batch, do_put, grpc_code, input_schema

TIMEOUT = 30  # seconds per call: a hang is a failure, not a stuck suite
TOKEN = "T0ken-hostile"

def w8(seed=0, n=64):
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32)


W = w8()  # the one valid tensor "w" [8, 8] that descriptor cases send
GOOD = [batch(("w", [8, 8], "F32", 0, W))]


def J(obj):
    return json.dumps(obj).encode()


M = "$M"  # stands for the case's own fresh model name


def sub(obj, model):
    if isinstance(obj, str):
        return obj.replace(M, model)
    if isinstance(obj, bytes):
        return obj.replace(M.encode(), model.encode())
    if isinstance(obj, dict):
        return {k: sub(v, model) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sub(v, model) for v in obj]
    return obj


def b64(data):
    return base64.b64encode(data).decode()


class Ctx:
    """What a request builder gets: the client, the case's fresh model name, the server under test."""

    def __init__(self, h, model):
        self.h, self.client, self.model = h, h.client, model
        self.committed = []  # models this case stored (deleted after the case)

    def opts(self, headers=None):
        return fl.FlightCallOptions(timeout=TIMEOUT, headers=headers if headers is not None else self.h.headers)


# ---- request builders: each returns call(ctx) -> result -------------------------------------------------

def put(cmd=None, messages=GOOD, schema=None, path=None, raw=None, headers=None):
    """DoPut: a command dict (default: the case's model, modality text), raw command bytes, or a path."""
    def call(ctx):
        if path is not None:
            d = fl.FlightDescriptor.for_path(*[sub(p, ctx.model) for p in path])
        elif raw is not None:
            d = fl.FlightDescriptor.for_command(sub(raw, ctx.model))
        else:
            d = fl.FlightDescriptor.for_command(J(sub({"model": M, "config": {"modality": "text"}} if cmd is None
                                                      else cmd, ctx.model)))
        sch = schema or (messages[0].schema if messages and isinstance(messages[0], pa.RecordBatch) else
                         input_schema())
        acks = do_put(ctx.client, d, sch, messages, ctx.opts(headers))
        if acks and "layers" in acks[-1]:
            ctx.committed.append(acks[-1].get("model") or _model_of(ctx, cmd, path, raw))
        return acks
    return call


def _model_of(ctx, cmd, path, raw):
    if path is not None:
        return sub(path[0], ctx.model)
    if raw is not None:
        try:
            return json.JSONDecoder().raw_decode(sub(raw, ctx.model).decode(errors="replace").lstrip("\ufeff"))[0]["model"]
        except (ValueError, KeyError, TypeError):
            return ctx.model
    c = cmd or {"model": M}
    key = next((k for k in c if k.lower() == "model"), None)  # a case-variant key the server took for "model"
    return sub(c[key], ctx.model) if key and isinstance(c[key], str) else ctx.model


def cmd(**kw):
    """A valid command for the case's model with kw added or replaced (value DROP removes the key)."""
    c = {"model": M, "config": {"modality": "text"}}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not DROP}


DROP = object()


def rows(*messages, vt=pa.float32(), command=None, schema=None):
    """DoPut of the given messages: tuples are rows (one per batch), lists are batches of rows."""
    out = []
    for m in messages:
        if isinstance(m, (bytes, pa.RecordBatch)):
            out.append(m)
        elif isinstance(m, list):
            out.append(batch(*m, vt=vt))
        else:
            out.append(batch(m, vt=vt))
    return put(cmd=command, messages=out, schema=schema or input_schema(vt))


def get(ticket, headers=None):
    def call(ctx):
        t = ticket if isinstance(ticket, bytes) else J(ticket)
        return ctx.client.do_get(fl.Ticket(sub(t, ctx.model)), options=ctx.opts(headers)).read_all()
    return call


def desc(kind, *a):
    return fl.FlightDescriptor.for_path(*a) if kind == "path" else fl.FlightDescriptor.for_command(a[0])


def info(d, headers=None):
    return lambda ctx: ctx.client.get_flight_info(d, options=ctx.opts(headers))


def schema_of(d, headers=None):
    return lambda ctx: ctx.client.get_schema(d, options=ctx.opts(headers))


def act(kind, body=b"", headers=None):
    def call(ctx):
        b = body if isinstance(body, bytes) else J(body)
        return [r.body.to_pybytes() for r in ctx.client.do_action(fl.Action(kind, sub(b, ctx.model)),
                                                                   options=ctx.opts(headers))]
    return call


def list_flights(headers=None):
    return lambda ctx: list(ctx.client.list_flights(b"", options=ctx.opts(headers)))


def list_actions(headers=None):
    return lambda ctx: list(ctx.client.list_actions(options=ctx.opts(headers)))


def seq(*calls):
    """Several requests in one case; the result is the last one's."""
    def call(ctx):
        r = None
        for c in calls:
            r = c(ctx)
        return r
    return call


# ---- checks of successful cases -------------------------------------------------------------------------

def to_f32(values, vt):
    a = np.asarray(values)
    if vt == pa.uint16():  # bf16 bits
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def stored(expect, vt=pa.float32()):
    """check(ctx, acks): DoGet of the model (dequantized) gives back each tensor {name: (shape, values)}."""
    def check(ctx, _):
        model = ctx.committed[-1]
        t = ctx.client.do_get(fl.Ticket(J({"model": model, "dequantize": True})), options=ctx.opts()).read_all()
        got = {}
        for r in t.to_pylist():
            shape, vals = got.setdefault(r["name"], (r["shape"], []))
            assert r["shape"] == shape, (r["name"], r["shape"], shape)
            vals.extend(r["values"])
        assert set(got) == set(expect), (sorted(got), sorted(expect))
        for name, (shape, values) in expect.items():
            gshape, gvals = got[name]
            assert list(gshape) == list(shape), (name, gshape, shape)
            want = to_f32(values, vt)
            have = np.asarray(gvals, np.float32)
            assert have.size == want.size == int(np.prod(shape, dtype=np.int64)), (name, have.size, want.size)
            if want.size:
                tol = 0.1 * float(want.max() - want.min()) + 1e-6
                assert np.allclose(have, want, atol=tol), (name, float(np.abs(have - want).max()), tol)
        q = ctx.client.do_get(fl.Ticket(J({"model": model})), options=ctx.opts()).read_all()
        assert set(q.column("name").to_pylist()) == set(expect)  # every tensor has a row, empty ones too
    return check


def result_ok(ctx, acks):
    assert acks and "layers" in acks[-1], acks[-1:] if acks else acks


def table_rows(n):
    def check(ctx, table):
        assert table.num_rows == n, table.num_rows
    return check


# ---- the table ----------------------------------------------------------------------------------------------

IA, NF, AE, RE, FP, UA = ("InvalidArgument", "NotFound", "AlreadyExists", "ResourceExhausted",
                          "FailedPrecondition", "Unauthenticated")
OK = "OK"
NAME_READ = (IA, NF)  # a name that breaks the naming rules, in a read: refused, or simply not there

LONG = "x" * 100_000
CALIB_ROW = J({"layer": "w", "timestep": 0.5, "activation": [0.1] * 8}) + b"\n"
F16 = np.array([0.5, -1.25, 2.0, 0.0], np.float16)
BF16 = (np.array([0.5, -1.25, 2.0, 0.0], np.float32).view(np.uint32) >> 16).astype(np.uint16)


class C:
    def __init__(self, name, server, call, expect, check=None):
        self.name, self.server, self.call, self.check = name, server, call, check
        self.expect = expect if isinstance(expect, tuple) else (expect,)


def schema_case(fields, cols):
    s = pa.schema(fields)
    return put(messages=[pa.record_batch(cols, schema=s)], schema=s)


_S = pa.array(["w"])
_SH = pa.array([[4]], pa.list_(pa.int64()))
_DT = pa.array(["F32"])
_OFF = pa.array([0], pa.int64())
_V = pa.array([[1.0, 2.0, 3.0, 4.0]], pa.list_(pa.float32()))
_F = {"name": ("name", pa.string()), "shape": ("shape", pa.list_(pa.int64())), "dtype": ("dtype", pa.string()),
      "off": ("chunk_offset", pa.int64()), "values": ("values", pa.list_(pa.float32()))}


def without(col):
    keys = [k for k in _F if k != col]
    cols = {"name": _S, "shape": _SH, "dtype": _DT, "off": _OFF, "values": _V}
    return schema_case([_F[k] for k in keys], [cols[k] for k in keys])


def replaced(col, field, arr):
    cols = {"name": _S, "shape": _SH, "dtype": _DT, "off": _OFF, "values": _V}
    fields = dict(_F)
    fields[col], cols[col] = field, arr
    return schema_case([fields[k] for k in _F], [cols[k] for k in _F])


def bad_utf8_name_batch():
    names = pa.StringArray.from_buffers(1, pa.py_buffer(np.array([0, 3], np.int32).tobytes()),
                                        pa.py_buffer(b"w\xff\xfe"))
    return pa.record_batch([names, _SH, _DT, _OFF, _V], schema=input_schema())


def null_col_batch(col):
    cols = {"name": _S, "shape": _SH, "dtype": _DT, "off": _OFF, "values": _V}
    cols[col] = pa.array([None], _F[col][1])
    return pa.record_batch([cols[k] for k in _F], schema=input_schema())


def calib(name, data, messages=GOOD, **kw):
    return put(cmd=cmd(calibration={"name": name, "data": b64(data)}, **kw), messages=messages)


AUTH = [(b"authorization", ("Bearer " + TOKEN).encode())]
NOAUTH = []

CASES = [
    # -- DoPut descriptor: the command JSON ----------------------------------------------------------------
    C("cmd-not-json", "main", put(raw=b"not json"), IA),
    C("cmd-empty", "main", put(raw=b""), IA),
    C("cmd-whitespace", "main", put(raw=b"   \n"), IA),
    C("cmd-json-array", "main", put(raw=b"[]"), IA),
    C("cmd-json-string", "main", put(raw=b'"$M"'), IA),
    C("cmd-json-null", "main", put(raw=b"null"), IA),
    C("cmd-json-number", "main", put(raw=b"42"), IA),
    C("cmd-truncated", "main", put(raw=b'{"model": "$M"'), IA),
    C("cmd-trailing-word", "main", put(raw=b'{"model": "$M", "config": {"modality": "text"}} x'), IA),
    C("cmd-trailing-object", "main", put(raw=b'{"model": "$M", "config": {"modality": "text"}}{}'), IA),
    C("cmd-trailing-command", "main",
      put(raw=b'{"model": "$M", "config": {"modality": "text"}} {"model": "other"}'), IA),
    C("cmd-trailing-bracket", "main", put(raw=b'{"model": "$M", "config": {"modality": "text"}}]'), IA),
    C("cmd-trailing-nul", "main", put(raw=b'{"model": "$M", "config": {"modality": "text"}}\x00'), IA),
    C("cmd-bom", "main", put(raw=b'\xef\xbb\xbf{"model": "$M", "config": {"modality": "text"}}'), IA),
    C("cmd-invalid-utf8-model", "main", put(raw=b'{"model": "$M\xff", "config": {"modality": "text"}}'), IA),
    C("cmd-unknown-key", "main", put(cmd=cmd(bogus=1)), IA),
    # Go's encoding/json matches keys case-insensitively even with DisallowUnknownFields: "Model" is not "model".
    C("cmd-unknown-key-case-variant", "main", put(cmd={"Model": M, "config": {"modality": "text"}}), IA),
    C("cmd-unknown-key-in-calibration", "main",
      put(cmd=cmd(calibration={"name": "c.jsonl", "data": b64(CALIB_ROW), "extra": 1})), IA),
    C("cmd-model-int", "main", put(cmd=cmd(model=1)), IA),
    C("cmd-model-null", "main", put(cmd=cmd(model=None)), IA),
    C("cmd-model-list", "main", put(cmd=cmd(model=[M])), IA),
    C("cmd-model-object", "main", put(cmd=cmd(model={"name": M})), IA),
    C("cmd-model-bool", "main", put(cmd=cmd(model=True)), IA),
    C("cmd-overwrite-string", "main", put(cmd=cmd(overwrite="yes")), IA),
    C("cmd-overwrite-int", "main", put(cmd=cmd(overwrite=1)), IA),
    C("cmd-tensors-string", "main", put(cmd=cmd(tensors="1")), IA),
    C("cmd-tensors-float", "main", put(cmd=cmd(tensors=1.5)), IA),
    C("cmd-tensors-negative", "main", put(cmd=cmd(tensors=-1)), IA),
    C("cmd-files-list", "main", put(cmd=cmd(files=["config.json"])), IA),
    C("cmd-files-value-int", "main", put(cmd=cmd(files={"config.json": 5})), IA),
    C("cmd-files-value-not-base64", "main", put(cmd=cmd(files={"config.json": "not base64!"})), IA),
    C("cmd-config-string", "main", put(cmd=cmd(config="bit_width=4")), IA),
    C("cmd-config-list", "main", put(cmd=cmd(config=[4])), IA),
    C("cmd-profile-int", "main", put(cmd=cmd(profile=3)), IA),
    C("cmd-calibration-string", "main", put(cmd=cmd(calibration="c.jsonl")), IA),
    C("cmd-method-int", "main", put(cmd=cmd(method=4)), IA),
    C("cmd-missing-model", "main", put(cmd={}), IA),
    C("cmd-missing-model-with-config", "main", put(cmd=cmd(model=DROP)), IA),
    C("cmd-empty-model", "main", put(cmd=cmd(model="")), IA),
    C("path-no-elements", "main", put(path=()), IA),
    C("path-two-elements", "main", put(path=(M, "x")), IA),
    C("path-empty-element", "main", put(path=("",)), IA),
    # -- model names: 1-200 chars of A-Z a-z 0-9 . _ - /, no leading . or /, no trailing /, no //, no ./.. --
    C("name-201-chars", "main", put(cmd=cmd(model="n" * 201)), IA),
    C("name-100k-chars", "main", put(cmd=cmd(model=LONG)), IA),
    C("name-100k-chars-path", "main", put(path=(LONG,)), IA),
    C("name-space", "main", put(cmd=cmd(model="a b")), IA),
    C("name-nul", "main", put(cmd=cmd(model="a\x00b")), IA),
    C("name-unicode", "main", put(cmd=cmd(model="mod\u00e8le")), IA),
    C("name-dotdot-slash", "main", put(cmd=cmd(model="../x")), IA),
    C("name-leading-slash", "main", put(cmd=cmd(model="/x")), IA),
    C("name-trailing-slash", "main", put(cmd=cmd(model="x/")), IA),
    C("name-double-slash", "main", put(cmd=cmd(model="a//b")), IA),
    C("name-leading-dot", "main", put(cmd=cmd(model=".x")), IA),
    C("name-dot-segment", "main", put(cmd=cmd(model="a/./b")), IA),
    C("name-dotdot-segment", "main", put(cmd=cmd(model="a/../b")), IA),
    C("name-dotdot", "main", put(cmd=cmd(model="..")), IA),
    C("name-dot", "main", put(cmd=cmd(model=".")), IA),
    C("name-backslash", "main", put(cmd=cmd(model="a\\b")), IA),
    C("name-newline", "main", put(cmd=cmd(model="a\nb")), IA),
    C("name-colon", "main", put(cmd=cmd(model="a:b")), IA),
    C("name-dotdot-path", "main", put(path=("../x",)), IA),
    C("name-leading-slash-path", "main", put(path=("/x",)), IA),
    C("name-200-chars-ok", "main", put(cmd=cmd(model="n" * 200)), OK, stored({"w": ([8, 8], W)})),
    C("name-nested-ok", "main", put(cmd=cmd(model="org/model-1.0_x")), OK, stored({"w": ([8, 8], W)})),
    C("name-all-classes-ok", "main", put(cmd=cmd(model="Ab_9.z-")), OK, result_ok),
    # -- configuration ------------------------------------------------------------------------------------
    C("cfg-unknown-profile", "main", put(cmd=cmd(profile="turbo")), IA),
    C("cfg-bit-width-3", "main", put(cmd=cmd(config={"modality": "text", "bit_width": 3})), IA),
    C("cfg-bit-width-16", "main", put(cmd=cmd(config={"modality": "text", "bit_width": 16})), IA),
    C("cfg-bit-width-float", "main", put(cmd=cmd(config={"modality": "text", "bit_width": 4.5})), IA),
    C("cfg-bit-width-bool", "main", put(cmd=cmd(config={"modality": "text", "bit_width": True})), IA),
    C("cfg-bit-width-huge", "main", put(cmd=cmd(config={"modality": "text", "bit_width": 1e30})), IA),
    C("cfg-group-size-100", "main", put(cmd=cmd(config={"modality": "text", "group_size": 100})), IA),
    C("cfg-group-size-0", "main", put(cmd=cmd(config={"modality": "text", "group_size": 0})), IA),
    C("cfg-time-groups-150", "main", put(cmd=cmd(config={"modality": "text", "num_time_groups": 150})), IA),
    C("cfg-time-groups-0", "main", put(cmd=cmd(config={"modality": "text", "num_time_groups": 0})), IA),
    C("cfg-min-accuracy-1.5", "main", put(cmd=cmd(config={"modality": "text", "min_accuracy": 1.5})), IA),
    C("cfg-min-accuracy-negative", "main", put(cmd=cmd(config={"modality": "text", "min_accuracy": -0.1})), IA),
    C("cfg-calibration-samples-0", "main",
      put(cmd=cmd(config={"modality": "text", "calibration_samples": 0})), IA),
    C("cfg-threads-negative", "main", put(cmd=cmd(config={"modality": "text", "num_threads": -1})), IA),
    C("cfg-modality-video", "main", put(cmd=cmd(config={"modality": "video"})), IA),
    C("cfg-unknown-key", "main", put(cmd=cmd(config={"modality": "text", "bogus": 1})), IA),
    C("cfg-profile-key-unknown", "main", put(cmd=cmd(config={"modality": "text", "deployment_profile": "x"})), IA),
    C("cfg-unknown-method", "main", put(cmd=cmd(method="nope")), IA),
    # -- files stored with the model -----------------------------------------------------------------------
    C("files-dotdot", "main", put(cmd=cmd(files={"../x": b64(b"{}")})), IA),
    C("files-subdir", "main", put(cmd=cmd(files={"a/b": b64(b"{}")})), IA),
    C("files-hidden", "main", put(cmd=cmd(files={".hidden": b64(b"{}")})), IA),
    C("files-model-arrow", "main", put(cmd=cmd(files={"model.arrow": b64(b"x")})), IA),
    C("files-report-json", "main", put(cmd=cmd(files={"report.json": b64(b"{}")})), IA),
    C("files-empty-name", "main", put(cmd=cmd(files={"": b64(b"{}")})), IA),
    C("files-dot", "main", put(cmd=cmd(files={".": b64(b"{}")})), IA),
    C("files-dotdot-alone", "main", put(cmd=cmd(files={"..": b64(b"{}")})), IA),
    C("files-commit-marker", "main", put(cmd=cmd(files={".commit.json": b64(b"{}")})), IA),
    C("files-absolute", "main", put(cmd=cmd(files={"/etc/passwd": b64(b"x")})), IA),
    C("files-nul-in-name", "main", put(cmd=cmd(files={"a\x00b": b64(b"x")})), IA),
    C("files-name-300-chars", "main", put(cmd=cmd(files={"f" * 300: b64(b"x")})), IA),
    C("files-config-not-json", "main", put(cmd=cmd(config=DROP, files={"config.json": b64(b"{not json")})), IA),
    C("files-config-json-array", "main", put(cmd=cmd(config=DROP, files={"config.json": b64(b"[1, 2]")})), IA),
    # -- calibration payloads -------------------------------------------------------------------------------
    C("calib-name-dotdot", "main", calib("../c.jsonl", CALIB_ROW), IA),
    C("calib-name-empty", "main", calib("", CALIB_ROW), IA),
    C("calib-name-subdir", "main", calib("a/c.jsonl", CALIB_ROW), IA),
    C("calib-name-hidden", "main", calib(".jsonl", CALIB_ROW), IA),
    C("calib-empty-data", "main", calib("c.jsonl", b""), IA),
    C("calib-not-parquet", "main", calib("c.parquet", b"this is not parquet at all"), IA),
    C("calib-parquet-magic-only", "main", calib("c.parquet", b"PAR1PAR1"), IA),
    C("calib-not-arrow", "main", calib("c.arrow", b"ARROW1\x00\x00garbage"), IA),
    C("calib-txt-extension", "main", calib("c.txt", CALIB_ROW), IA),
    C("calib-no-extension", "main", calib("calibration", CALIB_ROW), IA),
    C("calib-jsonl-malformed", "main", calib("c.jsonl", b'{"layer": "w", "timestep": \n'), IA),
    C("calib-jsonl-missing-fields", "main", calib("c.jsonl", b'{"layer": "w"}\n'), IA),
    C("calib-jsonl-null-activation", "main",
      calib("c.jsonl", J({"layer": "w", "timestep": 0.5, "activation": [0.1, None]}) + b"\n"), IA),
    C("calib-data-not-base64", "main", put(cmd=cmd(calibration={"name": "c.jsonl", "data": "%%%"})), IA),
    # Calibration of layer "w" applies to a weight "w.weight" with 8 input channels; tensor "w" alone is another model.
    C("calib-valid-jsonl-ok", "main", calib("c.jsonl", CALIB_ROW * 4, messages=[batch(("w.weight", [8, 8], "F32", 0, W))]),
      OK, result_ok),
    C("calib-other-model", "main", calib("c.jsonl", CALIB_ROW * 4), IA),
    C("calib-other-channels", "main", calib("c.jsonl", CALIB_ROW * 4, messages=[batch(("w.weight", [4, 16], "F32", 0, W))]),
      IA),
    C("calib-unused-ok", "main",  # a warning names the calibration file: it must not be the server's temp path
      calib("c.jsonl", CALIB_ROW, config={"modality": "text", "enable_time_aware": False, "enable_spatial": False}),
      OK, result_ok),
    # -- DoPut stream: schema ---------------------------------------------------------------------------------
    C("schema-missing-values", "main", without("values"), IA),
    C("schema-missing-offset", "main", without("off"), IA),
    C("schema-missing-name", "main", without("name"), IA),
    C("schema-values-int32", "main",
      replaced("values", ("values", pa.list_(pa.int32())), pa.array([[1, 2, 3, 4]], pa.list_(pa.int32()))), IA),
    C("schema-values-float64", "main",
      replaced("values", ("values", pa.list_(pa.float64())), pa.array([[1., 2, 3, 4]], pa.list_(pa.float64()))),
      IA),
    C("schema-values-uint8", "main",
      replaced("values", ("values", pa.list_(pa.uint8())), pa.array([[1, 2, 3, 4]], pa.list_(pa.uint8()))), IA),
    C("schema-values-not-list", "main", replaced("values", ("values", pa.float32()), pa.array([1.0], pa.float32())),
      IA),
    C("schema-shape-int32", "main",
      replaced("shape", ("shape", pa.list_(pa.int32())), pa.array([[4]], pa.list_(pa.int32()))), IA),
    C("schema-shape-float", "main",
      replaced("shape", ("shape", pa.list_(pa.float64())), pa.array([[4.0]], pa.list_(pa.float64()))), IA),
    C("schema-name-int64", "main", replaced("name", ("name", pa.int64()), pa.array([1], pa.int64())), IA),
    C("schema-dtype-int64", "main", replaced("dtype", ("dtype", pa.int64()), pa.array([1], pa.int64())), IA),
    C("schema-offset-int32", "main",
      replaced("off", ("chunk_offset", pa.int32()), pa.array([0], pa.int32())), IA),
    C("schema-duplicate-column", "main",
      schema_case([_F[k] for k in _F] + [("name", pa.string())], [_S, _SH, _DT, _OFF, _V, _S]), IA),
    C("schema-no-columns", "main", put(messages=[], schema=pa.schema([])), IA),
    # -- DoPut stream: rows -------------------------------------------------------------------------------------
    C("row-empty-name", "main", rows(("", [4], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-name-nul", "main", rows(("a\x00b", [4], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-name-100k", "main", rows((LONG, [4], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-name-invalid-utf8", "main", put(messages=[bad_utf8_name_batch()]), IA),
    C("row-dtype-unknown", "main", rows(("w", [4], "F8", 0, [1, 2, 3, 4])), IA),
    C("row-dtype-lowercase", "main", rows(("w", [4], "f32", 0, [1, 2, 3, 4])), IA),
    C("row-dtype-empty", "main", rows(("w", [4], "", 0, [1, 2, 3, 4])), IA),
    C("row-dtype-int", "main", rows(("w", [4], "I32", 0, [1, 2, 3, 4])), IA),
    C("row-negative-dim", "main", rows(("w", [-1, 4], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-negative-dims-product-positive", "main", rows(("w", [-2, -2], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-int64-min-dim", "main", rows(("w", [-2**63], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-33-dims", "main", rows(("w", [1] * 33, "F32", 0, [1])), IA),
    C("row-100-dims", "main", rows(("w", [1] * 100, "F32", 0, [1])), IA),
    C("row-overflow-2^32x2^32-empty", "main", rows(("w", [2**32, 2**32], "F32", 0, [])), IA),
    C("row-overflow-2^32x2^32-values", "main", rows(("w", [2**32, 2**32], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-overflow-2^61+1x8", "main", rows(("w", [2**61 + 1, 8], "F32", 0, list(range(8)))), IA),
    C("row-overflow-2^62x4", "main", rows(("w", [2**62, 4], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-overflow-max-int64x2", "main", rows(("w", [2**63 - 1, 2], "F32", 0, [1, 2])), IA),
    C("row-overflow-three-dims", "main", rows(("w", [2**31, 2**31, 4], "F32", 0, [])), IA),
    C("row-huge-declared-few-sent", "main", rows(("w", [2**40], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-offset-gap", "main", rows(("w", [16], "F32", 0, W[:8]), ("w", [16], "F32", 12, W[8:12])), IA),
    C("row-offset-overlap", "main", rows(("w", [16], "F32", 0, W[:8]), ("w", [16], "F32", 4, W[4:16])), IA),
    C("row-offset-first-nonzero", "main", rows(("w", [16], "F32", 4, W[:12])), IA),
    C("row-offset-negative", "main", rows(("w", [16], "F32", -8, W[:16])), IA),
    C("row-too-many-elements", "main", rows(("w", [4], "F32", 0, W[:8])), IA),
    C("row-too-many-across-chunks", "main", rows(("w", [8], "F32", 0, W[:6]), ("w", [8], "F32", 6, W[:6])), IA),
    C("row-too-few-stream-ends", "main", rows(("w", [16], "F32", 0, W[:8])), IA),
    C("row-too-few-next-tensor", "main", rows(("a", [16], "F32", 0, W[:8]), ("b", [4], "F32", 0, W[:4])), IA),
    C("row-tensor-repeated", "main",
      rows(("a", [4], "F32", 0, W[:4]), ("b", [4], "F32", 0, W[:4]), ("a", [4], "F32", 0, W[:4])), IA),
    C("row-shape-changes", "main", rows(("w", [16], "F32", 0, W[:8]), ("w", [4, 4], "F32", 8, W[:8])), IA),
    C("row-dtype-changes", "main", rows(("w", [16], "F32", 0, W[:8]), ("w", [16], "F16", 8, W[:8])), IA),
    C("row-f16-as-uint16", "main", rows(("w", [4], "F16", 0, [1, 2, 3, 4]), vt=pa.uint16()), IA),
    C("row-bf16-as-float16", "main", rows(("w", [4], "BF16", 0, F16), vt=pa.float16()), IA),
    C("row-f32-as-float16", "main", rows(("w", [4], "F32", 0, F16), vt=pa.float16()), IA),
    C("row-f32-as-uint16", "main", rows(("w", [4], "F32", 0, [1, 2, 3, 4]), vt=pa.uint16()), IA),
    C("row-null-name", "main", put(messages=[null_col_batch("name")]), IA),
    C("row-null-shape", "main", put(messages=[null_col_batch("shape")]), IA),
    C("row-null-dtype", "main", put(messages=[null_col_batch("dtype")]), IA),
    C("row-null-offset", "main", put(messages=[null_col_batch("off")]), IA),
    C("row-null-values-list", "main", rows(("w", [4], "F32", 0, None)), IA),
    C("row-null-in-values", "main", rows(("w", [4], "F32", 0, pa.array([1.0, None, 3.0, 4.0], pa.float32()))), IA),
    C("row-null-in-shape", "main", rows(("w", [4, None], "F32", 0, [1, 2, 3, 4])), IA),
    C("row-nan", "main", rows(("w", [4], "F32", 0, [1, float("nan"), 3, 4])), IA),
    C("row-plus-inf", "main", rows(("w", [4], "F32", 0, [1, float("inf"), 3, 4])), IA),
    C("row-minus-inf", "main", rows(("w", [4], "F32", 0, [1, float("-inf"), 3, 4])), IA),
    C("row-nan-f16", "main", rows(("w", [4], "F16", 0, np.array([1, np.nan, 3, 4], np.float16)), vt=pa.float16()),
      IA),
    C("row-inf-f16", "main", rows(("w", [4], "F16", 0, np.array([1, np.inf, 3, 4], np.float16)), vt=pa.float16()),
      IA),
    C("row-nan-bf16", "main", rows(("w", [4], "BF16", 0, [0x3f80, 0x7fc0, 0, 0]), vt=pa.uint16()), IA),
    C("row-inf-bf16", "main", rows(("w", [4], "BF16", 0, [0x3f80, 0xff80, 0, 0]), vt=pa.uint16()), IA),
    C("row-nan-second-chunk", "main",
      rows(("w", [8], "F32", 0, W[:4]), ("w", [8], "F32", 4, [1, 2, float("nan"), 4])), IA),
    C("row-bad-row-after-good-rows", "main",
      rows([("a", [4], "F32", 0, W[:4]), ("b", [4], "F32", 0, W[:4]), ("c", [4], "XX", 0, W[:4])]), IA),
    C("row-zero-size-with-values", "main", rows(("w", [0], "F32", 0, [1.0])), IA),
    C("row-zero-size-offset-1", "main", rows(("w", [0], "F32", 1, [])), IA),
    C("row-scalar-two-values", "main", rows(("w", [], "F32", 0, [1.0, 2.0])), IA),
    C("row-scalar-no-values", "main", rows(("w", [], "F32", 0, [])), IA),
    C("stream-schema-only", "main", put(messages=[]), IA),
    C("stream-metadata-only", "main", put(messages=[b"just metadata", b"more"]), IA),
    C("stream-declared-3-sent-2", "main",
      rows(("a", [4], "F32", 0, W[:4]), ("b", [4], "F32", 0, W[:4]), command=cmd(tensors=3)), IA),
    C("stream-declared-1-sent-2", "main",
      rows(("a", [4], "F32", 0, W[:4]), ("b", [4], "F32", 0, W[:4]), command=cmd(tensors=1)), IA),
    # -- valid streams that must succeed and come back as stored --------------------------------------------
    C("ok-zero-size-1d", "main", rows(("e", [0], "F32", 0, [])), OK, stored({"e": ([0], [])})),
    C("ok-zero-size-0x16", "main", rows(("e", [0, 16], "F32", 0, [])), OK, stored({"e": ([0, 16], [])})),
    C("ok-zero-size-16x0", "main", rows(("e", [16, 0], "F32", 0, [])), OK, stored({"e": ([16, 0], [])})),
    C("ok-zero-size-among-others", "main",
      rows(("a", [8, 8], "F32", 0, W), ("e", [0, 16], "F32", 0, []), ("b", [4], "F32", 0, W[:4])), OK,
      stored({"a": ([8, 8], W), "e": ([0, 16], []), "b": ([4], W[:4])})),
    C("ok-empty-chunk-mid-tensor", "main",
      rows(("w", [8, 8], "F32", 0, W[:32]), ("w", [8, 8], "F32", 32, []), ("w", [8, 8], "F32", 32, W[32:])), OK,
      stored({"w": ([8, 8], W)})),
    C("ok-empty-chunk-first", "main", rows(("w", [8, 8], "F32", 0, []), ("w", [8, 8], "F32", 0, W)), OK,
      stored({"w": ([8, 8], W)})),
    C("ok-empty-chunk-last", "main", rows(("w", [8, 8], "F32", 0, W), ("w", [8, 8], "F32", 64, [])), OK,
      stored({"w": ([8, 8], W)})),
    C("ok-metadata-between-batches", "main",
      rows(b"before", ("w", [8, 8], "F32", 0, W[:32]), b"between", ("w", [8, 8], "F32", 32, W[32:]), b"after"),
      OK, stored({"w": ([8, 8], W)})),
    C("ok-batches-with-metadata", "main",
      put(messages=[(batch(("w", [8, 8], "F32", 0, W[:32])), b"note 1"), (batch(("w", [8, 8], "F32", 32, W[32:])),
                                                                             b"note 2")]),
      OK, stored({"w": ([8, 8], W)})),
    C("ok-scalar", "main", rows(("s", [], "F32", 0, [0.25])), OK, stored({"s": ([], [0.25])})),
    C("ok-32-dims", "main", rows(("d", [1] * 31 + [4], "F32", 0, W[:4])), OK, stored({"d": ([1] * 31 + [4], W[:4])})),
    C("ok-f16", "main", rows(("h", [4], "F16", 0, F16), vt=pa.float16()), OK, stored({"h": ([4], F16)})),
    C("ok-bf16", "main", rows(("b", [4], "BF16", 0, BF16), vt=pa.uint16()), OK,
      stored({"b": ([4], BF16)}, vt=pa.uint16())),
    C("ok-f64-as-float32", "main", rows(("d", [8, 8], "F64", 0, W)), OK, stored({"d": ([8, 8], W)})),
    C("ok-f16-as-float32", "main", rows(("h", [8, 8], "F16", 0, W)), OK, stored({"h": ([8, 8], W)})),
    C("ok-rows-of-two-tensors-in-one-batch", "main",
      rows([("a", [8], "F32", 0, W[:4]), ("a", [8], "F32", 4, W[4:8]), ("b", [4], "F32", 0, W[8:12])]), OK,
      stored({"a": ([8], W[:8]), "b": ([4], W[8:12])})),
    C("ok-declared-tensors-match", "main",
      rows(("a", [4], "F32", 0, W[:4]), ("b", [4], "F32", 0, W[4:8]), command=cmd(tensors=2)), OK,
      stored({"a": ([4], W[:4]), "b": ([4], W[4:8])})),
    C("ok-overwrite-own", "main", seq(put(), put(cmd=cmd(overwrite=True))), OK, result_ok),
    C("ok-path-descriptor", "limit", put(path=(M,)), OK, stored({"w": ([8, 8], W)})),
    # -- AlreadyExists --------------------------------------------------------------------------------------
    C("exists-command", "main", put(cmd=cmd(model="base")), AE),
    C("exists-path", "limit", put(path=("base",)), AE),
    C("exists-overwrite-false", "main", put(cmd=cmd(model="base", overwrite=False)), AE),
    C("exists-own-second-push", "main", seq(put(), put()), AE),
    # -- DoGet tickets --------------------------------------------------------------------------------------
    C("get-not-json", "main", get(b"x"), IA),
    C("get-empty", "main", get(b""), IA),
    C("get-trailing-word", "main", get(b'{"model": "base"} x'), IA),
    C("get-trailing-object", "main", get(b'{"model": "base"}{}'), IA),
    C("get-trailing-ticket", "main", get(b'{"model": "base"}{"model": "base"}'), IA),
    C("get-unknown-key", "main", get({"model": "base", "bogus": 1}), IA),
    C("get-unknown-key-case-variant", "main", get({"Model": "base"}), IA),
    C("get-missing-model", "main", get({}), IA),
    C("get-empty-model", "main", get({"model": ""}), IA),
    C("get-model-int", "main", get({"model": 1}), IA),
    C("get-tensor-int", "main", get({"model": "base", "tensor": 1}), IA),
    C("get-dequantize-string", "main", get({"model": "base", "dequantize": "yes"}), IA),
    C("get-file-int", "main", get({"model": "base", "file": 1}), IA),
    C("get-array", "main", get(b"[]"), IA),
    C("get-null", "main", get(b"null"), IA),
    C("get-unknown-model", "main", get({"model": "no-such-model"}), NF),
    C("get-unknown-tensor", "main", get({"model": "base", "tensor": "no.such.tensor"}), NF),
    C("get-unknown-tensor-dequantize", "main", get({"model": "base", "tensor": "nope", "dequantize": True}), NF),
    C("get-unknown-file", "main", get({"model": "base", "file": "nope.json"}), NF),
    C("get-file-dotdot", "main", get({"model": "base", "file": "../x"}), IA),
    C("get-file-subdir", "main", get({"model": "base", "file": "a/b"}), IA),
    C("get-file-absolute", "main", get({"model": "base", "file": "/etc/passwd"}), IA),
    C("get-file-model-arrow", "main", get({"model": "base", "file": "model.arrow"}), IA),
    C("get-file-with-tensor", "main", get({"model": "base", "file": "config.json", "tensor": "w"}), IA),
    C("get-file-with-dequantize", "main", get({"model": "base", "file": "config.json", "dequantize": True}), IA),
    C("get-file-commit-marker", "main", get({"model": "base", "file": ".commit.json"}), NAME_READ),
    C("get-model-100k", "main", get({"model": LONG}), NAME_READ),
    C("get-tensor-100k", "main", get({"model": "base", "tensor": LONG}), NAME_READ),
    C("get-model-dotdot", "main", get({"model": "../base"}), NAME_READ),
    C("get-ok-model", "main", get({"model": "base"}), OK, table_rows(1)),
    C("get-ok-file", "main", get({"model": "base", "file": "config.json"}), OK, table_rows(1)),
    # -- GetFlightInfo / GetSchema --------------------------------------------------------------------------
    *[C(f"{kind}-{name}", "main", fn(d), code) for kind, fn in (("info", info), ("schema", schema_of))
      for name, d, code in [
          ("path-empty", desc("path"), IA),
          ("path-empty-string", desc("path", ""), IA),
          ("path-two-elements", desc("path", "base", "w"), IA),
          ("cmd-not-json", desc("cmd", b"base"), IA),
          ("cmd-trailing-garbage", desc("cmd", b'{"model": "base"} x'), IA),
          ("cmd-trailing-object", desc("cmd", b'{"model": "base"}{}'), IA),
          ("cmd-unknown-key", desc("cmd", b'{"model": "base", "bogus": 1}'), IA),
          ("cmd-no-model", desc("cmd", b"{}"), IA),
          ("cmd-model-int", desc("cmd", b'{"model": 1}'), IA),
          ("unknown-model", desc("path", "no-such-model"), NF),
          ("name-100k", desc("path", LONG), NAME_READ),
          ("name-dotdot", desc("path", "../base"), NAME_READ),
      ]],
    C("info-ok", "main", info(desc("path", "base")), OK),
    C("schema-ok-cmd", "main", schema_of(desc("cmd", b'{"model": "base"}')), OK),
    # -- DoAction -------------------------------------------------------------------------------------------
    C("action-unknown", "main", act("nope"), IA),
    C("action-empty-type", "main", act(""), IA),
    C("action-upper-case", "main", act("DELETE", {"model": "base"}), IA),
    C("action-delete-trailing-garbage", "main", act("delete", b'{"model": "no-such"} x'), IA),
    C("action-delete-trailing-object", "main", act("delete", b'{"model": "no-such"}{}'), IA),
    C("action-delete-unknown-key", "main", act("delete", {"model": "no-such", "bogus": 1}), IA),
    C("action-delete-model-int", "main", act("delete", {"model": 1}), IA),
    C("action-delete-not-json", "main", act("delete", b"base"), IA),
    C("action-delete-array", "main", act("delete", b'["base"]'), IA),
    C("action-delete-no-body", "main", act("delete"), IA),
    C("action-delete-no-model", "main", act("delete", {}), IA),
    C("action-delete-unknown-model", "main", act("delete", {"model": "no-such-model"}), NF),
    C("action-delete-name-dotdot", "main", act("delete", {"model": "../base"}), NAME_READ),
    C("action-delete-name-100k", "main", act("delete", {"model": LONG}), NAME_READ),
    C("action-validate-trailing-garbage", "main", act("validate_config", b'{"config": {}} x'), IA),
    C("action-validate-unknown-key", "main", act("validate_config", {"config": {}, "bogus": 1}), IA),
    C("action-validate-config-string", "main", act("validate_config", {"config": "x"}), IA),
    C("action-validate-bit-width-3", "main", act("validate_config", {"config": {"bit_width": 3}}), IA),
    C("action-validate-group-size-100", "main", act("validate_config", {"config": {"group_size": 100}}), IA),
    C("action-validate-time-groups-150", "main", act("validate_config", {"config": {"num_time_groups": 150}}), IA),
    C("action-validate-min-accuracy-1.5", "main", act("validate_config", {"config": {"min_accuracy": 1.5}}), IA),
    C("action-validate-unknown-profile", "main", act("validate_config", {"profile": "turbo"}), IA),
    C("action-validate-unknown-config-key", "main", act("validate_config", {"config": {"bogus": 1}}), IA),
    C("action-profiles-garbage-body", "main", act("profiles", b"x"), IA),
    C("action-stats-trailing-garbage", "main", act("stats", b"{} x"), IA),
    C("action-quantize-no-keep-source", "main", act("quantize", {"model": "base", "name": M}), FP),
    C("action-quantize-no-name", "main", act("quantize", {"model": "base"}), IA),
    C("action-quantize-bad-name", "main", act("quantize", {"model": "base", "name": "../x"}), IA),
    C("action-quantize-overwrite-string", "main", act("quantize", {"model": "base", "name": M, "overwrite": "y"}),
      IA),
    C("action-quantize-unknown-method", "main", act("quantize", {"model": "base", "name": M, "method": "nope"}),
      IA),
    C("action-quantize-bit-width-3", "main", act("quantize", {"model": "base", "name": M,
                                                              "config": {"bit_width": 3}}), IA),
    C("action-quantize-trailing-garbage", "main", act("quantize", b'{"model": "base", "name": "$M"} x'), IA),
    C("action-stats-ok", "main", act("stats"), OK),
    C("action-validate-ok", "main", act("validate_config", {"config": {"bit_width": 2}}), OK),
    C("action-delete-ok", "main", seq(put(), act("delete", {"model": M})), OK),
    # -- authentication (server with --auth-token) -----------------------------------------------------------
    C("auth-put-no-header", "auth", put(headers=NOAUTH), UA),
    C("auth-put-wrong-token", "auth", put(headers=[(b"authorization", b"Bearer wrong")]), UA),
    C("auth-get-no-header", "auth", get({"model": "base"}, headers=NOAUTH), UA),
    C("auth-info-no-header", "auth", info(desc("path", "base"), headers=NOAUTH), UA),
    C("auth-schema-no-header", "auth", schema_of(desc("path", "base"), headers=NOAUTH), UA),
    C("auth-action-no-header", "auth", act("stats", headers=NOAUTH), UA),
    C("auth-delete-no-header", "auth", act("delete", {"model": "base"}, headers=NOAUTH), UA),
    C("auth-list-flights-no-header", "auth", list_flights(headers=NOAUTH), UA),
    C("auth-list-actions-no-header", "auth", list_actions(headers=NOAUTH), UA),
    C("auth-wrong-token", "auth", act("stats", headers=[(b"authorization", b"Bearer wrong")]), UA),
    C("auth-basic-scheme", "auth", act("stats", headers=[(b"authorization", b"Basic " + base64.b64encode(
        TOKEN.encode() + b":" + TOKEN.encode()))]), UA),
    C("auth-empty-bearer", "auth", act("stats", headers=[(b"authorization", b"Bearer ")]), UA),
    C("auth-token-prefix", "auth", act("stats", headers=[(b"authorization", ("Bearer " + TOKEN + "x").encode())]),
      UA),
    C("auth-token-truncated", "auth", act("stats", headers=[(b"authorization", ("Bearer " + TOKEN[:-1]).encode())]),
      UA),
    C("auth-ok", "auth", act("stats"), OK),
    C("auth-put-ok", "auth", put(), OK, result_ok),
    # -- limits (server with --max-upload-gb 1 --max-message-mb 1) --------------------------------------------
    C("limit-declared-2^20x2^20-f32", "limit", rows(("w", [2**20, 2**20], "F32", 0, W)), RE),
    C("limit-declared-2^20x2^20-no-values", "limit", rows(("w", [2**20, 2**20], "F32", 0, [])), RE),
    C("limit-declared-4gib-f32", "limit", rows(("w", [2**30], "F32", 0, W)), RE),
    C("limit-declared-2gib-bf16", "limit", rows(("w", [2**30], "BF16", 0, [0x3f80] * 4), vt=pa.uint16()), RE),
    C("limit-declared-2gib-f16-as-float32", "limit", rows(("w", [2**30], "F16", 0, W)), RE),
    C("limit-second-tensor-too-big", "limit",
      rows(("a", [8, 8], "F32", 0, W), ("b", [2**20, 2**20], "F32", 0, W[:4])), RE),
    C("limit-message-over-1mib", "limit", rows(("w", [300_000], "F32", 0, np.zeros(300_000, np.float32))), RE),
    C("limit-small-ok", "limit", put(), OK, stored({"w": ([8, 8], W)})),
]


# ---- the harness ---------------------------------------------------------------------------------------------

# kind -> (serve flags, environment). The limit server's defaults carry a modality, so that a path descriptor
# [NAME] (which cannot carry one) can upload there.
SERVERS = {"main": ((), {}),
           "limit": (("--max-upload-gb", "1", "--max-message-mb", "1"), {"ARROW_QUANT_MODALITY": "text"}),
           "auth": (("--auth-token", TOKEN), {})}


class Hostile:
    """One running server with its own TMPDIR, a client, and what it should hold."""

    def __init__(self, start_server, tmp, kind):
        self.start_server, self.kind = start_server, kind
        self.headers = AUTH if kind == "auth" else []
        self.tmpdir = tmp / f"tmpdir-{kind}"
        self.tmpdir.mkdir(exist_ok=True)
        self.stack = contextlib.ExitStack()
        self.cases = 0
        self.restarts = -1
        self.start()

    def start(self):
        self.stack.close()
        self.stack = contextlib.ExitStack()
        args, env = SERVERS[self.kind]
        self.srv = self.stack.enter_context(self.start_server(*args, env={"TMPDIR": str(self.tmpdir), **env}))
        self.client = fl.FlightClient(self.srv.location)
        self.stack.callback(self.client.close)
        self.committed = set()
        self.restarts += 1
        self.push_and_pull("base", keep=True)

    def opts(self):
        return fl.FlightCallOptions(timeout=TIMEOUT, headers=self.headers)

    def alive(self):
        return self.srv.proc.poll() is None

    def ensure(self):
        if not self.alive():
            self.start()

    def stop(self):
        self.stack.close()

    def secret_paths(self):
        out = set()
        for p in (self.srv.data_dir, str(self.tmpdir)):
            out |= {p, os.path.realpath(p)}
        return out

    def leaks(self, text):
        """Where text names a server path: the path with some context, for each one found."""
        out = []
        for p in sorted(self.secret_paths()):
            i = text.find(p)
            if i >= 0:
                out.append(f"{p} in ...{text[max(0, i - 100):i + len(p) + 60]}...")
        return out

    def push_and_pull(self, name, keep=False):
        """A normal push of a small model and a DoGet of it (dequantized and a file)."""
        w = w8(7, 256).reshape(16, 16)
        c = {"model": name, "config": {"modality": "text"}, "tensors": 1,
             "files": {"config.json": b64(b'{"model_type": "llama"}')}}
        acks = do_put(self.client, fl.FlightDescriptor.for_command(J(c)), input_schema(),
                      [batch(("w", [16, 16], "F32", 0, w.ravel()))], self.opts())
        assert acks[-1]["layers"][0]["params"] == 256
        self.committed.add(name)
        rows_ = self.client.do_get(fl.Ticket(J({"model": name, "dequantize": True})),
                                   options=self.opts()).read_all().to_pylist()
        back = np.concatenate([np.asarray(r["values"], np.float32) for r in rows_])
        assert back.size == 256 and np.abs(back - w.ravel()).max() < 0.01
        f = self.client.do_get(fl.Ticket(J({"model": name, "file": "config.json"})), options=self.opts()).read_all()
        assert f.to_pylist() == [{"name": "config.json", "data": b'{"model_type": "llama"}'}]
        if not keep:
            list(self.client.do_action(fl.Action("delete", J({"model": name})), options=self.opts()))
            self.committed.discard(name)

    def problems(self):
        """What is wrong with the server and its data dir after a case (empty: healthy)."""
        out = []
        try:
            listed = {i.descriptor.path[0].decode() if isinstance(i.descriptor.path[0], bytes)
                      else i.descriptor.path[0] for i in self.client.list_flights(b"", options=self.opts())}
            if listed != self.committed:
                out.append(f"ListFlights lists {sorted(listed)}, committed {sorted(self.committed)}")
        except pa.ArrowException as e:
            out.append(f"ListFlights failed: {grpc_code(e)}: {str(e)[:300]}")
        if not self.alive():
            log = self.srv.log_text()
            i = log.find("panic")
            out.append(f"server died (exit {self.srv.proc.returncode}); log: {log[i if i >= 0 else -1500:][:1500]}")
            return out
        data = self.srv.data_dir
        deadline = time.monotonic() + 3
        while True:
            staging = os.listdir(os.path.join(data, "staging"))
            calib = [n for n in os.listdir(self.tmpdir) if n.startswith("arrowquant")]
            if (not staging and not calib) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if staging:
            out.append(f"staging/ not empty after the call: {staging}")
        if calib:
            out.append(f"temporary files left in the server's TMPDIR: {calib}")
        models = [n for n in os.listdir(os.path.join(data, "models"))]
        if len(models) != len(self.committed) or any(n.startswith(".") for n in models):
            out.append(f"models/ holds {sorted(models)}, committed {sorted(self.committed)}")
        return out


@pytest.fixture(scope="module")
def pool(start_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    servers = {}

    def get(kind):
        if kind not in servers:
            servers[kind] = Hostile(start_server, tmp, kind)
        return servers[kind]
    yield get
    for h in servers.values():
        h.stop()


def _run(case, h, index):
    ctx = Ctx(h, f"case-{index:03d}")
    err, res = None, None
    try:
        res = case.call(ctx)
    except (pa.ArrowException, OSError) as e:  # get_schema raises a plain OSError for every code
        err = e
    return ctx, err, res


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile(pool, case):
    h = pool(case.server)
    h.ensure()
    h.cases += 1
    ctx, err, res = _run(case, h, CASES.index(case))
    code = OK if err is None else grpc_code(err)
    failures = []
    if code not in case.expect:
        failures.append(f"expected {'/'.join(case.expect)}, got {code}: {str(err)[:600] if err else res!r:.600}")
    if err is not None:
        leaked = h.leaks(str(err))
        if leaked:
            failures.append(f"error message names server paths: {leaked}")
    elif isinstance(res, list) and res and isinstance(res[-1], dict):
        leaked = h.leaks(json.dumps(res[-1]))
        if leaked:
            failures.append(f"result names server paths: {leaked}")
    if code == OK and case.check and h.alive():
        try:
            case.check(ctx, res)
        except (AssertionError, pa.ArrowException) as e:
            failures.append(f"stored result differs: {type(e).__name__}: {str(e)[:600]}")
    for m in dict.fromkeys(ctx.committed):  # a successful case's models: check the report, then delete
        if not h.alive():
            break
        h.committed.add(m)
        try:
            fi = h.client.get_flight_info(fl.FlightDescriptor.for_path(m), options=h.opts())
            leaked = h.leaks(fi.app_metadata.decode(errors="replace"))
            if leaked:
                failures.append(f"GetFlightInfo app_metadata of {m!r} names server paths: {leaked}")
            list(h.client.do_action(fl.Action("delete", J({"model": m})), options=h.opts()))
            h.committed.discard(m)
        except pa.ArrowException as e:
            if grpc_code(e) == NF:
                h.committed.discard(m)  # the case deleted it itself
            else:
                failures.append(f"cleanup of {m!r}: {grpc_code(e)}: {str(e)[:300]}")
    failures += h.problems()
    if not failures and h.cases % 20 == 0:
        try:
            h.push_and_pull(f"health-{h.cases}")
        except (AssertionError, pa.ArrowException) as e:
            failures.append(f"normal push/pull after the case failed: {str(e)[:400]}")
            failures += h.problems()
    assert not failures, "\n".join(failures)


# ---- the grpc_code helper, on known calls ----------------------------------------------------------------

@pytest.mark.parametrize("msg,code", [
    ("Flight returned invalid argument error, with message: not found here", IA),
    ("Flight returned not found error, with message: x", NF),
    ("Unknown: Flight returned already exists error, with message: x", AE),
    ("gRPC returned resource exhausted error, with message: Flight returned internal error", RE),
    ("gRPC returned precondition failed error, with message: x", FP),
    ("Flight returned internal error, with message: x", "Internal"),
    ("Flight RPC failed with message: x", "Unknown"),
    ("something else entirely", "client:ArrowInvalid"),
])
def test_grpc_code_phrases(msg, code):
    assert grpc_code(pa.ArrowInvalid(msg)) == code


def test_grpc_code_on_known_calls(pool):
    main, auth, limit = pool("main"), pool("auth"), pool("limit")
    ctx = Ctx(main, "helper-model")
    with pytest.raises(pa.ArrowInvalid) as e:
        get(b"not json")(ctx)
    assert grpc_code(e.value) == IA
    with pytest.raises(pa.ArrowKeyError) as e:
        get({"model": "no-such"})(ctx)
    assert grpc_code(e.value) == NF
    with pytest.raises(pa.ArrowException) as e:
        put(cmd=cmd(model="base"))(ctx)
    assert type(e.value) is pa.ArrowException and grpc_code(e.value) == AE
    with pytest.raises(pa.ArrowInvalid) as e:
        act("quantize", {"model": "base", "name": "q"})(ctx)
    assert grpc_code(e.value) == FP
    with pytest.raises(fl.FlightUnauthenticatedError) as e:
        act("stats", headers=[])(Ctx(auth, "x"))
    assert grpc_code(e.value) == UA
    with pytest.raises(pa.ArrowInvalid) as e:
        rows(("w", [300_000], "F32", 0, np.zeros(300_000, np.float32)))(Ctx(limit, "helper-big"))
    assert grpc_code(e.value) == RE
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = fl.FlightClient(f"grpc://127.0.0.1:{port}")
    with pytest.raises(fl.FlightUnavailableError) as e:
        list(c.list_actions(options=fl.FlightCallOptions(timeout=5)))
    assert grpc_code(e.value) == "Unavailable"
    c.close()
    for h in (main, auth, limit):
        assert not h.problems()


# ---- cases that need their own server or several streams -------------------------------------------------------

def test_crashing_uploads_then_normal_push(start_server, tmp_path):
    """The three uploads that crashed the server in issue 9, one after the other on one server, then a normal
    push/pull on the same process."""
    with start_server(env={"TMPDIR": str(tmp_path)}) as srv:
        c = fl.FlightClient(srv.location)
        o = fl.FlightCallOptions(timeout=TIMEOUT)
        pid = srv.proc.pid
        for i, msgs in enumerate([[batch(("w", [8, 8], "F32", 0, W[:32])), batch(("w", [8, 8], "F32", 32, [])),
                                   batch(("w", [8, 8], "F32", 32, W[32:]))],
                                  [batch(("e", [0], "F32", 0, []))],
                                  [batch(("e", [2**32, 2**32], "F32", 0, []))]]):
            d = fl.FlightDescriptor.for_command(J({"model": f"crash-{i}", "config": {"modality": "text"}}))
            try:
                do_put(c, d, input_schema(), msgs, o)
            except pa.ArrowException as e:
                assert grpc_code(e) == IA, (i, str(e)[:300])
            assert srv.proc.poll() is None, f"upload {i} killed the server: {srv.log_text()[-2000:]}"
        d = fl.FlightDescriptor.for_command(J({"model": "after", "config": {"modality": "text"}}))
        assert do_put(c, d, input_schema(), GOOD, o)[-1]["layers"]
        t = c.do_get(fl.Ticket(J({"model": "after", "dequantize": True})), options=o).read_all()
        assert t.num_rows == 1 and srv.proc.pid == pid and srv.proc.poll() is None
        c.close()


def _stall(client, name, options):
    """Open a DoPut that declares two tensors, send one chunk of the first, and wait for its ack (accepted) or
    the server's refusal. Returns (writer, None) or (None, exception)."""
    d = fl.FlightDescriptor.for_command(J({"model": name, "tensors": 2, "config": {"modality": "text"}}))
    writer, reader = client.do_put(d, input_schema(), options=options)
    try:
        writer.write_batch(batch(("w", [64], "F32", 0, W[:32])))
        if reader.read() is not None:
            return writer, None
    except pa.ArrowException as e:
        err = e
    else:
        err = None
    try:
        writer.close()
    except pa.ArrowException as e:
        err = err or e
    return None, err


def _release(writers):
    for w in writers:
        try:
            w.close()  # half-close: the declared second tensor never came, so the upload is refused
        except pa.ArrowException:
            pass


def _wait_empty(path, seconds=10):
    deadline = time.monotonic() + seconds
    while os.listdir(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.listdir(path)


@pytest.mark.parametrize("clients,args", [(1, ()), (64, ()), (64, ("--max-uploads-per-client", "-1"))],
                         ids=["one-client", "many-connections", "global-cap"])
def test_concurrent_upload_cap(start_server, tmp_path, clients, args):
    """Stalled uploads (over one connection, or spread over many; all from this host, which is one client for the
    per-client cap) hit the server's cap on concurrent uploads: the next DoPut fails fast with ResourceExhausted;
    once they end, the names are free and staging/ is empty. "global-cap" lifts the per-client cap so that the
    global one is what refuses."""
    with start_server(*args, env={"TMPDIR": str(tmp_path)}) as srv:
        opts = fl.FlightCallOptions(timeout=60)
        pool_ = [fl.FlightClient(srv.location) for _ in range(clients)]
        writers, refused, took = [], None, None
        try:
            for i in range(300):
                t0 = time.monotonic()
                w, err = _stall(pool_[i % clients], f"stall-{i}", opts)
                if err is not None:
                    refused, took = err, time.monotonic() - t0
                    break
                writers.append(w)
            assert refused is not None, f"{len(writers)} stalled uploads and no refusal: no cap on concurrent uploads"
            assert grpc_code(refused) == RE, (len(writers), str(refused)[:400])
            print(f"refused after {len(writers)} concurrent uploads: {str(refused)[:200]}")
            assert took < 2, f"the refusal took {took:.1f}s"
            assert srv.proc.poll() is None
        finally:
            _release(writers)
        assert _wait_empty(os.path.join(srv.data_dir, "staging")) == []
        c = pool_[0]
        d = fl.FlightDescriptor.for_command(J({"model": "stall-0", "config": {"modality": "text"}}))
        assert do_put(c, d, input_schema(), GOOD, fl.FlightCallOptions(timeout=TIMEOUT))[-1]["layers"]
        for p in pool_:
            p.close()


def test_stalled_upload_ends_at_idle_timeout(start_server, tmp_path):
    """serve --idle-timeout 2s: a DoPut that sends one batch and then nothing is ended by the server; the name is
    free again (a plain push succeeds) and nothing is left in staging/."""
    with start_server("--idle-timeout", "2s", env={"TMPDIR": str(tmp_path)}) as srv:
        c = fl.FlightClient(srv.location)
        opts = fl.FlightCallOptions(timeout=60)
        w, err = _stall(c, "idle", opts)
        assert err is None, str(err)
        t0 = time.monotonic()
        d = fl.FlightDescriptor.for_command(J({"model": "idle", "config": {"modality": "text"}}))
        with pytest.raises(pa.ArrowException) as e:  # while the stalled upload holds the name
            do_put(c, d, input_schema(), GOOD, opts)
        assert grpc_code(e.value) == AE
        assert _wait_empty(os.path.join(srv.data_dir, "staging"), 8) == [], "the stalled upload is still staged"
        ended = time.monotonic() - t0
        assert ended < 6, f"the stalled upload was ended only after {ended:.1f}s"
        assert do_put(c, d, input_schema(), GOOD, opts)[-1]["layers"]
        try:
            w.close()
        except pa.ArrowException as e:
            assert grpc_code(e) not in ("Internal", "Unknown"), str(e)[:300]
        assert srv.proc.poll() is None
        assert [n for n in os.listdir(tmp_path) if n.startswith("arrowquant")] == []
        c.close()


def test_client_reading_no_acks_until_the_end(pool):
    """A client that sends 4000 small batches and reads no acknowledgement until it is done: the upload succeeds,
    the result comes last, and the newest progress ack before it counts every element (the server's ack queue is
    bounded by coalescing, never by dropping the result)."""
    h = pool("main")
    h.ensure()
    vals = w8(11, 4000 * 16)
    msgs = [batch(("w", [4000, 16], "F32", i * 16, vals[i * 16:(i + 1) * 16])) for i in range(4000)]
    d = fl.FlightDescriptor.for_command(J({"model": "slow-reader", "config": {"modality": "text"}}))
    acks = do_put(h.client, d, input_schema(), msgs, h.opts())
    h.committed.add("slow-reader")
    assert "layers" in acks[-1] and acks[-1]["layers"][0]["params"] == 64000
    received = [a for a in acks[:-1] if "elements_received" in a]
    assert received[-1]["elements_received"] == 64000 and 1 <= len(acks) - 1 <= 4000 + 1, (len(acks), received[-1])
    list(h.client.do_action(fl.Action("delete", J({"model": "slow-reader"})), options=h.opts()))
    h.committed.discard("slow-reader")
    assert not h.problems()


_KILLED_CLIENT = r"""
import json, sys, time
import numpy as np, pyarrow as pa, pyarrow.flight as fl
s = pa.schema([("name", pa.string()), ("shape", pa.list_(pa.int64())), ("dtype", pa.string()),
               ("chunk_offset", pa.int64()), ("values", pa.list_(pa.float32()))])
c = fl.FlightClient(sys.argv[1])
w, r = c.do_put(fl.FlightDescriptor.for_command(json.dumps({"model": "killed", "config": {"modality": "text"}}).encode()), s)
w.write_batch(pa.record_batch([pa.array(["w"]), pa.array([[1024]], pa.list_(pa.int64())), pa.array(["F32"]),
                               pa.array([0], pa.int64()), pa.array([np.zeros(16, np.float32)], pa.list_(pa.float32()))], schema=s))
r.read()
print("stalled", flush=True)
time.sleep(600)
"""


def test_killed_client_frees_the_name(start_server, tmp_path):
    """A client killed mid-upload (its connection drops): the upload is discarded and the name is free again."""
    import subprocess
    import sys
    with start_server(env={"TMPDIR": str(tmp_path)}) as srv:
        p = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, srv.location], stdout=subprocess.PIPE)
        try:
            assert p.stdout.readline().strip() == b"stalled"
        finally:
            p.kill()
            p.wait()
        assert _wait_empty(os.path.join(srv.data_dir, "staging")) == []
        c = fl.FlightClient(srv.location)
        d = fl.FlightDescriptor.for_command(J({"model": "killed", "config": {"modality": "text"}}))
        assert do_put(c, d, input_schema(), GOOD, fl.FlightCallOptions(timeout=TIMEOUT))[-1]["layers"]
        assert srv.proc.poll() is None
        c.close()


def test_zz_servers_still_serve(pool):
    """At the end: each server of the table still takes a normal push and serves it, and logged no panic."""
    for kind in SERVERS:
        h = pool(kind)
        h.ensure()
        h.push_and_pull("final")
        assert not h.problems()
        assert "panic" not in h.srv.log_text(), h.srv.log_text()[-3000:]
        assert h.restarts == 0, f"the {kind} server had to be restarted {h.restarts} times during the table"
