// The delta layout inside safetensors: one payload tensor per model tensor, under the model
// tensor's own name, preceded (for int8) by its fp32 scales under `<name>:scale`. Scales come
// first so that a reader can decode the payload chunk by chunk as it arrives.
import {
  checkFinite,
  type DeltaEncoding,
  decodeChunk,
  encodeValues,
  type ParsedEncoding,
  parseEncoding,
  payloadDtype,
  rowCount,
  scaleCount,
} from "./encodings.ts";
import { DeltaError } from "./errors.ts";
import {
  type ByteSource,
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
    if (parsed.kind === "int8-row" || parsed.kind === "int8-block") {
      sources.push({
        name: `${tensor.name}${SCALE_SUFFIX}`,
        dtype: "F32",
        shape: [scales],
        data: () => once(encode().then((e) => new Uint8Array((e.scales as Float32Array).buffer))),
      });
    }
    sources.push({
      name: tensor.name,
      dtype: payloadDtype(parsed),
      shape: tensor.shape,
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
  shape: number[];
  /** Element index of values[0] within the tensor. */
  offset: number;
  values: Float32Array;
  last: boolean;
}

export interface DeltaLayout {
  encoding: DeltaEncoding;
  parsed: ParsedEncoding;
  /** Model tensors (payloads), in file order. */
  tensors: TensorInfo[];
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
  const scaled = parsed.kind === "int8-row" || parsed.kind === "int8-block";
  const tensors: TensorInfo[] = [];
  for (let i = 0; i < header.tensors.length; i++) {
    let tensor = header.tensors[i] as TensorInfo;
    if (scaled) {
      const payload = header.tensors[i + 1];
      const elements = payload ? payload.shape.reduce((a, b) => a * b, 1) : 0;
      if (
        !payload ||
        tensor.name !== `${payload.name}${SCALE_SUFFIX}` ||
        tensor.dtype !== "F32" ||
        tensor.shape.length !== 1 ||
        tensor.shape[0] !== scaleCount(parsed, payload.shape, elements)
      ) {
        throw invalid(`tensor '${tensor.name}' is not the F32 scales of the tensor that follows it`);
      }
      tensor = payload;
      i++;
    }
    if (tensor.name.endsWith(SCALE_SUFFIX)) throw invalid(`scales '${tensor.name}' out of place`);
    if (tensor.dtype !== payloadDtype(parsed)) {
      throw invalid(
        `tensor '${tensor.name}' is ${tensor.dtype} but encoding ${encoding} stores ${payloadDtype(parsed)}`,
      );
    }
    tensors.push(tensor);
  }
  return { encoding: encoding as DeltaEncoding, parsed, tensors };
}

/**
 * Decodes a delta's chunks to fp32 as they arrive. Only scales (a few percent of a tensor)
 * are held; payload chunks are decoded and handed on. NaN and ±Inf are refused.
 */
export async function* decodeDelta(stream: SafetensorsStream): AsyncGenerator<DecodedChunk> {
  const layout = deltaLayout(stream.header);
  let scales: Float32Array | undefined;
  for await (const chunk of stream.chunks()) {
    if (chunk.tensor.name.endsWith(SCALE_SUFFIX)) {
      scales ??= new Float32Array((chunk.tensor.end - chunk.tensor.start) / 4);
      scales.set(decodeChunk("F32", chunk.bytes), chunk.offset / 4);
      if (chunk.last) checkFinite(chunk.tensor.name, scales);
      continue;
    }
    const { tensor } = chunk;
    const elements = tensor.shape.reduce((a, b) => a * b, 1);
    const span =
      layout.parsed.kind === "int8-block"
        ? layout.parsed.blockSize
        : elements / Math.max(1, rowCount(tensor.shape, elements));
    const itemBytes = tensor.dtype === "F32" ? 4 : tensor.dtype === "I8" ? 1 : 2;
    const values = decodeChunk(tensor.dtype, chunk.bytes, chunk.offset / itemBytes, scales, span);
    checkFinite(tensor.name, values);
    yield {
      name: tensor.name,
      shape: tensor.shape,
      offset: chunk.offset / itemBytes,
      values,
      last: chunk.last,
    };
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
