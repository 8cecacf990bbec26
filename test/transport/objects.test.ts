// The transport's own object store put and read (transport/objects.ts) on the testbed's hub
// server: what it writes is what @nats-io/obj and the `nats object` CLI read, it keeps no
// more than its window of chunks unacknowledged, and a failed put leaves nothing visible.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import test, { type ExecutionContext } from "ava";
import { isTransportError, objectChunks, putObject } from "../../transport/mod.ts";
import { ensureObjectStore, listObjects, objectBytes, openObjectStore } from "../../transport/objects.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";

const MiB = 1024 * 1024;

async function hubBucket(t: ExecutionContext, maxBytes?: number) {
  const tb = await useTestbed();
  const { hub } = tb.description.nats;
  const nc = await connect({ servers: hub.url, user: hub.admin.user, pass: hub.admin.password });
  const bucket = uniqueName("objtest");
  await ensureObjectStore(nc, bucket, maxBytes ? { maxBytes } : {});
  t.teardown(async () => {
    await (await jetstreamManager(nc)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
    await nc.close();
  });
  return { tb, nc, bucket };
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const part of source) parts.push(part);
  return Buffer.concat(parts);
}

function sha(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function chunksOf(nc: NatsConnection, bucket: string, name: string): Promise<Uint8Array> {
  const info = await (await openObjectStore(nc, bucket)).info(name);
  if (!info) throw new Error(`no ${name}`);
  return collect(objectChunks(nc, bucket, info));
}

test("a pipelined put reads back through the library's get (its digest checked), the nats CLI and objectChunks", async (t) => {
  const { tb, nc, bucket } = await hubBucket(t);
  const file = new Uint8Array(randomBytes(5 * MiB + 12345));
  // Pieces that straddle chunk boundaries, are chunk-sized, empty, and larger than a chunk.
  const cuts = [0, 1000, MiB + 1000, 2 * MiB + 1000, 2 * MiB + 1000, 5 * MiB, file.byteLength];
  const pieces = cuts.slice(1).map((end, i) => file.subarray(cuts[i], end));
  const put = await putObject(
    nc,
    bucket,
    { name: "a/b/c", metadata: { k: "v" }, chunkBytes: MiB, window: 2 },
    pieces,
  );
  t.is(put.size, file.byteLength);
  t.is(put.chunks, 6);

  const store = await openObjectStore(nc, bucket);
  const result = await store.get("a/b/c");
  if (!result) throw new Error("no object");
  t.is(sha(await collect(objectBytes(result))), sha(file));
  t.deepEqual(result.info.metadata, { k: "v" });
  t.is(result.info.revision, put.revision);

  const out = join(tmpdir(), `${bucket}.bin`);
  t.teardown(() => rm(out, { force: true }));
  const { hub } = tb.description.nats;
  await promisify(execFile)(join(tb.description.binDir, "nats"), [
    ...["object", "get", bucket, "a/b/c", "--output", out, "--force"],
    // The = form: a generated password may start with "-", which the CLI would take for a flag.
    ...["--server", hub.url, `--user=${hub.admin.user}`, `--password=${hub.admin.password}`],
  ]);
  t.is(sha(await readFile(out)), sha(file), "nats object get reads it and its digest matches");

  t.is(sha(await chunksOf(nc, bucket, "a/b/c")), sha(file));
  const empty = await putObject(nc, bucket, { name: "empty" }, []);
  t.is(empty.chunks, 0);
  t.is((await store.getBlob("empty"))?.byteLength, 0);
});

test("a put keeps at most its window of chunks unacknowledged, and does pipeline", async (t) => {
  const { nc, bucket } = await hubBucket(t);
  // Counts the JetStream publishes (requests) outstanding on this real connection.
  let outstanding = 0;
  let peak = 0;
  const request = nc.request.bind(nc);
  nc.request = (async (...args: Parameters<NatsConnection["request"]>) => {
    const chunk = String(args[0]).startsWith(`$O.${bucket}.C.`);
    if (chunk) peak = Math.max(peak, ++outstanding);
    try {
      return await request(...args);
    } finally {
      if (chunk) outstanding--;
    }
  }) as NatsConnection["request"];
  const file = new Uint8Array(randomBytes(24 * MiB));
  await putObject(nc, bucket, { name: "w", chunkBytes: MiB, window: 4 }, [file]);
  t.true(peak <= 4, `peak of ${peak} unacknowledged chunks with a window of 4`);
  t.true(peak > 1, "chunks were in flight together");
  t.is(sha(await chunksOf(nc, bucket, "w")), sha(file));
});

test("a put the bucket refuses fails with ObjectPutFailed and leaves no object and no chunks", async (t) => {
  const { nc, bucket } = await hubBucket(t, 4 * MiB);
  const err = await t.throwsAsync(
    putObject(nc, bucket, { name: "big", chunkBytes: MiB }, [new Uint8Array(8 * MiB)]),
  );
  t.true(isTransportError(err, "ObjectPutFailed"), String(err));
  t.is(await (await openObjectStore(nc, bucket)).info("big"), null);
  const info = await (await jetstreamManager(nc)).streams.info(`OBJ_${bucket}`);
  t.is(info.state.messages, 0, "the chunks that were stored are purged");
});

test("replacing an object purges its old chunks; reading replaced chunks fails with DeltaObjectMissing", async (t) => {
  const { nc, bucket } = await hubBucket(t);
  await putObject(nc, bucket, { name: "r", chunkBytes: MiB }, [new Uint8Array(3 * MiB)]);
  const store = await openObjectStore(nc, bucket);
  const first = await store.info("r");
  if (!first) throw new Error("no object");
  const second = new Uint8Array(randomBytes(2 * MiB));
  await putObject(nc, bucket, { name: "r", chunkBytes: MiB }, [second]);
  t.is(sha(await chunksOf(nc, bucket, "r")), sha(second));
  t.is(
    (await (await jetstreamManager(nc)).streams.info(`OBJ_${bucket}`)).state.messages,
    3,
    "2 chunks and 1 meta",
  );
  const stale = await t.throwsAsync(collect(objectChunks(nc, bucket, first)));
  t.true(isTransportError(stale, "DeltaObjectMissing"), String(stale));
});

test("listObjects gives each object's last version with its revision, filters names before reading, skips deleted ones unless asked, and leaves no consumer", async (t) => {
  const { nc, bucket } = await hubBucket(t);
  const store = await openObjectStore(nc, bucket);
  await store.putBlob({ name: "run/round-1/a" }, new Uint8Array([1]));
  await store.putBlob({ name: "run/round-1/b" }, new Uint8Array([2, 2]));
  await store.putBlob({ name: "run/round-2/a" }, new Uint8Array([3, 3, 3]));
  await store.putBlob({ name: "run/round-1/a" }, new Uint8Array([4, 4, 4, 4])); // a second version
  await store.delete("run/round-1/b");
  const jsm = await jetstreamManager(nc);
  const consumersBefore = (await jsm.streams.info(`OBJ_${bucket}`)).state.consumer_count;

  const all = await listObjects(nc, bucket);
  t.deepEqual(
    all.map((o) => [o.name, o.size]),
    [
      ["run/round-2/a", 3],
      ["run/round-1/a", 4],
    ],
    "last versions, in revision order, the deleted one left out",
  );
  const [first, second] = all;
  t.true((first?.revision ?? 0) < (second?.revision ?? 0));
  t.is(second?.revision, (await store.info("run/round-1/a"))?.revision, "the revision the library reports");
  const round1 = await listObjects(nc, bucket, {
    names: (n) => n.startsWith("run/round-1/"),
    includeDeleted: true,
  });
  t.deepEqual(
    round1.map((o) => [o.name, o.deleted]),
    [
      ["run/round-1/a", false],
      ["run/round-1/b", true],
    ],
  );
  t.is(
    (await jsm.streams.info(`OBJ_${bucket}`)).state.consumer_count,
    consumersBefore,
    "no consumer created",
  );
  await t.throwsAsync(listObjects(nc, `${bucket}-missing`), { message: /stream not found/ });
});
