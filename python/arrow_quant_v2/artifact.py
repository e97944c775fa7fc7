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


SUPER_BLOCK = 256
# bits -> (sub-block size, bits per sub-scale / sub-min code) of double-quantized super-block rows
SUPER_BLOCK_LAYOUT = {2: (16, 4), 4: (32, 6), 8: (32, 8)}


def _unpack_fields(b: np.ndarray, width: int, count: int) -> np.ndarray:
    """Rows of ``count`` unsigned ``width``-bit fields packed LSB-first -> float32 (rows, count)."""
    bits = np.unpackbits(b, axis=1, bitorder="little")[:, :width * count].reshape(b.shape[0], count, width)
    return (bits.astype(np.uint32) << np.arange(width, dtype=np.uint32)).sum(2).astype(np.float32)


def dequantize_superblocks(bits: int, n: int, codes, group_params) -> np.ndarray:
    """A row with double-quantized params: per 256-element super-block, fp16 d and dmin, then P-bit
    sub-scale codes sc and sub-min codes mc; x = float32(q * float32(d*sc)) - float32(dmin*mc)."""
    if bits not in SUPER_BLOCK_LAYOUT:
        raise ModelFormatError(f"artifact: super-block row has bit_width {bits}")
    g, p = SUPER_BLOCK_LAYOUT[bits]
    nsub = SUPER_BLOCK // g
    half = nsub * p // 8
    nsb = -(-n // SUPER_BLOCK)
    raw = np.frombuffer(group_params, np.uint8)
    if raw.size != nsb * (4 + 2 * half):
        raise ModelFormatError(f"artifact: {n} elements need {nsb * (4 + 2 * half)} group_params bytes, have {raw.size}")
    sb = raw.reshape(nsb, 4 + 2 * half)
    d = sb[:, 0:2].copy().view("<f2").astype(np.float32)
    dmin = sb[:, 2:4].copy().view("<f2").astype(np.float32)
    s = (d * _unpack_fields(sb[:, 4:4 + half], p, nsub)).reshape(-1)
    m = (dmin * _unpack_fields(sb[:, 4 + half:], p, nsub)).reshape(-1)
    q = unpack(np.frombuffer(codes, np.uint8), bits, n).astype(np.float32)
    out = q * np.repeat(s, g)[:n]
    out -= np.repeat(m, g)[:n]
    return out


def dequantize_chunk(method: str, bits: int, group: int, n: int, codes, scales, mins,
                     group_params=None) -> np.ndarray:
    """One row back to float32 exactly as the Go kernels: x = float32(float32(q) * scale) + min per
    group, or the super-block formula when the row has group_params."""
    raw = np.frombuffer(codes, np.uint8)
    if method == "fp16":
        return raw.view("<f2")[:n].astype(np.float32)
    if method == "bf16":
        return (raw.view("<u2")[:n].astype(np.uint32) << 16).view(np.float32)
    if group_params is not None:
        return dequantize_superblocks(bits, n, codes, group_params)
    # Every other method (minmax and the parameter-search ones) stores the same thing: packed codes plus
    # a float16 scale and min per group; only how the params were chosen differs.
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


def _optional(row, name):
    """A version-2 column's value in a one-row batch (None when null or absent: version 1)."""
    if name not in row.schema.names:
        return None
    return row.column(name)[0]


def iter_rows(path):
    """(name, shape, chunk_offset, float32 values) for every row of the artifact, in file order.

    A smoothed tensor's channel_scales (1/s per input channel) sit on its first row and multiply every
    row's values: element k of a row at chunk_offset off by channel_scales[(off + k) % len]."""
    channel_scales, current = None, None
    with pa.memory_map(artifact_path(path), "r") as src:
        reader = ipc.open_file(src)
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            for r in range(b.num_rows):
                row = b.slice(r, 1)
                col = row.column
                name, off = col("name")[0].as_py(), col("chunk_offset")[0].as_py()
                gp = _optional(row, "group_params")
                vals = dequantize_chunk(
                    col("method")[0].as_py(), col("bit_width")[0].as_py(), col("group_size")[0].as_py(),
                    col("chunk_elems")[0].as_py(), col("codes")[0].as_buffer() or b"",
                    _column_values(col("scales")), _column_values(col("mins")),
                    gp.as_buffer() if gp is not None and gp.is_valid else None)
                if off == 0:
                    cs = _optional(row, "channel_scales")
                    current = name
                    channel_scales = cs.values.to_numpy() if cs is not None and cs.is_valid else None
                elif current != name:
                    raise ModelFormatError(f"artifact: tensor {name!r} row at {off} before its first row")
                if channel_scales is not None:
                    vals *= channel_scales[(off + np.arange(vals.size)) % channel_scales.size]
                yield name, col("shape")[0].as_py(), off, vals


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
