// Deltas written by the SDK against the hub's real verification (deltas/manifest.ts), and the
// other way round: a signed delta from the SDK is accepted by verifyDelta with the learner's
// public key and decodes to exactly what deltas/encodings.ts would have encoded; any byte
// flipped is refused with the reason the hub reports; a delta written and signed by deltas/
// is read and verified by the SDK; canonical JSON is the same string on both sides.
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import {
  canonicalJson,
  collectBytes,
  type DeltaEncoding,
  type DeltaTensor,
  decodeDeltaToArrays,
  decodeValues,
  describeDelta,
  encodeValues,
  isDeltaError,
  openSafetensors,
  openVerifiedDelta,
  parseEncoding,
  parseSignedManifest,
  publicKeyField,
  serializeSignedManifest,
  signManifest,
  verifyDelta,
  writeDelta,
} from "../../deltas/mod.ts";
import { chunked, gaussian } from "../deltas/helpers.ts";
import { runPythonJson, scripts } from "./sdk-venv.ts";

const tool = join(scripts, "tool.py");
const b64 = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
const keys = generateKeyPairSync("ed25519");

async function scratch(t: { teardown(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), "sdk-deltas-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const key = join(dir, "learner.pem");
  await writeFile(key, keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string, { mode: 0o600 });
  return { dir, key };
}

const tensors = (): Array<DeltaTensor & { values: Float32Array }> => [
  { name: "layers.0.attn.weight", shape: [48, 64], values: gaussian(48 * 64, 0.01, 21) },
  { name: "layers.0.attn.bias", shape: [64], values: gaussian(64, 0.001, 22) },
  { name: 'émbed/ü"😀', shape: [3, 5, 7], values: gaussian(105, 1, 23) },
  { name: "scalar", shape: [], values: new Float32Array([0.75]) },
  { name: "empty", shape: [0, 4], values: new Float32Array(0) },
];

const manifestFields = {
  namespace: "sovereign-eu",
  run: "fedavg-mnist",
  round: 3,
  region: "region-a",
  learner: "learner-abc-0",
  baseModel: `sha256:${"ab".repeat(32)}`,
  tokens: 123456,
  innerSteps: 50,
};

/** The SDK writes and signs the same tensors once per encoding (one Python process for all). */
async function sdkWrites(dir: string, key: string, encodings: DeltaEncoding[]) {
  const jobs = encodings.map((encoding) => ({
    out: join(dir, `${encoding}.safetensors`),
    key,
    encoding,
    tensors: tensors().map((x) => ({ name: x.name, shape: x.shape, values: b64(x.values) })),
    manifest: manifestFields,
  }));
  const results = await runPythonJson<Array<{ signed: string; size: number; digest: string }>>([tool], {
    op: "write-signed",
    jobs,
  });
  return Promise.all(
    results.map(async (result, i) => ({
      encoding: encodings[i] as DeltaEncoding,
      file: new Uint8Array(await readFile(jobs[i]?.out as string)),
      ...result,
    })),
  );
}

// The tensors above give int4 packed payloads (even last dimension), an odd last dimension and
// a scalar (both stored at int8), and an empty tensor.
const ENCODINGS: DeltaEncoding[] = ["fp32", "bf16", "fp16", "int8-row", "int8-block128", "int4-block64"];

test("a delta the SDK writes and signs is accepted by the hub's verification and decodes to what deltas/ encodes", async (t) => {
  const { dir, key } = await scratch(t);
  for (const { encoding, file, signed: text, size } of await sdkWrites(dir, key, ENCODINGS)) {
    t.is(file.byteLength, size, `${encoding}: the manifest signs the file's size`);
    const signed = parseSignedManifest(new TextEncoder().encode(text));
    t.is(text, new TextDecoder().decode(serializeSignedManifest(signed)), "the wire form is canonical JSON");
    t.is(signed.manifest.learnerKey, publicKeyField(keys.publicKey));
    t.like(signed.manifest, { ...manifestFields, encoding, version: 1 });
    t.regex(signed.manifest.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    // Verified streaming in odd-sized chunks, as the hub reads from JetStream.
    const manifest = await verifyDelta(signed, keys.publicKey, chunked(file, [4093, 1, 65536]));
    t.is(manifest.size, file.byteLength);
    // The tensors' stored bytes are those deltas/ writes for the same values.
    const reference = await describeDelta([await collectBytes(writeDelta(tensors(), encoding))]);
    t.deepEqual(
      manifest.tensors,
      reference.tensors,
      `${encoding}: every stored tensor hashes as deltas/ writes it`,
    );

    const decoded = await decodeDeltaToArrays(await openVerifiedDelta(signed, keys.publicKey, [file]));
    for (const x of tensors()) {
      const expected = decodeValues(
        encodeValues(x.name, x.values, x.shape, parseEncoding(encoding)),
        x.shape,
        parseEncoding(encoding),
      );
      t.deepEqual(decoded.get(x.name), expected, `${encoding} ${x.name}`);
    }
  }
});

test("a tampered SDK delta is refused by the hub's verification with the reason it reports", async (t) => {
  const { dir, key } = await scratch(t);
  const [written] = await sdkWrites(dir, key, ["int8-block128"]);
  if (!written) throw new Error("the SDK wrote nothing");
  const { file, signed: text } = written;
  const signed = parseSignedManifest(new TextEncoder().encode(text));
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => "accepted",
      (err: unknown) => (isDeltaError(err) ? err.reason : `unexpected: ${String(err)}`),
    );
  t.is(await refusal(verifyDelta(signed, keys.publicKey, [file])), "accepted");

  // One bit flipped in each tensor's data (scales included), one at a time.
  const header = (await openSafetensors([file])).header;
  const dataStart = 8 + header.headerBytes;
  const flipped: string[] = [];
  for (const tensor of header.tensors) {
    if (tensor.end === tensor.start) continue;
    const copy = file.slice();
    const at = dataStart + tensor.start + Math.floor((tensor.end - tensor.start) / 2);
    copy[at] = (copy[at] as number) ^ 0x01;
    flipped.push(`${tensor.name}: ${await refusal(verifyDelta(signed, keys.publicKey, [copy]))}`);
  }
  t.true(flipped.length >= 8);
  t.deepEqual(
    flipped,
    flipped.map((line) => `${line.split(": ")[0]}: ManifestDigestMismatch`),
  );

  // A manifest edited after signing, or checked against another learner's key.
  const inflated = { ...signed, manifest: { ...signed.manifest, tokens: signed.manifest.tokens * 10 } };
  t.is(await refusal(verifyDelta(inflated, keys.publicKey, [file])), "ManifestSignatureInvalid");
  const other = generateKeyPairSync("ed25519").publicKey;
  t.is(await refusal(verifyDelta(signed, other, [file])), "ManifestKeyMismatch");
  // A byte appended: the size no longer matches the header the manifest signs.
  const longer = new Uint8Array([...file, 0]);
  t.not(await refusal(verifyDelta(signed, keys.publicKey, [longer])), "accepted");
});

test("a delta written and signed by deltas/ is read and verified by the SDK", async (t) => {
  const { dir } = await scratch(t);
  for (const encoding of [
    "bf16",
    "int8-row",
    "int8-block64",
    "int4-block64",
    "int4-block8",
  ] as DeltaEncoding[]) {
    const file = await collectBytes(writeDelta(tensors(), encoding));
    const described = await describeDelta([file]);
    const signed = signManifest(
      {
        version: 1,
        ...manifestFields,
        learnerKey: publicKeyField(keys.publicKey),
        createdAt: "2026-11-24T06:00:00Z",
        ...described,
      },
      keys.privateKey,
    );
    const path = join(dir, `ts-${encoding}.safetensors`);
    await writeFile(path, file);
    const text = new TextDecoder().decode(serializeSignedManifest(signed));
    const read = await runPythonJson<{
      encoding: string;
      values: Record<string, string>;
      tensors: unknown[];
      verified: boolean;
      canonical: string;
    }>([tool], {
      op: "read",
      path,
      signed: text,
      publicKey: keys.publicKey.export({ type: "spki", format: "pem" }),
    });
    t.is(read.encoding, encoding);
    t.true(read.verified, `${encoding}: the SDK verifies the manifest deltas/ signed`);
    t.is(read.canonical, text, "the SDK re-serialises the signed manifest to the same bytes");
    t.deepEqual(read.tensors, described.tensors);
    const decoded = await decodeDeltaToArrays(await openSafetensors([file]));
    for (const [name, values] of decoded) {
      t.deepEqual(
        new Float32Array(new Uint8Array(Buffer.from(read.values[name] as string, "base64")).buffer),
        values,
        `${encoding} ${name}`,
      );
    }
  }
});

test("canonical JSON is the same string in the SDK and deltas/manifest.ts, and both refuse the same values", async (t) => {
  const values: unknown[] = [
    { b: 1, a: [1, "x"], "": 0, A: { z: '\u0000\u001f\b\f\n\r\t"\\/\u007f\u2028' } },
    { "\uE000": 1, "😀": 2, é: 3, e: 4, "\uFFFF": 5, "\u{10000}": 6 },
    ["ü", "日本", "𝄞", "\u0085"],
    { n: Number.MAX_SAFE_INTEGER, m: -Number.MAX_SAFE_INTEGER, z: 0 },
    1.5,
    true,
    null,
    Number.MAX_SAFE_INTEGER + 1,
    "\uD800",
  ];
  const sdk = await runPythonJson<Array<string | { error: string }>>([tool], { op: "canonical", values });
  const ts = values.map((v) => {
    try {
      return canonicalJson(v);
    } catch (err) {
      if (isDeltaError(err)) return { error: err.reason };
      throw err;
    }
  });
  t.deepEqual(sdk, ts);
  t.is(
    ts.filter((x) => typeof x !== "string").length,
    5,
    "floats, booleans, null, unsafe integers and lone surrogates are refused",
  );
});
