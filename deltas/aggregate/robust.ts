// Byzantine-robust replacements for the weighted mean: coordinate-wise median and trimmed
// mean (Yin et al. 2018), Krum and Multi-Krum (Blanchard et al. 2017).
//
// Unlike FedAvg these need every delta of the round at once, so they cannot stream: memory is
// (n deltas + 1 result) × the fp32 model. `maxBytes` bounds it and is refused with
// AggregateMemoryLimit — by DeltaCollector before it reads a delta that would not fit, and by
// the functions below before they allocate the result. Work is done tensor by tensor, so the
// only other memory is O(n²) for Krum's distances and O(n) scratch per coordinate.
//
// They ignore token weights on purpose: tokens are whatever a learner signs, so a Byzantine
// region could claim a huge count and steer a weighted rule (Multi-Krum can weight its chosen
// deltas with `weighted: true`). Values must be finite: decodeDelta and DeltaCollector refuse
// NaN and ±Inf.
import { AggregationError } from "./errors.ts";
import { indexLayout, type ModelLayout, modelBytes, shapeText } from "./layout.ts";
import { type ChunkSource, closeSource, walkDelta } from "./stream.ts";

export interface DeltaArrays {
  /** Identities, as for the accumulator (deltaKeys), for reports and duplicate checks. */
  keys?: readonly string[];
  /** Tokens; only Multi-Krum with `weighted: true` uses it. */
  weight?: number;
  /** Every model tensor, full length. */
  tensors: ReadonlyMap<string, Float32Array>;
}

export interface RobustOptions {
  /** Refuse when (deltas + 1 result) × model bytes would exceed this. Default: no limit. */
  maxBytes?: number;
}

type Layout = { name: string; elements: number }[];

function prepare(layout: ModelLayout, deltas: readonly DeltaArrays[], options: RobustOptions): Layout {
  const index = indexLayout(layout);
  checkMemory(layout, deltas.length, options.maxBytes);
  const tensors = layout.map((t) => ({
    name: t.name,
    elements: (index.get(t.name) as { elements: number }).elements,
  }));
  deltas.forEach((delta, d) => {
    for (const t of tensors) {
      const values = delta.tensors.get(t.name);
      if (!values) {
        throw new AggregationError("AggregateTensorMissing", `delta #${d} lacks tensor '${t.name}'`);
      }
      if (values.length !== t.elements) {
        throw new AggregationError(
          "AggregateShapeMismatch",
          `delta #${d}'s tensor '${t.name}' has ${values.length} elements, the model ${t.elements}`,
        );
      }
    }
  });
  return tensors;
}

function checkMemory(layout: ModelLayout, deltas: number, maxBytes: number | undefined) {
  if (maxBytes === undefined) return;
  const needed = (deltas + 1) * modelBytes(layout);
  if (needed > maxBytes) {
    throw new AggregationError(
      "AggregateMemoryLimit",
      `${deltas} deltas and the result need ${needed} bytes, over maxBytes ${maxBytes}; raise the limit, aggregate fewer regions, or use the streaming mean`,
    );
  }
}

function tooFew(message: string): AggregationError {
  return new AggregationError("AggregateTooFewDeltas", message);
}

/** Sorts a small array in place (insertion sort: n is the number of regions). */
function sortSmall(a: Float64Array, n: number) {
  for (let i = 1; i < n; i++) {
    const x = a[i] as number;
    let j = i - 1;
    while (j >= 0 && (a[j] as number) > x) {
      a[j + 1] = a[j] as number;
      j--;
    }
    a[j + 1] = x;
  }
}

/**
 * Per coordinate, the mean of the values left after dropping the `trim` smallest and `trim`
 * largest (computed in float64, rounded to fp32). Needs n > 2·trim; trim = 0 is the plain
 * unweighted mean. Tolerates up to `trim` arbitrary deltas per coordinate.
 */
export function trimmedMean(
  layout: ModelLayout,
  deltas: readonly DeltaArrays[],
  options: RobustOptions & { trim: number },
): Map<string, Float32Array> {
  const n = deltas.length;
  const k = options.trim;
  if (!Number.isSafeInteger(k) || k < 0) {
    throw new AggregationError("AggregateConfigInvalid", `trim ${k} must be an integer ≥ 0`);
  }
  if (n === 0 || n <= 2 * k) {
    throw tooFew(`trimming ${k} from each end needs more than ${2 * k} deltas, got ${n}`);
  }
  return coordinatewise(prepare(layout, deltas, options), deltas, (sorted) => {
    let sum = 0;
    for (let i = k; i < n - k; i++) sum += sorted[i] as number;
    return sum / (n - 2 * k);
  });
}

/** Number of deltas a trimFraction (FederatedRun spec) drops at each end: ⌊fraction · n⌋. */
export function trimCount(deltas: number, fraction: number): number {
  if (!(fraction >= 0 && fraction < 0.5)) {
    throw new AggregationError("AggregateConfigInvalid", `trimFraction ${fraction} must be in [0, 0.5)`);
  }
  return Math.floor(fraction * deltas);
}

/**
 * Per coordinate, the median (for even n the mean of the two middle values, in float64,
 * rounded to fp32). Tolerates fewer than n/2 arbitrary deltas per coordinate.
 */
export function coordinateMedian(
  layout: ModelLayout,
  deltas: readonly DeltaArrays[],
  options: RobustOptions = {},
): Map<string, Float32Array> {
  const n = deltas.length;
  if (n === 0) throw tooFew("the median of no deltas is undefined");
  const mid = n >> 1;
  return coordinatewise(prepare(layout, deltas, options), deltas, (sorted) =>
    n % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2,
  );
}

function coordinatewise(
  tensors: Layout,
  deltas: readonly DeltaArrays[],
  reduce: (sorted: Float64Array) => number,
): Map<string, Float32Array> {
  const n = deltas.length;
  const scratch = new Float64Array(n);
  const out = new Map<string, Float32Array>();
  for (const t of tensors) {
    const inputs = deltas.map((d) => d.tensors.get(t.name) as Float32Array);
    const result = new Float32Array(t.elements);
    for (let i = 0; i < t.elements; i++) {
      for (let d = 0; d < n; d++) scratch[d] = (inputs[d] as Float32Array)[i] as number;
      sortSmall(scratch, n);
      result[i] = reduce(scratch);
    }
    out.set(t.name, result);
  }
  return out;
}

export interface KrumOptions extends RobustOptions {
  /** f: how many Byzantine deltas to tolerate. Needs n ≥ 2f + 3. */
  f: number;
  /** Multi-Krum m: how many best-scored deltas are averaged. Default 1 (Krum). At most n − f. */
  m?: number;
  /** Average the selected deltas weighted by their `weight` instead of equally. Default false. */
  weighted?: boolean;
}

export interface KrumResult {
  /** Indices (into the input) of the selected deltas, best score first. */
  selected: number[];
  /** Every delta's score: the sum of squared L2 distances to its n − f − 2 nearest others. */
  scores: number[];
  /** The selected delta (Krum) or the mean of the selected (Multi-Krum). */
  tensors: Map<string, Float32Array>;
}

/**
 * Krum (Blanchard et al., NeurIPS 2017): scores each delta by the sum of squared Euclidean
 * distances (over the whole model) to its n − f − 2 closest other deltas and keeps the one
 * with the lowest score; Multi-Krum averages the m lowest. Requires n ≥ 2f + 3. Ties go to the
 * lower index, so the result is deterministic. Distances are summed in float64.
 */
export function krum(layout: ModelLayout, deltas: readonly DeltaArrays[], options: KrumOptions): KrumResult {
  const n = deltas.length;
  const { f } = options;
  const m = options.m ?? 1;
  if (!Number.isSafeInteger(f) || f < 0) {
    throw new AggregationError("AggregateConfigInvalid", `f ${f} must be an integer ≥ 0`);
  }
  if (n < 2 * f + 3) {
    throw tooFew(`Krum with f = ${f} needs at least ${2 * f + 3} deltas (n ≥ 2f + 3), got ${n}`);
  }
  if (!Number.isSafeInteger(m) || m < 1 || m > n - f) {
    throw new AggregationError(
      "AggregateConfigInvalid",
      `Multi-Krum m ${m} must be in [1, n − f = ${n - f}]`,
    );
  }
  const tensors = prepare(layout, deltas, options);
  const distance = Array.from({ length: n }, () => new Float64Array(n));
  for (const t of tensors) {
    const inputs = deltas.map((d) => d.tensors.get(t.name) as Float32Array);
    for (let a = 0; a < n; a++) {
      const x = inputs[a] as Float32Array;
      for (let b = a + 1; b < n; b++) {
        const y = inputs[b] as Float32Array;
        let sum = 0;
        for (let i = 0; i < x.length; i++) {
          const diff = (x[i] as number) - (y[i] as number);
          sum += diff * diff;
        }
        (distance[a] as Float64Array)[b] = ((distance[a] as Float64Array)[b] as number) + sum;
      }
    }
  }
  for (let a = 0; a < n; a++)
    for (let b = a + 1; b < n; b++) {
      const d = (distance[a] as Float64Array)[b] as number;
      if (!Number.isFinite(d)) {
        throw new AggregationError(
          "AggregateNonFinite",
          `the distance between deltas #${a} and #${b} is ${d}`,
        );
      }
      (distance[b] as Float64Array)[a] = d;
    }
  const neighbours = n - f - 2;
  const scores = distance.map((row, a) => {
    const others = [...row].filter((_, b) => b !== a).sort((x, y) => x - y);
    return others.slice(0, neighbours).reduce((s, x) => s + x, 0);
  });
  const order = scores
    .map((_, i) => i)
    .sort((a, b) => (scores[a] as number) - (scores[b] as number) || a - b);
  const selected = order.slice(0, m);
  const weights = selected.map((i) => {
    if (!options.weighted) return 1;
    const w = deltas[i]?.weight;
    if (w === undefined || !(Number.isFinite(w) && w > 0)) {
      throw new AggregationError(
        "AggregateWeightInvalid",
        `delta #${i} has no finite weight > 0 to weight by`,
      );
    }
    return w;
  });
  const total = weights.reduce((s, w) => s + w, 0);
  const out = new Map<string, Float32Array>();
  for (const t of tensors) {
    const inputs = selected.map((i) => (deltas[i] as DeltaArrays).tensors.get(t.name) as Float32Array);
    if (inputs.length === 1) {
      out.set(t.name, new Float32Array(inputs[0] as Float32Array));
      continue;
    }
    const result = new Float32Array(t.elements);
    for (let i = 0; i < t.elements; i++) {
      let sum = 0;
      for (let s = 0; s < inputs.length; s++)
        sum += (weights[s] as number) * ((inputs[s] as Float32Array)[i] as number);
      result[i] = sum / total;
    }
    out.set(t.name, result);
  }
  return { selected, scores, tensors: out };
}

// ---------------------------------------------------------------------------------------------
// Collecting deltas for a robust rule

export interface CollectorOptions {
  /** Bound on (deltas held + 1 result) × fp32 model bytes. Required: robust rules hold every delta. */
  maxBytes: number;
}

/**
 * Holds a round's deltas in memory for a robust rule, with the accumulator's guarantees: a
 * delta counts only if its stream completes (a failed one is dropped, nothing else changes),
 * duplicates by key are refused, every tensor must match the layout, values must be finite,
 * and a delta that would exceed maxBytes is refused before any of it is read.
 */
export class DeltaCollector {
  readonly layout: ModelLayout;
  readonly #index: Map<string, { index: number; elements: number }>;
  readonly #maxBytes: number;
  readonly #deltas: DeltaArrays[] = [];
  readonly #accepted = new Set<string>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(layout: ModelLayout, options: CollectorOptions) {
    this.#index = indexLayout(layout);
    this.layout = layout.map((t) => ({ name: t.name, shape: [...t.shape] }));
    if (!(options.maxBytes > 0)) {
      throw new AggregationError("AggregateConfigInvalid", "maxBytes must be > 0");
    }
    this.#maxBytes = options.maxBytes;
  }

  get deltas(): readonly DeltaArrays[] {
    return this.#deltas;
  }

  has(key: string): boolean {
    return this.#accepted.has(key);
  }

  add(
    chunks: ChunkSource,
    options: { keys: string | readonly string[]; weight?: number; signal?: AbortSignal },
  ): Promise<void> {
    const run = this.#queue.then(() => this.#add(chunks, options));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #add(
    chunks: ChunkSource,
    options: { keys: string | readonly string[]; weight?: number; signal?: AbortSignal },
  ): Promise<void> {
    const keys = typeof options.keys === "string" ? [options.keys] : [...options.keys];
    try {
      if (keys.length === 0) throw new AggregationError("AggregateConfigInvalid", "a delta needs a key");
      const duplicate = keys.find((k) => this.#accepted.has(k));
      if (duplicate !== undefined) {
        throw new AggregationError(
          "AggregateDuplicateDelta",
          `a delta with identity '${duplicate}' was already accepted; this delivery is ignored (counted once)`,
        );
      }
      checkMemory(this.layout, this.#deltas.length + 1, this.#maxBytes);
      const staged = new Map<string, Float32Array>();
      await walkDelta(
        this.layout,
        this.#index,
        chunks,
        (tensor, at, values) => {
          const t = this.layout[tensor] as { name: string; shape: readonly number[] };
          for (let i = 0; i < values.length; i++) {
            if (!Number.isFinite(values[i])) {
              throw new AggregationError(
                "AggregateNonFinite",
                `tensor '${t.name}' ${shapeText(t.shape)} has ${values[i]} at element ${at + i}; refuse the delta`,
              );
            }
          }
          let target = staged.get(t.name);
          if (!target) {
            target = new Float32Array((this.#index.get(t.name) as { elements: number }).elements);
            staged.set(t.name, target);
          }
          target.set(values, at);
        },
        options.signal,
      );
      this.#deltas.push({ keys, weight: options.weight, tensors: staged });
      for (const key of keys) this.#accepted.add(key);
    } catch (err) {
      await closeSource(chunks);
      throw err;
    }
  }

  trimmedMean(trim: number): Map<string, Float32Array> {
    return trimmedMean(this.layout, this.#deltas, { trim, maxBytes: this.#maxBytes });
  }

  coordinateMedian(): Map<string, Float32Array> {
    return coordinateMedian(this.layout, this.#deltas, { maxBytes: this.#maxBytes });
  }

  krum(options: Omit<KrumOptions, "maxBytes">): KrumResult {
    return krum(this.layout, this.#deltas, { ...options, maxBytes: this.#maxBytes });
  }
}
