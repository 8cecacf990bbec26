// `node bench/transport.ts [MiB] [rounds]` (default 256 MiB, 3 rounds): a delta from a learner in region-a to the
// hub on the testbed, against raw `nats bench` on the same servers in the same run.
//
//   learner put       publishDelta into the region's bucket   vs  nats bench js pub async (region server)
//   across the link   put start → hub mirror complete          vs  nats bench js ordered from the hub, --js-domain region-a,
//                                                                  and vs nats bench js pub async into a region stream
//                                                                  the hub mirrors: pub start → hub mirror complete (the
//                                                                  same path, JetStream's own mirror, with raw messages)
//   end to end        put start → verified at the hub          vs  the same ordered-consumer baseline, and vs
//                                                                  raw publish then raw consume across (the
//                                                                  same two steps, done by nats bench)
//
// Like for like: the raw runs use messages of the object store's chunk size, the region's
// server, file storage, JetStream publishes with acks, and a consumer across the leaf link.
// nats bench keeps up to --batch (500) publishes unacknowledged, i.e. the whole 256 MiB here;
// the learner keeps DEFAULT_PUT_WINDOW chunks. The load average is recorded with the figures.
//
// Both learners are measured, each once per round: the Node.js one (publishDelta) and the
// Python SDK's, what learner pods run (bench/sdk_put.py in the SDK's venv, the same file from
// disk; SOVEREIGN_BENCH_SDK_WINDOW sets its put window, 1 being the SDK's put before it
// pipelined).
//
// Prints ratios and writes bench/results/transport.json. Starts the testbed if it is down.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { connect } from "@nats-io/transport-node";
import { collectBytes, type SignedManifest, serializeSignedManifest, writeDelta } from "../deltas/mod.ts";
import { sdkPython } from "../test/sdk/sdk-venv.ts";
import { uniqueName, useTestbed } from "../test/testbed/harness.ts";
import { generatedTensors, learnerKeys, signedStreamedDelta } from "../test/transport/fixtures.ts";
import {
  DEFAULT_PUT_WINDOW,
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  openArrivedDelta,
  publishDelta,
  purgeMirroredDeltas,
  purgeRegionDeltas,
  regionDeltaMirrorProgress,
  watchRegionDeltas,
} from "../transport/mod.ts";
import { deltaMirrorDeliverPrefix, deltaObjectName, regionDeltaBucket } from "../transport/names.ts";
import { ensureMirror, mirrorProgress } from "../transport/objects.ts";

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 256);
const roundCount = Number(process.argv[3] ?? 3);
const region = "region-a";
const run = promisify(execFile);

const tb = await useTestbed();
const { hub: hubNats, regions } = tb.description.nats;
const r = regions[region];
if (!r) throw new Error(`no ${region} in the testbed`);
const regionNats: NonNullable<typeof r> = r;
const natsCli = join(tb.description.binDir, "nats");

const loadBefore = loadavg();
// Raw JetStream, same servers, 1 MiB messages (the object store's chunk size here).
async function natsBench(args: string[]): Promise<number> {
  const csv = join(tmpdir(), `sovereign-bench-${process.pid}-${Date.now()}.csv`);
  await run(natsCli, [...args, "--no-progress", "--csv", csv], { maxBuffer: 16 * MiB });
  const rows = (await readFile(csv, "utf8")).trim().split("\n");
  await rm(csv, { force: true });
  const header = (rows[0] as string).split(",");
  const last = (rows.at(-1) as string).split(",");
  return Number(last[header.indexOf("BytesPerSec")]) / MiB;
}
const rawStream = "BENCH_RAW_TRANSPORT";
/** nats bench publishing sizeMiB messages of 1 MiB into `stream` on the region's server, as its member. */
const regionPublishArgs = (subject: string, stream: string): string[] => [
  "bench",
  "js",
  "pub",
  "async",
  subject,
  "--server",
  r.url,
  // The = form: a generated password may start with "-".
  `--user=${r.member.user}`,
  `--password=${r.member.password}`,
  "--size",
  "1MiB",
  "--msgs",
  String(sizeMiB),
  "--stream",
  stream,
];
const rawPublish = (): Promise<number> =>
  natsBench([
    ...regionPublishArgs("bench.raw.transport", rawStream),
    "--create",
    "--storage",
    "file",
    "--purge",
  ]);
const rawConsumeAcross = (): Promise<number> =>
  natsBench([
    "bench",
    "js",
    "ordered",
    "--server",
    hubNats.url,
    `--user=${hubNats.admin.user}`,
    `--password=${hubNats.admin.password}`,
    "--js-domain",
    region,
    "--size",
    "1MiB",
    "--msgs",
    String(sizeMiB),
    "--stream",
    rawStream,
  ]);

const hub = await connect({ servers: hubNats.url, user: hubNats.admin.user, pass: hubNats.admin.password });
const member = await connect({ servers: r.url, user: r.member.user, pass: r.member.password });
const { jetstreamManager } = await import("@nats-io/jetstream");
const memberJsm = await jetstreamManager(member);
const hubJsm = await jetstreamManager(hub);

// The same path as a delta, with nats bench as the learner: raw 1 MiB messages published
// into a region stream that the hub mirrors across the leaf link, like the deltas bucket,
// timed from the start of the publish to the last message in the hub's mirror.
const mirroredStream = "BENCH_RAW_MIRRORED";
async function rawThroughMirror(): Promise<number> {
  await hubJsm.streams.delete(mirroredStream).catch(() => undefined);
  await memberJsm.streams.delete(mirroredStream).catch(() => undefined);
  await memberJsm.streams.add({
    name: mirroredStream,
    subjects: ["bench.raw.mirrored"],
    storage: "file" as never,
  });
  await ensureMirror(hub, {
    stream: mirroredStream,
    fromDomain: region,
    deliverPrefix: deltaMirrorDeliverPrefix(region),
  });
  const start = performance.now();
  const publishing = run(natsCli, [
    ...regionPublishArgs("bench.raw.mirrored", mirroredStream),
    "--no-progress",
  ]);
  let failed: unknown;
  publishing.catch((err: unknown) => {
    failed = err;
  });
  for (;;) {
    if (failed) throw failed;
    if ((await mirrorProgress(hubJsm, mirroredStream)).messages >= sizeMiB) break;
    await new Promise((done) => setTimeout(done, 10));
  }
  const seconds = (performance.now() - start) / 1000;
  await publishing;
  await hubJsm.streams.delete(mirroredStream).catch(() => undefined);
  await memberJsm.streams.delete(mirroredStream).catch(() => undefined);
  return sizeMiB / seconds;
}

// Ours: the delta is generated into memory first, so generation is not timed.
const learner = await connect({ servers: r.url, user: r.learner.user, pass: r.learner.password });
await ensureRegionDeltaBucket(member, region);
await ensureRegionDeltaMirror(hub, region);
const file = await collectBytes(writeDelta(generatedTensors(sizeMiB), "fp32"));
function* inChunks(bytes: Uint8Array) {
  for (let at = 0; at < bytes.byteLength; at += MiB) yield bytes.subarray(at, at + MiB);
}
// The Python SDK's put, what learner pods run: the same file from disk, in a child process
// (bench/sdk_put.py) that connects first and times only the put.
const python = await sdkPython();
// SOVEREIGN_BENCH_SDK_WINDOW=1 compares the SDK's put as it was before it pipelined.
const sdkWindow = Number(process.env.SOVEREIGN_BENCH_SDK_WINDOW ?? 8);
const scratch = await mkdtemp(join(tmpdir(), "sovereign-bench-transport-"));
const deltaPath = join(scratch, "delta.safetensors");
await writeFile(deltaPath, file);
async function pythonPut(signed: SignedManifest): Promise<{ startMs: number; endMs: number }> {
  const manifestPath = join(scratch, "manifest.json");
  await writeFile(manifestPath, serializeSignedManifest(signed));
  const { manifest } = signed;
  const name = deltaObjectName({
    namespace: "default",
    run: manifest.run,
    round: manifest.round,
    learner: manifest.learner,
  });
  const { stdout } = await run(
    python,
    [
      resolve(import.meta.dirname, "sdk_put.py"),
      regionNats.url,
      regionNats.learner.user,
      regionNats.learner.password,
      regionDeltaBucket(region),
      name,
      deltaPath,
      manifestPath,
      String(sdkWindow),
    ],
    { maxBuffer: MiB },
  );
  const out = JSON.parse(stdout.trim().split("\n").pop() as string) as { start: number; end: number };
  return { startMs: out.start * 1000, endMs: out.end * 1000 };
}

async function oursOnce(
  learnerKind: "node" | "python",
): Promise<{ put: number; across: number; verified: number; mirrored: number }> {
  const spec = { run: uniqueName("bench"), round: 1, region, learner: "learner-0" };
  const signed = await signedStreamedDelta(spec, () => [file]);
  const mirrorBefore = await regionDeltaMirrorProgress(hub, region);
  const abort = new AbortController();
  const arrived = (async () => {
    for await (const a of watchRegionDeltas(hub, region, abort.signal)) {
      if (a.delta?.signed.manifest.run === spec.run) return a.delta;
    }
    throw new Error("watch ended");
  })();
  // Wall-clock milliseconds, the clock the Python child reports in.
  let t0 = Date.now();
  let put: number;
  if (learnerKind === "node") {
    await publishDelta(learner, { region, namespace: "default", signed, source: inChunks(file) });
    put = (Date.now() - t0) / 1000;
  } else {
    const timed = await pythonPut(signed);
    t0 = timed.startMs;
    put = (timed.endMs - timed.startMs) / 1000;
  }
  const arrival = await arrived;
  abort.abort();
  const across = (Date.now() - t0) / 1000;
  const stream = await openArrivedDelta(hub, arrival, learnerKeys.publicKey, {
    maxBytes: 2 * file.byteLength,
  });
  for await (const _ of stream.chunks()) {
    // verifying is the point
  }
  const verified = (Date.now() - t0) / 1000;
  const mirrored = (await regionDeltaMirrorProgress(hub, region)).bytes - mirrorBefore.bytes;
  // Freed again, so that every round starts from the same streams (the member and the hub
  // do the same after a round).
  const done = { namespace: "default", run: spec.run, beforeRound: 2 };
  await purgeRegionDeltas(member, region, done);
  await purgeMirroredDeltas(hub, region, done);
  return { put, across, verified, mirrored };
}

// Every candidate once per round, rounds interleaved, so that all see the same contention;
// the median of each is reported.
const mib = file.byteLength / MiB;
const rounds: {
  rawPub: number;
  rawAcross: number;
  rawMirrored: number;
  put: number;
  across: number;
  verified: number;
  mirroredBytes: number;
  sdkPut: number;
  sdkAcross: number;
  sdkVerified: number;
}[] = [];
for (let i = 0; i < roundCount; i++) {
  const rawPub = await rawPublish();
  const rawAcross = await rawConsumeAcross();
  const rawMirrored = await rawThroughMirror();
  const o = await oursOnce("node");
  const p = await oursOnce("python");
  rounds.push({
    rawPub,
    rawAcross,
    rawMirrored,
    put: mib / o.put,
    across: mib / o.across,
    verified: mib / o.verified,
    mirroredBytes: o.mirrored,
    sdkPut: mib / p.put,
    sdkAcross: mib / p.across,
    sdkVerified: mib / p.verified,
  });
  console.log(
    `round ${i + 1}: raw pub ${rawPub.toFixed(0)}, raw across ${rawAcross.toFixed(0)}, raw through the mirror ${rawMirrored.toFixed(0)}; ours (Node learner) put ${(mib / o.put).toFixed(0)}, in the mirror ${(mib / o.across).toFixed(0)}, verified ${(mib / o.verified).toFixed(0)}; Python SDK put ${(mib / p.put).toFixed(0)}, in the mirror ${(mib / p.across).toFixed(0)}, verified ${(mib / p.verified).toFixed(0)} MiB/s`,
  );
}
const median = (pick: (x: (typeof rounds)[number]) => number): number => {
  const xs = rounds.map(pick).sort((a, b) => a - b);
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 ? (xs[mid] as number) : ((xs[mid - 1] as number) + (xs[mid] as number)) / 2;
};
const rawPub = median((x) => x.rawPub);
const rawAcross = median((x) => x.rawAcross);
const rawMirrored = median((x) => x.rawMirrored);
const putMiBps = median((x) => x.put);
const acrossMiBps = median((x) => x.across);
const verifiedMiBps = median((x) => x.verified);
const mirrored = median((x) => x.mirroredBytes);
const sdkPutMiBps = median((x) => x.sdkPut);
const sdkAcrossMiBps = median((x) => x.sdkAcross);
const sdkVerifiedMiBps = median((x) => x.sdkVerified);

// Publishing then consuming across, one after the other, as a delta's bytes must go.
const rawTransfer = 1 / (1 / rawPub + 1 / rawAcross);
const result = {
  bench: "transport",
  sizeMiB: mib,
  roundCount,
  chunkBytes: MiB,
  putWindow: DEFAULT_PUT_WINDOW,
  load: { before: loadBefore, after: loadavg() },
  baselines: {
    natsBenchJsPubAsyncMiBps: rawPub,
    natsBenchJsOrderedAcrossLeafMiBps: rawAcross,
    natsBenchPubThenOrderedMiBps: rawTransfer,
    natsBenchPubThroughHubMirrorMiBps: rawMirrored,
  },
  rounds,
  learnerPut: { MiBps: putMiBps, ratioToRawPub: putMiBps / rawPub },
  acrossLink: {
    MiBps: acrossMiBps,
    ratioToRawAcross: acrossMiBps / rawAcross,
    ratioToRawThroughMirror: acrossMiBps / rawMirrored,
  },
  endToEnd: {
    MiBps: verifiedMiBps,
    ratioToRawAcross: verifiedMiBps / rawAcross,
    ratioToRawPubThenAcross: verifiedMiBps / rawTransfer,
    ratioToRawThroughMirror: verifiedMiBps / rawMirrored,
  },
  mirroredBytes: mirrored,
  pythonSdkLearner: {
    putWindow: sdkWindow,
    putMiBps: sdkPutMiBps,
    putRatioToRawPub: sdkPutMiBps / rawPub,
    acrossMiBps: sdkAcrossMiBps,
    acrossRatioToRawAcross: sdkAcrossMiBps / rawAcross,
    acrossRatioToRawThroughMirror: sdkAcrossMiBps / rawMirrored,
    verifiedMiBps: sdkVerifiedMiBps,
    verifiedRatioToRawPubThenAcross: sdkVerifiedMiBps / rawTransfer,
  },
};
console.log(
  `delta of ${mib.toFixed(1)} MiB, ${region} → hub over the leaf link, median of ${roundCount} rounds`,
);
console.log(`  raw nats bench js pub async (region)          ${rawPub.toFixed(0)} MiB/s`);
console.log(`  raw nats bench js ordered (hub → region domain) ${rawAcross.toFixed(0)} MiB/s`);
console.log(
  `  raw nats bench js pub async through the hub's mirror ${rawMirrored.toFixed(0)} MiB/s (pub start → all in the mirror)`,
);
console.log(
  `  learner put            ${result.learnerPut.MiBps.toFixed(0)} MiB/s  ×${result.learnerPut.ratioToRawPub.toFixed(2)} of raw pub`,
);
console.log(
  `  in the hub's mirror    ${result.acrossLink.MiBps.toFixed(0)} MiB/s  ×${result.acrossLink.ratioToRawAcross.toFixed(2)} of raw across, ×${result.acrossLink.ratioToRawThroughMirror.toFixed(2)} of raw through the mirror (put included)`,
);
console.log(
  `  verified at the hub    ${result.endToEnd.MiBps.toFixed(0)} MiB/s  ×${result.endToEnd.ratioToRawAcross.toFixed(2)} of raw across (put and verify included), ×${result.endToEnd.ratioToRawPubThenAcross.toFixed(2)} of raw pub then across (${rawTransfer.toFixed(0)} MiB/s)`,
);
console.log(
  `  Python SDK learner: put ${sdkPutMiBps.toFixed(0)} MiB/s ×${(sdkPutMiBps / rawPub).toFixed(2)} of raw pub; in the hub's mirror ${sdkAcrossMiBps.toFixed(0)} MiB/s ×${(sdkAcrossMiBps / rawAcross).toFixed(2)} of raw across, ×${(sdkAcrossMiBps / rawMirrored).toFixed(2)} of raw through the mirror; verified ${sdkVerifiedMiBps.toFixed(0)} MiB/s ×${(sdkVerifiedMiBps / rawTransfer).toFixed(2)} of raw pub then across`,
);
console.log(
  `  load average ${loadBefore.map((l) => l.toFixed(1)).join(" ")} before, ${result.load.after.map((l) => l.toFixed(1)).join(" ")} after`,
);

await memberJsm.streams.delete(rawStream).catch(() => undefined);
await Promise.all([hub.close(), member.close(), learner.close()]);
await rm(scratch, { recursive: true, force: true });
const out = resolve(import.meta.dirname, "results");
await mkdir(out, { recursive: true });
await writeFile(join(out, "transport.json"), `${JSON.stringify(result, null, 2)}\n`);
