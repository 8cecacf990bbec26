// `node bench/transport.ts [MiB]` (default 256): a delta from a learner in region-a to the
// hub on the testbed, against raw `nats bench` on the same servers in the same run.
//
//   learner put       publishDelta into the region's bucket   vs  nats bench js pub async (region server)
//   across the link   put start → hub mirror complete          vs  nats bench js ordered from the hub, --js-domain region-a
//   end to end        put start → verified at the hub          vs  the same ordered-consumer baseline, and vs
//                                                                  raw publish then raw consume across (the
//                                                                  same two steps, done by nats bench)
//
// Like for like: the raw runs use messages of the object store's chunk size, the region's
// server, file storage, JetStream publishes with acks, and a consumer across the leaf link.
// nats bench keeps up to --batch (500) publishes unacknowledged, i.e. the whole 256 MiB here;
// the learner keeps DEFAULT_PUT_WINDOW chunks. The load average is recorded with the figures.
//
// Prints ratios and writes bench/results/transport.json. Starts the testbed if it is down.
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { connect } from "@nats-io/transport-node";
import { collectBytes, writeDelta } from "../deltas/mod.ts";
import { uniqueName, useTestbed } from "../test/testbed/harness.ts";
import { generatedTensors, learnerKeys, signedStreamedDelta } from "../test/transport/fixtures.ts";
import {
  DEFAULT_PUT_WINDOW,
  ensureRegionDeltaBucket,
  ensureRegionDeltaMirror,
  openArrivedDelta,
  publishDelta,
  regionDeltaMirrorProgress,
  watchRegionDeltas,
} from "../transport/mod.ts";

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 256);
const region = "region-a";
const run = promisify(execFile);

const tb = await useTestbed();
const { hub: hubNats, regions } = tb.description.nats;
const r = regions[region];
if (!r) throw new Error(`no ${region} in the testbed`);
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
const rawPub = await natsBench([
  "bench",
  "js",
  "pub",
  "async",
  "bench.raw.transport",
  "--server",
  r.url,
  "--user",
  r.member.user,
  "--password",
  r.member.password,
  "--size",
  "1MiB",
  "--msgs",
  String(sizeMiB),
  "--stream",
  rawStream,
  "--create",
  "--storage",
  "file",
  "--purge",
]);
const rawAcross = await natsBench([
  "bench",
  "js",
  "ordered",
  "--server",
  hubNats.url,
  "--user",
  hubNats.admin.user,
  "--password",
  hubNats.admin.password,
  "--js-domain",
  region,
  "--size",
  "1MiB",
  "--msgs",
  String(sizeMiB),
  "--stream",
  rawStream,
]);

// Ours: the delta is generated into memory first, so generation is not timed.
const hub = await connect({ servers: hubNats.url, user: hubNats.admin.user, pass: hubNats.admin.password });
const member = await connect({ servers: r.url, user: r.member.user, pass: r.member.password });
const learner = await connect({ servers: r.url, user: r.learner.user, pass: r.learner.password });
await ensureRegionDeltaBucket(member, region);
await ensureRegionDeltaMirror(hub, region);
const spec = { run: uniqueName("bench"), round: 1, region, learner: "learner-0" };
const file = await collectBytes(writeDelta(generatedTensors(sizeMiB), "fp32"));
const signed = await signedStreamedDelta(spec, () => [file]);
const mirrorBefore = await regionDeltaMirrorProgress(hub, region);

function* inChunks(bytes: Uint8Array) {
  for (let at = 0; at < bytes.byteLength; at += MiB) yield bytes.subarray(at, at + MiB);
}
const abort = new AbortController();
const arrived = (async () => {
  for await (const a of watchRegionDeltas(hub, region, abort.signal)) {
    if (a.delta?.signed.manifest.run === spec.run) return a.delta;
  }
  throw new Error("watch ended");
})();
const t0 = performance.now();
await publishDelta(learner, { region, namespace: "default", signed, source: inChunks(file) });
const putSeconds = (performance.now() - t0) / 1000;
const arrival = await arrived;
abort.abort();
const acrossSeconds = (performance.now() - t0) / 1000;
const stream = await openArrivedDelta(hub, arrival, learnerKeys.publicKey, { maxBytes: 2 * file.byteLength });
for await (const _ of stream.chunks()) {
  // verifying is the point
}
const endToEndSeconds = (performance.now() - t0) / 1000;
const mirrored = (await regionDeltaMirrorProgress(hub, region)).bytes - mirrorBefore.bytes;

const mib = file.byteLength / MiB;
// Publishing then consuming across, one after the other, as a delta's bytes must go.
const rawTransfer = 1 / (1 / rawPub + 1 / rawAcross);
const result = {
  bench: "transport",
  sizeMiB: mib,
  chunkBytes: MiB,
  putWindow: DEFAULT_PUT_WINDOW,
  load: { before: loadBefore, after: loadavg() },
  baselines: {
    natsBenchJsPubAsyncMiBps: rawPub,
    natsBenchJsOrderedAcrossLeafMiBps: rawAcross,
    natsBenchPubThenOrderedMiBps: rawTransfer,
  },
  learnerPut: { seconds: putSeconds, MiBps: mib / putSeconds, ratioToRawPub: mib / putSeconds / rawPub },
  acrossLink: {
    seconds: acrossSeconds,
    MiBps: mib / acrossSeconds,
    ratioToRawAcross: mib / acrossSeconds / rawAcross,
  },
  endToEnd: {
    seconds: endToEndSeconds,
    MiBps: mib / endToEndSeconds,
    ratioToRawAcross: mib / endToEndSeconds / rawAcross,
    ratioToRawPubThenAcross: mib / endToEndSeconds / rawTransfer,
  },
  mirroredBytes: mirrored,
};
console.log(`delta of ${mib.toFixed(1)} MiB, ${region} → hub over the leaf link`);
console.log(`  raw nats bench js pub async (region)          ${rawPub.toFixed(0)} MiB/s`);
console.log(`  raw nats bench js ordered (hub → region domain) ${rawAcross.toFixed(0)} MiB/s`);
console.log(
  `  learner put            ${result.learnerPut.MiBps.toFixed(0)} MiB/s  ×${result.learnerPut.ratioToRawPub.toFixed(2)} of raw pub`,
);
console.log(
  `  in the hub's mirror    ${result.acrossLink.MiBps.toFixed(0)} MiB/s  ×${result.acrossLink.ratioToRawAcross.toFixed(2)} of raw across (put included)`,
);
console.log(
  `  verified at the hub    ${result.endToEnd.MiBps.toFixed(0)} MiB/s  ×${result.endToEnd.ratioToRawAcross.toFixed(2)} of raw across (put and verify included), ×${result.endToEnd.ratioToRawPubThenAcross.toFixed(2)} of raw pub then across (${rawTransfer.toFixed(0)} MiB/s)`,
);
console.log(
  `  load average ${loadBefore.map((l) => l.toFixed(1)).join(" ")} before, ${result.load.after.map((l) => l.toFixed(1)).join(" ")} after`,
);

const jsm = await (await import("@nats-io/jetstream")).jetstreamManager(member);
await jsm.streams.delete(rawStream).catch(() => undefined);
await Promise.all([hub.close(), member.close(), learner.close()]);
const out = resolve(import.meta.dirname, "results");
await mkdir(out, { recursive: true });
await writeFile(join(out, "transport.json"), `${JSON.stringify(result, null, 2)}\n`);
