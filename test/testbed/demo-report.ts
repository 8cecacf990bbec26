// The measurements `make demo` reports (test/testbed/demo.ts): leaf-link byte counters from the
// hub nats-server's /leafz, the communication of a run against synchronising every inner step,
// the audit link from each round's aggregate to the attested evidence of its contributors, and
// a tail of the members' audit logs that prints attestation verdicts as they are written.
import { existsSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { verdictDigest } from "../../attestation/mod.ts";
import type { LearnerKey } from "../../crds/types.generated.ts";
import { learnerKeyBound } from "../../operator/learner-keys.ts";

// ---------------------------------------------------------------------------------------------
// Leaf links

export interface LeafCounters {
  id: number;
  inBytes: number;
  outBytes: number;
}

/** Per leaf connection (named by its region): bytes the hub received from it and sent to it. */
export async function leafCounters(monitorUrl: string): Promise<Map<string, LeafCounters>> {
  const res = await fetch(`${monitorUrl}/leafz`);
  const body = (await res.json()) as {
    leafs?: Array<{ id: number; name: string; in_bytes: number; out_bytes: number }>;
  };
  return new Map(
    (body.leafs ?? []).map((l) => [l.name, { id: l.id, inBytes: l.in_bytes, outBytes: l.out_bytes }]),
  );
}

export interface LeafDelta {
  /** Bytes from the region to the hub (what left the region). */
  up: number;
  /** Bytes from the hub into the region. */
  down: number;
  /** The leaf reconnected meanwhile: its counters restarted, the figures are a lower bound. */
  reconnected: boolean;
  /**
   * `up` less the link's background over the same time: what the leaf carried at the rate
   * measured just before the run, when nothing of it existed (other streams' mirrors and
   * consumers crossing the link: heartbeats, flow control). Never below 0.
   */
  upNet?: number;
  /** The background rate measured before the run, bytes per second from the region. */
  backgroundUpPerSecond?: number;
}

export function leafDelta(
  before: LeafCounters | undefined,
  after: LeafCounters | undefined,
  background?: { upPerSecond: number; seconds: number },
): LeafDelta {
  if (!after) return { up: 0, down: 0, reconnected: true };
  if (!before || before.id !== after.id)
    return { up: after.inBytes, down: after.outBytes, reconnected: true };
  const up = after.inBytes - before.inBytes;
  return {
    up,
    down: after.outBytes - before.outBytes,
    reconnected: false,
    ...(background
      ? {
          upNet: Math.max(0, Math.round(up - background.upPerSecond * background.seconds)),
          backgroundUpPerSecond: Math.round(background.upPerSecond),
        }
      : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Communication

/** Parameters of a safetensors file (all tensors fp32 in the demo): the sum of its shapes' products. */
export function safetensorsParameters(bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString("utf8")) as Record<
    string,
    { shape?: number[] }
  >;
  let n = 0;
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    n += (t.shape ?? []).reduce((a, b) => a * b, 1);
  }
  return n;
}

export interface Communication {
  /** Encoded delta bytes per round per region (region → hub), from the hub's status. */
  upPerRound: number;
  /** Global model bytes per round per region (hub → region: the model the region mirrors). */
  downPerRound: number;
  /** What synchronising fp32 gradients at every inner step would move per round per region. */
  perStepPerRound: number;
  /** perStepPerRound / (upPerRound + downPerRound). */
  ratio: number;
  /** Up only: H·4·P / upPerRound. */
  ratioUp: number;
}

/**
 * Per-step synchronisation, per round and region: H steps × (an fp32 gradient of P parameters
 * up, 4·P bytes, and the averaged one down, 4·P bytes) = 8·P·H bytes.
 */
export function communication(o: {
  parameters: number;
  innerSteps: number;
  upPerRound: number;
  downPerRound: number;
}): Communication {
  const perStepPerRound = 8 * o.parameters * o.innerSteps;
  return {
    upPerRound: o.upPerRound,
    downPerRound: o.downPerRound,
    perStepPerRound,
    ratio: perStepPerRound / (o.upPerRound + o.downPerRound),
    ratioUp: (4 * o.parameters * o.innerSteps) / o.upPerRound,
  };
}

// ---------------------------------------------------------------------------------------------
// Audit logs

export interface AuditEntry {
  seq: number;
  kind: string;
  time: string;
  // biome-ignore lint/suspicious/noExplicitAny: the bodies differ per kind; read as needed
  body: any;
}

export async function readAudit(file: string): Promise<AuditEntry[]> {
  if (!existsSync(file)) return [];
  return (await readFile(file, "utf8"))
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as AuditEntry);
}

/** Follows the members' audit logs and calls `onEntry` for each new complete entry. */
export class AuditTail {
  readonly #offsets = new Map<string, number>();
  readonly #files: Record<string, string>;
  readonly #onEntry: (who: string, e: AuditEntry) => void;
  #timer: NodeJS.Timeout | undefined;

  constructor(files: Record<string, string>, onEntry: (who: string, e: AuditEntry) => void) {
    this.#files = files;
    this.#onEntry = onEntry;
  }

  start(ms = 500): void {
    const tick = async () => {
      await this.poll().catch(() => undefined);
      this.#timer = setTimeout(tick, ms);
    };
    this.#timer = setTimeout(tick, ms);
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
  }

  async poll(): Promise<void> {
    for (const [who, file] of Object.entries(this.#files)) {
      if (!existsSync(file)) continue;
      const offset = this.#offsets.get(file) ?? 0;
      const fh = await open(file, "r");
      try {
        const { size } = await fh.stat();
        if (size <= offset) continue;
        const buf = Buffer.alloc(size - offset);
        await fh.read(buf, 0, buf.length, offset);
        const text = buf.toString("utf8");
        const end = text.lastIndexOf("\n");
        if (end < 0) continue;
        this.#offsets.set(file, offset + Buffer.byteLength(text.slice(0, end + 1)));
        for (const line of text.slice(0, end).split("\n")) {
          if (line.startsWith("{")) this.#onEntry(who, JSON.parse(line) as AuditEntry);
        }
      } finally {
        await fh.close();
      }
    }
  }
}

export interface AuditLink {
  ok: boolean;
  rounds: number;
  deltas: number;
  keys: number;
  admissions: number;
  verdicts: number;
  problems: string[];
}

/**
 * Links each closed round's aggregate to the attested evidence of every learner that contributed:
 * hub RoundClosed (run, round, contributed regions, model digest = the run status's aggregate
 * digest) → hub DeltaAccepted (run, round, region, learner, learner key) → the learner key listed
 * in the region's RegionWork, whose nonce commits to that key, the run's uid and the admission
 * round → the region's PodAdmitted (pod = learner, same nonce, verdict digest) → the region's
 * AttestationVerdict (passed, that nonce, digest = the admission's verdict digest).
 */
export function checkAuditLink(o: {
  run: string;
  runUid: string;
  hub: AuditEntry[];
  members: Record<string, AuditEntry[]>;
  learnerKeys: LearnerKey[];
  aggregateDigests: Map<number, string>;
}): AuditLink {
  const problems: string[] = [];
  const closed = o.hub.filter(
    (e) => e.kind === "RoundClosed" && e.body.run === o.run && e.body.outcome === "QuorumMet",
  );
  const accepted = o.hub.filter((e) => e.kind === "DeltaAccepted" && e.body.run === o.run);
  const keys = new Set<string>();
  const admissions = new Set<string>();
  const verdicts = new Set<string>();
  let deltas = 0;
  for (const rc of closed) {
    const round = rc.body.round as number;
    const statusDigest = o.aggregateDigests.get(round);
    if (statusDigest && statusDigest !== rc.body.modelDigest)
      problems.push(`round ${round}: audit digest ${rc.body.modelDigest} ≠ status ${statusDigest}`);
    for (const region of rc.body.contributed as string[]) {
      const delta = accepted.find((d) => d.body.round === round && d.body.region === region);
      if (!delta) {
        problems.push(`round ${round}: no DeltaAccepted from ${region}`);
        continue;
      }
      deltas++;
      const key = o.learnerKeys.find(
        (k) => k.publicKey === delta.body.learnerKey && k.learner === delta.body.learner,
      );
      if (!key) {
        problems.push(
          `round ${round} ${region}: key ${delta.body.learnerKey} not listed for ${delta.body.learner}`,
        );
        continue;
      }
      if (!learnerKeyBound(key, o.runUid)) {
        problems.push(`${region} ${key.learner}: the nonce does not commit to the key`);
        continue;
      }
      keys.add(key.publicKey);
      const member = o.members[region] ?? [];
      const admitted = member.find(
        (e) =>
          e.kind === "PodAdmitted" &&
          e.body.pod?.name === key.learner &&
          e.body.nonce === key.nonce &&
          e.body.verdictDigest === key.verdictDigest,
      );
      if (!admitted) {
        problems.push(`${region} ${key.learner}: no PodAdmitted with its nonce and verdict`);
        continue;
      }
      admissions.add(`${region}/${admitted.seq}`);
      const verdict = member.find(
        (e) =>
          e.kind === "AttestationVerdict" &&
          e.body.verdict?.passed === true &&
          e.body.verdict?.nonce === key.nonce &&
          verdictDigest(e.body.verdict) === key.verdictDigest,
      );
      if (!verdict) {
        problems.push(
          `${region} ${key.learner}: no passing AttestationVerdict ${key.verdictDigest.slice(0, 12)}`,
        );
        continue;
      }
      verdicts.add(`${region}/${verdict.seq}`);
    }
  }
  if (closed.length === 0) problems.push("no closed round in the hub's audit log");
  return {
    ok: problems.length === 0,
    rounds: closed.length,
    deltas,
    keys: keys.size,
    admissions: admissions.size,
    verdicts: verdicts.size,
    problems,
  };
}

// ---------------------------------------------------------------------------------------------
// Formatting

export const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
export const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
