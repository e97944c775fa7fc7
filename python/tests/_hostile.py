"""Shared by the hostile suites (issue 9): gRPC codes from pyarrow.flight exceptions and the DoPut wire helpers."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

# ---- gRPC status codes from pyarrow exceptions ------------------------------------------------------
# pyarrow turns a gRPC status into an exception whose message starts with a fixed phrase per code
# (libarrow_flight: TransportStatus::ToStatus and FromGrpcStatus); several codes share a class
# (InvalidArgument, ResourceExhausted and FailedPrecondition are all ArrowInvalid), so the phrase decides.
_PHRASES = [
    ("Flight returned invalid argument error", "InvalidArgument"),
    ("Flight returned not found error", "NotFound"),
    ("Flight returned already exists error", "AlreadyExists"),
    ("Flight returned unauthenticated error", "Unauthenticated"),
    ("Flight returned unauthorized error", "PermissionDenied"),
    ("Flight returned internal error", "Internal"),
    ("Flight returned unavailable error", "Unavailable"),
    ("Flight returned unimplemented error", "Unimplemented"),
    ("Flight returned timeout error", "DeadlineExceeded"),
    ("Flight cancelled call", "Cancelled"),
    ("Flight RPC failed", "Unknown"),
    ("gRPC returned resource exhausted error", "ResourceExhausted"),
    ("gRPC returned precondition failed error", "FailedPrecondition"),
    ("gRPC returned out-of-range error", "OutOfRange"),
    ("gRPC returned aborted error", "Aborted"),
    ("gRPC returned data loss error", "DataLoss"),
    ("gRPC returned invalid argument error", "InvalidArgument"),
    ("gRPC returned not found error", "NotFound"),
    ("gRPC returned already exists error", "AlreadyExists"),
    ("gRPC returned unknown error", "Unknown"),
    ("gRPC failed with error code", "Unknown"),
]
_CLASSES = [
    (fl.FlightUnauthenticatedError, "Unauthenticated"),
    (fl.FlightUnauthorizedError, "PermissionDenied"),
    (fl.FlightInternalError, "Internal"),
    (fl.FlightUnavailableError, "Unavailable"),
    (fl.FlightTimedOutError, "DeadlineExceeded"),
    (fl.FlightCancelledError, "Cancelled"),
]


def grpc_code(exc):
    """The gRPC status code name ("InvalidArgument", ...) a pyarrow.flight exception carries.

    The earliest known phrase in the message wins (the server's own text follows it); without one the exception
    class decides; an exception that did not come from the transport gives "client:<ClassName>"."""
    msg = str(exc)
    found = [(msg.find(p), code) for p, code in _PHRASES if p in msg]
    if found:
        return min(found)[1]
    for cls, code in _CLASSES:
        if isinstance(exc, cls):
            return code
    return "client:" + type(exc).__name__


# ---- wire helpers ------------------------------------------------------------------------------------

_NP = {pa.float32(): np.float32, pa.float16(): np.float16, pa.uint16(): np.uint16, pa.int32(): np.int32,
       pa.float64(): np.float64, pa.uint8(): np.uint8}


def input_schema(vt=pa.float32()):
    return pa.schema([("name", pa.string()), ("shape", pa.list_(pa.int64())), ("dtype", pa.string()),
                      ("chunk_offset", pa.int64()), ("values", pa.list_(vt))])


def values_column(vals, vt):
    """list<vt> from per-row values: a sequence/ndarray, a pa.Array (may hold nulls), or None (a null list)."""
    offsets, parts, mask = [0], [], []
    for v in vals:
        if v is None:
            mask.append(True)
            offsets.append(offsets[-1])
            continue
        mask.append(False)
        a = v if isinstance(v, pa.Array) else pa.array(np.asarray(v, dtype=_NP[vt]), type=vt)
        parts.append(a)
        offsets.append(offsets[-1] + len(a))
    child = pa.concat_arrays(parts) if parts else pa.array([], vt)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), child, type=pa.list_(vt),
                                    mask=pa.array(mask) if any(mask) else None)


def batch(*rows, vt=pa.float32()):
    """One record batch of the input schema; a row is (name, shape, dtype, chunk_offset, values), None = null."""
    cols = [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.list_(pa.int64())),
            pa.array([r[2] for r in rows], pa.string()), pa.array([r[3] for r in rows], pa.int64()),
            values_column([r[4] for r in rows], vt)]
    return pa.record_batch(cols, schema=input_schema(vt))


def do_put(client, descriptor, schema, messages, options):
    """DoPut messages (RecordBatch, bytes = a metadata-only message, (batch, bytes) = batch with metadata);
    returns the acks as JSON. Raises the server's status: pyarrow reports it on close() at the latest, so the
    first error with a gRPC code wins over a client-side one."""
    writer, reader = client.do_put(descriptor, schema, options=options)
    errors, acks = [], []
    try:
        for m in messages:
            if isinstance(m, bytes):
                writer.write_metadata(m)
            elif isinstance(m, tuple):
                writer.write_with_metadata(m[0], m[1])
            else:
                writer.write_batch(m)
        writer.done_writing()
        while (buf := reader.read()) is not None:
            acks.append(json.loads(buf.to_pybytes()))
    except pa.ArrowException as e:
        errors.append(e)
    try:
        writer.close()
    except pa.ArrowException as e:
        errors.append(e)
    if errors:
        first = min(errors, key=lambda e: grpc_code(e).startswith("client:"))
        errors = writer = reader = None  # no frame <-> traceback cycle keeping the stream (and its connection) alive
        try:
            raise first
        finally:
            first = None
    return acks
