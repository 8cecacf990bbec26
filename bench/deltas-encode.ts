// `node bench/deltas-encode.ts [elements]`: encode and decode throughput of every delta
// encoding against a plain Float32Array copy loop measured in the same run, plus the full
// streaming path (writeDelta → safetensors in 1 MiB chunks → decodeDelta). Prints a table
// and writes bench/results/deltas-encode.json.
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  type DeltaEncoding,
  decodeDelta,
  decodeValues,
  encodeValues,
  measureEncoding,
  openDelta,
  parseEncoding,
  writeDelta,
} from "../deltas/mod.ts";
import { gaussian } from "../test/deltas/helpers.ts";

const elements = Number(process.argv[2] ?? 16 * 1024 * 1024);
const rows = 4096;
const shape = [rows, elements / rows];
const values = gaussian(elements, 0.01, 42);
const gib = (elements * 4) / 2 ** 30;

function bestOf(runs: number, fn: () => void): number {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return best;
}

const copy = new Float32Array(elements);
const copySeconds = bestOf(5, () => {
  for (let i = 0; i < elements; i++) copy[i] = values[i] as number;
});
const baseline = gib / copySeconds;

const encodings: DeltaEncoding[] = [
  "fp32",
  "bf16",
  "fp16",
  "int8-row",
  "int8-block128",
  "int8-block64",
  "int4-block64",
];
const results = [];
for (const encoding of encodings) {
  const parsed = parseEncoding(encoding);
  let encoded = encodeValues("w", values, shape, parsed);
  const encodeSeconds = bestOf(3, () => {
    encoded = encodeValues("w", values, shape, parsed);
  });
  const decodeSeconds = bestOf(3, () => {
    decodeValues(encoded, shape, parsed);
  });
  const t0 = performance.now();
  const file = writeDelta([{ name: "w", shape, values }], encoding);
  const rechunked = (async function* () {
    for await (const part of file) {
      for (let at = 0; at < part.byteLength; at += 1 << 20) yield part.subarray(at, at + (1 << 20));
    }
  })();
  let decoded = 0;
  for await (const chunk of decodeDelta((await openDelta(rechunked)).stream)) decoded += chunk.values.length;
  const pipelineSeconds = (performance.now() - t0) / 1000;
  if (decoded !== elements) throw new Error(`decoded ${decoded} of ${elements}`);
  const report = measureEncoding(values, shape, encoding);
  results.push({
    encodeGiBps: gib / encodeSeconds,
    decodeGiBps: gib / decodeSeconds,
    pipelineGiBps: gib / pipelineSeconds,
    encodeVsCopy: gib / encodeSeconds / baseline,
    decodeVsCopy: gib / decodeSeconds / baseline,
    pipelineVsCopy: gib / pipelineSeconds / baseline,
    ...report,
  });
}

console.log(
  `input: ${elements} fp32 values (${(gib * 1024).toFixed(0)} MiB) ~ N(0, 0.01²), shape [${shape.join(", ")}]; baseline copy loop ${baseline.toFixed(2)} GiB/s (fp32 GiB/s below)`,
);
console.log(
  "encoding       wire   encode  ×copy  decode  ×copy  stream→fp32 ×copy   maxAbs     rmse       rel",
);
for (const r of results) {
  console.log(
    [
      r.encoding.padEnd(13),
      r.ratio.toFixed(4),
      r.encodeGiBps.toFixed(2).padStart(6),
      r.encodeVsCopy.toFixed(2).padStart(6),
      r.decodeGiBps.toFixed(2).padStart(6),
      r.decodeVsCopy.toFixed(2).padStart(6),
      r.pipelineGiBps.toFixed(2).padStart(9),
      r.pipelineVsCopy.toFixed(2).padStart(7),
      r.maxAbsError.toExponential(2).padStart(10),
      r.rmse.toExponential(2).padStart(10),
      r.relativeError.toExponential(2).padStart(10),
    ].join(" "),
  );
}
const out = resolve(import.meta.dirname, "results");
await mkdir(out, { recursive: true });
await writeFile(
  join(out, "deltas-encode.json"),
  `${JSON.stringify({ node: process.version, elements, shape, baselineCopyGiBps: baseline, results }, null, 2)}\n`,
);
console.log(`wrote ${join(out, "deltas-encode.json")}`);
