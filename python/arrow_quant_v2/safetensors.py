"""A streaming safetensors reader (no torch): headers are parsed and validated, tensor data is read in
bounded chunks with positioned reads, so memory stays at one chunk whatever the model size.

The directory layouts and checks follow the Go reader (modelio): model.safetensors.index.json with its
shards, model.safetensors, diffusion_pytorch_model.safetensors.index.json,
diffusion_pytorch_model.safetensors, or exactly one *.safetensors file. Tensors come in shard order
(sorted shard names), then data offset.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .errors import ModelFormatError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DIFFUSERS_FILE = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"
MAX_HEADER_BYTES = 100 << 20

DTYPE_SIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
              "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}
SUPPORTED = ("F32", "F16", "BF16", "F64")
# numpy type of the raw little-endian data (BF16 as its bits).
NUMPY_RAW = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: List[int]
    file: str      # absolute shard path
    offset: int    # absolute byte offset of the data
    nbytes: int

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Model:
    dir: str
    tensors: List[TensorInfo]
    shards: List[str]
    metadata: Dict[str, str] = field(default_factory=dict)
    config: Optional[dict] = None

    @property
    def source_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def num_params(self) -> int:
        return sum(t.num_elements for t in self.tensors)

    @property
    def dtypes(self) -> List[str]:
        seen = []
        for t in self.tensors:
            if t.dtype not in seen:
                seen.append(t.dtype)
        return seen


def _ferr(file, reason, tensor=None):
    if tensor:
        return ModelFormatError(f"safetensors: {file}: tensor {json.dumps(tensor)}: {reason}", file=file, tensor=tensor)
    return ModelFormatError(f"safetensors: {file}: {reason}", file=file, tensor=None)


def is_safetensors(name: str) -> bool:
    return name.lower().endswith(".safetensors")


def read_header(path: str):
    """(tensors sorted by data offset, metadata) of one shard, validated like the Go reader."""
    size = os.path.getsize(path)
    if size < 8:
        raise _ferr(path, f"file is {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise _ferr(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if n > size - 8:
            raise _ferr(path, f"header length {n} beyond the file size {size}")
        raw = f.read(n)
    base, data_len = 8 + n, size - 8 - n

    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise _ferr(path, "duplicate key in header", k)
            d[k] = v
        return d
    try:
        hdr = json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _ferr(path, f"header is not valid JSON: {e}") from None
    if not isinstance(hdr, dict):
        raise _ferr(path, "header is not a JSON object")
    meta = {}
    entries = []
    for name, e in hdr.items():
        if name == "__metadata__":
            if e is None:
                continue
            if not isinstance(e, dict) or not all(isinstance(v, str) for v in e.values()):
                raise _ferr(path, "__metadata__: must be an object of string values")
            meta = dict(e)
            continue
        if not isinstance(e, dict):
            raise _ferr(path, "invalid entry", name)
        for key in ("dtype", "shape", "data_offsets"):
            if key not in e:
                raise _ferr(path, f"missing {key}", name)
        dtype, shape, offs = e["dtype"], e["shape"] or [], e["data_offsets"]
        if not isinstance(dtype, str) or not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise _ferr(path, "invalid entry", name)
        if not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs):
            raise _ferr(path, f"data_offsets must be [begin,end], got {offs!r}", name)
        b, end = offs
        if b < 0 or end < b:
            raise _ferr(path, f"data_offsets [{b},{end}] must satisfy 0 <= begin <= end", name)
        if end > data_len:
            raise _ferr(path, f"data_offsets [{b},{end}] end beyond the data section ({data_len} bytes)", name)
        count = 1
        for d in shape:
            if d < 0:
                raise _ferr(path, f"shape {shape} has a negative dimension", name)
            count *= d
        size_of = DTYPE_SIZE.get(dtype, 0)
        if size_of and end - b != count * size_of:
            raise _ferr(path, f"shape/product mismatch: data_offsets span {end - b} bytes, shape {shape} of "
                              f"{dtype} needs {count * size_of}", name)
        entries.append(TensorInfo(name, dtype, [int(d) for d in shape], os.path.abspath(path), base + b, end - b))
    entries.sort(key=lambda t: (t.offset, t.offset + t.nbytes, t.name))
    max_end, max_name = 0, ""
    for t in entries:
        b = t.offset - base
        if b < max_end:
            raise _ferr(path, f"data_offsets [{b},{b + t.nbytes}] overlap tensor {json.dumps(max_name)} "
                              f"(ends at {max_end})", t.name)
        if b + t.nbytes > max_end:
            max_end, max_name = b + t.nbytes, t.name
    return entries, meta


def _locate_shards(d: str):
    for index, single in ((INDEX_FILE, SINGLE_FILE), (DIFFUSERS_INDEX_FILE, DIFFUSERS_FILE)):
        ip = os.path.join(d, index)
        if os.path.exists(ip):
            try:
                with open(ip, encoding="utf-8") as f:
                    idx = json.load(f)
            except (OSError, ValueError) as e:
                raise _ferr(ip, f"invalid index JSON: {e}") from None
            wm = idx.get("weight_map") if isinstance(idx, dict) else None
            if not wm:
                raise _ferr(ip, "index has no weight_map entries")
            for t, s in wm.items():
                if not isinstance(s, str) or os.path.isabs(s) or ".." in s.replace("\\", "/").split("/") \
                        or not is_safetensors(s):
                    raise _ferr(ip, f"invalid shard name {json.dumps(s)}", t)
            return sorted(set(wm.values())), wm, ip
        sp = os.path.join(d, single)
        if os.path.isfile(sp):
            return [single], None, None
    found = sorted(e.name for e in os.scandir(d) if is_safetensors(e.name) and not e.is_dir())
    if not found:
        raise ModelFormatError(f"modelio: no .safetensors files in {d}")
    if len(found) > 1:
        raise _ferr(d, f"{len(found)} .safetensors files and no index ({INDEX_FILE}); add {INDEX_FILE} or keep "
                       f"one file: {', '.join(found)}")
    return found, None, None


def open_model(d) -> Model:
    """Validate every shard header of the model directory d (nothing else is read)."""
    d = os.path.abspath(os.fspath(d))
    if not os.path.isdir(d):
        raise ModelFormatError(f"modelio: open model directory: {d} is not a directory" if os.path.exists(d)
                               else f"modelio: open model directory: stat {d}: no such file or directory")
    shards, wm, ip = _locate_shards(d)
    tensors, where, meta, paths = [], {}, {}, []
    for name in shards:
        path = os.path.join(d, name)
        if not os.path.exists(path) and wm is not None:
            first = sorted(t for t, s in wm.items() if s == name)[0]
            raise _ferr(ip, f"shard {json.dumps(name)} named in the index does not exist", first)
        entries, m = read_header(path)
        paths.append(path)
        for t in entries:
            if t.name in where:
                raise _ferr(path, f"duplicate tensor name (also in {os.path.join(d, where[t.name])})", t.name)
            where[t.name] = name
            if wm is not None:
                if t.name not in wm:
                    raise _ferr(path, f"tensor is not listed in {ip}", t.name)
                if wm[t.name] != name:
                    raise _ferr(path, f"tensor found here but {ip} maps it to {json.dumps(wm[t.name])}", t.name)
            tensors.append(t)
        for k in sorted(m):
            meta.setdefault(k, m[k])
    if wm is not None:
        for t in sorted(wm):
            if t not in where:
                raise _ferr(ip, f"tensor not found in shard {json.dumps(wm[t])}", t)
    for t in tensors:
        if t.dtype not in SUPPORTED:
            raise ModelFormatError(
                f"safetensors: {t.file}: tensor {json.dumps(t.name)}: unsupported dtype {json.dumps(t.dtype)} "
                f"(supported: F32, F16, BF16, F64)", file=t.file, tensor=t.name)
    config = None
    cp = os.path.join(d, "config.json")
    if os.path.exists(cp):
        try:
            with open(cp, encoding="utf-8") as f:
                config = json.load(f)
        except ValueError as e:
            raise ModelFormatError(f"modelio: {cp}: invalid JSON: {e}") from None
    return Model(d, tensors, paths, meta, config)


_WEIGHT_EXTS = (".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")


def is_weight_file(name: str) -> bool:
    low = name.lower()
    if is_safetensors(low) or low.endswith(".safetensors.index.json") or low.endswith(".bin.index.json") \
            or ".tmp-" in low:
        return True
    if low.endswith(".bin") and (low.startswith("pytorch_model") or low.startswith("diffusion_pytorch_model")):
        return True
    return low.endswith(_WEIGHT_EXTS)


def aux_files(model: Model) -> List[str]:
    """The files to keep beside the artifact (config, tokenizer, generation config, ...): the regular
    files of the directory except weights and indexes, as the Go reader lists them."""
    out = []
    for e in os.scandir(model.dir):
        if is_weight_file(e.name):
            continue
        try:
            if not os.path.isfile(e.path):  # follows symlinks
                continue
        except OSError:
            continue
        out.append(e.name)
    return sorted(out)


class ChunkReader:
    """Positioned reads of tensor chunks; one open file per shard."""

    def __init__(self, model: Model):
        self._files = {}
        self.model = model

    def read(self, t: TensorInfo, elem_offset: int, count: int) -> np.ndarray:
        """Elements [elem_offset, elem_offset+count) of t in its raw numpy type (BF16 as uint16)."""
        dt = NUMPY_RAW[t.dtype]
        out = np.empty(count, dtype=dt)
        if count == 0:
            return out
        f = self._files.get(t.file)
        if f is None:
            f = self._files[t.file] = open(t.file, "rb", buffering=0)
        want = count * dt.itemsize
        mv = memoryview(out).cast("B")
        pos, got = t.offset + elem_offset * dt.itemsize, 0
        while got < want:
            n = os.preadv(f.fileno(), [mv[got:]], pos + got) if hasattr(os, "preadv") else None
            if n is None:
                f.seek(pos + got)
                n = f.readinto(mv[got:])
            if not n:
                raise _ferr(t.file, f"short read at byte {pos + got}", t.name)
            got += n
        return out

    def close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
