// Walks a delta's decoded chunks against the model layout, refusing anything but every model
// tensor exactly once, each in order, contiguous and of the model's shape.
import type { DecodedChunk } from "../delta.ts";
import { AggregationError } from "./errors.ts";
import { type ModelLayout, sameShape, shapeMismatch, tensorMissing } from "./layout.ts";

export type ChunkSource = AsyncIterable<DecodedChunk> | Iterable<DecodedChunk>;

/** Called for each chunk with its tensor's layout index and element offset; may return a promise (awaited). */
export type ChunkSink = (tensor: number, at: number, values: Float32Array) => void | Promise<void>;

/** One validated chunk: its tensor's layout index, the element offset, and the values. */
export interface WalkedChunk {
  tensor: number;
  at: number;
  values: Float32Array;
}

/**
 * A delta's chunks, each checked against the layout as it is pulled; throws on the first chunk
 * out of place, and at the end if a tensor is missing or incomplete.
 */
export async function* validatedChunks(
  layout: ModelLayout,
  index: ReadonlyMap<string, { index: number; elements: number }>,
  chunks: ChunkSource,
  signal?: AbortSignal,
): AsyncGenerator<WalkedChunk> {
  const complete = new Uint8Array(layout.length);
  let current = -1;
  let cursor = 0;
  for await (const chunk of chunks) {
    signal?.throwIfAborted();
    const entry = index.get(chunk.name);
    if (!entry) {
      throw new AggregationError(
        "AggregateTensorUnexpected",
        `the delta holds tensor '${chunk.name}', which the model does not have; refuse the delta (was it trained from another architecture?)`,
      );
    }
    const model = layout[entry.index] as { shape: readonly number[] };
    if (!sameShape(model.shape, chunk.shape)) throw shapeMismatch(chunk.name, model.shape, chunk.shape);
    if (entry.index !== current) {
      if (complete[entry.index]) throw chunkInvalid(`tensor '${chunk.name}' arrives a second time`);
      if (current >= 0) {
        throw chunkInvalid(
          `tensor '${chunk.name}' starts before '${layout[current]?.name}' is complete (at element ${cursor})`,
        );
      }
      current = entry.index;
      cursor = 0;
    }
    const end = cursor + chunk.values.length;
    if (chunk.offset !== cursor || end > entry.elements || chunk.last !== (end === entry.elements)) {
      throw chunkInvalid(
        `tensor '${chunk.name}' (${entry.elements} elements) got ${chunk.values.length} values at ${chunk.offset}${chunk.last ? " marked last" : ""}, expected the next at ${cursor}`,
      );
    }
    yield { tensor: current, at: cursor, values: chunk.values };
    cursor = end;
    if (chunk.last) {
      complete[current] = 1;
      current = -1;
    }
  }
  const missing = layout.findIndex((_, i) => !complete[i]);
  if (missing >= 0) {
    throw tensorMissing(
      (layout[missing] as { name: string }).name,
      missing === current ? `ends after ${cursor} of its elements` : "is absent from the delta",
    );
  }
}

export async function walkDelta(
  layout: ModelLayout,
  index: ReadonlyMap<string, { index: number; elements: number }>,
  chunks: ChunkSource,
  sink: ChunkSink,
  signal?: AbortSignal,
): Promise<void> {
  for await (const { tensor, at, values } of validatedChunks(layout, index, chunks, signal)) {
    const pending = sink(tensor, at, values);
    if (pending) await pending;
  }
}

function chunkInvalid(message: string): AggregationError {
  return new AggregationError(
    "AggregateChunkInvalid",
    `${message}; refuse the delta (the reader or the sender is broken)`,
  );
}

/** Closes a chunk source that was refused before or while being read (a generator's return()). */
export async function closeSource(chunks: AsyncIterable<unknown> | Iterable<unknown>): Promise<void> {
  const maybe = chunks as Partial<AsyncGenerator<unknown>>;
  if (typeof maybe.return === "function") {
    await Promise.resolve(maybe.return(undefined)).catch(() => {});
  }
}
