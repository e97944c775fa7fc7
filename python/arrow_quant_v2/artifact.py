"""Reading ArrowQuant artifacts (docs/FORMAT.md) with pyarrow and numpy only."""
from __future__ import annotations

import json
import os
from typing import Dict, Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .errors import ModelFormatError

ARTIFACT_NAME = "model.arrow"
REPORT_NAME = "report.json"


def artifact_path(path) -> str:
    """The model.arrow of an output directory, or path itself when it is a file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.join(path, ARTIFACT_NAME)
    return path


def load_quantized(path) -> pa.Table:
    """The artifact as a pyarrow Table (memory-mapped; one row per chunk, schema metadata included).

    ``path`` is an output directory of quantize_diffusion_model / ``arrowquant quantize`` or its model.arrow."""
    src = pa.memory_map(artifact_path(path), "r")
    return ipc.open_file(src).read_all()


def metadata(path) -> dict:
    """The artifact's schema metadata, JSON values decoded (arrowquant.config, .index, .report, ...)."""
    with pa.memory_map(artifact_path(path), "r") as src:
        md = ipc.open_file(src).schema.metadata or {}
    out = {}
    for k, v in md.items():
        k, v = k.decode(), v.decode()
        try:
            out[k] = json.loads(v) if v[:1] in "[{" else v
        except ValueError:
            out[k] = v
    return out


def unpack(codes: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Packed codes (little-endian within each byte, element k at bit (k*bits) mod 8) -> uint8 codes."""
    b = codes
    if bits == 8:
        return b[:n]
    if bits == 4:
        return np.stack([b & 0xF, b >> 4], 1).reshape(-1)[:n]
    if bits == 2:
        return np.stack([b & 3, (b >> 2) & 3, (b >> 4) & 3, b >> 6], 1).reshape(-1)[:n]
    raise ModelFormatError(f"artifact: unsupported bit width {bits}")


def dequantize_chunk(method: str, bits: int, group: int, n: int, codes, scales, mins) -> np.ndarray:
    """One row back to float32: x = float32(float32(q) * scale) + min, exactly as the Go kernels."""
    raw = np.frombuffer(codes, np.uint8)
    if method == "fp16":
        return raw.view("<f2")[:n].astype(np.float32)
    if method == "bf16":
        return (raw.view("<u2")[:n].astype(np.uint32) << 16).view(np.float32)
    # Every quantization method (minmax and the parameter-search ones) stores the same thing: packed
    # codes plus a float16 scale and min per group; only how the params were chosen differs.
    if bits not in (2, 4, 8) or group <= 0:
        raise ModelFormatError(f"artifact: row of method {method!r} has bit_width {bits}, group_size {group}")
    q = unpack(raw, bits, n).astype(np.float32)
    s = np.repeat(np.asarray(scales, np.float16).astype(np.float32), group)[:n]
    m = np.repeat(np.asarray(mins, np.float16).astype(np.float32), group)[:n]
    out = q * s
    out += m
    return out


def _column_values(col: pa.ListArray) -> np.ndarray:
    return col.values.to_numpy(zero_copy_only=False) if len(col) else np.empty(0, np.float16)


def iter_rows(path):
    """(name, shape, chunk_offset, float32 values) for every row of the artifact, in file order."""
    with pa.memory_map(artifact_path(path), "r") as src:
        reader = ipc.open_file(src)
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            for r in range(b.num_rows):
                row = b.slice(r, 1)
                col = row.column
                vals = dequantize_chunk(
                    col("method")[0].as_py(), col("bit_width")[0].as_py(), col("group_size")[0].as_py(),
                    col("chunk_elems")[0].as_py(), col("codes")[0].as_buffer() or b"",
                    _column_values(col("scales")), _column_values(col("mins")))
                yield col("name")[0].as_py(), col("shape")[0].as_py(), col("chunk_offset")[0].as_py(), vals


def dequantize(path, names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Every tensor (or those in ``names``) as a float32 numpy array of its original shape.

    The values equal ``arrowquant dequantize`` bit for bit."""
    want = set(names) if names is not None else None
    flat: Dict[str, np.ndarray] = {}
    shapes: Dict[str, tuple] = {}
    for name, shape, off, vals in iter_rows(path):
        if want is not None and name not in want:
            continue
        arr = flat.get(name)
        if arr is None:
            shapes[name] = tuple(shape)
            arr = flat[name] = np.empty(int(np.prod(shape, dtype=np.int64)), np.float32)
        arr[off:off + vals.size] = vals
    return {k: v.reshape(shapes[k]) for k, v in flat.items()}
