// The outer step: the averaged delta of a round becomes the next global model.
//
// Sign convention. A learner's delta is Δᵢ = θᵢ − θ (its trained weights minus the global model
// it started from: new − base, as docs/deltas.md defines it). The accumulator averages those:
// Δ̄ = Σ wᵢΔᵢ / Σ wᵢ. The outer optimiser sees the pseudo-gradient g = −Δ̄ (DiLoCo's
// θ − θᵢ, which points uphill like a gradient) and runs SGD on it, PyTorch's
// `SGD(lr=η, momentum=μ, nesterov=…, dampening=0)`:
//
//     m ← μ·m + g                 (m starts at 0, so the first step sets m = g as PyTorch does)
//     θ ← θ − η·(g + μ·m)         Nesterov (DiLoCo: η = 0.7, μ = 0.9)
//     θ ← θ − η·m                 heavy ball (nesterov = false; FedAvgM)
//
// With μ = 0 both reduce to θ ← θ + η·Δ̄; with η = 1 that is plain FedAvg, θ ← θ + Δ̄ (the
// weighted mean of the learners' models).
//
// Arithmetic: each stored value is computed in float64 from fp32 inputs and rounded to fp32
// once (m, then θ). PyTorch rounds after every operation instead, so the two agree to a few
// ulps, not bit for bit; our own results are deterministic and survive a checkpoint exactly.
// The momentum buffer m (one fp32 copy of the model, allocated at the first step when μ > 0)
// is saved with saveState() as safetensors and read back with OuterOptimizer.restore().
import type { Algorithm } from "../../crds/types.generated.ts";
import {
  type ByteSource,
  openSafetensors,
  type ReadOptions,
  type SafetensorsStream,
  type TensorSource,
  writeSafetensors,
} from "../safetensors.ts";
import { AggregationError } from "./errors.ts";
import { indexLayout, type ModelLayout, shapeText } from "./layout.ts";

export interface OuterConfig {
  /** η. Finite, > 0. */
  learningRate: number;
  /** μ in [0, 1). 0 disables the momentum buffer. */
  momentum: number;
  nesterov: boolean;
}

/** DiLoCo's outer optimiser (arXiv 2311.08105, also OpenDiLoCo and PRIME). */
export const DILOCO_OUTER: OuterConfig = { learningRate: 0.7, momentum: 0.9, nesterov: true };
/** Plain FedAvg: the new global model is the weighted mean of the learners' models. */
export const FEDAVG_OUTER: OuterConfig = { learningRate: 1, momentum: 0, nesterov: false };

/** The outer optimiser a FederatedRun's spec.algorithm asks for (defaults as in docs/api.md). */
export function outerConfig(algorithm: Pick<Algorithm, "type" | "fedAvg" | "diloco">): OuterConfig {
  if (algorithm.type === "DiLoCo") {
    return {
      learningRate: algorithm.diloco?.outerLearningRate ?? DILOCO_OUTER.learningRate,
      momentum: algorithm.diloco?.outerMomentum ?? DILOCO_OUTER.momentum,
      nesterov: algorithm.diloco?.nesterov ?? DILOCO_OUTER.nesterov,
    };
  }
  return { learningRate: algorithm.fedAvg?.serverLearningRate ?? 1, momentum: 0, nesterov: false };
}

export const OUTER_STATE_FORMAT = "sovereign-outer-state/1";
const META_FORMAT = "sovereign.format";
const META_STEPS = "sovereign.outer.steps";
const META_LR = "sovereign.outer.learningRate";
const META_MOMENTUM = "sovereign.outer.momentum";
const META_NESTEROV = "sovereign.outer.nesterov";

function checkConfig(config: OuterConfig): OuterConfig {
  if (!(Number.isFinite(config.learningRate) && config.learningRate > 0)) {
    throw new AggregationError(
      "AggregateConfigInvalid",
      `outer learning rate ${config.learningRate} must be a finite number > 0`,
    );
  }
  if (!(Number.isFinite(config.momentum) && config.momentum >= 0 && config.momentum < 1)) {
    throw new AggregationError(
      "AggregateConfigInvalid",
      `outer momentum ${config.momentum} must be in [0, 1)`,
    );
  }
  return { learningRate: config.learningRate, momentum: config.momentum, nesterov: config.nesterov === true };
}

export class OuterOptimizer {
  readonly layout: ModelLayout;
  readonly config: OuterConfig;
  readonly #elements: number[];
  #momentum: Float32Array[] | undefined;
  #steps: number;

  constructor(
    layout: ModelLayout,
    config: OuterConfig,
    state?: { steps: number; momentum?: Float32Array[] },
  ) {
    const index = indexLayout(layout);
    this.layout = layout.map((t) => ({ name: t.name, shape: [...t.shape] }));
    this.#elements = layout.map((t) => (index.get(t.name) as { elements: number }).elements);
    this.config = checkConfig(config);
    this.#steps = state?.steps ?? 0;
    this.#momentum = state?.momentum;
  }

  /** Outer steps applied so far (restored with the state). */
  get steps(): number {
    return this.#steps;
  }

  /** The momentum buffer of a tensor, or undefined before the first step or when μ = 0. */
  momentum(name: string): Float32Array | undefined {
    const i = this.layout.findIndex((t) => t.name === name);
    return i < 0 ? undefined : this.#momentum?.[i];
  }

  /**
   * Applies one outer step to `model` in place, from the round's weighted mean delta
   * (new − base). Both maps must hold every layout tensor with the right element count.
   */
  step(model: ReadonlyMap<string, Float32Array>, averageDelta: ReadonlyMap<string, Float32Array>): void {
    const thetas = this.#tensors(model, "model");
    const deltas = this.#tensors(averageDelta, "average delta");
    const step = this.beginStep();
    this.layout.forEach((t, i) => {
      step.apply(t.name, thetas[i] as Float32Array, deltas[i] as Float32Array);
    });
    step.done();
  }

  /**
   * One outer step streamed from the current global model into the next: safetensors sources
   * (for writeSafetensors) that each read one tensor of `base` into memory, step it with
   * `averageDelta` and hand it on, so a model of any size goes through the step without being
   * held whole. `base` must hold the layout's tensors in its file order (a layout taken from its
   * header). Before the last tensor's bytes go out, `base` is read to its end, where a verifying
   * source checks its digest: a writer fed by these never completes a model stepped from a bad
   * base. The step is counted (done()) then.
   */
  streamStep(base: SafetensorsStream, averageDelta: ReadonlyMap<string, Float32Array>): TensorSource[] {
    const step = this.beginStep();
    const chunks = base.chunks();
    const last = this.layout.length - 1;
    const modelFormatInvalid = (message: string) =>
      Object.assign(new Error(message), { reason: "ModelFormatInvalid" });
    const stepped = async function* (name: string, elements: number, isLast: boolean) {
      const theta = new Float32Array(elements);
      const bytes = new Uint8Array(theta.buffer);
      for (;;) {
        const next = await chunks.next();
        if (next.done || next.value.tensor.name !== name) {
          throw modelFormatInvalid(
            `the global model changed while it was read: expected tensor '${name}' next`,
          );
        }
        bytes.set(next.value.bytes, next.value.offset);
        if (next.value.last) break;
      }
      if (isLast && !(await chunks.next()).done) {
        throw modelFormatInvalid("the global model holds more than its header lists");
      }
      step.apply(name, theta, averageDelta.get(name) as Float32Array);
      if (isLast) step.done();
      yield bytes;
    };
    return this.layout.map((t, i) => ({
      name: t.name,
      dtype: "F32" as const,
      shape: t.shape,
      data: () => stepped(t.name, this.#elements[i] as number, i === last),
    }));
  }

  /**
   * One outer step applied tensor by tensor, so that the global model can be streamed from
   * storage and written back one tensor at a time (memory: the mean delta, the momentum and one
   * tensor of θ). apply() every layout tensor exactly once, then done(), which counts the step.
   * A step abandoned halfway leaves the in-memory momentum half-updated: restore the saved state.
   */
  beginStep(): { apply(name: string, theta: Float32Array, delta: Float32Array): void; done(): void } {
    const { learningRate: lr, momentum: mu, nesterov } = this.config;
    if (mu > 0) this.#momentum ??= this.#elements.map((n) => new Float32Array(n));
    const applied = new Uint8Array(this.layout.length);
    return {
      apply: (name, theta, delta) => {
        const t = this.layout.findIndex((x) => x.name === name);
        if (t < 0) {
          throw new AggregationError("AggregateTensorUnexpected", `the model has no tensor '${name}'`);
        }
        if (applied[t])
          throw new AggregationError("AggregateChunkInvalid", `tensor '${name}' was already stepped`);
        const elements = this.#elements[t] as number;
        if (theta.length !== elements || delta.length !== elements) {
          throw new AggregationError(
            "AggregateShapeMismatch",
            `tensor '${name}' needs ${elements} elements, got θ ${theta.length} and Δ̄ ${delta.length}`,
          );
        }
        applied[t] = 1;
        const m = this.#momentum?.[t];
        if (!m) {
          for (let i = 0; i < theta.length; i++) theta[i] = (theta[i] as number) + lr * (delta[i] as number);
          return;
        }
        for (let i = 0; i < theta.length; i++) {
          const g = -(delta[i] as number);
          const next = Math.fround(mu * (m[i] as number) + g);
          m[i] = next;
          theta[i] = (theta[i] as number) - lr * (nesterov ? g + mu * next : next);
        }
      },
      done: () => {
        const missing = this.layout.findIndex((_, t) => !applied[t]);
        if (missing >= 0) {
          throw new AggregationError(
            "AggregateTensorMissing",
            `tensor '${this.layout[missing]?.name}' was not stepped; the step is incomplete`,
          );
        }
        this.#steps++;
      },
    };
  }

  #tensors(map: ReadonlyMap<string, Float32Array>, what: string): Float32Array[] {
    return this.layout.map((t, i) => {
      const values = map.get(t.name);
      if (!values) {
        throw new AggregationError("AggregateTensorMissing", `the ${what} lacks tensor '${t.name}'`);
      }
      if (values.length !== this.#elements[i]) {
        throw new AggregationError(
          "AggregateShapeMismatch",
          `the ${what}'s tensor '${t.name}' has ${values.length} elements, not the ${this.#elements[i]} of ${shapeText(t.shape)}`,
        );
      }
      return values;
    });
  }

  /**
   * The state as a safetensors file: the momentum buffers under the model's tensor names (none
   * before the first step or when μ = 0) and, in `__metadata__`, the step count and the
   * configuration. `metadata` adds the caller's entries (e.g. the round and the global model
   * digest, so that θ, m and the round are saved together); keys starting with `sovereign.`
   * are reserved.
   */
  saveState(metadata: Record<string, string> = {}): AsyncGenerator<Uint8Array> {
    for (const key of Object.keys(metadata)) {
      if (key.startsWith("sovereign.")) {
        throw new AggregationError("AggregateConfigInvalid", `metadata key '${key}' is reserved`);
      }
    }
    const momentum = this.#momentum;
    return writeSafetensors(
      momentum
        ? this.layout.map((t, i) => {
            const m = momentum[i] as Float32Array;
            return {
              name: t.name,
              dtype: "F32" as const,
              shape: t.shape,
              data: new Uint8Array(m.buffer, m.byteOffset, m.byteLength),
            };
          })
        : [],
      {
        metadata: {
          ...metadata,
          [META_FORMAT]: OUTER_STATE_FORMAT,
          [META_STEPS]: String(this.#steps),
          [META_LR]: String(this.config.learningRate),
          [META_MOMENTUM]: String(this.config.momentum),
          [META_NESTEROV]: String(this.config.nesterov),
        },
      },
    );
  }

  /**
   * Reads a state written by saveState(), streaming the momentum into fresh buffers. Refuses
   * (AggregateStateInvalid) a file of another format, a momentum or Nesterov setting other
   * than `config`'s (the buffer means something else under them; the learning rate may differ),
   * or tensors that are not exactly the layout's. Resolves to the optimiser and the caller's
   * metadata.
   */
  static async restore(
    source: ByteSource,
    layout: ModelLayout,
    config: OuterConfig,
    options?: ReadOptions,
  ): Promise<{ optimizer: OuterOptimizer; metadata: Record<string, string> }> {
    const checked = checkConfig(config);
    const stream = await openSafetensors(source, options);
    const meta = stream.header.metadata ?? {};
    const invalid = (message: string) =>
      new AggregationError(
        "AggregateStateInvalid",
        `${message}; restore the state saved for this run's model and algorithm`,
      );
    if (meta[META_FORMAT] !== OUTER_STATE_FORMAT)
      throw invalid(`the file is not a ${OUTER_STATE_FORMAT} state`);
    const steps = Number(meta[META_STEPS]);
    if (!Number.isSafeInteger(steps) || steps < 0)
      throw invalid(`the step count '${meta[META_STEPS]}' is invalid`);
    if (
      Number(meta[META_MOMENTUM]) !== checked.momentum ||
      meta[META_NESTEROV] !== String(checked.nesterov)
    ) {
      throw invalid(
        `the state was saved with momentum ${meta[META_MOMENTUM]}, nesterov ${meta[META_NESTEROV]}, not ${checked.momentum}, ${checked.nesterov}`,
      );
    }
    const index = indexLayout(layout);
    const tensors = stream.header.tensors;
    let momentum: Float32Array[] | undefined;
    if (tensors.length > 0 || (checked.momentum > 0 && steps > 0)) {
      if (checked.momentum === 0) throw invalid("the state holds momentum buffers but momentum is 0");
      if (tensors.length !== layout.length) {
        throw invalid(`the state holds ${tensors.length} tensors, the model ${layout.length}`);
      }
      for (const info of tensors) {
        const model = index.get(info.name);
        const expected = model && layout[model.index];
        if (!expected) throw invalid(`the state holds tensor '${info.name}', which the model does not have`);
        if (info.dtype !== "F32" || shapeText(info.shape) !== shapeText(expected.shape)) {
          throw invalid(
            `tensor '${info.name}' is ${info.dtype} ${shapeText(info.shape)}, not F32 ${shapeText(expected.shape)}`,
          );
        }
      }
      momentum = layout.map((t) => new Float32Array((index.get(t.name) as { elements: number }).elements));
    }
    for await (const chunk of stream.chunks()) {
      const m = momentum?.[(index.get(chunk.tensor.name) as { index: number }).index] as Float32Array;
      new Uint8Array(m.buffer, m.byteOffset, m.byteLength).set(chunk.bytes, chunk.offset);
    }
    const callerMetadata: Record<string, string> = {};
    for (const [key, value] of Object.entries(meta)) {
      if (!key.startsWith("sovereign.")) callerMetadata[key] = value;
    }
    return {
      optimizer: new OuterOptimizer(layout, checked, { steps, momentum }),
      metadata: callerMetadata,
    };
  }
}
