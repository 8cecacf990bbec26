// The hub's data plane for rounds: it finds the deltas each placed region delivered for the
// open round (in the hub's mirror of the region's bucket), verifies each against its signed
// manifest as it arrives, and, once the reconciler fixes the set of contributing regions,
// aggregates exactly that set in that order and publishes the next global model.
//
// It keeps nothing that cannot be rebuilt: deltas stay in JetStream, the round's progress is
// in the FederatedRun's status. After a restart, verification re-runs on what is in the
// mirror and an interrupted aggregation starts over from the same set: the same model comes
// out, and no delta is counted twice (one per region and round, by construction).
import type { KeyObject } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Algorithm, FoldedLateDelta } from "../../crds/types.generated.ts";
import {
  Accumulator,
  addVerifiedDeltas,
  coordinateMedian,
  DeltaCollector,
  deltaKeys,
  krum,
  type ModelLayout,
  OuterOptimizer,
  outerConfig,
  stalenessFactor,
  trimCount,
  trimmedMean,
  type VerifiedDelivery,
} from "../../deltas/aggregate/mod.ts";
import {
  DELTA_REASONS,
  type DeltaManifest,
  decodeDelta,
  manifestDigest,
  openSafetensors,
  openVerifiedDelta,
  writeSafetensors,
} from "../../deltas/mod.ts";
import {
  type ArrivedDelta,
  arrivedDeltaBytes,
  deltaArrivals,
  ensureRegionDeltaMirror,
  fetchGlobalModel,
  globalModelDigest,
  listRegionDeltas,
  loadRunState,
  openArrivedDelta,
  parseDeltaObjectName,
  publishGlobalModel,
  purgeMirroredDeltas,
  regionDeltaMirrorNudger,
  regionDeltaMirrorProgress,
  saveRunState,
  TRANSPORT_REASONS,
} from "../../transport/mod.ts";
import type { Logger } from "../runtime/log.ts";
import { MAX_ROUNDS_LATE } from "./rounds.ts";

export interface RoundRef {
  namespace: string;
  run: string;
  round: number;
  /**
   * The FederatedRun's uid. What the coordinator keeps is per run instance: a run deleted and
   * created again under its name starts from nothing, never from the old run's deltas or
   * aggregations.
   */
  uid: string;
}

/** What the coordinator keeps a run's state under: one run instance. */
const stateKey = (ref: Pick<RoundRef, "namespace" | "run" | "uid">) =>
  `${ref.namespace}/${ref.run}@${ref.uid}`;
/** The run's key as reconcilers and callbacks know it. */
const runKeyOf = (ref: Pick<RoundRef, "namespace" | "run">) => `${ref.namespace}/${ref.run}`;

/** A placed region and its JetStream domain (SovereignNode spec.jetStreamDomain). */
export interface RegionEndpoint {
  name: string;
  domain: string;
}

const OUTER_STATE = "outer-optimizer";

/** Default bound on what a robust rule holds at once (every delta plus the result). */
const DEFAULT_ROBUST_BYTES = 8 * 1024 ** 3;

export interface RoundSettings {
  algorithm: Algorithm;
  /** Bound on a robust rule's memory (deltas held + result). Default 8 GiB. */
  maxRobustBytes?: number;
  /** Largest delta accepted, in bytes (spec.deltaEncoding.maxSizeMiB). */
  maxDeltaBytes: number;
  /** The run's last round (spec.rounds): no round after it will fold a late delta in. */
  rounds?: number;
  /** Late deltas are folded into the next rounds (quorum.lateDeltas NextRound, no robust rule). */
  foldsLate?: boolean;
}

/** The key a learner's manifest must be signed with, or undefined when none is bound to it. */
export type LearnerKeyResolver = (
  region: string,
  manifest: DeltaManifest,
  run: { namespace: string; name: string; uid: string },
  /**
   * The delta was accepted before (the run's status records its region as delivered): the
   * binding must still hold, but a revocation since (its node quarantined later) does not
   * undo a delta that arrived while the key was valid.
   */
  opts?: { acceptedBefore?: boolean },
) => KeyObject | undefined;

export interface Refusal {
  region: string;
  object: string;
  round: number;
  /** The learner the object claims to be from (its name), when it can be told. */
  learner?: string;
  manifestDigest?: string;
  reason: string;
  message: string;
}

/** An aggregation and the set it aggregates: fixed by the first call for the round. */
export type AggregationState = { contributing: readonly string[]; late: readonly FoldedLateDelta[] } & (
  | { state: "running" }
  | { state: "done"; digest: string; bytes: number }
  | { state: "failed"; reason: string; message: string }
);

interface Accepted {
  arrival: ArrivedDelta;
  digest: string;
  /** The key it verified under, kept: a revocation after the delta arrived does not undo it. */
  key: KeyObject;
}

export interface RoundCoordinatorOptions {
  nc: NatsConnection;
  keyFor: LearnerKeyResolver;
  log: Logger;
  /** Called when something a run's reconcile depends on changed (a delta verified, an aggregation finished). */
  onProgress: (runKey: string) => void;
  /** Called for every delta refused, once per object revision. */
  onRefused?: (runKey: string, refusal: Refusal) => void;
  /** Called for every delta verified. */
  onAccepted?: (runKey: string, delta: ArrivedDelta, manifestDigest: string) => void;
}

/** The hub's own refusal reasons, beside those of the delta library and the transport. */
export const HUB_REFUSAL = {
  tooLate: "DeltaTooLate",
  baseModelMismatch: "DeltaBaseModelMismatch",
  learnerKeyUnknown: "LearnerKeyUnknown",
  /** Accepted, then its region was quarantined before the round closed: its deltas no longer count. */
  regionQuarantined: "RegionQuarantined",
  /** A delta that failed with an error carrying no reason code of ours. */
  unreadable: "DeltaUnreadable",
} as const;

const reasonOf = (err: unknown) => (err as { reason?: string }).reason ?? HUB_REFUSAL.unreadable;

/**
 * Every reason a delta can be refused for: the delta library's, the transport's about the
 * object, and the hub's own. Metrics start each at 0 (the first refusal shows in increase()).
 */
export const DELTA_REFUSAL_REASONS: readonly string[] = [
  ...DELTA_REASONS,
  ...TRANSPORT_REASONS.filter((r) => r.startsWith("Delta")),
  ...Object.values(HUB_REFUSAL),
];

/**
 * Reads of one delta that may fail without a verdict on it before it is refused. A read that
 * stalls (DeltaObjectMissing: seen on the testbed when the hub's own nats-server restarted
 * while the hub read a 64 MiB delta) or a NATS client error (no reason code of ours) says
 * nothing about the delta; refusing it dropped a valid delta for good (each version is
 * verified once) and the round waited for it until maxRoundSeconds; in an aggregation it
 * failed the run. Bounded, so that a delta that always fails to read is still refused, and
 * an aggregation that always fails still fails the run.
 */
const MAX_READ_ATTEMPTS = 5;
/** Pause before watching a region's mirror again after the watch failed (the poll goes on meanwhile). */
const ARRIVAL_WATCH_RETRY_MS = 5_000;
/**
 * A mirror that has not heard from its origin for this long has lost it. nats-server reports a
 * healthy, idle mirror's last contact as tens of milliseconds ago, and resets it to -1 (never)
 * while it retries a lost origin.
 */
const MIRROR_SILENT_MS = 5_000;
const MIRROR_HEALTH_TTL_MS = 1_000;
const MIRROR_NUDGE_INTERVAL_MS = 1_000;
const readFailed = (err: unknown) => {
  const reason = (err as { reason?: string }).reason;
  return reason === undefined || reason === "DeltaObjectMissing";
};
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

export class RoundCoordinator {
  readonly #opts: RoundCoordinatorOptions;
  /** runKey → round → region → the delta accepted for it. */
  readonly #accepted = new Map<string, Map<number, Map<string, Accepted>>>();
  /** Object revisions already verified or refused, so each is read once. */
  readonly #seen = new Set<string>();
  /** Reads of an object revision that failed without a verdict (see MAX_READ_ATTEMPTS). */
  readonly #readFailures = new Map<string, number>();
  /** Aggregations (stateKey#round) interrupted by such a read, and started over. */
  readonly #aggregationFailures = new Map<string, number>();
  readonly #verifying = new Map<string, Promise<void>>();
  /** Looks (stateKey#round) asked for while one was under way: look again when it ends. */
  readonly #lookAgain = new Set<string>();
  readonly #aggregations = new Map<string, AggregationState>();
  readonly #mirrored = new Set<string>();
  /** region → whether its delta mirror was silent when last read (see silentRegions). */
  readonly #mirrorHealth = new Map<string, { at: number; silent: boolean }>();
  /** Digest of the model each round starts from (stateKey#round), once read: published models never change. */
  readonly #baseDigests = new Map<string, string>();
  /** Runs (stateKey) forgotten after deletion, so their deltas are purged once. */
  readonly #forgotten = new Set<string>();
  /** runKey → round → region → the last refusal of a delta it delivered for that round. */
  readonly #refused = new Map<string, Map<number, Map<string, Refusal>>>();

  constructor(opts: RoundCoordinatorOptions) {
    this.#opts = opts;
  }

  /**
   * Regions with a verified delta for the round, in the order they were verified. Starts
   * verifying what newly arrived in the background; onProgress fires when that finishes.
   */
  delivered(
    ref: RoundRef,
    regions: readonly RegionEndpoint[],
    settings: RoundSettings,
    /** Regions the run's status already records as delivered: re-verified after a restart, not reported (audited, counted) again. */
    recorded: readonly string[] = [],
  ): string[] {
    const key = stateKey(ref);
    const job = `${key}#${ref.round}`;
    if (this.#verifying.has(job)) {
      // A look already under way may have listed before what prompted this call arrived.
      this.#lookAgain.add(job);
    } else {
      const verifying = this.#verifyNew(ref, regions, settings, new Set(recorded))
        .catch((err) =>
          this.#opts.log.warn("listing deltas failed; retrying on the next reconcile", {
            run: runKeyOf(ref),
            error: messageOf(err),
          }),
        )
        .finally(() => {
          this.#verifying.delete(job);
          if (this.#lookAgain.delete(job)) this.#opts.onProgress(runKeyOf(ref));
        });
      this.#verifying.set(job, verifying);
    }
    return this.acceptedRegions(ref);
  }

  async #verifyNew(
    ref: RoundRef,
    regions: readonly RegionEndpoint[],
    settings: RoundSettings,
    recorded: ReadonlySet<string>,
  ): Promise<void> {
    const key = stateKey(ref);
    const runKey = runKeyOf(ref);
    let changed = false;
    for (const { name: region, domain } of regions) {
      if (!this.#mirrored.has(region)) {
        await ensureRegionDeltaMirror(this.#opts.nc, region, domain);
        this.#mirrored.add(region);
        this.#watchArrivals(region);
        this.#keepMirrorResuming(region, domain);
      }
      const round = this.#round(key, ref.round);
      if (round.has(region)) continue;
      for (const arrival of await listRegionDeltas(this.#opts.nc, region, ref)) {
        // One version of the object: the object store's listing carries no revision, and a
        // learner that publishes again under its name (after a refusal, or a run re-created
        // under its name) writes a different signed manifest.
        const version = arrival.delta ? manifestDigest(arrival.delta.signed.manifest) : "unreadable";
        const id = `${key} ${region}/${arrival.name}@${version}`;
        if (this.#seen.has(id)) continue;
        this.#seen.add(id);
        try {
          if (!arrival.delta) throw arrival.error;
          const { digest, key: verifiedKey } = await this.#verify(
            arrival.delta,
            settings,
            ref,
            recorded.has(region),
          );
          if (
            !round.has(region) &&
            !recorded.has(region) &&
            !this.#stillAggregatable(key, ref.round, settings)
          ) {
            // Accepting it would promise an aggregation that cannot happen any more: every
            // round that could take it (its own, or the next ones folding late deltas, up to
            // the run's last) has fixed its set. Said as a refusal, audited and counted.
            throw Object.assign(
              new Error(
                `round ${ref.round} and every later round that could fold it in have closed; the delta arrived too late to be aggregated (quorum.lateDeltas and graceWindowSeconds set how late a region may be)`,
              ),
              { reason: HUB_REFUSAL.tooLate },
            );
          }
          if (!round.has(region)) {
            round.set(region, { arrival: arrival.delta, digest, key: verifiedKey });
            if (!recorded.has(region)) this.#opts.onAccepted?.(runKey, arrival.delta, digest);
            changed = true;
          }
          break; // one delta per region and round
        } catch (err) {
          const failures = (this.#readFailures.get(id) ?? 0) + 1;
          if (arrival.delta && readFailed(err) && failures < MAX_READ_ATTEMPTS) {
            // Not a verdict: read it again on the next reconcile.
            this.#readFailures.set(id, failures);
            this.#seen.delete(id);
            this.#opts.log.warn("reading a delta failed; reading it again on the next reconcile", {
              run: runKey,
              region,
              object: arrival.name,
              attempt: failures,
              error: messageOf(err),
            });
            continue;
          }
          const refusal: Refusal = {
            region,
            object: arrival.name,
            round: ref.round,
            learner: arrival.name.split("/").at(-1),
            ...(arrival.delta ? { manifestDigest: manifestDigest(arrival.delta.signed.manifest) } : {}),
            reason: reasonOf(err),
            message: messageOf(err),
          };
          this.#refuse(ref, refusal);
          changed = true;
        }
      }
    }
    if (changed) this.#opts.onProgress(runKey);
  }

  /**
   * Reconciles a run as soon as an object for it lands in a region's mirror, rather than at
   * its next poll: a round closes when its last delta is in, not up to a poll later. Runs for
   * as long as the hub's connection; a failed watch starts again after a pause.
   */
  #watchArrivals(region: string): void {
    const watch = async () => {
      for await (const name of deltaArrivals(this.#opts.nc, region)) {
        const address = parseDeltaObjectName(name);
        if (address) this.#opts.onProgress(runKeyOf(address));
      }
    };
    const again = (err?: unknown) => {
      if (this.#opts.nc.isClosed()) return;
      if (err)
        this.#opts.log.warn("watching a region's mirror for deltas failed; polling until it is back", {
          region,
          error: messageOf(err),
        });
      setTimeout(() => this.#watchArrivals(region), ARRIVAL_WATCH_RETRY_MS).unref();
    };
    watch().then(() => again(), again);
  }

  /**
   * A region back after its server went down is mirrored again within a second or so, rather
   * than after nats-server's own retry (28-40 s measured): once a second, a mirror request lost
   * while the region was down is sent again as soon as the region answers (mirrorNudger). Costs
   * nothing while no request is lost.
   */
  #keepMirrorResuming(region: string, domain: string): void {
    const nudger = regionDeltaMirrorNudger(this.#opts.nc, region, domain);
    let busy = false;
    const timer = setInterval(() => {
      if (this.#opts.nc.isClosed()) {
        clearInterval(timer);
        nudger.close();
        return;
      }
      if (busy) return;
      busy = true;
      nudger
        .nudge()
        .then(
          (result) => {
            if (result !== "resumed") return;
            this.#mirrorHealth.delete(region);
            this.#opts.log.info(
              "the region's delta mirror resumed: its request lost while the region was down was sent again",
              { region },
            );
          },
          (err: unknown) =>
            this.#opts.log.debug("nudging the region's delta mirror failed; trying again", {
              region,
              error: messageOf(err),
            }),
        )
        .finally(() => {
          busy = false;
        });
    }, MIRROR_NUDGE_INTERVAL_MS);
    timer.unref();
  }

  /**
   * Of `regions`, those whose delta mirror has heard nothing from its origin for
   * MIRROR_SILENT_MS: the region's leaf link or its server is down, well before its missed
   * heartbeats say so. A healthy mirror hears from its origin several times a second. Read at
   * most once a second per region, as the mirror is shared by every run.
   */
  async silentRegions(regions: readonly string[]): Promise<string[]> {
    const now = Date.now();
    const silent: string[] = [];
    for (const region of regions) {
      if (!this.#mirrored.has(region)) continue; // not looked at yet: nothing to go by
      let known = this.#mirrorHealth.get(region);
      if (!known || now - known.at >= MIRROR_HEALTH_TTL_MS) {
        const activeAgoMs = await regionDeltaMirrorProgress(this.#opts.nc, region)
          .then((p) => p.activeAgoMs)
          .catch(() => undefined); // unreadable: no evidence either way
        known = {
          at: now,
          silent: activeAgoMs !== undefined && (activeAgoMs < 0 || activeAgoMs > MIRROR_SILENT_MS),
        };
        this.#mirrorHealth.set(region, known);
      }
      if (known.silent) silent.push(region);
    }
    return silent;
  }

  /** Regions with a delta accepted for the round so far (no look is started). */
  acceptedRegions(ref: RoundRef): string[] {
    return [...(this.#accepted.get(stateKey(ref))?.get(ref.round)?.keys() ?? [])];
  }

  /** Whether some round that could aggregate a delta of `round` has not fixed its set yet. */
  #stillAggregatable(key: string, round: number, settings: RoundSettings): boolean {
    const last = Math.min(
      settings.rounds ?? Number.POSITIVE_INFINITY,
      round + (settings.foldsLate ? MAX_ROUNDS_LATE : 0),
    );
    for (let r = round; r <= last; r++) if (!this.#aggregations.has(`${key}#${r}`)) return true;
    return false;
  }

  #refuse(ref: RoundRef, refusal: Refusal): void {
    const runKey = runKeyOf(ref);
    this.#opts.log.warn("delta refused", { run: runKey, ...refusal });
    const byRound = this.#refused.get(stateKey(ref)) ?? new Map<number, Map<string, Refusal>>();
    this.#refused.set(stateKey(ref), byRound);
    byRound.set(ref.round, (byRound.get(ref.round) ?? new Map()).set(refusal.region, refusal));
    this.#opts.onRefused?.(runKey, refusal);
  }

  /**
   * Takes back the deltas accepted for the round from regions outside `kept`, refusing each with
   * `reason`: a region quarantined between its delta's acceptance and the round's close no longer
   * counts, and its delta must not be left accepted yet never aggregated without a word (audited
   * and counted as a refusal; its learner hears it).
   */
  excludeAccepted(
    ref: RoundRef,
    kept: readonly string[],
    reason: string,
    why: (region: string) => string,
  ): void {
    const round = this.#accepted.get(stateKey(ref))?.get(ref.round);
    for (const [region, accepted] of [...(round ?? [])]) {
      if (kept.includes(region)) continue;
      round?.delete(region);
      this.#refuse(ref, {
        region,
        object: accepted.arrival.name,
        round: ref.round,
        learner: accepted.arrival.signed.manifest.learner,
        manifestDigest: accepted.digest,
        reason,
        message: why(region),
      });
    }
  }

  /** Regions whose delivery for the round was refused and that have no accepted delta for it (yet). */
  refusedRegions(ref: RoundRef): ReadonlyMap<string, Refusal> {
    const key = stateKey(ref);
    const accepted = this.#accepted.get(key)?.get(ref.round);
    const refused = this.#refused.get(key)?.get(ref.round) ?? new Map<string, Refusal>();
    return new Map([...refused].filter(([region]) => !accepted?.has(region)));
  }

  async #verify(
    arrival: ArrivedDelta,
    settings: RoundSettings,
    ref: RoundRef,
    acceptedBefore = false,
  ): Promise<{ digest: string; key: KeyObject }> {
    // Trained from the model its round starts from, or it is not a delta of this run's round:
    // a stale model, another run of the same name, or a learner that skipped a fetch.
    const round = arrival.signed.manifest.round;
    const baseKey = `${stateKey(ref)}#${round - 1}`;
    const base =
      this.#baseDigests.get(baseKey) ??
      (await globalModelDigest(this.#opts.nc, { namespace: ref.namespace, run: ref.run, round: round - 1 }));
    if (base) this.#baseDigests.set(baseKey, base);
    if (arrival.signed.manifest.baseModel !== base) {
      throw Object.assign(
        new Error(
          `the delta was trained from ${arrival.signed.manifest.baseModel}, but round ${round} starts from ${base ?? "a model that is not published"}; the learner must fetch round-${round - 1} of the run's model bucket and train again`,
        ),
        { reason: HUB_REFUSAL.baseModelMismatch },
      );
    }
    const key = this.#opts.keyFor(
      arrival.region,
      arrival.signed.manifest,
      { namespace: arrival.address.namespace, name: arrival.address.run, uid: ref.uid },
      { acceptedBefore },
    );
    if (!key) {
      throw Object.assign(
        new Error(
          `no key is bound to learner ${arrival.signed.manifest.learner} of ${arrival.region}; its GPU has not attested for this run`,
        ),
        {
          reason: HUB_REFUSAL.learnerKeyUnknown,
        },
      );
    }
    const stream = await openArrivedDelta(this.#opts.nc, arrival, key, { maxBytes: settings.maxDeltaBytes });
    for await (const _chunk of stream.chunks()) {
      // draining is the check: every tensor's digest against the signed manifest
    }
    return { digest: manifestDigest(arrival.signed.manifest), key };
  }

  #round(key: string, round: number): Map<string, Accepted> {
    const rounds = this.#accepted.get(key) ?? new Map<number, Map<string, Accepted>>();
    this.#accepted.set(key, rounds);
    const regions = rounds.get(round) ?? new Map<string, Accepted>();
    rounds.set(round, regions);
    return regions;
  }

  /** Whether the model round `ref.round` starts from is published (round-0: the initial model). */
  async baseModelDigest(ref: RoundRef): Promise<string | undefined> {
    return globalModelDigest(this.#opts.nc, { namespace: ref.namespace, run: ref.run, round: ref.round - 1 });
  }

  /**
   * The aggregation of a round from exactly `contributing`, in that order: started on the
   * first call, reported on the next ones.
   */
  aggregation(
    ref: RoundRef,
    contributing: readonly string[],
    settings: RoundSettings,
    /** Late deltas of earlier rounds to fold in, each weighted by its staleness (lateDeltas: NextRound). */
    late: readonly FoldedLateDelta[] = [],
  ): AggregationState {
    const id = `${stateKey(ref)}#${ref.round}`;
    const known = this.#aggregations.get(id);
    if (known) return known;
    const running: AggregationState = { state: "running", contributing: [...contributing], late: [...late] };
    this.#aggregations.set(id, running);
    this.#aggregate(ref, contributing, settings, late)
      .then(
        (result) => {
          this.#aggregations.set(id, {
            state: "done",
            contributing: running.contributing,
            late: running.late,
            ...result,
          });
          // The next round may still fold late deltas of the last MAX_ROUNDS_LATE rounds; older
          // ones can go (an interrupted aggregation re-reads only its own round's deltas).
          this.#purge(ref, ref.round + 1 - MAX_ROUNDS_LATE);
        },
        (err) => {
          // A read that failed without a verdict (the hub's nats-server restarting under it:
          // a NATS timeout) is not the run's failure: start over from the same set, as after a
          // restart of the hub, a little later. It stays "running" until then.
          const attempt = (this.#aggregationFailures.get(id) ?? 0) + 1;
          if (readFailed(err) && attempt < MAX_READ_ATTEMPTS) {
            this.#aggregationFailures.set(id, attempt);
            this.#opts.log.warn("aggregation interrupted; starting it over", {
              round: id,
              attempt,
              error: messageOf(err),
            });
            setTimeout(() => {
              if (this.#aggregations.get(id) === running) this.#aggregations.delete(id);
              this.#opts.onProgress(`${ref.namespace}/${ref.run}`);
            }, 2_000 * attempt);
            return;
          }
          this.#opts.log.error("aggregation failed", { round: id, error: messageOf(err) });
          this.#aggregations.set(id, {
            state: "failed",
            contributing: running.contributing,
            late: running.late,
            reason: reasonOf(err),
            message: messageOf(err),
          });
        },
      )
      .finally(() => this.#opts.onProgress(`${ref.namespace}/${ref.run}`));
    return running;
  }

  async #aggregate(
    ref: RoundRef,
    contributing: readonly string[],
    settings: RoundSettings,
    late: readonly FoldedLateDelta[],
  ): Promise<{ digest: string; bytes: number }> {
    const run = { namespace: ref.namespace, run: ref.run };
    const previous = { ...run, round: ref.round - 1 };
    // The global model is read twice and never held whole: its header gives the layout, then
    // it streams tensor by tensor through the outer step into the next model. With the sums
    // that keeps FedAvg at one model of memory plus a tensor (DiLoCo adds its momentum). Twice,
    // because a reader left unread through the aggregation would give up (a stalled read).
    const layout = await this.#modelLayout(previous);
    const update = settings.algorithm.robustAggregator
      ? await this.#robustUpdate(ref, contributing, settings, layout)
      : await this.#meanUpdate(ref, contributing, settings, layout, late);
    // The outer step (FedAvg: θ + mean Δ; DiLoCo: Nesterov on −mean Δ). The momentum is saved
    // per round, so a repeated aggregation after a restart starts from the same state.
    const config = outerConfig(settings.algorithm);
    const saved =
      config.momentum > 0
        ? await loadRunState(this.#opts.nc, run, `${OUTER_STATE}/round-${ref.round - 1}`)
        : undefined;
    const outer = saved
      ? (await OuterOptimizer.restore(saved, layout, config)).optimizer
      : new OuterOptimizer(layout, config);
    const base = await openSafetensors((await fetchGlobalModel(this.#opts.nc, previous)).data);
    const published = await publishGlobalModel(
      this.#opts.nc,
      { ...run, round: ref.round },
      writeSafetensors(outer.streamStep(base, update)),
    );
    if (config.momentum > 0) {
      await saveRunState(this.#opts.nc, run, `${OUTER_STATE}/round-${ref.round}`, outer.saveState());
    }
    return { digest: published.digest, bytes: published.size };
  }

  /** The global model's tensors, in file order, from its header; every one must be F32. */
  async #modelLayout(ref: { namespace: string; run: string; round: number }): Promise<ModelLayout> {
    const source = (await fetchGlobalModel(this.#opts.nc, ref)).data;
    const model = await openSafetensors(source);
    await source.return(undefined);
    // Its end (and digest) is read with its last tensor, so a model needs one.
    if (model.header.tensors.length === 0) {
      throw Object.assign(new Error("the global model holds no tensor"), { reason: "ModelFormatInvalid" });
    }
    for (const t of model.header.tensors) {
      if (t.dtype !== "F32") {
        throw Object.assign(
          new Error(`the global model's tensor '${t.name}' is ${t.dtype}; global models are F32 safetensors`),
          { reason: "ModelFormatInvalid" },
        );
      }
    }
    return model.header.tensors.map((t) => ({ name: t.name, shape: t.shape }));
  }

  /** Token-weighted mean of the deltas, streamed: one model of memory whatever the number of regions. */
  async #meanUpdate(
    ref: RoundRef,
    contributing: readonly string[],
    settings: RoundSettings,
    layout: ModelLayout,
    late: readonly FoldedLateDelta[],
  ): Promise<ReadonlyMap<string, Float32Array>> {
    const accumulator = new Accumulator(layout);
    try {
      // This round's deltas at full weight, then late ones down-weighted by how late they are.
      const deliveries = [
        ...contributing.map((region) => ({ region, round: ref.round })),
        ...late.map((l) => ({ region: l.region, round: l.round })),
      ];
      // In sorted order and up to four in one pass over the sums: the same model, bit for bit,
      // as adding them one by one (addVerifiedDeltas).
      const verified: VerifiedDelivery[] = [];
      for (const { region, round } of deliveries) {
        const { arrival: accepted, key } = await this.#acceptedDelta({ ...ref, round }, region, settings);
        verified.push({
          signed: accepted.signed,
          trustedKey: key,
          open: () => arrivedDeltaBytes(this.#opts.nc, accepted, { maxBytes: settings.maxDeltaBytes }),
          weightFactor: stalenessFactor(ref.round - round),
          read: { expectedTotalBytes: accepted.size },
        });
      }
      await addVerifiedDeltas(accumulator, verified, {
        per: "region",
        read: { maxDataBytes: settings.maxDeltaBytes },
      });
      // Views of the sums, now the mean: they keep its memory alive after close().
      return (await accumulator.finish()).tensors;
    } finally {
      await accumulator.close();
    }
  }

  /**
   * A robust rule (spec.algorithm.robustAggregator) needs every delta at once: memory grows
   * with the number of regions, bounded by settings.maxRobustBytes. Token counts are ignored:
   * a faulty region could claim any.
   */
  async #robustUpdate(
    ref: RoundRef,
    contributing: readonly string[],
    settings: RoundSettings,
    layout: ModelLayout,
  ): Promise<ReadonlyMap<string, Float32Array>> {
    const rule = settings.algorithm.robustAggregator as NonNullable<Algorithm["robustAggregator"]>;
    const collector = new DeltaCollector(layout, {
      maxBytes: settings.maxRobustBytes ?? DEFAULT_ROBUST_BYTES,
    });
    for (const region of contributing) {
      const { arrival: accepted, key } = await this.#acceptedDelta(ref, region, settings);
      const bytes = await arrivedDeltaBytes(this.#opts.nc, accepted, { maxBytes: settings.maxDeltaBytes });
      const stream = await openVerifiedDelta(accepted.signed, key, bytes, {
        maxDataBytes: settings.maxDeltaBytes,
        expectedTotalBytes: accepted.size,
      });
      await collector.add(decodeDelta(stream), {
        keys: deltaKeys(accepted.signed.manifest, "region"),
        weight: accepted.signed.manifest.tokens,
      });
    }
    const deltas = collector.deltas;
    switch (rule.type) {
      case "TrimmedMean":
        return trimmedMean(layout, deltas, { trim: trimCount(deltas.length, rule.trimFraction ?? 0) });
      case "CoordinateMedian":
        return coordinateMedian(layout, deltas);
      default:
        return krum(layout, deltas, { f: rule.byzantineRegions ?? 0, m: rule.krumSelection ?? 1 }).tensors;
    }
  }

  /** The delta accepted for a region: from memory, or found again in the mirror after a restart. */
  async #acceptedDelta(
    ref: RoundRef,
    region: string,
    settings: RoundSettings,
  ): Promise<{ arrival: ArrivedDelta; key: KeyObject }> {
    const known = this.#accepted.get(stateKey(ref))?.get(ref.round)?.get(region);
    if (known) return known;
    // Only regions the run's status fixed as contributing (or late ones verified before) get
    // here: accepted before, so a key revoked since still counts for it.
    for (const arrival of await listRegionDeltas(this.#opts.nc, region, ref)) {
      if (!arrival.delta) continue;
      try {
        const { key } = await this.#verify(arrival.delta, settings, ref, true);
        return { arrival: arrival.delta, key };
      } catch {
        // refused before; the next candidate
      }
    }
    throw Object.assign(
      new Error(`the delta ${region} delivered for round ${ref.round} is no longer in the hub's mirror`),
      {
        reason: "DeltaObjectMissing",
      },
    );
  }

  /** Removes the run's deltas of rounds before `beforeRound` from the hub's mirrors, in the background. */
  #purge(ref: Pick<RoundRef, "namespace" | "run">, beforeRound: number): void {
    if (beforeRound <= 1) return;
    for (const region of this.#mirrored) {
      purgeMirroredDeltas(this.#opts.nc, region, {
        namespace: ref.namespace,
        run: ref.run,
        beforeRound,
      }).catch((err: unknown) =>
        this.#opts.log.warn("purging old deltas from the hub's mirror failed; they stay until its max age", {
          run: runKeyOf(ref),
          region,
          error: messageOf(err),
        }),
      );
    }
  }

  /** Drops what is kept for a run that was deleted, and its deltas in the hub's mirrors. */
  forget(ref: Pick<RoundRef, "namespace" | "run" | "uid">): void {
    // Called on every reconcile of a run being deleted: its deltas are purged once.
    if (!this.#forgotten.has(stateKey(ref))) {
      this.#forgotten.add(stateKey(ref));
      if (this.#forgotten.size > 10_000)
        this.#forgotten.delete(this.#forgotten.values().next().value as string);
      this.#purge(ref, Number.MAX_SAFE_INTEGER);
    }
    const runKey = stateKey(ref);
    this.#accepted.delete(runKey);
    this.#refused.delete(runKey);
    for (const k of this.#baseDigests.keys()) if (k.startsWith(`${runKey}#`)) this.#baseDigests.delete(k);
    for (const id of this.#seen) if (id.startsWith(`${runKey} `)) this.#seen.delete(id);
    for (const id of this.#readFailures.keys())
      if (id.startsWith(`${runKey} `)) this.#readFailures.delete(id);
    for (const id of this.#aggregations.keys())
      if (id.startsWith(`${runKey}#`)) this.#aggregations.delete(id);
    for (const id of this.#aggregationFailures.keys())
      if (id.startsWith(`${runKey}#`)) this.#aggregationFailures.delete(id);
  }
}
