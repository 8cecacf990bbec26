// The delta layout inside safetensors: one payload tensor per model tensor, under the model
// tensor's own name, preceded (for int8 and int4) by its fp32 scales under `<name>:scale`.
// Scales come first so that a reader can decode the payload chunk by chunk as it arrives.
import {
  checkFinite,
  type DeltaEncoding,
  decodeChunk,
  encodeValues,
  isScaled,
  modelShape,
  type ParsedEncoding,
  parseEncoding,
  payloadLayout,
  scaleCount,
  scaleSpan,
} from "./encodings.ts";
import { DeltaError } from "./errors.ts";
import {
  type ByteSource,
  dtypeBytes,
  openSafetensors,
  type ReadOptions,
  type SafetensorsHeader,
  type SafetensorsStream,
  type TensorInfo,
  type TensorSource,
  writeSafetensors,
} from "./safetensors.ts";

export const DELTA_FORMAT = "sovereign-delta/1";
export const METADATA_FORMAT = "sovereign.format";
export const METADATA_ENCODING = "sovereign.encoding";
export const SCALE_SUFFIX = ":scale";

export interface DeltaTensor {
  name: string;
  shape: readonly number[];
  /** A function is called only when the writer reaches this tensor, so one tensor at a time is held encoded. */
  values: Float32Array | (() => Float32Array | Promise<Float32Array>);
}

/** Streams a delta file: header first, then each tensor encoded as the writer reaches it. */
export function writeDelta(
  tensors: readonly DeltaTensor[],
  encoding: DeltaEncoding,
): AsyncGenerator<Uint8Array> {
  const parsed = parseEncoding(encoding);
  const sources: TensorSource[] = [];
  for (const tensor of tensors) {
    if (tensor.name.endsWith(SCALE_SUFFIX)) {
      throw new DeltaError(
        "DeltaNameInvalid",
        `tensor name '${tensor.name}' ends with the reserved '${SCALE_SUFFIX}'`,
      );
    }
    const elements = tensor.shape.reduce((a, b) => a * b, 1);
    // Encoded once, on first use by whichever of scale/payload comes first.
    let encoded: Promise<ReturnType<typeof encodeValues>> | undefined;
    const encode = () => {
      encoded ??= (async () => {
        const values = typeof tensor.values === "function" ? await tensor.values() : tensor.values;
        if (values.length !== elements) {
          throw new DeltaError(
            "DeltaShapeMismatch",
            `tensor '${tensor.name}' has ${values.length} values for shape [${tensor.shape.join(", ")}]`,
          );
        }
        return encodeValues(tensor.name, values, tensor.shape, parsed);
      })();
      return encoded;
    };
    const scales = scaleCount(parsed, tensor.shape, elements);
    if (isScaled(parsed)) {
      sources.push({
        name: `${tensor.name}${SCALE_SUFFIX}`,
        dtype: "F32",
        shape: [scales],
        data: () => once(encode().then((e) => new Uint8Array((e.scales as Float32Array).buffer))),
      });
    }
    const payload = payloadLayout(parsed, tensor.shape);
    sources.push({
      name: tensor.name,
      dtype: payload.dtype,
      shape: payload.shape,
      data: () =>
        once(
          encode().then((e) => {
            const bytes = e.payload.bytes;
            encoded = undefined; // let the encoded tensor go once written
            return bytes;
          }),
        ),
    });
  }
  return writeSafetensors(sources, {
    metadata: { [METADATA_FORMAT]: DELTA_FORMAT, [METADATA_ENCODING]: encoding },
  });
}

async function* once(bytes: Promise<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield await bytes;
}

export interface DecodedChunk {
  name: string;
  /** The model tensor's shape (a packed int4 payload's last dimension is half of it). */
  shape: number[];
  /** Element index of values[0] within the tensor. */
  offset: number;
  values: Float32Array;
  last: boolean;
}

export interface DeltaTensorLayout {
  name: string;
  /** The model tensor's shape, which decodeDelta yields; for packed int4 not the payload's. */
  shape: number[];
  /** The stored payload tensor, as the header describes it. */
  payload: TensorInfo;
}

export interface DeltaLayout {
  encoding: DeltaEncoding;
  parsed: ParsedEncoding;
  /** Model tensors, in file order. */
  tensors: DeltaTensorLayout[];
}

/** Checks that a header is a delta in the layout writeDelta produces. */
export function deltaLayout(header: SafetensorsHeader): DeltaLayout {
  const invalid = (message: string) =>
    new DeltaError(
      "DeltaLayoutInvalid",
      `${message}; the file is safetensors but not a ${DELTA_FORMAT} delta`,
    );
  if (header.metadata?.[METADATA_FORMAT] !== DELTA_FORMAT) {
    throw invalid(`__metadata__.${METADATA_FORMAT} is not '${DELTA_FORMAT}'`);
  }
  const encoding = header.metadata[METADATA_ENCODING] ?? "";
  const parsed = parseEncoding(encoding);
  const scaled = isScaled(parsed);
  const tensors: DeltaTensorLayout[] = [];
  for (let i = 0; i < header.tensors.length; i++) {
    let payload = header.tensors[i] as TensorInfo;
    let scales: TensorInfo | undefined;
    if (scaled) {
      scales = payload;
      const next = header.tensors[i + 1];
      if (!next || scales.name !== `${next.name}${SCALE_SUFFIX}`) {
        throw invalid(`tensor '${scales.name}' is not the F32 scales of the tensor that follows it`);
      }
      payload = next;
      i++;
    }
    if (payload.name.endsWith(SCALE_SUFFIX)) throw invalid(`scales '${payload.name}' out of place`);
    const shape = modelShape(parsed, payload);
    if (!shape) {
      const expected = payloadLayout(parsed, payload.shape);
      throw invalid(
        `tensor '${payload.name}' is ${payload.dtype} [${payload.shape.join(", ")}], which encoding ${encoding} never stores (it stores ${expected.dtype}${parsed.kind === "int4-block" ? ": U8 with the last dimension halved when the model's last dimension is even, else I8 with the model's shape" : ""})`,
      );
    }
    const elements = shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(elements)) {
      throw new DeltaError(
        "DeltaShapeOverflow",
        `tensor '${payload.name}' unpacks to more than 2^53 − 1 elements`,
      );
    }
    if (
      scales &&
      (scales.dtype !== "F32" ||
        scales.shape.length !== 1 ||
        scales.shape[0] !== scaleCount(parsed, shape, elements))
    ) {
      throw invalid(`tensor '${scales.name}' is not the F32 scales of the tensor that follows it`);
    }
    tensors.push({ name: payload.name, shape, payload });
  }
  return { encoding: encoding as DeltaEncoding, parsed, tensors };
}

/**
 * Decodes a delta's chunks to fp32 as they arrive. Only scales (a few percent of a tensor)
 * are held; payload chunks are decoded and handed on. NaN and ±Inf are refused.
 */
export async function* decodeDelta(stream: SafetensorsStream): AsyncGenerator<DecodedChunk> {
  const layout = deltaLayout(stream.header);
  const byName = new Map(layout.tensors.map((t) => [t.name, t]));
  let scales: Float32Array | undefined;
  for await (const chunk of stream.chunks()) {
    if (chunk.tensor.name.endsWith(SCALE_SUFFIX)) {
      scales ??= new Float32Array((chunk.tensor.end - chunk.tensor.start) / 4);
      scales.set(decodeChunk("F32", chunk.bytes), chunk.offset / 4);
      if (chunk.last) checkFinite(chunk.tensor.name, scales);
      continue;
    }
    const { tensor } = chunk;
    const { shape } = byName.get(tensor.name) as DeltaTensorLayout;
    const elements = shape.reduce((a, b) => a * b, 1);
    const span = scaleSpan(layout.parsed, shape, elements);
    // Packed int4 (U8) holds two elements a byte.
    const offset = tensor.dtype === "U8" ? chunk.offset * 2 : chunk.offset / dtypeBytes(tensor.dtype);
    const values = decodeChunk(tensor.dtype, chunk.bytes, offset, scales, span);
    checkFinite(tensor.name, values);
    yield { name: tensor.name, shape, offset, values, last: chunk.last };
    if (chunk.last) scales = undefined;
  }
}

/** Opens a delta from bytes as they arrive and checks its layout before any data is read. */
export async function openDelta(
  source: ByteSource,
  options?: ReadOptions,
): Promise<{ stream: SafetensorsStream; layout: DeltaLayout; decode(): AsyncGenerator<DecodedChunk> }> {
  const stream = await openSafetensors(source, options);
  const layout = deltaLayout(stream.header);
  return { stream, layout, decode: () => decodeDelta(stream) };
}

/** Whole tensors, for tests and small deltas. */
export async function decodeDeltaToArrays(stream: SafetensorsStream): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for await (const chunk of decodeDelta(stream)) {
    let values = out.get(chunk.name);
    if (!values) {
      values = new Float32Array(chunk.shape.reduce((a, b) => a * b, 1));
      out.set(chunk.name, values);
    }
    values.set(chunk.values, chunk.offset);
  }
  return out;
}
