"""Hostile files and paths for the CLI (issue 9): bad model directories never crash, hang or leave output behind,
and no command ever writes over its own source.

Bad-file table: each case writes a bad model directory byte by byte, runs `quantize --model BAD --output OUT`
and `push` of it to a server, and asserts the exit code, a message naming the file (and the tensor where there
is one), no OUT and no `.OUT.tmp-*` sibling, the source directory byte-identical, and (push) the server alive
with nothing stored. The dequantize table does the same with bad `model.arrow` files.

Source-protection table: quantize/dequantize/gen-model/pull/serve pointed at their own input (the same
directory, inside it, around it, through symlinks) exit 2 with a message naming both paths and leave every
source file byte-identical; `--overwrite` replaces only a directory ArrowQuant created unless `--force`.

Every subprocess has a timeout, so a hang fails its case instead of stalling the suite.
"""
import hashlib
import json
import os
import pathlib
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
import types

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

RUN_TIMEOUT = 20


def run(binary, *args, timeout=RUN_TIMEOUT):
    """Run arrowquant; a run still going after `timeout` is killed and reported with returncode None."""
    try:
        return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return types.SimpleNamespace(returncode=None, stdout="",
                                     stderr=f"<hung: still running after {timeout}s, killed>")


# ---- safetensors bytes -----------------------------------------------------------------------------------

def st_raw(header: bytes, data: bytes = b"", length=None):
    """A safetensors file: 8-byte little-endian header length (or `length`), the header, the data."""
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def st_header(entries, meta=None):
    h = {"__metadata__": meta} if meta is not None else {}
    h.update(entries)
    return json.dumps(h).encode()


A = (np.random.default_rng(1).standard_normal((32, 64)) * 0.02).astype(np.float32)
B = (np.random.default_rng(2).standard_normal((64, 32)) * 0.02).astype(np.float32)
NA = A.nbytes


def st_model(*tensors):
    """A valid safetensors file of (name, ndarray) tensors, F32."""
    entries, data, off = {}, b"", 0
    for name, a in tensors:
        b = a.astype(np.float32).tobytes()
        entries[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        data += b
        off += len(b)
    return st_raw(st_header(entries, {"format": "pt"}), data)


GOOD_ST = st_model(("a.weight", A), ("b.weight", B))
CONFIG = b'{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}'


def one(name, dtype, shape, offsets, data=b"\0" * NA):
    return st_raw(st_header({name: {"dtype": dtype, "shape": shape, "data_offsets": offsets}}), data)


# ---- directory helpers ---------------------------------------------------------------------------------------

def tree(path):
    """Everything under path: relative name -> sha256 of a file, 'dir', 'link:TARGET', or the file type."""
    path = pathlib.Path(path)
    out = {}
    if not os.path.lexists(path):
        return out
    for root, dirs, files in os.walk(path, followlinks=False):
        for n in dirs + files:
            p = pathlib.Path(root) / n
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special:" + oct(p.lstat().st_mode)
    return out


def temp_siblings(out):
    out = pathlib.Path(out)
    if not out.parent.exists():
        return []
    return sorted(n for n in os.listdir(out.parent) if n.startswith("." + out.name + ".tmp"))


def write_model(d, st=GOOD_ST, config=CONFIG):
    d.mkdir(parents=True, exist_ok=True)
    if st is not None:
        (d / "model.safetensors").write_bytes(st)
    if config is not None:
        (d / "config.json").write_bytes(config)
    return d


def fifo(p):
    os.mkfifo(p)


def unix_socket(p):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()  # the socket file stays


def index(d, weight_map):
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


# ---- fixtures -------------------------------------------------------------------------------------------------

class LiveServer:
    """The module's server for push/pull; a case that kills it fails, and the next case gets a new one."""

    def __init__(self, start_server):
        self.start_server, self.cm, self.srv, self.restarts = start_server, None, None, -1

    def get(self):
        if self.srv is None or self.srv.proc.poll() is not None:
            self.close()
            self.cm = self.start_server()
            self.srv = self.cm.__enter__()
            self.restarts += 1
        return self.srv

    def close(self):
        if self.cm is not None:
            self.cm.__exit__(None, None, None)
            self.cm = None


@pytest.fixture(scope="module")
def live(start_server):
    h = LiveServer(start_server)
    yield h
    h.close()


@pytest.fixture(scope="module")
def quantized(arrowquant_bin, tmp_path_factory):
    """A quantize output of the small good model (copied by the dequantize and protection cases)."""
    base = tmp_path_factory.mktemp("quantized")
    m = write_model(base / "src")
    r = run(arrowquant_bin, "quantize", "--model", m, "--output", base / "out")
    assert r.returncode == 0, r.stderr
    return base / "out"


def stored_names(binary, server):
    r = run(binary, "ls", "--server", server.location, "--json")
    assert r.returncode == 0, r.stderr
    return sorted(row["name"] for row in json.loads(r.stdout))


# ---- the bad-file table -----------------------------------------------------------------------------------------

class Bad:
    def __init__(self, name, build, mention, code=1, timeout=RUN_TIMEOUT):
        """build(d) writes the bad model into directory d; mention: strings the message must contain;
        timeout: how long a run may take (5 s where the point is failing fast on a file that blocks)."""
        self.name, self.build, self.mention, self.code, self.timeout = name, build, mention, code, timeout


def st(data):
    return lambda d: write_model(d, data)


def with_file(fn):
    def build(d):
        write_model(d, st=None)
        fn(d / "model.safetensors")
    return build


def outside_index(absolute):
    def build(d):
        write_model(d, st=None)
        (d.parent / "outside.safetensors").write_bytes(GOOD_ST)
        target = str(d.parent / "outside.safetensors") if absolute else "../outside.safetensors"
        index(d, {"a.weight": target, "b.weight": target})
    return build


def missing_shard(d):
    write_model(d, st=None)
    index(d, {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"})
    (d / "model-00002-of-00002.safetensors").write_bytes(st_model(("b.weight", B)))


def fifo_shard(d):
    write_model(d, st=None)
    index(d, {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"})
    (d / "model-00002-of-00002.safetensors").write_bytes(st_model(("b.weight", B)))
    fifo(d / "model-00001-of-00002.safetensors")


def bad_index(text):
    def build(d):
        write_model(d, st=None)
        (d / "model.safetensors").write_bytes(GOOD_ST)
        (d / "model.safetensors.index.json").write_text(text)
    return build


HDR = st_header({"a.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [0, NA]}})
DATA = A.tobytes()
ST, IDX = "model.safetensors", "model.safetensors.index.json"
NAN = A.copy()
NAN[1, 2] = np.nan
INF_BF16 = np.full(64, 0x3f80, np.uint16)
INF_BF16[7] = 0x7f80

BAD_FILES = [
    Bad("header-length-beyond-file", st(st_raw(HDR, DATA, length=len(HDR) + len(DATA) + 1000)), [ST]),
    Bad("header-length-zero", st(st_raw(b"", DATA, length=0)), [ST]),
    Bad("header-length-2^62", st(st_raw(HDR, DATA, length=2**62)), [ST]),
    Bad("header-length-2^64-1", st(st_raw(HDR, DATA, length=2**64 - 1)), [ST]),
    Bad("header-length-over-limit", st(st_raw(HDR, DATA, length=100 * 2**20 + 1)), [ST]),
    Bad("header-not-json", st(st_raw(b"{not json at all", DATA)), [ST]),
    Bad("header-json-array", st(st_raw(b"[]", DATA)), [ST]),
    Bad("header-trailing-garbage", st(st_raw(HDR + b" x", DATA)), [ST]),
    Bad("header-invalid-utf8-name", st(st_raw(HDR.replace(b'"a.weight"', b'"a.we\xffight"'), DATA)), [ST]),
    Bad("header-only-metadata", st(st_raw(st_header({}, {"format": "pt"}), b"")), [ST]),
    Bad("header-empty-object", st(st_raw(b"{}", b"")), [ST]),
    Bad("duplicate-tensor-names", st(st_raw(
        b'{"a.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [0, %d]},'
        b' "a.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [%d, %d]}}' % (NA, NA, 2 * NA),
        DATA + DATA)), [ST, "a.weight"]),
    Bad("dtype-unknown", st(one("a.weight", "F7", [32, 64], [0, NA])), [ST, "a.weight"]),
    Bad("dtype-unsupported-int", st(one("a.weight", "I32", [32, 64], [0, NA])), [ST, "a.weight"]),
    Bad("dtype-missing", st(st_raw(st_header({"a.weight": {"shape": [32, 64], "data_offsets": [0, NA]}}), DATA)),
        [ST, "a.weight"]),
    Bad("shape-negative", st(one("a.weight", "F32", [-32, 64], [0, NA])), [ST, "a.weight"]),
    Bad("shape-not-integer", st(one("a.weight", "F32", [1.5, 64], [0, NA])), [ST, "a.weight"]),
    Bad("shape-overflow-2^32x2^32", st(one("a.weight", "F32", [2**32, 2**32], [0, 0], b"")), [ST, "a.weight"]),
    Bad("shape-overflow-wraps-to-8", st(one("a.weight", "F32", [2**61 + 1, 8], [0, 32], b"\0" * 32)),
        [ST, "a.weight"]),
    Bad("shape-too-many-dims", st(one("a.weight", "F32", [1] * 40 + [4], [0, 16], b"\0" * 16)), [ST, "a.weight"]),
    Bad("offsets-beyond-file", st(one("a.weight", "F32", [32, 64], [0, 10**6])), [ST, "a.weight"]),
    Bad("offsets-not-shape-times-dtype", st(one("a.weight", "F32", [32, 64], [0, NA - 4])), [ST, "a.weight"]),
    Bad("offsets-begin-after-end", st(one("a.weight", "F32", [32, 64], [NA, 0])), [ST, "a.weight"]),
    Bad("offsets-negative", st(one("a.weight", "F32", [32, 64], [-NA, 0])), [ST, "a.weight"]),
    Bad("offsets-three-values", st(one("a.weight", "F32", [32, 64], [0, NA, NA])), [ST, "a.weight"]),
    Bad("overlapping-tensors", st(st_raw(st_header({
        "a.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [0, NA]},
        "b.weight": {"dtype": "F32", "shape": [64, 32], "data_offsets": [NA // 2, NA // 2 + NA]}}), DATA + DATA)),
        [ST]),
    Bad("truncated-data-section", st(GOOD_ST[:-4]), [ST, "b.weight"]),
    Bad("empty-file", st(b""), [ST]),
    Bad("seven-bytes", st(b"\x10\0\0\0\0\0\0"), [ST]),
    Bad("nan-in-weights", st(st_model(("a.weight", NAN))), ["a.weight"]),
    Bad("inf-in-bf16-weights", st(one("a.weight", "BF16", [64], [0, 128], INF_BF16.tobytes())), ["a.weight"]),
    Bad("fifo", with_file(fifo), [ST], timeout=5),
    Bad("directory-named-model-safetensors", with_file(os.mkdir), [ST]),
    Bad("dangling-symlink", with_file(lambda p: os.symlink(p.parent / "nowhere.safetensors", p)), [ST]),
    Bad("symlink-loop", with_file(lambda p: os.symlink(p, p)), [ST]),
    Bad("symlink-to-dev-zero", with_file(lambda p: os.symlink("/dev/zero", p)), [ST]),
    Bad("unix-socket", with_file(unix_socket), [ST]),
    Bad("index-missing-shard", missing_shard, [IDX, "model-00001-of-00002.safetensors"]),
    Bad("index-shard-outside-dir", outside_index(False), [IDX, "../outside.safetensors"]),
    Bad("index-shard-absolute-path", outside_index(True), [IDX]),
    Bad("index-shard-is-fifo", fifo_shard, ["model-00001-of-00002.safetensors"], timeout=5),
    Bad("index-not-json", bad_index("{not json"), [IDX]),
    Bad("index-empty-weight-map", bad_index('{"weight_map": {}}'), [IDX]),
    Bad("config-not-json", lambda d: write_model(d, config=b"{not json"), ["config.json"]),
    Bad("no-safetensors", lambda d: write_model(d, st=None), ["safetensors"]),
    Bad("missing-model-dir", lambda d: None, [], code=2),
    Bad("model-path-is-a-file", lambda d: d.write_bytes(GOOD_ST), [], code=(1, 2)),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c.name for c in BAD_FILES])
def test_bad_model_file(arrowquant_bin, live, tmp_path, case):
    src, out = tmp_path / "model", tmp_path / "out"
    case.build(src)
    before = tree(tmp_path)
    codes = case.code if isinstance(case.code, tuple) else (case.code,)
    r = run(arrowquant_bin, "quantize", "--model", src, "--output", out, timeout=case.timeout)
    failures = []
    if r.returncode not in codes:
        failures.append(f"quantize: exit {r.returncode}, want {codes}; stderr: {r.stderr[-600:]}")
    for m in case.mention + ([str(src)] if case.code == 2 else []):
        if m not in r.stderr:
            failures.append(f"quantize: message does not name {m!r}: {r.stderr[-600:]}")
    if os.path.lexists(out):
        failures.append(f"quantize created {out}: {sorted(tree(out))}")
    if temp_siblings(out):
        failures.append(f"temporary outputs left: {temp_siblings(out)}")
    if "panic" in r.stderr or "goroutine " in r.stderr:
        failures.append(f"quantize panicked: {r.stderr[-1500:]}")
    server = live.get()
    name = "bad-" + case.name
    p = run(arrowquant_bin, "push", "--server", server.location, "--model", src, "--name", name, timeout=case.timeout)
    if True:
        if p.returncode not in codes:
            failures.append(f"push: exit {p.returncode}, want {codes}; stderr: {p.stderr[-600:]}")
        for m in case.mention:
            if m not in p.stderr:
                failures.append(f"push: message does not name {m!r}: {p.stderr[-600:]}")
        if server.proc.poll() is not None:
            failures.append(f"push killed the server: {server.log_text()[-1500:]}")
        elif name in stored_names(arrowquant_bin, server):
            failures.append(f"push stored {name}")
    after = tree(tmp_path)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        failures.append(f"files changed under the test dir: {changed}")
    assert not failures, "\n".join(failures)


def test_zero_size_and_scalar_tensors_are_valid(arrowquant_bin, live, tmp_path):
    """A model holding [0, 16], [0] and scalar tensors: quantize, dequantize and push all succeed (issue 9:
    pushing such a model killed the server), and the tensors come back with their shapes."""
    src = tmp_path / "m"
    entries = {"a.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [0, NA]},
               "empty.weight": {"dtype": "F32", "shape": [0, 16], "data_offsets": [NA, NA]},
               "empty1d": {"dtype": "BF16", "shape": [0], "data_offsets": [NA, NA]},
               "scale": {"dtype": "F32", "shape": [], "data_offsets": [NA, NA + 4]}}
    write_model(src, st_raw(st_header(entries), DATA + np.float32(0.5).tobytes()))
    r = run(arrowquant_bin, "quantize", "--model", src, "--output", tmp_path / "q")
    assert r.returncode == 0, r.stderr
    r = run(arrowquant_bin, "dequantize", "--input", tmp_path / "q", "--output", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    raw = (tmp_path / "d" / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    assert hdr["empty.weight"]["shape"] == [0, 16] and hdr["empty1d"]["shape"] == [0]
    assert hdr["scale"]["shape"] == []
    server = live.get()
    p = run(arrowquant_bin, "push", "--server", server.location, "--model", src, "--name", "zero-size")
    assert p.returncode == 0, p.stderr
    assert server.proc.poll() is None, server.log_text()[-2000:]
    r = run(arrowquant_bin, "pull", "--server", server.location, "--name", "zero-size", "--output", tmp_path / "p")
    assert r.returncode == 0, r.stderr


def test_fifo_quantize_ends_on_signal(arrowquant_bin, tmp_path):
    """quantize of a model whose model.safetensors is a FIFO fails fast; if it ever blocks, SIGINT and SIGTERM
    end it within 2 s."""
    src = with_file(fifo)
    results = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        d = tmp_path / sig.name
        src(d / "m")
        p = subprocess.Popen([arrowquant_bin, "quantize", "--model", d / "m", "--output", d / "out"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            try:
                p.wait(1)
                results.append((sig.name, "exited by itself", p.returncode))
                continue
            except subprocess.TimeoutExpired:
                pass
            p.send_signal(sig)
            t0 = time.monotonic()
            try:
                p.wait(2)
                results.append((sig.name, f"blocked, ended {time.monotonic() - t0:.1f}s after the signal",
                                p.returncode))
            except subprocess.TimeoutExpired:
                results.append((sig.name, "blocked and ignored the signal for 2 s", None))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
        assert not os.path.lexists(d / "out") and not temp_siblings(d / "out")
    assert all(r[1] == "exited by itself" and r[2] == 1 for r in results), results


# ---- bad model.arrow for dequantize ---------------------------------------------------------------------------

def rewrite_artifact(path, batch_fn=None, meta_fn=None):
    """Rewrite model.arrow with batch_fn(i, batch) -> batch and meta_fn(metadata dict) -> dict."""
    r = ipc.open_file(path)
    md = {k.decode(): v.decode() for k, v in r.schema.metadata.items()}
    if meta_fn:
        md = meta_fn(md)
    schema = r.schema.with_metadata(md)
    batches = [r.get_batch(i) for i in range(r.num_record_batches)]
    with ipc.new_file(str(path) + ".new", schema) as w:
        for i, b in enumerate(batches):
            b = batch_fn(i, b) if batch_fn else b
            w.write_batch(pa.record_batch(b.columns, schema=schema))
    os.replace(str(path) + ".new", path)


def set_column(name, value_fn):
    def fn(i, b):
        cols = list(b.columns)
        j = b.schema.get_field_index(name)
        cols[j] = pa.array([value_fn(b.column(j)[0].as_py())], b.schema.field(j).type)
        return pa.record_batch(cols, schema=b.schema)
    return fn


def set_index(fn):
    def meta(md):
        idx = json.loads(md["arrowquant.index"])
        fn(idx)
        md["arrowquant.index"] = json.dumps(idx)
        return md
    return meta


def _each(fn):
    def apply(idx):
        for e in idx:
            fn(e)
    return apply


ARROW = "model.arrow"
BAD_ARTIFACTS = [
    ("garbage-bytes", lambda p: p.write_bytes(b"this is not an arrow file" * 10), [ARROW]),
    ("empty-file", lambda p: p.write_bytes(b""), [ARROW]),
    ("truncated-half", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), [ARROW]),
    ("truncated-footer", lambda p: p.write_bytes(p.read_bytes()[:-10]), [ARROW]),
    ("fifo", lambda p: (p.unlink(), fifo(p)), [ARROW]),  # run with a 5 s timeout: must fail fast
    ("directory", lambda p: (p.unlink(), p.mkdir()), [ARROW]),
    ("dangling-symlink", lambda p: (p.unlink(), os.symlink(p.parent / "nowhere.arrow", p)), [ARROW]),
    ("not-an-artifact", lambda p: ipc.new_file(str(p), pa.schema([("x", pa.int64())])).close(), [ARROW]),
    ("index-not-json", lambda p: rewrite_artifact(p, meta_fn=lambda md: {**md, "arrowquant.index": "{oops"}),
     [ARROW]),
    ("index-shape-overflow", lambda p: rewrite_artifact(p, meta_fn=set_index(_each(
        lambda e: e.update(shape=[2**62, 4])))), [ARROW]),
    ("index-first-batch-out-of-range", lambda p: rewrite_artifact(p, meta_fn=set_index(_each(
        lambda e: e.update(first_batch=10**9)))), [ARROW]),
    ("row-codes-truncated", lambda p: rewrite_artifact(p, set_column("codes", lambda v: v[:3])), [ARROW, "a.weight"]),
    ("row-chunk-elems-huge", lambda p: rewrite_artifact(p, set_column("chunk_elems", lambda v: 2**40)),
     [ARROW, "a.weight"]),
    ("row-chunk-elems-negative", lambda p: rewrite_artifact(p, set_column("chunk_elems", lambda v: -5)),
     [ARROW, "a.weight"]),
    ("row-bit-width-3", lambda p: rewrite_artifact(p, set_column("bit_width", lambda v: 3)), [ARROW, "a.weight"]),
    ("row-group-size-0", lambda p: rewrite_artifact(p, set_column("group_size", lambda v: 0)), [ARROW, "a.weight"]),
]


@pytest.mark.parametrize("name,damage,mention", BAD_ARTIFACTS, ids=[c[0] for c in BAD_ARTIFACTS])
def test_bad_artifact(arrowquant_bin, quantized, tmp_path, name, damage, mention):
    q = tmp_path / "q"
    shutil.copytree(quantized, q)
    damage(q / ARROW)
    before = tree(tmp_path)
    out = tmp_path / "out"
    r = run(arrowquant_bin, "dequantize", "--input", q, "--output", out, timeout=5 if name == "fifo" else RUN_TIMEOUT)
    failures = []
    if r.returncode != 1:
        failures.append(f"exit {r.returncode}, want 1; stderr: {r.stderr[-600:]}")
    failures += [f"message does not name {m!r}: {r.stderr[-600:]}" for m in mention if m not in r.stderr]
    if "panic" in r.stderr or "goroutine " in r.stderr:
        failures.append(f"dequantize panicked: {r.stderr[-1500:]}")
    if os.path.lexists(out) or temp_siblings(out):
        failures.append(f"output left behind: {os.path.lexists(out)}, {temp_siblings(out)}")
    if tree(tmp_path) != before:
        failures.append("files changed under the test dir")
    assert not failures, "\n".join(failures)


def test_dequantize_missing_input_is_usage(arrowquant_bin, tmp_path):
    r = run(arrowquant_bin, "dequantize", "--input", tmp_path / "nope", "--output", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert "nope" in r.stderr and not os.path.lexists(tmp_path / "out")


def test_pull_unknown_model(arrowquant_bin, live, tmp_path):
    server = live.get()
    r = run(arrowquant_bin, "pull", "--server", server.location, "--name", "no-such-model", "--output",
            tmp_path / "out")
    assert r.returncode == 1, r.stderr
    assert "no-such-model" in r.stderr
    assert not os.path.lexists(tmp_path / "out") and not temp_siblings(tmp_path / "out")


# ---- source protection -------------------------------------------------------------------------------------------

class P:
    def __init__(self, name, setup, code):
        """setup(t, q) -> (args, protect, mention): the command line, directories that must stay byte-identical
        (empty for the cases that must succeed) and the paths the message must name (given or resolved)."""
        self.name, self.setup, self.code = name, setup, code


def model_in(t, sub="m"):
    return write_model(t / sub)


def q_in(t, q, sub="out"):
    shutil.copytree(q, t / sub, symlinks=True)
    return t / sub


def foreign(t):
    """A directory of the user's files that ArrowQuant did not create."""
    d = t / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my notes")
    (d / "data.bin").write_bytes(os.urandom(64))
    return d


def q_setup_model_is_output(t, q, *extra):
    m = model_in(t)
    return ["quantize", "--model", m, "--output", m, *extra], [m], [m]


def q_setup_output_inside(t, q):
    m = model_in(t)
    return ["quantize", "--model", m, "--output", m / "out"], [m], [m, m / "out"]


def q_setup_model_inside_output(t, q):
    m = model_in(t / "parent")
    return ["quantize", "--model", m, "--output", t / "parent", "--overwrite"], [t / "parent"], [m, t / "parent"]


def q_setup_symlink_to_model(t, q):
    m = model_in(t)
    os.symlink(m, t / "link")
    return ["quantize", "--model", m, "--output", t / "link", "--overwrite"], [m], [m, t / "link"]


def q_setup_symlink_to_parent(t, q):
    m = model_in(t / "parent")
    os.symlink(t / "parent", t / "plink")
    return ["quantize", "--model", m, "--output", t / "plink", "--overwrite"], [t / "parent"], [m, t / "plink"]


def q_setup_inside_via_symlink(t, q):
    m = model_in(t)
    os.symlink(m, t / "link")
    return ["quantize", "--model", m, "--output", t / "link" / "out"], [m], [m, t / "link" / "out"]


def q_setup_model_via_symlink(t, q):
    m = model_in(t)
    os.symlink(m, t / "link")
    return ["quantize", "--model", t / "link", "--output", m, "--overwrite"], [m], [t / "link", m]


def q_setup_model_dot(t, q):
    m = model_in(t)
    return ["quantize", "--model", str(m) + "/.", "--output", m, "--overwrite"], [m], [m]


def dq_setup_same(t, q):
    o = q_in(t, q)
    return ["dequantize", "--input", o, "--output", o, "--overwrite"], [o], [o]


def dq_setup_inside(t, q):
    o = q_in(t, q)
    return ["dequantize", "--input", o, "--output", o / "deq"], [o], [o, o / "deq"]


def dq_setup_input_inside_output(t, q):
    o = q_in(t / "parent", q)
    return ["dequantize", "--input", o, "--output", t / "parent", "--overwrite"], [t / "parent"], [o, t / "parent"]


def dq_setup_input_file(t, q):
    o = q_in(t, q)
    return ["dequantize", "--input", o / "model.arrow", "--output", o, "--overwrite"], [o], [o]


def gen_setup_model_dir(t, q, *extra):
    m = model_in(t)
    return ["gen-model", "--preset", "tiny", "--out", m, "--overwrite", *extra], ([] if extra else [m]), [m]


def gen_setup_own_output(t, q):
    r = run(ENV.bin, "gen-model", "--preset", "tiny", "--out", t / "gen", "--seed", "1")
    assert r.returncode == 0, r.stderr
    return ["gen-model", "--preset", "tiny", "--out", t / "gen", "--overwrite", "--seed", "2"], [], []


def q_setup_foreign(t, q, *extra):
    m, d = model_in(t), foreign(t)
    return ["quantize", "--model", m, "--output", d, "--overwrite", *extra], [m] + ([] if extra else [d]), [d]


def q_setup_own_output(t, q):
    m = model_in(t)
    o = q_in(t, q)
    return ["quantize", "--model", m, "--output", o, "--overwrite"], [m], []


def dq_setup_foreign(t, q, *extra):
    o, d = q_in(t, q), foreign(t)
    return ["dequantize", "--input", o, "--output", d, "--overwrite", *extra], [o] + ([] if extra else [d]), [d]


def dq_setup_own_output(t, q):
    o = q_in(t, q)
    r = run(ENV.bin, "dequantize", "--input", o, "--output", t / "deq")
    assert r.returncode == 0, r.stderr
    return ["dequantize", "--input", o, "--output", t / "deq", "--overwrite"], [o], []


def pull_setup(extra, own=False):
    def setup(t, q):
        if own:
            r = run(ENV.bin, "pull", "--server", ENV.loc, "--name", "src", "--output", t / "pulled")
            assert r.returncode == 0, r.stderr
            return ["pull", "--server", ENV.loc, "--name", "src", "--output", t / "pulled", *extra], [], []
        m = model_in(t)
        return ["pull", "--server", ENV.loc, "--name", "src", "--output", m, *extra], [m], [m]
    return setup


def serve_setup(kind):
    def setup(t, q):
        if kind == "model-dir":
            d = model_in(t)
        elif kind == "config-only":
            d = write_model(t / "m", st=None)
        else:
            d = q_in(t, q)
        return ["serve", "--addr", "127.0.0.1:0", "--data", d], [d], [d]
    return setup


def serve_auth_setup(kind):
    def setup(t, q):
        if kind == "token":
            return ["serve", "--addr", "127.0.0.1:0", "--data", t / "data", "--auth-token", ""], [], ["auth-token"]
        (t / "users.txt").write_text("")
        return (["serve", "--addr", "127.0.0.1:0", "--data", t / "data", "--auth-basic", t / "users.txt"], [],
                [t / "users.txt"])
    return setup


ENV = types.SimpleNamespace(bin=None, loc=None)  # the binary and server URL, set by the test before a setup runs

PROTECT = [
    P("quantize-output-is-model", lambda t, q: q_setup_model_is_output(t, q, "--overwrite"), 2),
    P("quantize-output-is-model-no-overwrite", lambda t, q: q_setup_model_is_output(t, q), 2),
    P("quantize-output-is-model-force", lambda t, q: q_setup_model_is_output(t, q, "--overwrite", "--force"), 2),
    P("quantize-output-inside-model", q_setup_output_inside, 2),
    P("quantize-model-inside-output", q_setup_model_inside_output, 2),
    P("quantize-output-symlink-to-model", q_setup_symlink_to_model, 2),
    P("quantize-output-symlink-to-parent", q_setup_symlink_to_parent, 2),
    P("quantize-output-inside-model-via-symlink", q_setup_inside_via_symlink, 2),
    P("quantize-model-via-symlink", q_setup_model_via_symlink, 2),
    P("quantize-model-dot-suffix", q_setup_model_dot, 2),
    P("dequantize-output-is-input", dq_setup_same, 2),
    P("dequantize-output-inside-input", dq_setup_inside, 2),
    P("dequantize-input-inside-output", dq_setup_input_inside_output, 2),
    P("dequantize-input-file-output-its-dir", dq_setup_input_file, 2),
    P("gen-model-over-foreign-model", gen_setup_model_dir, 2),
    P("gen-model-over-foreign-model-force", lambda t, q: gen_setup_model_dir(t, q, "--force"), 0),
    P("gen-model-over-own-output", gen_setup_own_output, 0),
    P("quantize-overwrite-foreign-dir", q_setup_foreign, 2),
    P("quantize-overwrite-foreign-dir-force", lambda t, q: q_setup_foreign(t, q, "--force"), 0),
    P("quantize-overwrite-own-output", q_setup_own_output, 0),
    P("dequantize-overwrite-foreign-dir", dq_setup_foreign, 2),
    P("dequantize-overwrite-foreign-dir-force", lambda t, q: dq_setup_foreign(t, q, "--force"), 0),
    P("dequantize-overwrite-own-output", dq_setup_own_output, 0),
    P("pull-output-is-model-dir-overwrite", pull_setup(["--overwrite"]), 2),
    P("pull-output-is-model-dir", pull_setup([]), 2),
    P("pull-overwrite-own-output", pull_setup(["--overwrite"], own=True), 0),
    P("serve-data-is-model-dir", serve_setup("model-dir"), 2),
    P("serve-data-is-config-only-dir", serve_setup("config-only"), 2),
    P("serve-data-is-quantize-output", serve_setup("output"), 2),
    P("serve-empty-auth-token", serve_auth_setup("token"), 2),
    P("serve-empty-users-file", serve_auth_setup("users"), 2),
]


def ensure_src(binary, server, tmp):
    """The server holds a model "src" for the pull cases."""
    if "src" not in stored_names(binary, server):
        r = run(binary, "push", "--server", server.location, "--model", write_model(tmp / "src"), "--name", "src")
        assert r.returncode == 0, r.stderr


def run_serve(binary, args, timeout=10):
    """Run `serve`; returns (exit code or None if it started serving, stderr)."""
    p = subprocess.Popen([binary, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    deadline, started = time.monotonic() + timeout, False
    try:
        buf = b""
        while time.monotonic() < deadline and p.poll() is None:
            ready, _, _ = select.select([p.stdout], [], [], 0.1)
            if ready:
                buf += os.read(p.stdout.fileno(), 4096)
                if b"serving" in buf:
                    started = True
                    break
        if p.poll() is None and not started:
            started = True  # still running at the deadline
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        err = p.stderr.read().decode(errors="replace")
        p.stdout.close()
        p.stderr.close()
    return (None if started else p.returncode), err


@pytest.mark.parametrize("case", PROTECT, ids=[c.name for c in PROTECT])
def test_source_protection(arrowquant_bin, quantized, live, tmp_path_factory, tmp_path, case):
    ENV.bin = arrowquant_bin
    if case.name.startswith("pull"):
        ENV.loc = live.get().location
        ensure_src(arrowquant_bin, live.get(), tmp_path_factory.mktemp("src"))
    args, protect, mention = case.setup(tmp_path, quantized)
    before = {str(p): tree(p) for p in protect}
    outs = [pathlib.Path(a) for flag, a in zip(args, args[1:]) if flag in ("--output", "--out")]
    if args[0] == "serve":
        code, err = run_serve(arrowquant_bin, args)
        if code is None:
            pytest.fail(f"serve started (it must refuse): {' '.join(map(str, args))}\n{err[-600:]}\n"
                        + "\n".join(f"{p} changed" for p in before if tree(p) != before[p]))
    else:
        r = run(arrowquant_bin, *args)
        code, err = r.returncode, r.stderr
    failures = []
    if code != case.code:
        failures.append(f"exit {code}, want {case.code}; stderr: {err[-600:]}")
    for m in mention if case.code != 0 else ():
        forms = {str(m), os.path.realpath(m), os.path.abspath(m), os.path.basename(str(m))}
        if not any(f and f in err for f in forms):
            failures.append(f"message does not name {m}: {err[-600:]}")
    for p in before:
        if tree(p) != before[p]:
            changed = sorted(k for k in set(before[p]) | set(tree(p)) if before[p].get(k) != tree(p).get(k))
            failures.append(f"{p} changed: {changed[:10]}")
    for o in outs:
        if temp_siblings(o):
            failures.append(f"temporary outputs left next to {o}: {temp_siblings(o)}")
    if case.code == 0 and code == 0:
        target = outs[0]
        if args[0] == "gen-model":
            ok = (target / "model.safetensors").exists()
        elif args[0] == "dequantize":
            ok = (target / "model.safetensors").exists()
        else:
            ok = (target / "model.arrow").exists()
        if not ok or (target / "notes.txt").exists():
            failures.append(f"{target} was not replaced by the new output: {sorted(tree(target))}")
    assert not failures, "\n".join(failures)
