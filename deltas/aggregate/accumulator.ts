// Streaming FedAvg: the token-weighted mean of the round's deltas, accumulated one delta at a
// time as it streams in, in one fp32 sum per model element.
//
// Memory: one fp32 copy of the model (the sums), a 16 KiB kernel scratch per arena, the
// transport's chunk window, and the undo journal's in-memory budget (64 MiB by default; the
// rest spills to disk). Not model × regions. The first delta of a round needs no journal at all
// (its undo is "fill with zeros").
//
// Precision: sums are fp32, each step rounding w·v and then the sum to fp32 (kernel.ts). With
// n deltas, every element of the mean is within (n + 3)·2⁻²⁴·Σ|wᵢ·vᵢ|/Σwᵢ of the exact
// weighted mean, plus 2⁻¹⁵⁰ per rounding where results are subnormal
// (test/deltas/aggregate/accumulator.test.ts checks this against a float64 reference), i.e.
// < 10⁻⁶ relative for ten regions — three orders of magnitude below the bf16 and int8 wire
// encodings' own error. For a fixed order of deltas the result is bit-exact and
// reproducible. A float64 sum would double the memory (2 GiB for a 1 GiB model) and a
// compensated (Kahan) fp32 sum needs a second model-sized buffer; neither buys precision that
// survives the encodings.
import type { KeyObject } from "node:crypto";
import { decodeDelta, deltaLayout } from "../delta.ts";
import {
  type DeltaManifest,
  manifestDigest,
  openVerifiedDelta,
  type SignedManifest,
  verifyManifestSignature,
} from "../manifest.ts";
import type { ByteSource, ReadOptions } from "../safetensors.ts";
import { AggregationError } from "./errors.ts";
import { type JournalOptions, UndoJournal } from "./journal.ts";
import { type KernelKind, SCRATCH_ELEMENTS, SumStorage } from "./kernel.ts";
import { checkDeltaTensors, indexLayout, type ModelLayout } from "./layout.ts";
import { type ChunkSource, closeSource, walkDelta } from "./stream.ts";

export interface AccumulatorOptions {
  /** "wasm" (default; SIMD, falls back to "js" where unavailable) or "js". Both give identical sums. */
  kernel?: KernelKind;
  /** Where the undo journal of a delta in flight spills beyond its memory budget. */
  journal?: JournalOptions;
}

export interface AddOptions {
  /** FedAvg weight: the manifest's `tokens` (times a staleness factor for a late delta). Finite, > 0. */
  weight: number;
  /**
   * The delta's identities (see deltaKeys): if any was already accepted the delta is refused
   * with AggregateDuplicateDelta and not read. All are recorded when it is accepted.
   */
  keys: string | readonly string[];
  /** Aborting rolls the delta back and rejects with AggregateAborted. */
  signal?: AbortSignal;
}

export interface AddReport {
  keys: readonly string[];
  /** The weight as applied: rounded to fp32, the precision the kernel multiplies with. */
  weight: number;
  elements: number;
}

export interface AggregateResult {
  /** The weighted mean delta per tensor, in layout order (views into the accumulator's memory). */
  tensors: Map<string, Float32Array>;
  count: number;
  totalWeight: number;
  keys: readonly string[];
}

/**
 * Accumulates Σ wᵢ·Δᵢ over the deltas of one round, one delta at a time. A delta counts only
 * when its stream ended without throwing (the verified reader's contract); if it throws — a
 * digest mismatch, NaN, truncation, a layout error here, an abort — the sums are restored bit
 * for bit from the undo journal and the error is re-thrown. Calls to add() are serialised.
 */
export class Accumulator {
  readonly layout: ModelLayout;
  readonly #index: Map<string, { index: number; elements: number }>;
  readonly #storage: SumStorage;
  readonly #journal: UndoJournal;
  readonly #accepted = new Set<string>();
  readonly #acceptedInOrder: string[] = [];
  #count = 0;
  #totalWeight = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #closed: "open" | "finished" | "closed" = "open";
  #broken: unknown;

  constructor(layout: ModelLayout, options: AccumulatorOptions = {}) {
    this.#index = indexLayout(layout);
    this.layout = layout.map((t) => ({ name: t.name, shape: [...t.shape] }));
    this.#storage = new SumStorage(
      layout.map((t) => (this.#index.get(t.name) as { elements: number }).elements),
      options.kernel,
    );
    this.#journal = new UndoJournal(
      options.journal,
      this.#storage.views.reduce((n, v) => n + v.length, 0),
    );
  }

  /** Deltas accepted so far. */
  get count(): number {
    return this.#count;
  }

  /** Σ of the accepted weights (each as applied, in fp32). */
  get totalWeight(): number {
    return this.#totalWeight;
  }

  /** The kernel actually in use. */
  get kernel(): KernelKind {
    return this.#storage.kind;
  }

  /** Bytes the undo journal has written to disk so far. */
  get spilledBytes(): number {
    return this.#journal.spilledBytes;
  }

  /** Whether a delta with this identity was accepted. */
  has(key: string): boolean {
    return this.#accepted.has(key);
  }

  /** The running weighted sums, live, in layout order. Read them; do not modify them. */
  sums(): ReadonlyMap<string, Float32Array> {
    return new Map(this.layout.map((t, i) => [t.name, this.#storage.views[i] as Float32Array]));
  }

  /** Streams one delta into the sums; resolves when it is committed. See the class comment. */
  add(chunks: ChunkSource, options: AddOptions): Promise<AddReport> {
    const run = this.#queue.then(() => this.#add(chunks, options));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Waits for deltas in flight, turns the sums into the weighted mean in place (element ÷ Σw,
   * rounded to fp32) and closes the accumulator to further deltas.
   */
  async finish(): Promise<AggregateResult> {
    await this.#queue;
    this.#checkOpen();
    if (this.#count === 0) {
      throw new AggregationError(
        "AggregateEmpty",
        "no delta was accepted this round; nothing to average — keep the round open or record it as failed",
      );
    }
    this.#closed = "finished";
    const total = this.#totalWeight;
    const tensors = new Map<string, Float32Array>();
    this.layout.forEach((t, i) => {
      const view = this.#storage.views[i] as Float32Array;
      for (let j = 0; j < view.length; j++) view[j] = (view[j] as number) / total;
      tensors.set(t.name, view);
    });
    await this.#journal.close();
    return { tensors, count: this.#count, totalWeight: total, keys: [...this.#acceptedInOrder] };
  }

  /** Releases the spill file. The accumulator refuses further deltas. */
  async close(): Promise<void> {
    await this.#queue;
    if (this.#closed === "open") this.#closed = "closed";
    await this.#journal.close();
  }

  #checkOpen() {
    if (this.#broken !== undefined) {
      throw new AggregationError(
        "AggregateClosed",
        "a rollback failed (the undo journal could not be read back), so the sums are not trustworthy; re-aggregate the round from its stored deltas",
        { cause: this.#broken },
      );
    }
    if (this.#closed !== "open") {
      throw new AggregationError("AggregateClosed", `the accumulator is ${this.#closed}; start a new one`);
    }
  }

  async #add(chunks: ChunkSource, options: AddOptions): Promise<AddReport> {
    const keys = typeof options.keys === "string" ? [options.keys] : [...options.keys];
    try {
      this.#checkOpen();
      if (keys.length === 0 || keys.some((k) => typeof k !== "string" || k.length === 0)) {
        throw new AggregationError("AggregateConfigInvalid", "a delta needs at least one non-empty key");
      }
      const duplicate = keys.find((k) => this.#accepted.has(k));
      if (duplicate !== undefined) {
        throw new AggregationError(
          "AggregateDuplicateDelta",
          `a delta with identity '${duplicate}' was already accepted; this delivery is ignored (counted once)`,
        );
      }
      const w32 = Math.fround(options.weight);
      if (!Number.isFinite(options.weight) || !Number.isFinite(w32) || !(w32 > 0)) {
        throw new AggregationError(
          "AggregateWeightInvalid",
          `weight ${options.weight} is not a finite number > 0 (in fp32); weight by the manifest's tokens`,
        );
      }
      options.signal?.throwIfAborted();
      await this.#stream(chunks, w32, options.signal);
      this.#count++;
      this.#totalWeight += w32;
      for (const key of keys) {
        this.#accepted.add(key);
        this.#acceptedInOrder.push(key);
      }
      return { keys, weight: w32, elements: this.#storage.views.reduce((n, v) => n + v.length, 0) };
    } catch (err) {
      // Close a source that was never (fully) read, e.g. a refused duplicate.
      await closeSource(chunks);
      if (options.signal?.aborted && !(err instanceof AggregationError)) {
        throw new AggregationError("AggregateAborted", "the delta was aborted while streaming; rolled back", {
          cause: err,
        });
      }
      throw err;
    }
  }

  async #stream(chunks: ChunkSource, w32: number, signal: AbortSignal | undefined): Promise<void> {
    const journal = this.#journal;
    const storage = this.#storage;
    // After the first committed delta every sum may be non-zero, so old values are journaled;
    // before it, undoing is filling with zeros.
    const withValues = this.#count > 0;
    const nonFinite = (tensor: number, at: number) =>
      new AggregationError(
        "AggregateNonFinite",
        `adding tensor '${this.layout[tensor]?.name}' near element ${at} with weight ${w32} makes a sum NaN or ±Inf; refuse the delta (its values or weight are absurd)`,
      );
    try {
      await walkDelta(
        this.layout,
        this.#index,
        chunks,
        (tensor, at, values) => {
          if (!withValues) {
            journal.save(tensor, at, values.length);
            if (!storage.add(tensor, at, values, w32)) throw nonFinite(tensor, at);
            return undefined;
          }
          // Journal and add piece by piece, so that the old values are still in cache for the kernel.
          const sum = storage.views[tensor] as Float32Array;
          for (let from = 0; from < values.length; from += SCRATCH_ELEMENTS) {
            const piece = values.subarray(from, from + SCRATCH_ELEMENTS);
            const start = at + from;
            journal.save(tensor, start, piece.length, sum.subarray(start, start + piece.length));
            if (!storage.add(tensor, start, piece, w32)) throw nonFinite(tensor, start);
          }
          return journal.relieve();
        },
        signal,
      );
      await journal.commit();
    } catch (err) {
      try {
        await journal.rollback(
          (tensor, at, old) => (storage.views[tensor] as Float32Array).set(old, at),
          (tensor, at, length) => (storage.views[tensor] as Float32Array).fill(0, at, at + length),
          withValues,
        );
      } catch (rollbackError) {
        this.#broken = rollbackError;
      }
      throw err;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Deltas from signed manifests

/**
 * The identities of a delta: its manifest digest (the same delivery twice) and its slot, so
 * that a learner re-signing a different delta for the same round is counted once too. The
 * slot is per learner by default, because a region may run several learners
 * (spec.workload.learnersPerRegion); `per: "region"` makes it one delta per region and round.
 */
export function deltaKeys(manifest: DeltaManifest, per: "learner" | "region" = "learner"): string[] {
  const slot =
    per === "region"
      ? `slot:${manifest.run}/${manifest.round}/${manifest.region}`
      : `slot:${manifest.run}/${manifest.round}/${manifest.region}/${manifest.learner}`;
  return [manifestDigest(manifest), slot];
}

export interface VerifiedAddOptions {
  /** Multiplies the manifest's tokens, e.g. stalenessFactor(...) for a late delta. Default 1. */
  weightFactor?: number;
  per?: "learner" | "region";
  read?: ReadOptions;
  signal?: AbortSignal;
}

/**
 * The hub's path for one delta: verifies the signed manifest against the key bound to the
 * learner, refuses a duplicate or a delta whose tensors are not the model's before reading its
 * data, then streams it — digests checked on the way — into the accumulator, weighted by tokens.
 */
export async function addVerifiedDelta(
  accumulator: Accumulator,
  signed: SignedManifest,
  trustedKey: KeyObject,
  source: ByteSource,
  options: VerifiedAddOptions = {},
): Promise<AddReport> {
  // Signature first, so that a forged manifest is refused as such, not as a duplicate.
  const keys = deltaKeys(verifyManifestSignature(signed, trustedKey), options.per);
  const duplicate = keys.find((k) => accumulator.has(k));
  if (duplicate !== undefined) {
    throw new AggregationError(
      "AggregateDuplicateDelta",
      `a delta with identity '${duplicate}' was already accepted; this delivery is ignored (counted once)`,
    );
  }
  const stream = await openVerifiedDelta(signed, trustedKey, source, options.read);
  checkDeltaTensors(accumulator.layout, deltaLayout(stream.header).tensors);
  return accumulator.add(decodeDelta(stream), {
    weight: stream.manifest.tokens * (options.weightFactor ?? 1),
    keys,
    signal: options.signal,
  });
}
