import { generateKeyPairSync } from "node:crypto";
import test from "ava";
import {
  canonicalJson,
  collectBytes,
  type DeltaManifest,
  type DeltaReason,
  decodeDeltaToArrays,
  describeDelta,
  isDeltaError,
  manifestDigest,
  openVerifiedDelta,
  parseSignedManifest,
  publicKeyField,
  readSafetensors,
  SIGNING_CONTEXT,
  type SignedManifest,
  serializeSignedManifest,
  signManifest,
  verifyDelta,
  writeDelta,
  writeSafetensors,
} from "../../deltas/mod.ts";
import { chunked, gaussian, rejectsWith } from "./helpers.ts";

const learnerKeys = generateKeyPairSync("ed25519");
const otherKeys = generateKeyPairSync("ed25519");

async function makeDelta(keys = learnerKeys) {
  const file = await collectBytes(
    writeDelta(
      [
        { name: "model.layers.0.mlp.weight", shape: [16, 32], values: gaussian(512, 0.01, 3) },
        { name: "model.norm.weight", shape: [32], values: gaussian(32, 0.01, 4) },
      ],
      "int8-block128",
    ),
  );
  const described = await describeDelta([file]);
  const manifest: DeltaManifest = {
    version: 1,
    namespace: "sovereign-eu",
    run: "llama-eu",
    round: 7,
    region: "region-a",
    learner: "learner-0.region-a",
    learnerKey: publicKeyField(keys.publicKey),
    baseModel: `sha256:${"ab".repeat(32)}`,
    encoding: described.encoding,
    tokens: 1_048_576,
    innerSteps: 500,
    createdAt: "2026-11-24T04:05:06.789Z",
    size: described.size,
    tensors: described.tensors,
  };
  return { file, signed: signManifest(manifest, keys.privateKey) };
}

test("a signed delta verifies end to end, from 7-byte chunks, and decodes", async (t) => {
  const { file, signed } = await makeDelta();
  const manifest = await verifyDelta(signed, learnerKeys.publicKey, chunked(file, [7]));
  t.is(manifest.round, 7);
  const stream = await openVerifiedDelta(signed, learnerKeys.publicKey, chunked(file, [1000]));
  const decoded = await decodeDeltaToArrays(stream);
  t.is(decoded.get("model.norm.weight")?.length, 32);
  t.deepEqual(
    signed.manifest.tensors.map((x) => x.name),
    [
      "model.layers.0.mlp.weight:scale",
      "model.layers.0.mlp.weight",
      "model.norm.weight:scale",
      "model.norm.weight",
    ],
  );
});

test("the canonical form sorts keys, has no whitespace, and is what is signed", async (t) => {
  t.is(
    canonicalJson({ b: 1, a: [2, "x"], é: { z: "\n", y: 0 } }),
    '{"a":[2,"x"],"b":1,"é":{"y":0,"z":"\\n"}}',
  );
  t.throws(() => canonicalJson({ a: 1.5 }), { message: /ManifestFieldInvalid/ });
  t.throws(() => canonicalJson({ a: -0 }), { message: /ManifestFieldInvalid/ });
  t.throws(() => canonicalJson({ a: true }), { message: /ManifestFieldInvalid/ });
  const { signed } = await makeDelta();
  const { verify } = await import("node:crypto");
  const message = Buffer.from(SIGNING_CONTEXT + canonicalJson(signed.manifest));
  t.true(verify(null, message, learnerKeys.publicKey, Buffer.from(signed.signature, "base64url")));
  // Key order on the wire does not matter; the wire form round-trips.
  const reordered = Object.fromEntries(Object.entries(signed.manifest).reverse()) as unknown as DeltaManifest;
  t.is(manifestDigest(reordered), manifestDigest(signed.manifest));
  const parsed = parseSignedManifest(serializeSignedManifest(signed));
  t.deepEqual(JSON.parse(JSON.stringify(parsed)), JSON.parse(JSON.stringify(signed)));
});

const tampered: Array<[keyof DeltaManifest, unknown]> = [
  ["namespace", "sovereign-us"],
  ["trainMs", 1],
  ["run", "llama-us"],
  ["round", 8],
  ["region", "region-b"],
  ["learner", "learner-1.region-a"],
  ["baseModel", `sha256:${"cd".repeat(32)}`],
  ["encoding", "int8-block64"],
  ["tokens", 2_000_000],
  ["innerSteps", 501],
  ["createdAt", "2026-11-24T04:05:07.789Z"],
  ["size", 1],
  ["tensors", []],
  ["version", 2],
];

for (const [field, value] of tampered) {
  test(`changing ${field} after signing is refused`, async (t) => {
    const { file, signed } = await makeDelta();
    const altered: SignedManifest = {
      ...signed,
      manifest: { ...signed.manifest, [field]: value } as DeltaManifest,
    };
    const err = await verifyDelta(altered, learnerKeys.publicKey, [file]).then(
      () => undefined,
      (e: unknown) => e,
    );
    const expected: DeltaReason[] = ["ManifestSignatureInvalid", "ManifestFieldInvalid"];
    t.true(
      expected.some((r) => isDeltaError(err, r)),
      String(err),
    );
  });
}

test("a changed digest or shape in the manifest is a signature failure; re-signed, a digest or header mismatch", async (t) => {
  const { file, signed } = await makeDelta();
  const tensors = signed.manifest.tensors.map((x) => ({ ...x }));
  (tensors[1] as { sha256: string }).sha256 = "0".repeat(64);
  const unsigned: SignedManifest = { ...signed, manifest: { ...signed.manifest, tensors } };
  await rejectsWith(t, verifyDelta(unsigned, learnerKeys.publicKey, [file]), "ManifestSignatureInvalid");
  const resigned = signManifest(unsigned.manifest, learnerKeys.privateKey);
  await rejectsWith(t, verifyDelta(resigned, learnerKeys.publicKey, [file]), "ManifestDigestMismatch");
  const reshaped = signed.manifest.tensors.map((x) => ({ ...x }));
  (reshaped[3] as { shape: number[] }).shape = [2, 16];
  const wrongShape = signManifest({ ...signed.manifest, tensors: reshaped }, learnerKeys.privateKey);
  await rejectsWith(t, verifyDelta(wrongShape, learnerKeys.publicKey, [file]), "ManifestHeaderMismatch");
});

test("every flipped data byte is caught as a digest mismatch, before the tensor's last chunk is handed on", async (t) => {
  const { file, signed } = await makeDelta();
  const headerEnd = 8 + Number(new DataView(file.buffer).getBigUint64(0, true));
  for (const at of [headerEnd, headerEnd + 100, file.byteLength - 1]) {
    const bad = file.slice();
    bad[at] = (bad[at] as number) ^ 0x01;
    const stream = await openVerifiedDelta(signed, learnerKeys.publicKey, chunked(bad, [64]));
    const handedOn: string[] = [];
    const err = await (async () => {
      for await (const chunk of stream.chunks()) if (chunk.last) handedOn.push(chunk.tensor.name);
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    t.true(isDeltaError(err, "ManifestDigestMismatch"), String(err));
    t.true(handedOn.length < signed.manifest.tensors.length);
  }
});

test("a header change the manifest does not sign (extra metadata, other tensors) is refused", async (t) => {
  const { file, signed } = await makeDelta();
  const other = await collectBytes(
    writeDelta([{ name: "model.norm.weight", shape: [32], values: gaussian(32, 0.01, 4) }], "int8-block128"),
  );
  await rejectsWith(t, verifyDelta(signed, learnerKeys.publicKey, [other]), "ManifestHeaderMismatch");
  const { header, tensors } = await readSafetensors([file]);
  const withExtraMetadata = await collectBytes(
    writeSafetensors(
      header.tensors.map((x) => ({ ...x, data: tensors.get(x.name)?.bytes ?? new Uint8Array(0) })),
      { metadata: { ...header.metadata, unsigned: "rides along" } },
    ),
  );
  await rejectsWith(
    t,
    verifyDelta(signed, learnerKeys.publicKey, [withExtraMetadata]),
    "ManifestHeaderMismatch",
  );
});

test("a truncated or extended delta is refused", async (t) => {
  const { file, signed } = await makeDelta();
  await rejectsWith(
    t,
    verifyDelta(signed, learnerKeys.publicKey, [file.subarray(0, file.byteLength - 3)]),
    "DeltaTruncated",
  );
  const longer = new Uint8Array(file.byteLength + 1);
  longer.set(file);
  await rejectsWith(t, verifyDelta(signed, learnerKeys.publicKey, [longer]), "DeltaTrailingBytes");
});

test("a manifest signed by another key, or naming another key, is refused", async (t) => {
  const { file, signed } = await makeDelta();
  const forged = signManifest(signed.manifest, otherKeys.privateKey);
  await rejectsWith(t, verifyDelta(forged, learnerKeys.publicKey, [file]), "ManifestSignatureInvalid");
  const { signed: otherLearners } = await makeDelta(otherKeys);
  // Validly signed by its own key, but not the key the hub bound to this learner.
  await rejectsWith(t, verifyDelta(otherLearners, learnerKeys.publicKey, [file]), "ManifestKeyMismatch");
  await rejectsWith(
    t,
    verifyDelta({ ...signed, signature: "A".repeat(86) }, learnerKeys.publicKey, [file]),
    "ManifestSignatureInvalid",
  );
  await rejectsWith(
    t,
    verifyDelta({ ...signed, signature: "" }, learnerKeys.publicKey, [file]),
    "ManifestSignatureInvalid",
  );
});

test("invalid fields are refused even when validly signed", async (t) => {
  const { signed } = await makeDelta();
  const cases: Array<[string, Partial<Record<keyof DeltaManifest, unknown>> & Record<string, unknown>]> = [
    ["run with upper case", { run: "Llama" }],
    ["namespace with a dot", { namespace: "sovereign.eu" }],
    ["negative wait time", { waitMs: -1 }],
    ["fractional train time", { trainMs: 1.5 }],
    ["train time as a string", { trainMs: "900" }],
    ["namespace too long", { namespace: "n".repeat(64) }],
    ["negative round", { round: -1 }],
    ["fractional tokens", { tokens: 1.5 }],
    ["zero inner steps", { innerSteps: 0 }],
    ["bad base digest", { baseModel: "sha256:xyz" }],
    ["unknown encoding", { encoding: "int3" }],
    ["non-UTC time", { createdAt: "2026-11-24T04:05:06+01:00" }],
    ["impossible date", { createdAt: "2026-02-30T00:00:00Z" }],
    ["malformed key", { learnerKey: "ed25519:abc" }],
    ["unknown field", { extra: "x" }],
    ["duplicate tensor", { tensors: [signed.manifest.tensors[0], signed.manifest.tensors[0]] }],
  ];
  for (const [what, change] of cases) {
    const manifest = { ...signed.manifest, ...change } as DeltaManifest;
    t.throws(() => signManifest(manifest, learnerKeys.privateKey), { message: /ManifestFieldInvalid/ }, what);
    const err = await verifyDelta({ manifest, signature: signed.signature }, learnerKeys.publicKey, []).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.true(isDeltaError(err, "ManifestFieldInvalid"), `${what}: ${String(err)}`);
  }
});

test("the wire form is parsed strictly: duplicate keys, floats and lone surrogates are refused", (t) => {
  const reject = (text: string) =>
    t.throws(
      () => parseSignedManifest(new TextEncoder().encode(text)),
      { message: /ManifestFieldInvalid/ },
      text,
    );
  reject('{"manifest":{},"manifest":{},"signature":""}');
  reject('{"manifest":{"round":1.0},"signature":""}');
  reject('{"manifest":{"run":"\\ud800"},"signature":""}');
  reject("not json");
});

test("the learner's timing (trainMs, waitMs) is optional, signed when present, and whole milliseconds", async (t) => {
  const { file, signed } = await makeDelta();
  t.false("trainMs" in signed.manifest, "the manifests above carry no timing and verify");
  const timed = signManifest({ ...signed.manifest, trainMs: 61_500, waitMs: 0 }, learnerKeys.privateKey);
  const verified = await verifyDelta(timed, learnerKeys.publicKey, [file]);
  t.is(verified.trainMs, 61_500);
  t.is(verified.waitMs, 0);
  t.not(
    manifestDigest(timed.manifest),
    manifestDigest(signed.manifest),
    "the timing is part of the delivery's identity",
  );
});
