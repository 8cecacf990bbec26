// The model layout every delta of a run must match: tensor names and shapes, usually taken
// from the global model the round started from.
import { AggregationError } from "./errors.ts";

export interface TensorLayout {
  name: string;
  shape: readonly number[];
}

/** Model tensors in a fixed order (the order sums, states and results are kept in). */
export type ModelLayout = readonly TensorLayout[];

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const dim of shape) n *= dim;
  return n;
}

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Validates a layout and indexes it by name. */
export function indexLayout(layout: ModelLayout): Map<string, { index: number; elements: number }> {
  const index = new Map<string, { index: number; elements: number }>();
  let total = 0;
  layout.forEach((tensor, i) => {
    if (typeof tensor.name !== "string" || tensor.name.length === 0) {
      throw new AggregationError("AggregateLayoutInvalid", `tensor #${i} has no name`);
    }
    if (index.has(tensor.name)) {
      throw new AggregationError("AggregateLayoutInvalid", `tensor '${tensor.name}' is listed twice`);
    }
    if (!tensor.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new AggregationError(
        "AggregateLayoutInvalid",
        `tensor '${tensor.name}' has shape ${shapeText(tensor.shape)}; dimensions are integers ≥ 0`,
      );
    }
    const elements = elementCount(tensor.shape);
    total += elements;
    if (!Number.isSafeInteger(total * 4)) {
      throw new AggregationError("AggregateLayoutInvalid", "the model is larger than 2^53 bytes");
    }
    index.set(tensor.name, { index: i, elements });
  });
  return index;
}

/** fp32 bytes of one copy of the model. */
export function modelBytes(layout: ModelLayout): number {
  return layout.reduce((sum, t) => sum + elementCount(t.shape) * 4, 0);
}

/**
 * Refuses, before any data is read, a delta whose tensors (`deltaLayout(header).tensors`: model
 * shapes, not the header's entries, whose packed int4 payloads have half the last dimension)
 * are not exactly the model's: the first missing, unexpected or differently shaped tensor is
 * reported. Accumulators check the same while streaming; this only lets a hub refuse without
 * opening the data.
 */
export function checkDeltaTensors(layout: ModelLayout, tensors: readonly TensorLayout[]): void {
  const expected = new Map(layout.map((t) => [t.name, t]));
  const seen = new Set<string>();
  for (const tensor of tensors) {
    const model = expected.get(tensor.name);
    if (!model) {
      throw new AggregationError(
        "AggregateTensorUnexpected",
        `the delta holds tensor '${tensor.name}', which the model does not have; refuse the delta (was it trained from another architecture?)`,
      );
    }
    if (seen.has(tensor.name)) {
      throw new AggregationError("AggregateChunkInvalid", `the delta holds tensor '${tensor.name}' twice`);
    }
    seen.add(tensor.name);
    if (!sameShape(model.shape, tensor.shape)) {
      throw shapeMismatch(tensor.name, model.shape, tensor.shape);
    }
  }
  for (const model of layout) {
    if (!seen.has(model.name)) throw tensorMissing(model.name);
  }
}

export function shapeMismatch(name: string, model: readonly number[], delta: readonly number[]) {
  return new AggregationError(
    "AggregateShapeMismatch",
    `tensor '${name}' is ${shapeText(delta)} in the delta but ${shapeText(model)} in the model; refuse the delta (was it trained from another base model?)`,
  );
}

export function tensorMissing(name: string, detail = "is absent from the delta") {
  return new AggregationError(
    "AggregateTensorMissing",
    `model tensor '${name}' ${detail}; a delta must cover every tensor — refuse it`,
  );
}
