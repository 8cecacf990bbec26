"""The sovereign-delta/1 file: safetensors with one payload tensor per model tensor, preceded
for int8 and int4 encodings by its fp32 scales under ``<name>:scale`` (deltas/delta.ts,
docs/deltas.md). Packed int4 payloads are U8 with the last dimension halved.

The writer streams: the header is computed from names and shapes alone, then each tensor is
produced, encoded, written and hashed in turn, so only one tensor is held encoded at a time
and the manifest's per-tensor digests come out of the same pass.

The reference ``safetensors`` writer cannot be used for deltas: it orders tensors by dtype
then name, which would separate each tensor from its scales.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from .encodings import Encoding, decode_values, encode_values, parse_encoding, scale_count
from .errors import DeltaError

DELTA_FORMAT = "sovereign-delta/1"
METADATA_FORMAT = "sovereign.format"
METADATA_ENCODING = "sovereign.encoding"
SCALE_SUFFIX = ":scale"
MAX_NAME_BYTES = 4096
MAX_HEADER_BYTES = 100_000_000

DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "C64": 8, "F64": 8, "I64": 8, "U64": 8,
}  # fmt: skip


@dataclass
class DeltaTensor:
    name: str
    shape: tuple[int, ...]
    values: np.ndarray | Callable[[], np.ndarray]
    """fp32 values, or a function producing them when the writer reaches this tensor."""


@dataclass
class WrittenDelta:
    path: str
    size: int
    encoding: str
    tensors: list[dict] = field(default_factory=list)
    """Manifest entries in file order: ``{"name", "dtype", "shape", "sha256"}`` (scales included)."""


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass
class SafetensorsHeader:
    metadata: dict[str, str] | None
    tensors: list[TensorEntry]
    """In file order (ascending offsets)."""
    data_start: int
    total_bytes: int


def _elements(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name == "":
        raise DeltaError("DeltaNameInvalid", f"tensor name {name!r} is not a non-empty string")
    if name.endswith(SCALE_SUFFIX):
        raise DeltaError("DeltaNameInvalid", f"tensor name '{name}' ends with the reserved '{SCALE_SUFFIX}'; rename it")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise DeltaError("DeltaNameInvalid", f"tensor name {name!r} is not valid Unicode") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise DeltaError("DeltaNameInvalid", f"tensor name '{name[:40]}…' is longer than {MAX_NAME_BYTES} bytes")


def encode_header(metadata: dict[str, str] | None, entries: list[tuple[str, str, tuple[int, ...], int]]) -> bytes:
    """The 8-byte length and JSON header for tensors stored in the given order (space-padded to 8)."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _little_endian(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def write_delta(out: str | BinaryIO, tensors: list[DeltaTensor], encoding: str | Encoding) -> WrittenDelta:
    """Writes a delta to a path or binary file object; returns its size and manifest entries."""
    parsed = encoding if isinstance(encoding, Encoding) else parse_encoding(encoding)
    seen: set[str] = set()
    entries: list[tuple[str, str, tuple[int, ...], int]] = []
    for t in tensors:
        _check_name(t.name)
        if t.name in seen:
            raise DeltaError("DeltaNameInvalid", f"tensor '{t.name}' is given twice")
        seen.add(t.name)
        shape = tuple(int(d) for d in t.shape)
        n = _elements(shape)
        if parsed.scaled:
            count = scale_count(parsed, shape, n)
            entries.append((t.name + SCALE_SUFFIX, "F32", (count,), count * 4))
        dtype, payload_shape = parsed.payload_layout(shape)
        entries.append((t.name, dtype, payload_shape, _elements(payload_shape) * DTYPE_BYTES[dtype]))
    head = encode_header({METADATA_FORMAT: DELTA_FORMAT, METADATA_ENCODING: parsed.name}, entries)

    own = isinstance(out, str)
    f: BinaryIO = open(out, "wb") if own else out  # noqa: SIM115
    try:
        f.write(head)
        size = len(head)
        written: list[dict] = []
        it = iter(entries)

        def emit(array: np.ndarray) -> None:
            nonlocal size
            name, dtype, shape, nbytes = next(it)
            data = memoryview(_little_endian(array)).cast("B")
            assert data.nbytes == nbytes, f"{name}: {data.nbytes} bytes for {nbytes}"
            f.write(data)
            size += data.nbytes
            written.append(
                {"name": name, "dtype": dtype, "shape": list(shape), "sha256": hashlib.sha256(data).hexdigest()}
            )

        for t in tensors:
            values = t.values() if callable(t.values) else t.values
            values = np.asarray(values)
            shape = tuple(int(d) for d in t.shape)
            if values.size != _elements(shape):
                raise DeltaError(
                    "DeltaShapeMismatch", f"tensor '{t.name}' has {values.size} values for shape {list(shape)}"
                )
            encoded = encode_values(t.name, values, shape, parsed)
            if parsed.scaled:
                emit(encoded.scales)
            emit(encoded.payload)
            del encoded, values
    finally:
        if own:
            f.close()
    return WrittenDelta(path=out if own else getattr(out, "name", ""), size=size, encoding=parsed.name, tensors=written)


# ---------------------------------------------------------------------------------------------
# Reading (global models, and deltas written elsewhere)


def read_header(f: BinaryIO) -> SafetensorsHeader:
    """Parses and checks a safetensors header (offsets must tile the data section)."""

    def bad(message: str) -> DeltaError:
        return DeltaError("DeltaHeaderInvalid", f"{message}; the file is not valid safetensors")

    f.seek(0, 2)
    total = f.tell()
    f.seek(0)
    prefix = f.read(8)
    if len(prefix) < 8:
        raise bad("shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES or 8 + length > total:
        raise bad(f"a header of {length} bytes does not fit")

    def no_duplicates(pairs: list) -> dict:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise bad("a key appears twice in the header")
        return dict(pairs)

    try:
        header = json.loads(f.read(length).decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("the header is not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise bad("__metadata__ is not an object of strings")
    tensors: list[TensorEntry] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"entry '{name}' is not {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise bad(f"tensor '{name}' has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad(f"tensor '{name}' has a bad shape")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
            raise bad(f"tensor '{name}' has bad data_offsets")
        start, end = offsets
        if end - start != _elements(shape) * DTYPE_BYTES[dtype]:
            raise bad(f"tensor '{name}' spans {end - start} bytes, not {dtype} × {shape}")
        tensors.append(TensorEntry(name, dtype, tuple(shape), start, end))
    tensors.sort(key=lambda t: (t.start, t.end))
    position = 0
    for t in tensors:
        if t.start != position:
            raise bad(f"tensor '{t.name}' does not start where the previous one ended")
        position = t.end
    if 8 + length + position != total:
        raise bad(f"the tensors span {position} bytes but the file has {total - 8 - length} after the header")
    return SafetensorsHeader(metadata, tensors, 8 + length, total)


def read_tensor_bytes(f: BinaryIO, header: SafetensorsHeader, entry: TensorEntry) -> bytes:
    f.seek(header.data_start + entry.start)
    return f.read(entry.end - entry.start)


@dataclass
class DeltaContents:
    encoding: str
    values: dict[str, np.ndarray]
    """Decoded fp32 values per model tensor, in file order."""
    tensors: list[dict]
    """Manifest entries of every stored tensor (scales included), as a learner would sign them."""
    size: int


def read_delta(path: str) -> DeltaContents:
    """Reads and decodes a whole delta (for tests and small deltas); checks the delta layout."""
    with open(path, "rb") as f:
        header = read_header(f)
        metadata = header.metadata or {}
        if metadata.get(METADATA_FORMAT) != DELTA_FORMAT:
            raise DeltaError("DeltaLayoutInvalid", f"__metadata__.{METADATA_FORMAT} is not '{DELTA_FORMAT}'")
        parsed = parse_encoding(metadata.get(METADATA_ENCODING, ""))
        values: dict[str, np.ndarray] = {}
        described: list[dict] = []
        scales = None
        expect_payload = None
        for entry in header.tensors:
            raw = read_tensor_bytes(f, header, entry)
            described.append(
                {"name": entry.name, "dtype": entry.dtype, "shape": list(entry.shape),
                 "sha256": hashlib.sha256(raw).hexdigest()}
            )  # fmt: skip
            if entry.name.endswith(SCALE_SUFFIX):
                if not parsed.scaled or entry.dtype != "F32" or expect_payload is not None:
                    raise DeltaError("DeltaLayoutInvalid", f"scales '{entry.name}' out of place")
                scales = np.frombuffer(raw, dtype="<f4").astype(np.float32)
                expect_payload = entry.name[: -len(SCALE_SUFFIX)]
                continue
            if parsed.scaled and expect_payload != entry.name:
                raise DeltaError("DeltaLayoutInvalid", f"tensor '{entry.name}' is not preceded by its scales")
            shape = parsed.model_shape(entry.dtype, entry.shape)
            if shape is None:
                raise DeltaError(
                    "DeltaLayoutInvalid",
                    f"tensor '{entry.name}' is {entry.dtype} {list(entry.shape)}, which {parsed.name} never stores "
                    f"(it stores {parsed.payload_layout(entry.shape)[0]})",
                )
            if scales is not None and scales.size != scale_count(parsed, shape, _elements(shape)):
                raise DeltaError("DeltaLayoutInvalid", f"tensor '{entry.name}' has the wrong number of scales")
            values[entry.name] = decode_values(entry.dtype, raw, shape, parsed, scales)
            scales, expect_payload = None, None
        return DeltaContents(parsed.name, values, described, header.total_bytes)
