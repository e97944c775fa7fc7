"""ArrowQuantV2: the guide's quantizer, a client of the ArrowQuant Arrow Flight server (docs/FLIGHT.md).

Weights are read from the safetensors files chunk by chunk and streamed over DoPut; the server quantizes
each tensor as it arrives and commits the model; the artifact is then pulled with DoGet into the output
directory, in the layout of ``arrowquant quantize``. Memory stays at a few chunks whatever the model size.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.ipc as ipc

from . import safetensors as st
from .artifact import ARTIFACT_NAME, REPORT_NAME
from .config import DeploymentProfile, DiffusionQuantConfig
from .errors import (SERVER_CODES, VALIDATION_KINDS, ModelFormatError, NotOursError, OutputExistsError,
                     PathConflictError, QuantError, ServerError, combine)
from .server import EmbeddedServer

CHUNK_ELEMS = 1 << 20          # elements per row, as the Go client and the artifact use
BATCH_VALUE_BYTES = 4 << 20    # small rows are grouped into batches of about this many value bytes

_WIRE = {"BF16": pa.uint16(), "F16": pa.float16(), "F32": pa.float32(), "F64": pa.float32()}
_NP_WIRE = {pa.uint16(): np.dtype("<u2"), pa.float16(): np.dtype("<f2"), pa.float32(): np.dtype("<f4")}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def input_schema(value_type: pa.DataType) -> pa.Schema:
    """The DoPut input schema (docs/FORMAT.md) for one wire value type."""
    return pa.schema([("name", pa.string()), ("shape", pa.list_(pa.int64())), ("dtype", pa.string()),
                      ("chunk_offset", pa.int64()), ("values", pa.list_(value_type))])


def wire_type(dtypes) -> pa.DataType:
    """The stream's value type: the model's single 16-bit type (BF16 as uint16 bits, F16 as float16), else
    float32 (F32, F64, or mixed dtypes)."""
    ds = set(dtypes)
    if len(ds) == 1:
        return _WIRE[ds.pop()]
    return pa.float32()


def to_wire(raw: np.ndarray, dtype: str, wire: pa.DataType) -> np.ndarray:
    """A chunk read in its source type, in the wire type (widening to float32 exactly when needed)."""
    if _NP_WIRE[wire] == raw.dtype and dtype != "F64":
        return raw
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


class Progress(float):
    """What progress_callback receives: a float, the fraction in [0, 1] of the current phase done, that
    also answers ``p["phase"]`` and the phase's details (``p.info`` is the dict):

    - "upload", once per batch sent: ``bytes_done``, ``bytes_total`` (source tensor bytes), ``tensor``
      (the last tensor in the batch), ``tensors_done``, ``tensors_total``;
    - "download", once per artifact batch received: ``batches_done``, ``batches_total``;
    - "done", once at the end (fraction 1.0): ``result`` (the returned dict).
    """

    def __new__(cls, fraction: float, **info):
        obj = super().__new__(cls, fraction)
        obj.info = dict(info, fraction=float(fraction))
        return obj

    def __getitem__(self, key):
        return self.info[key]

    def get(self, key, default=None):
        return self.info.get(key, default)

    def keys(self):
        return self.info.keys()

    def __getattr__(self, name):
        try:
            return self.__dict__["info"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self):
        return f"Progress({float(self):.4f}, {self.info!r})"


# ---- Flight errors ---------------------------------------------------------------------------------

_PHRASES = [("invalid argument", "InvalidArgument"), ("not found", "NotFound"), ("already exists", "AlreadyExists"),
            ("unauthenticated", "Unauthenticated"), ("permission denied", "PermissionDenied"),
            ("unauthorized", "PermissionDenied"), ("resource exhausted", "ResourceExhausted"),
            ("failed precondition", "FailedPrecondition"), ("precondition failed", "FailedPrecondition"), ("unavailable", "Unavailable"),
            ("internal", "Internal"), ("unimplemented", "Unimplemented"), ("not implemented", "Unimplemented"),
            ("deadline exceeded", "DeadlineExceeded"), ("timed out", "DeadlineExceeded"), ("cancelled", "Cancelled")]
# pyarrow words a gRPC status as "Flight returned <code> error, with message: <message>. gRPC client debug
# context: ..." (or "gRPC returned ..." for some codes).
_STATUS = re.compile(r"(?:Flight|gRPC) returned (?P<what>[A-Za-z ]+?) error, with message: (?P<msg>.*)", re.S)


def _class_code(e: BaseException) -> str:
    for cls, code in ((getattr(fl, "FlightUnauthenticatedError", ()), "Unauthenticated"),
                      (getattr(fl, "FlightUnauthorizedError", ()), "PermissionDenied"),
                      (getattr(fl, "FlightUnavailableError", ()), "Unavailable"),
                      (getattr(fl, "FlightTimedOutError", ()), "DeadlineExceeded"),
                      (getattr(fl, "FlightCancelledError", ()), "Cancelled"),
                      (getattr(fl, "FlightInternalError", ()), "Internal"),
                      (pa.ArrowKeyError, "NotFound"), (pa.ArrowInvalid, "InvalidArgument"),
                      (pa.ArrowNotImplementedError, "Unimplemented")):
        if cls and isinstance(e, cls):
            return code
    return "Unknown"


def flight_error(e: BaseException) -> QuantError:
    """A pyarrow Flight exception as a ServerError subclass named by its gRPC code, with the server's
    message. An invalid configuration rejected by the server is also the validation class
    (InvalidBitWidth, ...)."""
    text = str(e)
    m = _STATUS.search(text)
    code, msg = None, text
    if m:
        msg = m.group("msg").split(". gRPC client debug context:")[0]
        what = m.group("what").lower()
        code = next((c for phrase, c in _PHRASES if phrase == what), None)
        if code is None:
            code = next((c for phrase, c in _PHRASES if phrase in what), None)
    if code is None:
        code = _class_code(e)
    cls = SERVER_CODES.get(code, ServerError)
    kind = msg.split("(", 1)[0] if "(" in msg else ""
    if code == "InvalidArgument" and kind in VALIDATION_KINDS:
        cls = combine(VALIDATION_KINDS[kind], cls)
    err = cls(msg, code=code, server_message=msg)
    err.__cause__ = e
    return err


def _is_status(e: Optional[BaseException]) -> bool:
    return e is not None and bool(_STATUS.search(str(e)))


_WIRE_DTYPE = {pa.uint16(): "BF16", pa.float16(): "F16", pa.float32(): "F32"}


def _abort(writer, schema, wire) -> None:
    """Make the server drop an unfinished upload. pyarrow cannot cancel a DoPut, and ending the stream
    would commit what was sent, so send a row that breaks the chunk order (a new tensor starting at
    element 1): the server fails the call with InvalidArgument and commits nothing."""
    poison = pa.record_batch([pa.array(["arrowquant-client-cancelled-upload"]), pa.array([[1]], pa.list_(pa.int64())),
                              pa.array([_WIRE_DTYPE[wire]]), pa.array([1], pa.int64()),
                              pa.array([[]], pa.list_(wire))], schema=schema)
    for step in (lambda: writer.write_with_metadata(poison, b"client cancelled the upload"), writer.done_writing,
                 writer.close):
        try:
            step()
        except Exception:  # noqa: BLE001 - the call is failing on purpose
            pass


class _AckReader(threading.Thread):
    """Reads the DoPut acknowledgements while the upload runs, so the server is never blocked on us."""

    def __init__(self, reader):
        super().__init__(daemon=True, name="arrowquant-acks")
        self.reader, self.last, self.count, self.error = reader, None, 0, None

    def run(self):
        try:
            while True:
                buf = self.reader.read()
                if buf is None:
                    return
                self.last = buf.to_pybytes()
                self.count += 1
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            self.error = e


# ---- output directories, as internal/outdir in Go -----------------------------------------------

MARKER_NAME = ".arrowquant-output.json"  # written into every directory ArrowQuant creates


def _within(p: str, d: str) -> bool:
    rel = os.path.relpath(p, d)
    return rel != "." and rel != ".." and not rel.startswith(".." + os.sep)


def _check_output(path: str, overwrite: bool, force: bool = False, inputs=()) -> None:
    """Refuse an output that overlaps an input (symlinks resolved), a non-empty one without overwrite, and
    one ArrowQuant did not create without force."""
    out = os.path.realpath(path)
    for given in inputs:
        if not given:
            continue
        src = os.path.realpath(os.fspath(given))
        rel = "is" if out == src else "is inside" if _within(out, src) else "contains" if _within(src, out) else ""
        if rel:
            raise PathConflictError(f"output {out} {rel} the input {src}: ArrowQuant never writes where it reads; "
                                    f"choose another output directory", output=out, input=src)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise OutputExistsError(f"output {path} exists and is not a directory")
        if os.listdir(out):
            if not overwrite:
                raise OutputExistsError(f"output directory exists and is not empty: {path} (use overwrite=True to "
                                        f"replace it)")
            if not force and not os.path.isfile(os.path.join(out, MARKER_NAME)):
                raise NotOursError(f"output {path} exists and was not created by ArrowQuant (no {MARKER_NAME} in "
                                   f"it): refusing to replace it; pass force=True to replace it anyway")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _OutputDir:
    """A temporary sibling of the output directory, renamed into place by commit()."""

    def __init__(self, path: str, overwrite: bool, force: bool = False, inputs=(), command: str = "pull"):
        _check_output(path, overwrite, force, inputs)
        self.final = os.path.realpath(path)
        self.command = command
        parent = os.path.dirname(self.final)
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(self.final) + ".tmp-")
        self.done = False

    def commit(self) -> None:
        with open(os.path.join(self.tmp, MARKER_NAME), "w") as f:
            f.write(json.dumps({"created_by": "arrowquant", "command": self.command}, indent=2) + "\n")
        for name in os.listdir(self.tmp):
            with open(os.path.join(self.tmp, name), "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(self.tmp)
        os.chmod(self.tmp, 0o755)
        old = None
        if os.path.exists(self.final):
            old = self.tmp + ".old"
            os.rename(self.final, old)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if old:
                os.rename(old, self.final)
            raise
        self.done = True
        if old:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(os.path.dirname(self.final))

    def cleanup(self) -> None:
        if not self.done:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---- the quantizer -------------------------------------------------------------------------------

class ArrowQuantV2:
    """The guide's quantizer.

    ``ArrowQuantV2(mode="diffusion")`` starts an embedded ``arrowquant serve`` on a free 127.0.0.1 port with
    a temporary store (the binary from ARROW_QUANT_BIN, PATH or this checkout's bin/arrowquant) and stops
    it on close(), at the end of a ``with`` block, or at exit. With ``server="grpc://HOST:PORT"`` (or the
    ARROW_QUANT_SERVER environment variable) it uses that server instead: ``token=`` (or ARROW_QUANT_TOKEN)
    for ``serve --auth-token``, ``username=``/``password=`` (password default ARROW_QUANT_PASSWORD) for
    ``serve --auth-basic``, ``tls_root_certs=`` (PEM bytes) for grpc+tls.

    ``mode`` is "diffusion" (default) or "base"; base mode's default configuration has
    enable_time_aware=False.
    """

    def __init__(self, mode: str = "diffusion", server: Optional[str] = None, *, token: Optional[str] = None,
                 username: Optional[str] = None, password: Optional[str] = None,
                 tls_root_certs: Optional[bytes] = None, binary: Optional[str] = None,
                 serve_args: Optional[List[str]] = None, timeout: Optional[float] = None):
        if mode not in ("diffusion", "base"):
            raise ValueError(f"mode must be \"diffusion\" or \"base\", got {mode!r}")
        self.mode = mode
        self.binary = binary
        self._server: Optional[EmbeddedServer] = None
        self._client: Optional[fl.FlightClient] = None
        self._headers: List = []
        self._timeout = timeout
        self._tls_root_certs = tls_root_certs
        server = server or os.environ.get("ARROW_QUANT_SERVER") or None
        if server:
            if "://" not in server:
                server = "grpc://" + server
            self.location = server
            self.embedded = False
        else:
            self._server = EmbeddedServer(binary=binary, args=serve_args)
            self.location = self._server.location
            self.embedded = True
        try:
            self._client = self._connect()
            token = token if token is not None else (os.environ.get("ARROW_QUANT_TOKEN") or None)
            if username:
                if password is None:
                    password = os.environ.get("ARROW_QUANT_PASSWORD", "")
                try:
                    self._headers = [self._client.authenticate_basic_token(username, password)]
                except pa.ArrowException as e:
                    raise flight_error(e) from None
            elif token:
                self._headers = [(b"authorization", b"Bearer " + token.encode())]
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------------
    def _connect(self) -> fl.FlightClient:
        kw = {}
        if self._tls_root_certs is not None:
            kw["tls_root_certs"] = self._tls_root_certs
        return fl.FlightClient(self.location, **kw)

    def _opts(self) -> fl.FlightCallOptions:
        return fl.FlightCallOptions(headers=self._headers, timeout=self._timeout)

    @property
    def client(self) -> fl.FlightClient:
        """The underlying pyarrow FlightClient (call with ``options=self.call_options``)."""
        if self._client is None:
            raise QuantError("ArrowQuantV2 is closed")
        return self._client

    @property
    def call_options(self) -> fl.FlightCallOptions:
        return self._opts()

    def _action(self, kind: str, body: Optional[dict] = None):
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            results = list(self.client.do_action(fl.Action(kind, payload), options=self._opts()))
        except pa.ArrowException as e:
            raise flight_error(e) from None
        return json.loads(results[0].body.to_pybytes()) if results else None

    def close(self) -> None:
        """Close the connection and stop the embedded server (its temporary store is removed)."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"ArrowQuantV2(mode={self.mode!r}, server={self.location!r}, embedded={self.embedded})"

    # -- server helpers ---------------------------------------------------------------------------
    def list_models(self, prefix: str = "") -> List[dict]:
        """The stored models whose name starts with prefix: their report metadata plus total_bytes."""
        try:
            infos = list(self.client.list_flights(prefix.encode(), options=self._opts()))
        except pa.ArrowException as e:
            raise flight_error(e) from None
        out = []
        for info in infos:
            md = json.loads(info.app_metadata) if info.app_metadata else {}
            md["total_bytes"], md["total_records"] = info.total_bytes, info.total_records
            out.append(md)
        return out

    def delete(self, name: str) -> None:
        """Delete a stored model (NotFound if absent)."""
        self._action("delete", {"model": name})

    def profiles(self) -> dict:
        return self._action("profiles")

    def stats(self) -> dict:
        return self._action("stats")

    def validate_config(self, config=None, profile=None) -> dict:
        """The server's effective configuration for these overrides (InvalidArgument + the validation
        class if invalid)."""
        body: Dict[str, Any] = {}
        if profile is not None:
            body["profile"] = profile.value if isinstance(profile, DeploymentProfile) else profile
        if config is not None:
            body["config"] = config.to_dict() if isinstance(config, DiffusionQuantConfig) else dict(config)
        return self._action("validate_config", body)["config"]

    # -- the guide's API --------------------------------------------------------------------------
    def _config(self, config) -> DiffusionQuantConfig:
        if config is None:
            cfg = DiffusionQuantConfig.default()
            if self.mode == "base":
                cfg.enable_time_aware = False
        elif isinstance(config, DiffusionQuantConfig):
            cfg = config.copy()
        elif isinstance(config, (str, DeploymentProfile)):
            cfg = DiffusionQuantConfig.from_profile(config)
        elif isinstance(config, Mapping):
            cfg = DiffusionQuantConfig(**dict(config))
        else:
            raise TypeError(f"config must be a DiffusionQuantConfig, a mapping or a profile, got {type(config)}")
        return cfg.validate()

    def quantize_diffusion_model(self, model_path, output_path, config=None,
                                 progress_callback: Optional[Callable[[Progress], Any]] = None, *,
                                 overwrite: bool = False, force: bool = False, name: Optional[str] = None,
                                 keep_on_server: Optional[bool] = None,
                                 calibration=None, method: Optional[str] = None) -> Dict[str, Any]:
        """Quantize the Hugging Face model in ``model_path`` (model.safetensors, sharded with an index, or
        diffusion_pytorch_model*.safetensors; F32/F16/BF16/F64) into ``output_path``: model.arrow (the
        artifact), report.json and the model's config, tokenizer and generation files -- the layout of
        ``arrowquant quantize``.

        ``config`` is a DiffusionQuantConfig (validated first), a mapping of its fields, a profile, or None
        (the local profile). ``progress_callback`` receives a Progress (a float fraction with details) per
        batch. A non-empty ``output_path`` is refused unless ``overwrite=True``, which replaces only a directory
        ArrowQuant created (it holds ``.arrowquant-output.json``) unless ``force=True`` too; an output that is,
        contains or lies inside ``model_path`` is refused (PathConflictError). The output is built in a
        temporary sibling and renamed into place, so a failure leaves nothing behind. ``name`` is the
        model's name on the server (default: the directory name plus a unique suffix); the model stays
        stored there when using an external server (``keep_on_server``, default True for external servers
        and False for the embedded one). ``calibration`` is a calibration file (.arrow, .parquet or .jsonl
        rows of layer, timestep, activation; docs/FORMAT.md) sent with the upload for time-aware and spatial
        quantization. ``method`` forces one quantization method at every bit width (``"minmax"``, ``"lsq"``,
        ``"clip"``, or ``"dq"``: double-quantized super-blocks at 2.625 / 4.5 bits per weight); None uses the
        defaults per bit width.

        Returns the result (the keys of ``arrowquant quantize --json``: model_size_mb, cosine_similarity,
        compression_ratio, fallback_occurred, actual_bit_width, fallback_reason, layers, ...), with
        model_size_mb, compression_ratio and quantized_path for the local model.arrow."""
        cfg = self._config(config)
        out_path = os.path.normpath(os.path.abspath(os.fspath(output_path)))
        inputs = (model_path, calibration if isinstance(calibration, (str, os.PathLike)) else None)
        _check_output(out_path, overwrite, force, inputs)  # before uploading anything
        if keep_on_server is None:
            keep_on_server = not self.embedded
        given_name = name is not None
        if name is None:
            base = _SAFE_NAME.sub("-", os.path.basename(os.path.normpath(os.fspath(model_path)))).lstrip(".-")
            name = f"{base[:120] or 'model'}-{uuid.uuid4().hex[:12]}"
        result = self.push(model_path, cfg, name=name, overwrite=given_name and overwrite,
                           progress_callback=progress_callback, calibration=calibration, method=method)
        try:
            # With a generated name, the artifact names the model after its directory, as a local run does.
            label = None if given_name else os.path.basename(os.path.normpath(os.path.abspath(os.fspath(model_path))))
            local = self.pull(name, out_path, overwrite=overwrite, force=force, result=result,
                              progress_callback=progress_callback, model_label=label, _inputs=inputs,
                              _command="quantize")
        finally:
            if not keep_on_server:
                try:
                    self.delete(name)
                except QuantError:
                    pass
        if keep_on_server:
            local["server_model"] = name
        if progress_callback is not None:
            progress_callback(Progress(1.0, phase="done", result=local))
        return local

    def push(self, model_path, config=None, *, name: Optional[str] = None, overwrite: bool = False,
             progress_callback=None, chunk_elems: int = CHUNK_ELEMS, calibration=None,
             method: Optional[str] = None) -> Dict[str, Any]:
        """Upload a model directory over DoPut; the server quantizes it and stores it as ``name``.
        Returns the server's result JSON."""
        cfg = self._config(config)
        model = st.open_model(model_path)
        if name is None:
            name = os.path.basename(os.path.normpath(model.dir))
        files = {}
        for fname in st.aux_files(model):
            if fname.startswith(".") or fname in (REPORT_NAME, ARTIFACT_NAME):
                continue
            with open(os.path.join(model.dir, fname), "rb") as f:
                files[fname] = base64.b64encode(f.read()).decode("ascii")
        command = {"model": name, "config": cfg.to_dict(), "overwrite": bool(overwrite), "files": files,
                   "tensors": len(model.tensors)}  # the server refuses an upload that stops short
        if calibration is not None:
            with open(calibration, "rb") as f:
                command["calibration"] = {"name": os.path.basename(os.fspath(calibration)),
                                          "data": base64.b64encode(f.read()).decode("ascii")}
        if method is not None:
            command["method"] = method
        wire = wire_type(model.dtypes)
        schema = input_schema(wire)
        descriptor = fl.FlightDescriptor.for_command(json.dumps(command).encode())

        client = self._connect()  # one call per connection: closing it cancels the upload
        writer = acks = None
        errors: List[BaseException] = []
        try:
            try:
                writer, reader = client.do_put(descriptor, schema, options=self._opts())
            except pa.ArrowException as e:
                raise flight_error(e) from None
            acks = _AckReader(reader)
            acks.start()
            try:
                self._send(model, writer, wire, schema, progress_callback, chunk_elems)
            except pa.ArrowException as e:  # the stream broke: the server's status says why
                errors.append(e)
            except BaseException:
                _abort(writer, schema, wire)  # the server discards the partial upload
                acks.join(timeout=30)
                raise
            for step in (writer.done_writing, acks.join, writer.close):
                try:
                    step()
                except pa.ArrowException as e:
                    errors.append(e)
            if acks.error is not None:
                errors.insert(0, acks.error)
        finally:
            if client is not None:
                client.close()
        if errors:
            best = next((e for e in errors if _is_status(e)), errors[0])
            raise flight_error(best) from None
        try:
            result = json.loads(acks.last)
            if not isinstance(result, dict) or "layers" not in result:
                raise ValueError
        except (TypeError, ValueError):
            raise ServerError(f"the server's last message is not a result: {(acks.last or b'')[:200]!r}") from None
        return result

    def _send(self, model: st.Model, writer, wire, schema, progress, chunk_elems: int) -> None:
        total, done = model.source_bytes, 0
        rows: List[tuple] = []
        pending = 0

        def flush(tensor, tensors_done):
            nonlocal rows, pending
            if not rows:
                return
            values = rows[0][4] if len(rows) == 1 else np.concatenate([r[4] for r in rows])
            offsets = np.zeros(len(rows) + 1, np.int32)
            np.cumsum([r[4].size for r in rows], out=offsets[1:])
            batch = pa.record_batch([
                pa.array([r[0] for r in rows], pa.string()),
                pa.array([r[1] for r in rows], pa.list_(pa.int64())),
                pa.array([r[2] for r in rows], pa.string()),
                pa.array([r[3] for r in rows], pa.int64()),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=wire)),
            ], schema=schema)
            writer.write_batch(batch)
            rows, pending = [], 0
            if progress is not None:
                progress(Progress(done / total if total else 1.0, phase="upload", bytes_done=done,
                                  bytes_total=total, tensor=tensor, tensors_done=tensors_done,
                                  tensors_total=len(model.tensors)))

        with st.ChunkReader(model) as rd:
            for i, t in enumerate(model.tensors):
                n = t.num_elements
                itemsize = st.NUMPY_RAW[t.dtype].itemsize
                off = 0
                while True:
                    cnt = min(chunk_elems, n - off)
                    vals = to_wire(rd.read(t, off, cnt), t.dtype, wire)
                    rows.append((t.name, t.shape, t.dtype, off, vals))
                    pending += vals.nbytes
                    done += cnt * itemsize
                    off += cnt
                    last = off >= n
                    if pending >= BATCH_VALUE_BYTES:
                        flush(t.name, i + 1 if last else i)
                    if last:
                        break
            flush(model.tensors[-1].name if model.tensors else None, len(model.tensors))

    def export_gguf(self, source, output_path, *, exact: bool = False, runnable: bool = False,
                    overwrite: bool = False, progress_callback=None) -> Dict[str, Any]:
        """Write a quantized model as one GGUF file for llama.cpp / ggml (docs/GGUF.md), bit-exact where the
        formats agree. ``source`` is a local output directory of ``quantize_diffusion_model`` (or its
        model.arrow), exported by the ``arrowquant`` binary, or the name of a model stored on the server,
        exported there and streamed (DoGet ``{"format": "gguf"}``). ``exact=True`` refuses any tensor that would
        be re-encoded; ``runnable=True`` requires an architecture llama.cpp runs (llama, qwen2, dream, bert)
        with its tokenizer. The export report (per tensor: GGUF type, exact, cosine) is returned and written to
        ``output_path + ".report.json"``. An existing output is refused unless ``overwrite=True``."""
        out = os.path.abspath(os.fspath(output_path))
        if os.path.exists(out) and not overwrite:
            raise OutputExistsError(f"output {out} exists (use overwrite=True to replace it)")
        src = os.fspath(source)
        if os.path.exists(src):
            return _export_local(src, out, exact=exact, runnable=runnable, binary=self.binary)
        ticket = fl.Ticket(json.dumps({"model": src, "format": "gguf", "exact": exact, "runnable": runnable}).encode())
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix="." + os.path.basename(out) + ".tmp-")
        report = None
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    reader = self.client.do_get(ticket, options=self._opts())
                    written = 0
                    for chunk in reader:
                        b = chunk.data
                        offs, data, rep = b.column(0), b.column(1), b.column(2)
                        for i in range(b.num_rows):
                            if offs[i].as_py() != written:
                                raise QuantError(f"GGUF stream of {src}: chunk at {offs[i].as_py()}, expected {written}")
                            buf = data[i].as_buffer()
                            f.write(buf)
                            written += buf.size
                            if rep[i].is_valid:
                                report = json.loads(rep[i].as_py())
                        if progress_callback is not None:
                            progress_callback(Progress(0.0, phase="download", bytes_done=written))
                except pa.ArrowException as e:
                    raise flight_error(e) from None
                if report is None:
                    raise QuantError(f"the GGUF stream of {src} ended without its report")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        report["output"] = out
        with open(out + ".report.json", "w") as f:
            json.dump(report, f, indent=2)
        return report

    def pull(self, name: str, output_path, *, overwrite: bool = False, force: bool = False,
             result: Optional[dict] = None, progress_callback=None, model_label: Optional[str] = None,
             _inputs=(), _command: str = "pull") -> Dict[str, Any]:
        """Download a stored model into output_path (model.arrow, report.json, the model's other files).
        ``overwrite=True`` replaces a non-empty directory ArrowQuant created; ``force=True`` also one it did
        not. Returns its result with model_size_mb, compression_ratio and quantized_path for the local
        file."""
        out = _OutputDir(os.fspath(output_path), overwrite, force, _inputs, _command)
        try:
            try:
                info = self.client.get_flight_info(fl.FlightDescriptor.for_path(name), options=self._opts())
                meta = json.loads(info.app_metadata) if info.app_metadata else {}
                artifact = os.path.join(out.tmp, ARTIFACT_NAME)
                total, got = max(info.total_records, 0), 0
                reader = self.client.do_get(info.endpoints[0].ticket, options=self._opts())
                schema = reader.schema
                if model_label and schema.metadata and b"arrowquant.model" in schema.metadata:
                    schema = schema.with_metadata({**schema.metadata, b"arrowquant.model": model_label.encode()})
                with open(artifact, "wb") as sink:
                    with ipc.new_file(sink, schema) as w:
                        for chunk in reader:
                            w.write_batch(chunk.data)
                            got += 1
                            if progress_callback is not None:
                                progress_callback(Progress(got / total if total else 1.0, phase="download",
                                                           batches_done=got, batches_total=total))
                for fname in meta.get("files") or []:
                    if not isinstance(fname, str) or fname != os.path.basename(fname) or fname.startswith(".") \
                            or fname == ARTIFACT_NAME:
                        continue
                    t = fl.Ticket(json.dumps({"model": name, "file": fname}).encode())
                    table = self.client.do_get(t, options=self._opts()).read_all()
                    with open(os.path.join(out.tmp, fname), "wb") as f:
                        f.write(table.column("data")[0].as_py())
            except pa.ArrowException as e:
                raise flight_error(e) from None
            res = dict(result) if result is not None else None
            if res is None:
                rp = os.path.join(out.tmp, REPORT_NAME)
                if os.path.exists(rp):
                    with open(rp, encoding="utf-8") as f:
                        res = json.load(f)
                else:
                    res = {k: v for k, v in meta.items() if k not in ("files", "version", "time_groups", "model")}
            size = os.path.getsize(artifact)
            res["quantized_path"] = os.path.join(out.final, ARTIFACT_NAME)
            res["model_size_mb"] = size / (1 << 20)
            src = res.get("source_bytes") or 0
            res["compression_ratio"] = src / size if size else 0.0
            with open(os.path.join(out.tmp, REPORT_NAME), "w", encoding="utf-8") as f:
                f.write(json.dumps(res, indent=2, ensure_ascii=False))
                f.write("\n")
            out.commit()
            return res
        finally:
            out.cleanup()


def quantize_diffusion_model(model_path, output_path, config=None, progress_callback=None, **kw):
    """One-shot convenience: ``ArrowQuantV2().quantize_diffusion_model(...)`` with an embedded server."""
    server_kw = {k: kw.pop(k) for k in ("server", "token", "username", "password", "binary") if k in kw}
    with ArrowQuantV2(**server_kw) as q:
        return q.quantize_diffusion_model(model_path, output_path, config, progress_callback, **kw)


def _export_local(src: str, out: str, *, exact: bool, runnable: bool, binary: Optional[str] = None) -> Dict[str, Any]:
    """``arrowquant export`` of a local output directory; errors as the package's exceptions."""
    from .server import find_binary
    cmd = [find_binary(binary), "export", "--model", src, "--format", "gguf", "--output", out, "--json", "--overwrite"]
    if exact:
        cmd.append("--exact")
    if runnable:
        cmd.append("--runnable")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = p.stderr.strip().removeprefix("arrowquant: ")
        raise (ModelFormatError if p.returncode == 2 else QuantError)(msg)
    return json.loads(p.stdout)


def export_gguf(source, output_path, **kw):
    """One-shot convenience: ``ArrowQuantV2().export_gguf(...)`` (an embedded server only when ``source`` names a
    stored model rather than a local output directory)."""
    server_kw = {k: kw.pop(k) for k in ("server", "token", "username", "password", "binary") if k in kw}
    if os.path.exists(os.fspath(source)) and "server" not in server_kw:
        out = os.path.abspath(os.fspath(output_path))
        if os.path.exists(out) and not kw.get("overwrite"):
            raise OutputExistsError(f"output {out} exists (use overwrite=True to replace it)")
        return _export_local(os.fspath(source), out, exact=kw.get("exact", False), runnable=kw.get("runnable", False),
                             binary=server_kw.get("binary"))
    with ArrowQuantV2(**server_kw) as q:
        return q.export_gguf(source, output_path, **kw)
