// The Python SDK's object put (sdk/python/sovereign_sdk/objects.py) against a region's real
// nats-server: chunks pipelined up to a window, read back byte for byte by nats.js (the
// library's get, which checks the object's digest, and the hub's chunk reader); a missing
// bucket, a bucket over its byte limit and a user without publish rights each give a reason.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import test from "ava";
import { ensureObjectStore, objectChunks } from "../../transport/objects.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import { runPython, scripts } from "./sdk-venv.ts";

test("a pipelined put from the SDK reads back through nats.js byte for byte; failed puts give a reason and leave no object", async (t) => {
  t.timeout(180_000);
  const testbed = await useTestbed();
  const region = testbed.description.nats.regions["region-a"];
  if (!region) throw new Error("the testbed has no region-a");
  const member = await connect({
    servers: region.url,
    user: region.member.user,
    pass: region.member.password,
  });
  t.teardown(() => member.close());
  const [bucket, small, forbidden] = [
    uniqueName("sdkput"),
    uniqueName("sdksmall"),
    uniqueName("sdkforbidden"),
  ];
  await ensureObjectStore(member, bucket);
  await ensureObjectStore(member, small, { maxBytes: 3 * 1024 * 1024 });
  await ensureObjectStore(member, forbidden);
  const objm = new Objm(member);
  t.teardown(async () => {
    for (const b of [bucket, small, forbidden])
      await objm
        .open(b)
        .then((s) => s.destroy())
        .catch(() => undefined);
  });

  const result = await runPython(
    [
      join(scripts, "put_e2e.py"),
      region.url,
      region.member.user,
      region.member.password,
      region.learner.user,
      region.learner.password,
      bucket,
      small,
      forbidden,
    ],
    { timeoutMs: 120_000 },
  );
  t.is(result.code, 0, result.stderr);
  const r = JSON.parse(result.stdout) as {
    info: { size: number; chunks: number; nuid: string; metadata: Record<string, string>; revision: number };
    sha256: string;
    missingBucket: { reason: string; text: string };
    overLimit: { reason: string; text: string };
    forbidden: { reason: string; text: string };
  };
  t.like(r.info, { size: 9 * 1024 * 1024 + 12345, chunks: 10, metadata: { k: "v" } });

  // The library's get checks the SHA-256 in the meta; the hub's reader takes the chunks in order.
  const store = await objm.open(bucket);
  const got = await store.get("model/round-1");
  if (!got) throw new Error("the object is missing");
  const hash = createHash("sha256");
  for await (const piece of got.data) hash.update(piece);
  t.falsy(await got.error, "the library found the digest in the meta wrong");
  t.is(hash.digest("hex"), r.sha256);
  const info = await store.info("model/round-1");
  t.is(info?.revision, r.info.revision);
  const chunked = createHash("sha256");
  for await (const piece of objectChunks(member, bucket, info as NonNullable<typeof info>))
    chunked.update(piece);
  t.is(chunked.digest("hex"), r.sha256);

  t.is(r.missingBucket.reason, "DeltaBucketMissing");
  t.is(r.overLimit.reason, "PublishFailed");
  t.regex(r.overLimit.text, /JetStream refused 'big' in .* after \d+ bytes: .*maximum bytes exceeded/i);
  t.is(r.forbidden.reason, "PublishFailed");
  t.regex(r.forbidden.text, /a permissions violation shows as a timeout/);
  // Nothing visible of the failed puts.
  t.is(await (await objm.open(small)).info("big"), null);
  t.is(await (await objm.open(forbidden)).info("x"), null);
});
