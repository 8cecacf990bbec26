// Property and fuzz tests of the streaming parser: whatever bytes arrive, in whatever chunks,
// it either reads the file or throws a DeltaError — never anything else, and never hangs —
// and it reads back exactly what the writer wrote.
import test from "ava";
import fc from "fast-check";
import {
  collectBytes,
  type Dtype,
  dtypeBytes,
  isDeltaError,
  readSafetensors,
  writeSafetensors,
} from "../../deltas/mod.ts";
import { chunked, rawFile } from "./helpers.ts";

const dtype = fc.constantFrom<Dtype>("F32", "F16", "BF16", "I8", "U8", "I32", "F64", "BOOL", "I64");
const name = fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }).filter((s) => s !== "__metadata__");
const tensorSpec = fc.record({
  name,
  dtype,
  shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
});
const specs = fc.uniqueArray(tensorSpec, { selector: (s) => s.name, maxLength: 5 });
const metadata = fc.option(fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 8 })), {
  nil: undefined,
});
const chunkSizes = fc.array(fc.integer({ min: 1, max: 17 }), { minLength: 1, maxLength: 4 });

async function parseOutcome(bytes: Uint8Array, sizes: number[]) {
  try {
    return await readSafetensors(chunked(bytes, sizes));
  } catch (err) {
    if (isDeltaError(err)) return err;
    throw err;
  }
}

test("round-trips what it writes, whatever the chunking", async (t) => {
  await fc.assert(
    fc.asyncProperty(specs, metadata, chunkSizes, fc.integer(), async (tensors, md, sizes, seed) => {
      const data = tensors.map((s, i) => {
        const bytes = new Uint8Array(dtypeBytes(s.dtype) * s.shape.reduce((a, b) => a * b, 1));
        for (let j = 0; j < bytes.length; j++) bytes[j] = (seed + i * 31 + j * 7) & 0xff;
        return bytes;
      });
      const file = await collectBytes(
        writeSafetensors(
          tensors.map((s, i) => ({ ...s, data: data[i] as Uint8Array })),
          { metadata: md },
        ),
      );
      const { header, tensors: read } = await readSafetensors(chunked(file, sizes));
      t.deepEqual(header.metadata === undefined ? undefined : { ...header.metadata }, md);
      t.deepEqual(
        header.tensors.map((x) => [x.name, x.dtype, x.shape]),
        tensors.map((s) => [s.name, s.dtype, s.shape]),
      );
      for (const [i, s] of tensors.entries()) t.deepEqual(read.get(s.name)?.bytes, data[i]);
    }),
    { numRuns: 300 },
  );
});

test("mutated, truncated and extended files never throw anything but a DeltaError, and never hang", async (t) => {
  await fc.assert(
    fc.asyncProperty(
      specs,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.option(fc.nat(), { nil: undefined }),
      fc.uint8Array({ maxLength: 8 }),
      chunkSizes,
      async (tensors, flips, cut, tail, sizes) => {
        const file = await collectBytes(
          writeSafetensors(
            tensors.map((s) => ({
              ...s,
              data: new Uint8Array(dtypeBytes(s.dtype) * s.shape.reduce((a, b) => a * b, 1)),
            })),
          ),
        );
        const bytes = new Uint8Array(file.byteLength + tail.byteLength);
        bytes.set(file);
        bytes.set(tail, file.byteLength);
        for (const [at, value] of flips) bytes[at % bytes.byteLength] = value;
        const input = cut === undefined ? bytes : bytes.subarray(0, cut % (bytes.byteLength + 1));
        const outcome = await parseOutcome(input, sizes);
        if (!isDeltaError(outcome) && tail.byteLength > 0 && cut === undefined)
          t.fail("trailing bytes were accepted");
        t.pass();
      },
    ),
    { numRuns: 500 },
  );
});

test("arbitrary headers (random JSON-ish text, lying lengths) only ever give a DeltaError or a valid file", async (t) => {
  const jsonish = fc.oneof(
    fc.json(),
    fc.string({ unit: "binary", maxLength: 60 }),
    fc
      .record({ n: tensorSpec, a: fc.nat({ max: 40 }), b: fc.nat({ max: 40 }) })
      .map(
        ({ n, a, b }) =>
          `{${JSON.stringify(n.name)}:{"dtype":"${n.dtype}","shape":${JSON.stringify(n.shape)},"data_offsets":[${a},${b}]}}`,
      ),
  );
  await fc.assert(
    fc.asyncProperty(
      jsonish,
      fc.uint8Array({ maxLength: 48 }),
      fc.option(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), { nil: undefined }),
      chunkSizes,
      async (header, data, declared, sizes) => {
        const outcome = await parseOutcome(rawFile(header, data, declared), sizes);
        if (!isDeltaError(outcome))
          t.is(
            outcome.header.totalBytes,
            8 + Number(declared ?? BigInt(new TextEncoder().encode(header).byteLength)) + data.byteLength,
          );
        t.pass();
      },
    ),
    { numRuns: 1000 },
  );
});

test("a header of 50 MB of spaces after {} is parsed within seconds (no quadratic paths)", async (t) => {
  const header = new Uint8Array(50_000_000).fill(0x20);
  header[0] = 0x7b;
  header[1] = 0x7d;
  const started = Date.now();
  const { header: parsed } = await readSafetensors(chunked(rawFile(header), [1 << 16]));
  t.is(parsed.tensors.length, 0);
  t.true(Date.now() - started < 10_000);
});
