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
import { AggregationError, isAggregationError } from "./errors.ts";
import { type JournalOptions, UndoJournal } from "./journal.ts";
import { type KernelKind, MAX_FUSED, SCRATCH_ELEMENTS, SumStorage } from "./kernel.ts";
import { checkDeltaTensors, indexLayout, type ModelLayout } from "./layout.ts";
import { type ChunkSource, closeSource, validatedChunks, type WalkedChunk } from "./stream.ts";

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

/** One delta of an addAll(): its chunks, weight and identities, as in add(). */
export interface DeltaToAdd {
  chunks: ChunkSource;
  weight: number;
  keys: string | readonly string[];
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
    return this.addAll([{ chunks, weight: options.weight, keys: options.keys }], {
      signal: options.signal,
    }).then((reports) => reports[0] as AddReport);
  }

  /**
   * Streams several deltas into the sums in one pass, all or nothing: each range of sums is read
   * and written once for all of them, where add() would read and write it once per delta. The
   * sums are bit-identical to add() called for each in the order given. The deltas must list
   * their tensors in the same order (else AggregateOrderMismatch). If any of them fails, the
   * whole group is rolled back and the error re-thrown; it may not say which delta was at fault
   * (an AggregateNonFinite sum), so add the group one at a time to find out (addVerifiedDeltas
   * does).
   */
  addAll(deltas: readonly DeltaToAdd[], options: { signal?: AbortSignal } = {}): Promise<AddReport[]> {
    const run = this.#queue.then(() => this.#addAll(deltas, options.signal));
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

  async #addAll(deltas: readonly DeltaToAdd[], signal: AbortSignal | undefined): Promise<AddReport[]> {
    const keySets = deltas.map((d) => (typeof d.keys === "string" ? [d.keys] : [...d.keys]));
    try {
      this.#checkOpen();
      if (deltas.length === 0)
        throw new AggregationError("AggregateConfigInvalid", "addAll needs at least one delta");
      const seen = new Set<string>();
      for (const keys of keySets) {
        if (keys.length === 0 || keys.some((k) => typeof k !== "string" || k.length === 0)) {
          throw new AggregationError("AggregateConfigInvalid", "a delta needs at least one non-empty key");
        }
        const duplicate = keys.find((k) => this.#accepted.has(k) || seen.has(k));
        if (duplicate !== undefined) {
          throw new AggregationError(
            "AggregateDuplicateDelta",
            seen.has(duplicate)
              ? `two deltas of this group have the identity '${duplicate}'; the group is refused — add each delivery once`
              : `a delta with identity '${duplicate}' was already accepted; this delivery is ignored (counted once)`,
          );
        }
        for (const k of keys) seen.add(k);
      }
      const w32s = deltas.map(({ weight }) => {
        const w32 = Math.fround(weight);
        if (!Number.isFinite(weight) || !Number.isFinite(w32) || !(w32 > 0)) {
          throw new AggregationError(
            "AggregateWeightInvalid",
            `weight ${weight} is not a finite number > 0 (in fp32); weight by the manifest's tokens`,
          );
        }
        return w32;
      });
      signal?.throwIfAborted();
      await this.#stream(
        deltas.map((d) => d.chunks),
        w32s,
        signal,
      );
      const elements = this.#storage.views.reduce((n, v) => n + v.length, 0);
      return keySets.map((keys, i) => {
        const w32 = w32s[i] as number;
        this.#count++;
        this.#totalWeight += w32;
        for (const key of keys) {
          this.#accepted.add(key);
          this.#acceptedInOrder.push(key);
        }
        return { keys, weight: w32, elements };
      });
    } catch (err) {
      // Close sources that were never (fully) read, e.g. a refused duplicate.
      await Promise.all(deltas.map((d) => closeSource(d.chunks)));
      if (signal?.aborted && !(err instanceof AggregationError)) {
        throw new AggregationError("AggregateAborted", "the delta was aborted while streaming; rolled back", {
          cause: err,
        });
      }
      throw err;
    }
  }

  async #stream(sources: readonly ChunkSource[], w32s: readonly number[], signal: AbortSignal | undefined) {
    const journal = this.#journal;
    const storage = this.#storage;
    // After the first committed delta every sum may be non-zero, so old values are journaled;
    // before it, undoing is filling with zeros.
    const withValues = this.#count > 0;
    const nonFinite = (tensor: number, at: number) =>
      new AggregationError(
        "AggregateNonFinite",
        w32s.length === 1
          ? `adding tensor '${this.layout[tensor]?.name}' near element ${at} with weight ${w32s[0]} makes a sum NaN or ±Inf; refuse the delta (its values or weight are absurd)`
          : `adding tensor '${this.layout[tensor]?.name}' near element ${at} from ${w32s.length} deltas (weights ${w32s.join(", ")}) makes a sum NaN or ±Inf; add them one at a time to find the delta to refuse`,
      );
    const walkers = sources.map((chunks) => validatedChunks(this.layout, this.#index, chunks, signal));
    try {
      for await (const { tensor, at, pieces } of alignedPieces(walkers)) {
        if (!withValues) {
          journal.save(tensor, at, (pieces[0] as Float32Array).length);
          if (!storage.addMany(tensor, at, pieces, w32s)) throw nonFinite(tensor, at);
          continue;
        }
        // Journal and add piece by piece, so that the old values are still in cache for the kernel.
        const sum = storage.views[tensor] as Float32Array;
        const length = (pieces[0] as Float32Array).length;
        for (let from = 0; from < length; from += SCRATCH_ELEMENTS) {
          const n = Math.min(SCRATCH_ELEMENTS, length - from);
          const start = at + from;
          journal.save(tensor, start, n, sum.subarray(start, start + n));
          const here = pieces.map((p) => p.subarray(from, from + n));
          if (!storage.addMany(tensor, start, here, w32s)) throw nonFinite(tensor, start);
        }
        const pending = journal.relieve();
        if (pending) await pending;
      }
      await journal.commit();
    } catch (err) {
      await Promise.all(walkers.map((w) => w.return(undefined).catch(() => undefined)));
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

/**
 * Walks several validated deltas in step: yields the longest run of elements that every one of
 * them has at hand, at the same tensor and offset, as one piece per delta. Deltas whose tensors
 * come in different orders are refused with AggregateOrderMismatch.
 */
async function* alignedPieces(
  walkers: readonly AsyncGenerator<WalkedChunk>[],
): AsyncGenerator<{ tensor: number; at: number; pieces: Float32Array[] }> {
  const current: (WalkedChunk | undefined)[] = walkers.map(() => undefined);
  const used = walkers.map(() => 0);
  const finished = walkers.map(() => false);
  for (;;) {
    const empty = walkers
      .map((_, k) => k)
      .filter((k) => !finished[k] && (current[k]?.values.length ?? 0) === (used[k] as number));
    if (empty.length > 0) {
      const next = await Promise.all(empty.map((k) => (walkers[k] as AsyncGenerator<WalkedChunk>).next()));
      next.forEach((result, j) => {
        const k = empty[j] as number;
        current[k] = result.done ? undefined : result.value;
        used[k] = 0;
        if (result.done) finished[k] = true;
      });
      continue;
    }
    if (finished.every(Boolean)) return;
    const live = current.map((c, k) => (finished[k] ? undefined : c));
    const first = live[0];
    if (
      !first ||
      live.some(
        (c, k) =>
          !c || c.tensor !== first.tensor || c.at + (used[k] as number) !== first.at + (used[0] as number),
      )
    ) {
      throw new AggregationError(
        "AggregateOrderMismatch",
        `the deltas added in one pass are not at the same place (${live
          .map((c, k) => (c ? `tensor #${c.tensor} element ${c.at + (used[k] as number)}` : "ended"))
          .join(" / ")}); add them one at a time`,
      );
    }
    const n = Math.min(...live.map((c, k) => (c as WalkedChunk).values.length - (used[k] as number)));
    yield {
      tensor: first.tensor,
      at: first.at + (used[0] as number),
      pieces: live.map((c, k) =>
        (c as WalkedChunk).values.subarray(used[k] as number, (used[k] as number) + n),
      ),
    };
    for (let k = 0; k < used.length; k++) used[k] = (used[k] as number) + n;
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
  const delta = await openVerifiedToAdd(accumulator, signed, trustedKey, source, options);
  return accumulator.add(delta.chunks, { ...delta, signal: options.signal });
}

/** addVerifiedDelta's checks, up to an open delta ready for Accumulator.add or addAll. */
async function openVerifiedToAdd(
  accumulator: Accumulator,
  signed: SignedManifest,
  trustedKey: KeyObject,
  source: ByteSource,
  options: VerifiedAddOptions,
): Promise<DeltaToAdd> {
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
  return {
    chunks: decodeDelta(stream),
    weight: stream.manifest.tokens * (options.weightFactor ?? 1),
    keys,
  };
}

/** One signed delta for addVerifiedDeltas. */
export interface VerifiedDelivery {
  signed: SignedManifest;
  /** The key bound to the learner (as for addVerifiedDelta). */
  trustedKey: KeyObject;
  /** Opens the delta's bytes; called a second time if its group is re-read one delta at a time. */
  open: () => ByteSource | Promise<ByteSource>;
  /** Multiplies the manifest's tokens, e.g. stalenessFactor(...) for a late delta. Default 1. */
  weightFactor?: number;
  /** This delivery's read options (e.g. its object's size as expectedTotalBytes), over the shared ones. */
  read?: ReadOptions;
}

/**
 * The hub's path for a round's deltas: the same checks as addVerifiedDelta for each, but up to
 * MAX_FUSED deltas at a time stream into the sums in one pass (Accumulator.addAll), in the order
 * given, so the sums are bit-identical to adding them one by one. If a group fails it is rolled
 * back and re-read one delta at a time, so that the error thrown is the one addVerifiedDelta
 * gives for the first delta at fault, with the deltas before it accepted.
 */
export async function addVerifiedDeltas(
  accumulator: Accumulator,
  deliveries: readonly VerifiedDelivery[],
  options: Omit<VerifiedAddOptions, "weightFactor"> = {},
): Promise<AddReport[]> {
  const reports: AddReport[] = [];
  const optionsOf = (d: VerifiedDelivery): VerifiedAddOptions => ({
    ...options,
    weightFactor: d.weightFactor,
    read: d.read || options.read ? { ...options.read, ...d.read } : undefined,
  });
  const one = async (d: VerifiedDelivery) =>
    addVerifiedDelta(accumulator, d.signed, d.trustedKey, await d.open(), optionsOf(d));
  for (let first = 0; first < deliveries.length; first += MAX_FUSED) {
    const group = deliveries.slice(first, first + MAX_FUSED);
    if (group.length === 1) {
      reports.push(await one(group[0] as VerifiedDelivery));
      continue;
    }
    const sources: ByteSource[] = [];
    try {
      const opened: DeltaToAdd[] = [];
      for (const d of group) {
        const source = await d.open();
        sources.push(source);
        opened.push(await openVerifiedToAdd(accumulator, d.signed, d.trustedKey, source, optionsOf(d)));
      }
      reports.push(...(await accumulator.addAll(opened, { signal: options.signal })));
    } catch (err) {
      await Promise.all(sources.map((source) => closeSource(source)));
      if (options.signal?.aborted || isAggregationError(err, "AggregateClosed")) throw err;
      for (const d of group) reports.push(await one(d));
    }
  }
  return reports;
}
