"""Wire encodings of fp32 deltas, bit-exact with deltas/encodings.ts.

Every formula below is a vectorised transcription of the TypeScript one, including its
double-precision intermediates (JavaScript numbers), so that a delta encoded here has the
same bytes as one encoded there (test/sdk/encodings.test.ts checks it on random and edge
values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import DeltaError

MIN_BLOCK_SIZE = 8
MAX_BLOCK_SIZE = 1 << 20
#: A block of 128 keeps int8 with fp32 scales at 25.8% of fp32 on the wire.
DEFAULT_INT8_BLOCK = "int8-block128"
#: Blocks of 64 keep int4 with fp32 scales at 14.1% of fp32 on the wire (deltas/encodings.ts).
DEFAULT_INT4_BLOCK = "int4-block64"
INT8_MAX = 127
INT4_MAX = 7


@dataclass(frozen=True)
class Encoding:
    name: str
    kind: str
    """fp32, bf16, fp16, int8-row, int8-block or int4-block."""
    block_size: int = 0

    @property
    def scaled(self) -> bool:
        """Whether fp32 scales are stored under ``<name>:scale`` before each payload."""
        return self.kind in ("int8-row", "int8-block", "int4-block")

    def packs_int4(self, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of `shape` is stored as packed int4 (U8, two codes a byte).

        safetensors has no element-aligned 4-bit dtype, so the codes go in a U8 tensor with the
        last dimension halved: that needs an even last dimension (pairs then never straddle
        rows) and keeps the model shape recoverable. Scalars and tensors with an odd last
        dimension are stored as int8 (I8, the model's shape) with the same blocks."""
        return self.kind == "int4-block" and len(shape) >= 1 and shape[-1] % 2 == 0

    def payload_layout(self, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        """The payload tensor's safetensors dtype and shape for a model tensor of `shape`."""
        shape = tuple(int(d) for d in shape)
        if self.packs_int4(shape):
            return "U8", (*shape[:-1], shape[-1] // 2)
        return {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}.get(self.kind, "I8"), shape

    def model_shape(self, dtype: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The model tensor's shape behind a stored payload, or None if this encoding never stores it."""
        shape = tuple(int(d) for d in shape)
        model = (*shape[:-1], shape[-1] * 2) if dtype == "U8" and len(shape) >= 1 else shape
        return model if self.payload_layout(model) == (dtype, shape) else None


def parse_encoding(value: str) -> Encoding:
    if value in ("fp32", "bf16", "fp16", "int8-row"):
        return Encoding(value, value)
    match = re.fullmatch(r"int([48])-block(0|[1-9][0-9]{0,7})", value)
    block = int(match.group(2)) if match else -1
    kind = "int4-block" if match and match.group(1) == "4" else "int8-block"
    # int4 blocks are even so that a packed byte never holds codes of two blocks.
    if MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE and (kind == "int8-block" or block % 2 == 0):
        return Encoding(value, kind, block)
    raise DeltaError(
        "EncodingUnknown",
        f"encoding '{value}' is not one of fp32, bf16, fp16, int8-row, int8-block<N>, int4-block<N> "
        f"({MIN_BLOCK_SIZE} ≤ N ≤ {MAX_BLOCK_SIZE}, N even for int4)",
    )


# ---------------------------------------------------------------------------------------------
# Float conversions on bit patterns (uint32 in, uint16 out)


def f32_to_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """Round to nearest even; NaN stays NaN (quieted), ±Inf stays ±Inf."""
    bits = np.asarray(bits, dtype=np.uint32)
    b = bits.astype(np.uint64)  # the TS sum may pass 2^32 before `>>> 16` wraps it
    rounded = (((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFFFFFF) >> 16) & 0xFFFF
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    quieted = ((b >> 16) | 0x0040) & 0xFFFF
    return np.where(nan, quieted, rounded).astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_f16_bits(bits: np.ndarray) -> np.ndarray:
    """numpy's npy_floatbits_to_halfbits, as deltas/encodings.ts f32ToF16Bits transcribes it."""
    bits = np.asarray(bits, dtype=np.uint32)
    sign = (bits >> 16) & 0x8000
    exponent = bits & 0x7F800000
    significand = bits & 0x007FFFFF
    out = np.zeros(bits.shape, dtype=np.uint32)

    big = exponent >= 0x47800000
    nan = big & (exponent == 0x7F800000) & (significand != 0)
    out[big] = sign[big] | 0x7C00
    out[nan] = sign[nan] | 0x7E00 | (significand[nan] >> 13)

    small = ~big & (exponent <= 0x38000000)
    tiny = small & (exponent < 0x33000000)
    out[tiny] = sign[tiny]
    sub = small & ~tiny
    if sub.any():
        e = exponent[sub] >> 23
        s = (np.uint32(0x00800000) + significand[sub]) >> (np.uint32(113) - e)
        bump = ((s & 0x3FFF) != 0x1000) | ((bits[sub] & 0x7FF) != 0)
        s = s + np.where(bump, np.uint32(0x1000), np.uint32(0))
        out[sub] = sign[sub] | (s >> 13)

    normal = ~big & ~small
    if normal.any():
        half_exponent = (exponent[normal] - np.uint32(0x38000000)) >> 13
        s = significand[normal]
        s = s + np.where((s & 0x3FFF) != 0x1000, np.uint32(0x1000), np.uint32(0))
        out[normal] = sign[normal] | ((half_exponent + (s >> 13)) & 0x7FFF)
    return out.astype(np.uint16)


def f16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Whole-tensor encode and decode


@dataclass
class EncodedTensor:
    payload: np.ndarray
    """Flat array of the payload dtype (float32, uint16 bits of bf16/fp16, int8, or uint8 of packed int4)."""
    dtype: str
    """The payload's safetensors dtype."""
    scales: np.ndarray | None = None
    """Flat float32 per-row or per-block scales, for int8 and int4 encodings."""


def row_count(shape: tuple[int, ...], elements: int) -> int:
    """Rows for per-row scales: the first dimension of a matrix or higher; a vector is one row."""
    if elements == 0:
        return 0
    return shape[0] if len(shape) >= 2 else 1


def scale_count(encoding: Encoding, shape: tuple[int, ...], elements: int) -> int:
    if encoding.kind == "int8-row":
        return row_count(shape, elements)
    if encoding.kind in ("int8-block", "int4-block"):
        return -(-elements // encoding.block_size)
    return 0


def scale_span(encoding: Encoding, shape: tuple[int, ...], elements: int) -> int:
    """Elements per scale: a block, or a first-dimension row for int8-row."""
    if encoding.kind in ("int8-block", "int4-block"):
        return encoding.block_size
    return elements // max(1, row_count(shape, elements)) if elements else 1


def check_finite(name: str, values: np.ndarray) -> None:
    """Refuses NaN and ±Inf: a delta carrying them would poison the aggregate."""
    finite = np.isfinite(values)
    if not finite.all():
        index = int(np.argmin(finite.reshape(-1)))
        raise DeltaError(
            "EncodingNonFinite",
            f"tensor '{name}' has {values.reshape(-1)[index]} at element {index}; the learner diverged or "
            "the delta is corrupt — deltas must be finite",
        )


def _overflow(name: str, value: float, to: str) -> DeltaError:
    return DeltaError(
        "EncodingNonFinite",
        f"tensor '{name}' has {value}, beyond the range of {to} (it would become Inf); use bf16 or an int8 encoding",
    )


def _float_below(positive: np.float32) -> np.float32:
    bits = np.array([positive], dtype=np.float32).view(np.uint32)
    bits[0] -= 1
    return bits.view(np.float32)[0]


def _quantize(segments: np.ndarray, limit: int = INT8_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric absmax codes in ±limit per row of `segments` (float32, 2-D); returns (codes, scales)."""
    absmax = np.abs(segments).max(axis=1) if segments.shape[1] > 0 else np.zeros(segments.shape[0], np.float32)
    # Math.fround(absmax / limit): a double quotient rounded once to fp32.
    scales = (absmax.astype(np.float64) / limit).astype(np.float32)
    # Near the top of the fp32 range limit·scale can overflow on decode: step the scale down.
    with np.errstate(over="ignore"):
        for i in np.flatnonzero(~np.isfinite((scales.astype(np.float64) * limit).astype(np.float32))):
            while not np.isfinite(np.float32(np.float64(scales[i]) * limit)):
                scales[i] = _float_below(scales[i])
    zero = scales == 0
    divisor = np.where(zero, 1.0, scales.astype(np.float64))[:, None]
    r = segments.astype(np.float64) / divisor
    # Half away from zero (JavaScript's r < 0 ? -Math.round(-r) : Math.round(r)).
    a = np.abs(r)
    q = np.floor(a)
    q = q + ((a - q) >= 0.5)
    q = np.minimum(q, limit)
    q = np.where(r < 0, -q, q)
    q[zero] = 0  # all zeros, or a scale that underflowed: zeros are closest
    return q.astype(np.int8), scales


def encode_values(name: str, values: np.ndarray, shape: tuple[int, ...], encoding: Encoding) -> EncodedTensor:
    """Encodes one tensor's fp32 values (any shape; read row-major)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    check_finite(name, flat)
    n = flat.size
    if encoding.kind == "fp32":
        return EncodedTensor(flat, "F32")
    bits = flat.view(np.uint32)
    if encoding.kind == "bf16":
        out = f32_to_bf16_bits(bits)
        over = (out & 0x7FFF) == 0x7F80
        if over.any():
            raise _overflow(name, float(flat[np.argmax(over)]), "bf16")
        return EncodedTensor(out, "BF16")
    if encoding.kind == "fp16":
        out = f32_to_f16_bits(bits)
        over = (out & 0x7FFF) == 0x7C00
        if over.any():
            raise _overflow(name, float(flat[np.argmax(over)]), "fp16")
        return EncodedTensor(out, "F16")
    dtype, _ = encoding.payload_layout(shape)
    count = scale_count(encoding, shape, n)
    if count == 0:
        return EncodedTensor(np.zeros(0, np.uint8 if dtype == "U8" else np.int8), dtype, np.zeros(0, np.float32))
    if encoding.kind == "int8-row":
        segments = flat.reshape(count, n // count)
    else:
        padded = np.zeros(count * encoding.block_size, np.float32)
        padded[:n] = flat
        segments = padded.reshape(count, encoding.block_size)
    # A tensor int4 cannot pack keeps int8's precision with int4's blocks.
    codes, scales = _quantize(segments, INT4_MAX if dtype == "U8" else INT8_MAX)
    codes = codes.reshape(-1)[:n]
    if dtype == "U8":
        return EncodedTensor(_pack_int4(codes), dtype, scales)
    return EncodedTensor(codes, dtype, scales)


def _pack_int4(codes: np.ndarray) -> np.ndarray:
    """Two 4-bit two's-complement codes a byte: element 2i in the low nibble, 2i+1 in the high."""
    nibbles = codes.view(np.uint8) & 0x0F
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def _unpack_int4(packed: np.ndarray) -> np.ndarray:
    codes = np.empty(packed.size * 2, np.int8)
    codes[0::2] = ((packed & 0x0F) ^ 8).astype(np.int8) - 8
    codes[1::2] = ((packed >> 4) ^ 8).astype(np.int8) - 8
    return codes


def decode_values(
    payload_dtype: str, payload: np.ndarray | bytes, shape: tuple[int, ...], encoding: Encoding, scales=None
) -> np.ndarray:
    """The fp32 values of an encoded tensor, in the model's `shape`. `payload` is the raw bytes or a flat
    array; a U8 payload is packed int4."""
    raw = payload.tobytes() if isinstance(payload, np.ndarray) else bytes(payload)
    elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if payload_dtype == "F32":
        out = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif payload_dtype == "BF16":
        out = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    elif payload_dtype == "F16":
        out = f16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    elif payload_dtype in ("I8", "U8"):
        if scales is None:
            raise DeltaError("DeltaLayoutInvalid", "int8 and int4 payloads need their scales")
        if payload_dtype == "U8":
            codes = _unpack_int4(np.frombuffer(raw, dtype=np.uint8))
        else:
            codes = np.frombuffer(raw, dtype=np.int8)
        span = scale_span(encoding, shape, elements)
        per_element = np.repeat(np.asarray(scales, dtype=np.float32), span)[: codes.size] if codes.size else []
        # A code times an fp32 scale is exact in double; one rounding to fp32, as TS stores it.
        out = (codes.astype(np.float64) * np.asarray(per_element, dtype=np.float64)).astype(np.float32)
    else:
        raise DeltaError("DeltaLayoutInvalid", f"a delta payload cannot be {payload_dtype}")
    return out.reshape(shape)
