// Wire encodings of fp32 deltas and their exact decodings back to fp32. The float
// conversions are bit-level so that every reader (this one, numpy, torch) agrees on every
// value, including NaN, infinities, subnormals and ties.
import { DeltaError } from "./errors.ts";
import type { Dtype } from "./safetensors.ts";

export type DeltaEncoding =
  | "fp32"
  | "bf16"
  | "fp16"
  | "int8-row"
  | `int8-block${number}`
  | `int4-block${number}`;

export type ParsedEncoding =
  | { kind: "fp32" | "bf16" | "fp16" | "int8-row"; blockSize?: undefined }
  | { kind: "int8-block" | "int4-block"; blockSize: number };

export const MIN_BLOCK_SIZE = 8;
export const MAX_BLOCK_SIZE = 1 << 20;
/** A block of 128 keeps int8 with fp32 scales at 25.8% of fp32 on the wire. */
export const DEFAULT_INT8_BLOCK: DeltaEncoding = "int8-block128";
/**
 * Blocks of 64 keep int4 with fp32 scales at 14.1% of fp32 on the wire: with only 15 levels a
 * block's error grows with its absmax, so int4 wants smaller blocks than int8.
 */
export const DEFAULT_INT4_BLOCK: DeltaEncoding = "int4-block64";

export function parseEncoding(value: string): ParsedEncoding {
  if (value === "fp32" || value === "bf16" || value === "fp16" || value === "int8-row")
    return { kind: value };
  const match = /^int([48])-block(0|[1-9][0-9]{0,7})$/.exec(value);
  const blockSize = match ? Number(match[2]) : Number.NaN;
  const kind = match?.[1] === "4" ? "int4-block" : "int8-block";
  // int4 blocks are even so that a packed byte never holds codes of two blocks.
  const evenIfPacked = kind === "int8-block" || blockSize % 2 === 0;
  if (blockSize >= MIN_BLOCK_SIZE && blockSize <= MAX_BLOCK_SIZE && evenIfPacked) return { kind, blockSize };
  throw new DeltaError(
    "EncodingUnknown",
    `encoding '${value}' is not one of fp32, bf16, fp16, int8-row, int8-block<N>, int4-block<N> (${MIN_BLOCK_SIZE} ≤ N ≤ ${MAX_BLOCK_SIZE}, N even for int4)`,
  );
}

/** Encodings that store fp32 scales under `<name>:scale` before each payload. */
export function isScaled(encoding: ParsedEncoding): boolean {
  return encoding.kind === "int8-row" || encoding.kind === "int8-block" || encoding.kind === "int4-block";
}

export function isDeltaEncoding(value: string): value is DeltaEncoding {
  try {
    parseEncoding(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether an int4 tensor of this shape is stored packed, two codes a byte. safetensors has no
 * element-aligned 4-bit dtype (and our reader refuses sub-byte ones), so packed codes are
 * stored as U8 with the last dimension halved; that only describes the tensor when the last
 * dimension is even (pairs then never straddle rows) and leaves the model shape recoverable
 * from the file. Scalars and tensors with an odd last dimension are stored as int8 instead.
 */
export function isPackedInt4(encoding: ParsedEncoding, shape: readonly number[]): boolean {
  return encoding.kind === "int4-block" && shape.length >= 1 && (shape[shape.length - 1] as number) % 2 === 0;
}

/** The payload tensor's dtype and shape for a model tensor of `shape`. */
export function payloadLayout(
  encoding: ParsedEncoding,
  shape: readonly number[],
): { dtype: Dtype; shape: number[] } {
  switch (encoding.kind) {
    case "fp32":
      return { dtype: "F32", shape: [...shape] };
    case "bf16":
      return { dtype: "BF16", shape: [...shape] };
    case "fp16":
      return { dtype: "F16", shape: [...shape] };
    case "int4-block":
      if (isPackedInt4(encoding, shape))
        return { dtype: "U8", shape: [...shape.slice(0, -1), (shape[shape.length - 1] as number) / 2] };
      return { dtype: "I8", shape: [...shape] };
    default:
      return { dtype: "I8", shape: [...shape] };
  }
}

/**
 * The model tensor's shape behind a stored payload (packed int4 doubles the last dimension),
 * or undefined when the payload cannot be one of this encoding's.
 */
export function modelShape(
  encoding: ParsedEncoding,
  payload: { dtype: Dtype; shape: readonly number[] },
): number[] | undefined {
  const shape =
    payload.dtype === "U8" && payload.shape.length >= 1
      ? [...payload.shape.slice(0, -1), (payload.shape[payload.shape.length - 1] as number) * 2]
      : [...payload.shape];
  const expected = payloadLayout(encoding, shape);
  const same =
    expected.dtype === payload.dtype &&
    expected.shape.length === payload.shape.length &&
    expected.shape.every((d, i) => d === payload.shape[i]);
  return same ? shape : undefined;
}

// ---------------------------------------------------------------------------------------------
// Float conversions on bit patterns

/** fp32 bits → bf16 bits, round to nearest even; NaN stays NaN (quieted), ±Inf stays ±Inf. */
export function f32ToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32Bits(bits: number): number {
  return (bits << 16) >>> 0;
}

/**
 * fp32 bits → fp16 bits, round to nearest even, overflow to ±Inf, gradual underflow into
 * subnormals; NaN stays NaN (quieted, top payload bits kept). Follows numpy's
 * npy_floatbits_to_halfbits, which the tests check against.
 */
export function f32ToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = bits & 0x7f800000;
  let significand = bits & 0x007fffff;
  if (exponent >= 0x47800000) {
    if (exponent === 0x7f800000 && significand !== 0) return sign | 0x7e00 | (significand >>> 13);
    return sign | 0x7c00;
  }
  if (exponent <= 0x38000000) {
    if (exponent < 0x33000000) return sign;
    const e = exponent >>> 23;
    significand = (0x00800000 + significand) >>> (113 - e);
    // Ties go to even: skip the rounding increment only for an exact half with an even
    // last bit, counting the bits the shift dropped.
    if ((significand & 0x3fff) !== 0x1000 || (bits & 0x7ff) !== 0) significand += 0x1000;
    return sign | (significand >>> 13);
  }
  const halfExponent = (exponent - 0x38000000) >>> 13;
  if ((significand & 0x3fff) !== 0x1000) significand += 0x1000;
  // A carry out of the significand bumps the exponent, up to Inf: that is the right result.
  return sign | ((halfExponent + (significand >>> 13)) & 0x7fff);
}

let f16Table: Float32Array | undefined;

/** All 65536 fp16 values as fp32 (exact: every fp16 value is an fp32 value). */
function f16ToF32Table(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) table[h] = mantissa === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  // Float32Array stores NaN canonically; keep the sign and payload bits of fp16 NaNs.
  const tableBits = new Uint32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    if (((h >>> 10) & 0x1f) === 31 && (h & 0x3ff) !== 0) {
      tableBits[h] = (((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13)) >>> 0;
    }
  }
  f16Table = table;
  return table;
}

export function f16BitsToF32(bits: number): number {
  return f16ToF32Table()[bits & 0xffff] as number;
}

// ---------------------------------------------------------------------------------------------
// Whole-tensor encode and chunk decode

export interface EncodedTensor {
  payload: { dtype: Dtype; bytes: Uint8Array };
  /** Per-row or per-block fp32 scales for int8 and int4 encodings. */
  scales?: Float32Array;
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Rows for per-row scales: the first dimension of a matrix or higher; a vector is one row. */
export function rowCount(shape: readonly number[], elements: number): number {
  if (elements === 0) return 0;
  return shape.length >= 2 ? (shape[0] as number) : 1;
}

export function scaleCount(encoding: ParsedEncoding, shape: readonly number[], elements: number): number {
  if (encoding.kind === "int8-row") return rowCount(shape, elements);
  if (encoding.kind === "int8-block" || encoding.kind === "int4-block")
    return Math.ceil(elements / encoding.blockSize);
  return 0;
}

/** Elements per scale: a block, or a first-dimension row for int8-row. */
export function scaleSpan(encoding: ParsedEncoding, shape: readonly number[], elements: number): number {
  if (encoding.kind === "int8-block" || encoding.kind === "int4-block") return encoding.blockSize;
  return elements / Math.max(1, rowCount(shape, elements));
}

const INT8_MAX = 127;
const INT4_MAX = 7;

/** Symmetric absmax quantisation of values[from, to) to codes in ±limit, with its scale. */
function quantize(
  values: Float32Array,
  from: number,
  to: number,
  out: Int8Array,
  scales: Float32Array,
  s: number,
  limit: number,
) {
  let absmax = 0;
  for (let i = from; i < to; i++) {
    const a = Math.abs(values[i] as number);
    if (a > absmax) absmax = a;
  }
  let scale = Math.fround(absmax / limit);
  // Near the top of the fp32 range the rounded scale can make limit·scale overflow to Inf on
  // decode: step it down until the largest code decodes finite.
  while (!Number.isFinite(Math.fround(scale * limit))) scale = floatBelow(scale);
  scales[s] = scale;
  if (scale === 0) return; // all zeros, or so small that the scale underflows: zeros are closest
  for (let i = from; i < to; i++) {
    const r = (values[i] as number) / scale;
    // Half away from zero keeps the code symmetric around zero.
    const q = r < 0 ? -Math.round(-r) : Math.round(r);
    out[i] = q > limit ? limit : q < -limit ? -limit : q;
  }
}

/** Two 4-bit two's-complement codes a byte: element 2i in the low nibble, 2i+1 in the high. */
function packInt4(codes: Int8Array): Uint8Array {
  const out = new Uint8Array(codes.length / 2);
  for (let i = 0; i < out.length; i++)
    out[i] = ((codes[2 * i] as number) & 0xf) | (((codes[2 * i + 1] as number) & 0xf) << 4);
  return out;
}

function floatBelow(positive: number): number {
  const bits = new Uint32Array(new Float32Array([positive]).buffer);
  bits[0] = (bits[0] as number) - 1;
  return new Float32Array(bits.buffer)[0] as number;
}

/** Refuses NaN and ±Inf: a delta carrying them would poison the aggregate. */
export function checkFinite(name: string, values: Float32Array) {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new DeltaError(
        "EncodingNonFinite",
        `tensor '${name}' has ${values[i]} at element ${i}; the learner diverged or the delta is corrupt — deltas must be finite`,
      );
    }
  }
}

export function encodeValues(
  name: string,
  values: Float32Array,
  shape: readonly number[],
  encoding: ParsedEncoding,
): EncodedTensor {
  checkFinite(name, values);
  const n = values.length;
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  switch (encoding.kind) {
    case "fp32":
      return { payload: { dtype: "F32", bytes: bytesOf(values) } };
    case "bf16": {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = f32ToBf16Bits(bits[i] as number);
      // Rounding up past the largest bf16 gives Inf; a finite delta must stay finite.
      for (let i = 0; i < n; i++)
        if (((out[i] as number) & 0x7fff) === 0x7f80) throw overflow(name, values[i], "bf16");
      return { payload: { dtype: "BF16", bytes: bytesOf(out) } };
    }
    case "fp16": {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) {
        const h = f32ToF16Bits(bits[i] as number);
        if ((h & 0x7fff) === 0x7c00) throw overflow(name, values[i], "fp16");
        out[i] = h;
      }
      return { payload: { dtype: "F16", bytes: bytesOf(out) } };
    }
    case "int8-row":
    case "int8-block":
    case "int4-block": {
      const out = new Int8Array(n);
      const scales = new Float32Array(scaleCount(encoding, shape, n));
      const span = scaleSpan(encoding, shape, n);
      // A tensor int4 cannot pack (see isPackedInt4) keeps int8's precision with int4's blocks.
      const packed = isPackedInt4(encoding, shape);
      const limit = packed ? INT4_MAX : INT8_MAX;
      for (let s = 0; s < scales.length; s++)
        quantize(values, s * span, Math.min(n, (s + 1) * span), out, scales, s, limit);
      if (packed) return { payload: { dtype: "U8", bytes: packInt4(out) }, scales };
      return { payload: { dtype: "I8", bytes: bytesOf(out) }, scales };
    }
  }
}

function overflow(name: string, value: number | undefined, to: string): DeltaError {
  return new DeltaError(
    "EncodingNonFinite",
    `tensor '${name}' has ${value}, beyond the range of ${to} (it would become Inf); use bf16 or an int8 encoding`,
  );
}

/** A view as Float32Array when aligned, else an aligned copy. */
export function asFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0)
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(copyOf(bytes).buffer);
}

function asUint16(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0)
    return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(copyOf(bytes).buffer);
}

/**
 * A copy in a buffer of its own. Not `bytes.slice()`: transports hand over Node Buffers,
 * whose slice() is a view into a shared pool, so its `.buffer` is the whole pool.
 */
function copyOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/**
 * Decodes one element-aligned chunk of a payload tensor to fp32. `firstElement` is the index
 * within the model tensor of the chunk's first value; `scales` and `span` (elements per scale)
 * are for int8 and int4 encodings. A U8 payload is packed int4: each byte gives two values.
 * Always returns a fresh array the caller may keep.
 */
export function decodeChunk(
  dtype: Dtype,
  bytes: Uint8Array,
  firstElement = 0,
  scales?: Float32Array,
  span = 1,
): Float32Array {
  switch (dtype) {
    case "F32":
      return new Float32Array(asFloat32(bytes));
    case "BF16": {
      const input = asUint16(bytes);
      const out = new Uint32Array(input.length);
      for (let i = 0; i < input.length; i++) out[i] = (input[i] as number) << 16;
      return new Float32Array(out.buffer);
    }
    case "F16": {
      const input = asUint16(bytes);
      const table = f16ToF32Table();
      const outBits = new Uint32Array(input.length);
      const tableBits = new Uint32Array(table.buffer);
      for (let i = 0; i < input.length; i++) outBits[i] = tableBits[input[i] as number] as number;
      return new Float32Array(outBits.buffer);
    }
    case "I8": {
      if (!scales) throw new Error("int8 payloads need their scales");
      const input = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const out = new Float32Array(input.length);
      // One scale per run of `span` elements: look it up once per run, not per element.
      let i = 0;
      while (i < input.length) {
        const segment = Math.floor((firstElement + i) / span);
        const segmentEnd = Math.min(input.length, (segment + 1) * span - firstElement);
        const scale = scales[segment] as number;
        for (; i < segmentEnd; i++) out[i] = (input[i] as number) * scale;
      }
      return out;
    }
    case "U8": {
      if (!scales) throw new Error("int4 payloads need their scales");
      const out = new Float32Array(bytes.byteLength * 2);
      let i = 0;
      while (i < out.length) {
        const segment = Math.floor((firstElement + i) / span);
        const segmentEnd = Math.min(out.length, (segment + 1) * span - firstElement);
        const scale = scales[segment] as number;
        for (; i < segmentEnd; i++) {
          const byte = bytes[i >> 1] as number;
          const nibble = i & 1 ? byte >> 4 : byte & 0xf;
          out[i] = ((nibble ^ 8) - 8) * scale;
        }
      }
      return out;
    }
    default:
      throw new DeltaError("DeltaDtypeUnsupported", `a delta payload cannot be ${dtype}`);
  }
}

export function decodeValues(
  encoded: EncodedTensor,
  shape: readonly number[],
  encoding: ParsedEncoding,
): Float32Array {
  const elements = shape.reduce((a, b) => a * b, 1);
  const span = scaleSpan(encoding, shape, elements);
  return decodeChunk(encoded.payload.dtype, encoded.payload.bytes, 0, encoded.scales, span);
}

// ---------------------------------------------------------------------------------------------
// Size and error report

export interface EncodingReport {
  encoding: DeltaEncoding;
  elements: number;
  fp32Bytes: number;
  /** Payload plus scales, without the safetensors header. */
  wireBytes: number;
  /** wireBytes / fp32Bytes. */
  ratio: number;
  maxAbsError: number;
  rmse: number;
  /** ‖x − x̂‖₂ / ‖x‖₂ (0 for an all-zero input decoded exactly). */
  relativeError: number;
}

export function measureEncoding(
  values: Float32Array,
  shape: readonly number[],
  encoding: DeltaEncoding,
): EncodingReport {
  const parsed = parseEncoding(encoding);
  const encoded = encodeValues("measured", values, shape, parsed);
  const decoded = decodeValues(encoded, shape, parsed);
  let maxAbsError = 0;
  let squaredError = 0;
  let squaredNorm = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i] as number;
    const d = Math.abs(x - (decoded[i] as number));
    if (d > maxAbsError) maxAbsError = d;
    squaredError += d * d;
    squaredNorm += x * x;
  }
  const wireBytes = encoded.payload.bytes.byteLength + (encoded.scales?.byteLength ?? 0);
  const fp32Bytes = values.length * 4;
  return {
    encoding,
    elements: values.length,
    fp32Bytes,
    wireBytes,
    ratio: fp32Bytes === 0 ? 0 : wireBytes / fp32Bytes,
    maxAbsError,
    rmse: values.length === 0 ? 0 : Math.sqrt(squaredError / values.length),
    relativeError:
      squaredNorm === 0
        ? squaredError === 0
          ? 0
          : Number.POSITIVE_INFINITY
        : Math.sqrt(squaredError / squaredNorm),
  };
}
