// Streaming safetensors: the header is read and validated before any tensor byte is
// accepted, then tensor bytes are handed on as they arrive, so a multi-GB file never sits in
// memory. Validation follows the reference implementation (huggingface/safetensors,
// safetensors/src/tensor.rs) and is stricter where docs/deltas.md says so.
import { DeltaError } from "./errors.ts";
import { JsonSyntaxError, type JsonValue, parseJson, plainUnsignedInteger } from "./json.ts";

/** The reference's own limit on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;
const LENGTH_PREFIX_BYTES = 8;
const HEADER_ALIGNMENT = 8;
const MAX_NAME_BYTES = 4096;

// Sub-byte dtypes (F4, F6_*) are left out: their elements do not fall on byte boundaries, so
// a chunk could not be handed on element-aligned.
const DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  F8_E4M3FNUZ: 1,
  F8_E5M2FNUZ: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  C64: 8,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type Dtype = keyof typeof DTYPE_BYTES;

export function isDtype(value: string): value is Dtype {
  return Object.hasOwn(DTYPE_BYTES, value);
}

export function dtypeBytes(dtype: Dtype): number {
  return DTYPE_BYTES[dtype];
}

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Byte offsets into the data section (after the header), end exclusive. */
  start: number;
  end: number;
}

export interface SafetensorsHeader {
  /** The `__metadata__` map, or undefined when the file has none. */
  metadata: Record<string, string> | undefined;
  /** In file order (ascending offsets). */
  tensors: TensorInfo[];
  /** Length of the JSON header as declared by the 8-byte prefix. */
  headerBytes: number;
  dataBytes: number;
  totalBytes: number;
}

export interface TensorChunk {
  tensor: TensorInfo;
  /** Byte offset of `bytes` within the tensor's data. */
  offset: number;
  /** Always a whole number of elements; may be empty only for an empty tensor. */
  bytes: Uint8Array;
  /** True on the tensor's final chunk. */
  last: boolean;
}

export interface SafetensorsStream {
  header: SafetensorsHeader;
  /**
   * Every tensor's bytes in file order, at least one chunk per tensor. Call once. It ends by
   * checking that the source has exactly the declared length: a file is accepted only when
   * iteration completes without throwing.
   */
  chunks(): AsyncGenerator<TensorChunk>;
}

export interface ReadOptions {
  /** Largest JSON header accepted (default and upper bound: the reference's 100 MB). */
  maxHeaderBytes?: number;
  /** Largest data section accepted; refused from the header, before any data is read. */
  maxDataBytes?: number;
  /** When the transport knows the object size, a header that disagrees is refused up front. */
  expectedTotalBytes?: number;
}

export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

// Pulls bytes from a chunked source without copying except where a read spans chunks.
class ByteCursor {
  readonly #iterator: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  #current: Uint8Array = new Uint8Array(0);
  #done = false;
  position = 0;

  constructor(source: ByteSource) {
    this.#iterator =
      Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#current.byteLength === 0) {
      if (this.#done) return false;
      const next = await this.#iterator.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      if (!(next.value instanceof Uint8Array)) {
        throw new TypeError("a safetensors source must yield Uint8Array chunks");
      }
      this.#current = next.value;
    }
    return true;
  }

  /** Up to `max` bytes (a view into the source chunk), or undefined at the end. */
  async some(max: number): Promise<Uint8Array | undefined> {
    if (!(await this.#fill())) return undefined;
    const take = Math.min(max, this.#current.byteLength);
    const out = this.#current.subarray(0, take);
    this.#current = this.#current.subarray(take);
    this.position += take;
    return out;
  }

  /** Exactly `n` bytes, or fewer if the source ends first. */
  async exactly(n: number): Promise<Uint8Array> {
    const first = await this.some(n);
    if (first === undefined) return new Uint8Array(0);
    if (first.byteLength === n) return first;
    const out = new Uint8Array(n);
    out.set(first);
    let filled = first.byteLength;
    while (filled < n) {
      const part = await this.some(n - filled);
      if (part === undefined) return out.subarray(0, filled);
      out.set(part, filled);
      filled += part.byteLength;
    }
    return out;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.#fill());
  }

  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#iterator.return?.();
    }
  }
}

/** Reads and validates the header; tensor bytes follow through `chunks()`. */
export async function openSafetensors(
  source: ByteSource,
  options: ReadOptions = {},
): Promise<SafetensorsStream> {
  const maxHeaderBytes = Math.min(options.maxHeaderBytes ?? MAX_HEADER_BYTES, MAX_HEADER_BYTES);
  const cursor = new ByteCursor(source);
  let header: SafetensorsHeader;
  try {
    const prefix = await cursor.exactly(LENGTH_PREFIX_BYTES);
    if (prefix.byteLength < LENGTH_PREFIX_BYTES) {
      throw new DeltaError(
        "DeltaTruncated",
        `the file ended after ${prefix.byteLength} bytes, before the 8-byte header length; re-fetch the delta`,
      );
    }
    const declared = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
    if (declared > BigInt(maxHeaderBytes)) {
      throw new DeltaError(
        "DeltaHeaderTooLarge",
        `the header declares ${declared} bytes, over the limit of ${maxHeaderBytes}; the file is not a delta this hub accepts`,
      );
    }
    const headerLength = Number(declared);
    const headerBytes = await cursor.exactly(headerLength);
    if (headerBytes.byteLength < headerLength) {
      throw new DeltaError(
        "DeltaTruncated",
        `the header declares ${headerLength} bytes but the file ended after ${headerBytes.byteLength}; re-fetch the delta or check the writer`,
      );
    }
    header = parseHeader(headerBytes, headerLength);
    checkLimits(header, options);
  } catch (err) {
    await cursor.close();
    throw err;
  }
  let started = false;
  return {
    header,
    chunks() {
      if (started) throw new Error("chunks() can be iterated only once");
      started = true;
      return streamChunks(header, cursor);
    },
  };
}

function checkLimits(header: SafetensorsHeader, options: ReadOptions) {
  if (options.maxDataBytes !== undefined && header.dataBytes > options.maxDataBytes) {
    throw new DeltaError(
      "DeltaTooLarge",
      `the header declares ${header.dataBytes} data bytes, over the limit of ${options.maxDataBytes}; raise the limit only if such deltas are expected`,
    );
  }
  if (options.expectedTotalBytes !== undefined && header.totalBytes !== options.expectedTotalBytes) {
    throw new DeltaError(
      header.totalBytes > options.expectedTotalBytes ? "DeltaOffsetsOutOfBounds" : "DeltaTrailingBytes",
      `the header accounts for ${header.totalBytes} bytes but the object has ${options.expectedTotalBytes}; the file is corrupt or was cut`,
    );
  }
}

async function* streamChunks(header: SafetensorsHeader, cursor: ByteCursor): AsyncGenerator<TensorChunk> {
  try {
    for (const tensor of header.tensors) {
      const length = tensor.end - tensor.start;
      const itemBytes = dtypeBytes(tensor.dtype);
      if (length === 0) {
        yield { tensor, offset: 0, bytes: new Uint8Array(0), last: true };
        continue;
      }
      let offset = 0;
      while (offset < length) {
        const got = await cursor.some(length - offset);
        if (got === undefined) throw truncatedIn(tensor, offset, length);
        let bytes = got;
        const partial = bytes.byteLength % itemBytes;
        if (partial !== 0) {
          // An element split across source chunks: hand on the whole elements now and
          // complete the split one from the next chunk, so every chunk is element-aligned.
          const whole = bytes.byteLength - partial;
          if (whole > 0) {
            yield { tensor, offset, bytes: bytes.subarray(0, whole), last: false };
            offset += whole;
          }
          const rest = await cursor.exactly(itemBytes - partial);
          if (rest.byteLength < itemBytes - partial) throw truncatedIn(tensor, offset + partial, length);
          const element = new Uint8Array(itemBytes);
          element.set(bytes.subarray(whole));
          element.set(rest, partial);
          bytes = element;
        }
        const last = offset + bytes.byteLength === length;
        yield { tensor, offset, bytes, last };
        offset += bytes.byteLength;
      }
    }
    if (!(await cursor.atEnd())) {
      throw new DeltaError(
        "DeltaTrailingBytes",
        `bytes follow the last tensor (the header accounts for ${header.totalBytes}); the reference refuses such files too — check the writer`,
      );
    }
  } finally {
    await cursor.close();
  }
}

function truncatedIn(tensor: TensorInfo, offset: number, length: number): DeltaError {
  return new DeltaError(
    "DeltaTruncated",
    `the file ended ${offset} bytes into tensor '${tensor.name}' of ${length}; re-fetch the delta (a cut transfer resumes from the last stored chunk)`,
  );
}

function headerInvalid(message: string, cause?: unknown): DeltaError {
  return new DeltaError("DeltaHeaderInvalid", `${message}; the file is not a valid safetensors delta`, {
    cause,
  });
}

/** Parses and validates a JSON header (the bytes after the 8-byte length prefix). */
export function parseHeader(bytes: Uint8Array, headerLength = bytes.byteLength): SafetensorsHeader {
  let root: JsonValue;
  try {
    root = parseJson(bytes);
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    if (err.badKeyDepth === 1) {
      throw new DeltaError(
        "DeltaNameInvalid",
        `a tensor name is not valid UTF-8/Unicode (${err.message}); rename the tensor in the writer`,
        { cause: err },
      );
    }
    if (err.duplicateKeyDepth === 1) {
      throw new DeltaError(
        "DeltaNameDuplicate",
        `tensor '${err.duplicateKey}' appears twice in the header; names must be unique`,
        { cause: err },
      );
    }
    throw headerInvalid(`the header is not strict JSON (${err.message})`, err);
  }
  if (root.kind !== "object") throw headerInvalid("the header is not a JSON object");

  let metadata: Record<string, string> | undefined;
  const tensors: TensorInfo[] = [];
  for (const [key, value] of root.entries) {
    if (key === "__metadata__") {
      metadata = parseMetadata(value);
      continue;
    }
    tensors.push(parseTensorEntry(key, value));
  }

  // The reference sorts by (start, end) and demands each tensor start where the previous
  // ended: this catches overlaps, gaps and a data section with holes.
  tensors.sort((a, b) => a.start - b.start || a.end - b.end);
  let expectedStart = 0;
  for (const tensor of tensors) {
    if (tensor.start < expectedStart) {
      throw new DeltaError(
        "DeltaOffsetsOverlap",
        `tensor '${tensor.name}' starts at ${tensor.start}, inside the previous tensor (which ends at ${expectedStart}); the writer is broken`,
      );
    }
    if (tensor.start > expectedStart) {
      throw new DeltaError(
        "DeltaOffsetsGap",
        `tensor '${tensor.name}' starts at ${tensor.start} but the previous tensor ends at ${expectedStart}; the data section must have no gaps`,
      );
    }
    expectedStart = tensor.end;
  }
  const totalBytes = LENGTH_PREFIX_BYTES + headerLength + expectedStart;
  if (!Number.isSafeInteger(totalBytes)) {
    throw new DeltaError("DeltaOffsetsOutOfBounds", `the file would be ${totalBytes} bytes long; refused`);
  }
  return { metadata, tensors, headerBytes: headerLength, dataBytes: expectedStart, totalBytes };
}

function parseMetadata(value: JsonValue): Record<string, string> | undefined {
  // serde reads Option<HashMap<String, String>>: null means absent.
  if (value.kind === "null") return undefined;
  if (value.kind !== "object") throw headerInvalid("__metadata__ must be an object of strings");
  const metadata: Record<string, string> = Object.create(null);
  for (const [key, entry] of value.entries) {
    if (entry.kind !== "string") throw headerInvalid(`__metadata__.${JSON.stringify(key)} must be a string`);
    metadata[key] = entry.value;
  }
  return metadata;
}

function checkName(name: string) {
  if (name.length === 0) {
    throw new DeltaError("DeltaNameInvalid", "a tensor has an empty name; give every tensor a name");
  }
  if (!name.isWellFormed()) {
    throw new DeltaError("DeltaNameInvalid", "a tensor name holds a lone surrogate; use valid Unicode names");
  }
  if (Buffer.byteLength(name, "utf8") > MAX_NAME_BYTES) {
    throw new DeltaError(
      "DeltaNameInvalid",
      `tensor name '${name.slice(0, 64)}…' is longer than ${MAX_NAME_BYTES} bytes; shorten it`,
    );
  }
}

function parseTensorEntry(name: string, value: JsonValue): TensorInfo {
  checkName(name);
  if (value.kind !== "object") throw headerInvalid(`tensor '${name}' must be an object`);
  let dtypeValue: JsonValue | undefined;
  let shapeValue: JsonValue | undefined;
  let offsetsValue: JsonValue | undefined;
  for (const [field, fieldValue] of value.entries) {
    if (field === "dtype") dtypeValue = fieldValue;
    else if (field === "shape") shapeValue = fieldValue;
    else if (field === "data_offsets") offsetsValue = fieldValue;
    else throw headerInvalid(`tensor '${name}' has an unknown field '${field}'`);
  }
  if (dtypeValue?.kind !== "string") throw headerInvalid(`tensor '${name}' needs a string dtype`);
  if (shapeValue?.kind !== "array") throw headerInvalid(`tensor '${name}' needs a shape array`);
  if (offsetsValue?.kind !== "array" || offsetsValue.items.length !== 2) {
    throw headerInvalid(`tensor '${name}' needs data_offsets [start, end]`);
  }
  const dtype = dtypeValue.value;
  if (!isDtype(dtype)) {
    throw new DeltaError(
      "DeltaDtypeUnsupported",
      `tensor '${name}' has dtype '${dtype}', which this reader does not support (sub-byte and unknown dtypes are refused); re-encode the delta`,
    );
  }

  let elements = 1n;
  const shape: number[] = [];
  for (const dim of shapeValue.items) {
    const n = plainUnsignedInteger(dim);
    if (n === undefined)
      throw headerInvalid(`tensor '${name}' has a shape entry that is not a non-negative integer`);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new DeltaError(
        "DeltaShapeOverflow",
        `tensor '${name}' has a dimension of ${n}; refused as absurd`,
      );
    }
    shape.push(Number(n));
    elements *= n;
  }
  const byteLength = elements * BigInt(DTYPE_BYTES[dtype]);
  if (byteLength > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DeltaError(
      "DeltaShapeOverflow",
      `tensor '${name}' has shape [${shape.join(", ")}], ${byteLength} bytes; refused as absurd`,
    );
  }

  const [startValue, endValue] = offsetsValue.items as [JsonValue, JsonValue];
  const start = plainUnsignedInteger(startValue);
  const end = plainUnsignedInteger(endValue);
  if (start === undefined || end === undefined) {
    throw headerInvalid(`tensor '${name}' has data_offsets that are not non-negative integers`);
  }
  if (end < start || end > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DeltaError(
      "DeltaOffsetsOutOfBounds",
      `tensor '${name}' has data_offsets [${start}, ${end}]; the end must be at least the start and below 2^53`,
    );
  }
  if (end - start !== byteLength) {
    throw new DeltaError(
      "DeltaShapeMismatch",
      `tensor '${name}' (${dtype} [${shape.join(", ")}]) needs ${byteLength} bytes but its offsets span ${end - start}; the writer is broken`,
    );
  }
  return { name, dtype, shape, start: Number(start), end: Number(end) };
}

// ---------------------------------------------------------------------------------------------
// Writing

export type TensorData = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export interface TensorSource {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
  /** Produced lazily when the writer reaches this tensor, so data can be generated on demand. */
  data: TensorData | (() => TensorData);
}

export function tensorByteLength(dtype: Dtype, shape: readonly number[]): number {
  let bytes = DTYPE_BYTES[dtype];
  for (const dim of shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) {
      throw new DeltaError(
        "DeltaShapeOverflow",
        `shape [${shape.join(", ")}] has an invalid dimension ${dim}`,
      );
    }
    bytes *= dim;
  }
  if (!Number.isSafeInteger(bytes)) {
    throw new DeltaError("DeltaShapeOverflow", `shape [${shape.join(", ")}] of ${dtype} is too large`);
  }
  return bytes;
}

/**
 * The 8-byte length prefix and the JSON header for tensors stored in the given order, padded
 * with spaces to 8 bytes as the reference does so that tensor data starts aligned.
 */
export function encodeHeader(
  tensors: ReadonlyArray<Pick<TensorSource, "name" | "dtype" | "shape">>,
  metadata?: Record<string, string>,
): Uint8Array {
  const entries: string[] = [];
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string" || !key.isWellFormed() || !value.isWellFormed()) {
        throw new DeltaError("DeltaHeaderInvalid", `metadata '${key}' must be a well-formed string`);
      }
    }
    entries.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const names = new Set<string>();
  let offset = 0;
  for (const tensor of tensors) {
    checkName(tensor.name);
    if (tensor.name === "__metadata__") {
      throw new DeltaError("DeltaNameInvalid", "'__metadata__' is reserved; rename the tensor");
    }
    if (names.has(tensor.name)) {
      throw new DeltaError("DeltaNameDuplicate", `tensor '${tensor.name}' is given twice`);
    }
    names.add(tensor.name);
    if (!isDtype(tensor.dtype)) {
      throw new DeltaError(
        "DeltaDtypeUnsupported",
        `tensor '${tensor.name}' has unsupported dtype '${tensor.dtype}'`,
      );
    }
    const end = offset + tensorByteLength(tensor.dtype, tensor.shape);
    entries.push(
      `${JSON.stringify(tensor.name)}:{"dtype":"${tensor.dtype}","shape":[${tensor.shape.join(",")}],"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }
  const json = new TextEncoder().encode(`{${entries.join(",")}}`);
  const padded = Math.ceil(json.byteLength / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  if (padded > MAX_HEADER_BYTES) {
    throw new DeltaError("DeltaHeaderTooLarge", `the header would be ${padded} bytes; split the delta`);
  }
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, LENGTH_PREFIX_BYTES);
  return out;
}

/**
 * A safetensors file as a stream of chunks: the header first, then each tensor's data in the
 * given order, pulled from its source only when reached. A source that yields more or fewer
 * bytes than its dtype and shape need stops the stream with DeltaShapeMismatch.
 */
export async function* writeSafetensors(
  tensors: readonly TensorSource[],
  options: { metadata?: Record<string, string> } = {},
): AsyncGenerator<Uint8Array> {
  yield encodeHeader(tensors, options.metadata);
  for (const tensor of tensors) {
    const expected = tensorByteLength(tensor.dtype, tensor.shape);
    const data = typeof tensor.data === "function" ? tensor.data() : tensor.data;
    let written = 0;
    for await (const chunk of data instanceof Uint8Array ? [data] : data) {
      written += chunk.byteLength;
      if (written > expected) break;
      if (chunk.byteLength > 0) yield chunk;
    }
    if (written !== expected) {
      throw new DeltaError(
        "DeltaShapeMismatch",
        `tensor '${tensor.name}' (${tensor.dtype} [${tensor.shape.join(", ")}]) needs ${expected} bytes but its source gave ${written > expected ? "more" : written}; fix the caller`,
      );
    }
  }
}

/** Collects a whole (small) file: for tests, tools and manifests, not for model-sized deltas. */
export async function readSafetensors(
  source: ByteSource,
  options?: ReadOptions,
): Promise<{ header: SafetensorsHeader; tensors: Map<string, { info: TensorInfo; bytes: Uint8Array }> }> {
  const stream = await openSafetensors(source, options);
  const tensors = new Map<string, { info: TensorInfo; bytes: Uint8Array }>();
  for (const info of stream.header.tensors) {
    tensors.set(info.name, { info, bytes: new Uint8Array(info.end - info.start) });
  }
  for await (const chunk of stream.chunks()) {
    tensors.get(chunk.tensor.name)?.bytes.set(chunk.bytes, chunk.offset);
  }
  return { header: stream.header, tensors };
}

/** Concatenates a chunk stream; for tests and small files. */
export async function collectBytes(source: ByteSource): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let length = 0;
  for await (const part of source) {
    parts.push(part);
    length += part.byteLength;
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}
