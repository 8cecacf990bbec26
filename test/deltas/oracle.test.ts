// Cross-checks against the reference implementation (Python safetensors, numpy): files
// written by either side read identically on the other; fp16 rounding agrees bit for bit;
// and on mutated files the reference never accepts what we refuse except where
// docs/deltas.md says we are stricter, and never refuses what we accept.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import fc from "fast-check";
import { decodeDeltaToArrays } from "../../deltas/delta.ts";
import {
  collectBytes,
  type DeltaEncoding,
  type Dtype,
  dtypeBytes,
  f32ToF16Bits,
  isDeltaError,
  openDelta,
  readSafetensors,
  writeDelta,
  writeSafetensors,
} from "../../deltas/mod.ts";
import { pythonOracle, runPython } from "./python-oracle.ts";

const oracle = await pythonOracle();
const oracleTest = oracle.ok ? test : test.skip;
if (!oracle.ok) console.warn(`python oracle tests skipped: ${oracle.reason}`);
const title = (what: string) => (oracle.ok ? what : `${what} (skipped: ${oracle.reason})`);
const python = <T>(script: string, input: unknown) => {
  if (!oracle.ok) throw new Error(oracle.reason);
  return runPython<T>(oracle, script, input);
};

const READ_SCRIPT = `
import sys, json, hashlib
from safetensors import deserialize, safe_open
out = []
for p in json.load(sys.stdin)["paths"]:
    try:
        items = deserialize(open(p, "rb").read())
    except Exception as e:
        out.append({"ok": False, "error": str(e)[:300]})
        continue
    with safe_open(p, framework="numpy") as f:
        md = f.metadata()
    out.append({"ok": True, "metadata": md, "tensors": {n: {"dtype": d["dtype"], "shape": list(d["shape"]),
        "sha256": hashlib.sha256(bytes(d["data"])).hexdigest()} for n, d in items}})
print(json.dumps(out))
`;

interface PythonView {
  ok: boolean;
  error?: string;
  metadata?: Record<string, string> | null;
  tensors?: Record<string, { dtype: string; shape: number[]; sha256: string }>;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function ourView(bytes: Uint8Array): Promise<PythonView & { reason?: string; message?: string }> {
  try {
    const { header, tensors } = await readSafetensors([bytes]);
    const view: NonNullable<PythonView["tensors"]> = {};
    for (const [name, t] of tensors)
      view[name] = { dtype: t.info.dtype, shape: t.info.shape, sha256: sha256(t.bytes) };
    return { ok: true, metadata: header.metadata ? { ...header.metadata } : null, tensors: view };
  } catch (err) {
    if (!isDeltaError(err)) throw err;
    return { ok: false, reason: err.reason, message: err.message };
  }
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "deltas-oracle-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const DTYPES: Dtype[] = [
  "BOOL",
  "U8",
  "I8",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "F64",
  "I64",
  "U64",
];

oracleTest(
  title("files we write read identically in the reference (every dtype, metadata, empty and scalar tensors)"),
  async (t) => {
    const tensors = DTYPES.map((dtype, i) => {
      const shape = i % 3 === 0 ? [3, 2] : i % 3 === 1 ? [5] : [];
      const bytes = new Uint8Array(randomBytes(dtypeBytes(dtype) * shape.reduce((a, b) => a * b, 1)));
      // Keep BOOL bytes 0 or 1, the only values a bool tensor holds.
      return {
        name: `layer.${i}.${dtype.toLowerCase()}`,
        dtype,
        shape,
        data: dtype === "BOOL" ? bytes.map((b) => b & 1) : bytes,
      };
    });
    tensors.push({ name: "empty", dtype: "F32", shape: [0, 4], data: new Uint8Array(0) });
    tensors.push({ name: "naïve/ünicode ✓", dtype: "U8", shape: [1], data: new Uint8Array([42]) });
    const file = await collectBytes(writeSafetensors(tensors, { metadata: { format: "pt", note: "é" } }));
    const [theirs] = await withTempDir(async (dir) => {
      await writeFile(join(dir, "a.safetensors"), file);
      return python<PythonView[]>(READ_SCRIPT, { paths: [join(dir, "a.safetensors")] });
    });
    t.deepEqual(theirs, await ourView(file));
    t.is(Object.keys(theirs?.tensors ?? {}).length, tensors.length);
  },
);

oracleTest(title("files the reference writes read identically here"), async (t) => {
  const script = `
import sys, json, hashlib, numpy as np
from safetensors import serialize, TensorSpec
from safetensors.numpy import save
req = json.load(sys.stdin)
rng = np.random.default_rng(7)
arrays = {
  "f32": rng.standard_normal((4, 3)).astype(np.float32),
  "f16": rng.standard_normal(7).astype(np.float16),
  "f64": rng.standard_normal((2, 2, 2)),
  "i8": rng.integers(-128, 127, 9, dtype=np.int8),
  "u8": rng.integers(0, 255, 3, dtype=np.uint8),
  "i32": rng.integers(-2**31, 2**31 - 1, 5, dtype=np.int32),
  "bool": rng.integers(0, 2, 4).astype(np.bool_),
  "scalar": np.array(3.5, dtype=np.float32),
  "empty": np.zeros((0, 3), dtype=np.float32),
}
open(req["numpy"], "wb").write(save(arrays, metadata={"format": "np"}))
raw = rng.integers(0, 65535, 6, dtype=np.uint16)
spec = {"bf16": TensorSpec(dtype="bfloat16", shape=[2, 3], data_ptr=raw.ctypes.data, data_len=raw.nbytes)}
open(req["raw"], "wb").write(serialize(spec, metadata={"format": "raw"}))
print(json.dumps({"raw_sha256": hashlib.sha256(raw.tobytes()).hexdigest()}))
`;
  await withTempDir(async (dir) => {
    const paths = { numpy: join(dir, "np.safetensors"), raw: join(dir, "raw.safetensors") };
    const written = await python<{ raw_sha256: string }>(script, paths);
    const theirs = await python<PythonView[]>(READ_SCRIPT, { paths: [paths.numpy, paths.raw] });
    for (const [i, path] of [paths.numpy, paths.raw].entries()) {
      const bytes = new Uint8Array(await readFile(path));
      t.deepEqual(await ourView(bytes), theirs[i]);
    }
    t.is(theirs[1]?.tensors?.bf16?.sha256, written.raw_sha256);
    t.is(theirs[0]?.tensors?.empty?.shape.join(","), "0,3");
  });
});

oracleTest(
  title("fp16 rounding agrees bit for bit with numpy on specials, ties, subnormals and random patterns"),
  async (t) => {
    const specials = [
      0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc12345, 0x477fe000, 0x477fefff,
      0x477ff000, 0x47800000, 0x38800000, 0x387fffff, 0x33000000, 0x33000001, 0x32ffffff, 0x33800000,
      0x3f801000, 0x3f803000, 0x3f800fff, 0x3f801001, 0x00000001, 0x007fffff,
    ];
    const random = Array.from(new Uint32Array(randomBytes(4 * 20000).buffer));
    // Every fp16 midpoint: the exact tie and one fp32 ulp either side.
    const ties: number[] = [];
    for (let e = 0x33000000; e < 0x47800000; e += 0x00200000)
      ties.push(e + 0x1000, e + 0xfff, e + 0x1001, e + 0x3000);
    const bits = [...specials, ...random, ...ties];
    const theirs = await python<number[]>(
      `
import sys, json, numpy as np
b = np.array(json.load(sys.stdin), dtype=np.uint32)
print(json.dumps(b.view(np.float32).astype(np.float16).view(np.uint16).tolist()))
`,
      bits,
    );
    let mismatches = 0;
    bits.forEach((b, i) => {
      const ours = f32ToF16Bits(b);
      const ref = theirs[i] as number;
      const bothNaN =
        (ours & 0x7c00) === 0x7c00 &&
        (ours & 0x3ff) !== 0 &&
        (ref & 0x7c00) === 0x7c00 &&
        (ref & 0x3ff) !== 0;
      if (ours !== ref && !bothNaN) mismatches++;
    });
    t.is(mismatches, 0, `${mismatches} of ${bits.length} conversions differ from numpy`);
  },
);

oracleTest(
  title(
    "deltas we write decode to the same fp32 in numpy (int4-block packed and int8 fallback, int8-block, int8-row, fp16)",
  ),
  async (t) => {
    const values = Float32Array.from({ length: 300 }, (_, i) => Math.sin(i) * (i % 17) * 1e-3);
    const script = `
import sys, json, hashlib, numpy as np
from safetensors import safe_open
req = json.load(sys.stdin)
with safe_open(req["path"], framework="numpy") as f:
    q = f.get_tensor("w")
    if req["encoding"] == "fp16":
        x = q.astype(np.float32)
    else:
        s = f.get_tensor("w:scale")
        span = req["span"]
        q = q.reshape(-1)
        if q.dtype == np.uint8:  # packed int4: element 2i in the low nibble, 2i+1 in the high
            codes = np.empty(q.size * 2, np.int8)
            codes[0::2] = ((q & 0x0F) ^ 8).astype(np.int8) - 8
            codes[1::2] = ((q >> 4) ^ 8).astype(np.int8) - 8
            q = codes
        x = (q.astype(np.float32) * np.repeat(s, span)[: q.size]).astype(np.float32)
print(json.dumps(hashlib.sha256(x.tobytes()).hexdigest()))
`;
    for (const [encoding, shape, span] of [
      ["int4-block64", [300], 64],
      ["int4-block8", [20, 15], 8],
      ["int8-block64", [300], 64],
      ["int8-row", [20, 15], 15],
      ["fp16", [300], 1],
    ] as Array<[DeltaEncoding, number[], number]>) {
      const file = await collectBytes(writeDelta([{ name: "w", shape, values }], encoding));
      const ours = (await decodeDeltaToArrays((await openDelta([file])).stream)).get("w") as Float32Array;
      const theirs = await withTempDir(async (dir) => {
        await writeFile(join(dir, "d.safetensors"), file);
        return python<string>(script, { path: join(dir, "d.safetensors"), encoding, span });
      });
      t.is(sha256(new Uint8Array(ours.buffer)), theirs, encoding);
    }
  },
);

// Where docs/deltas.md says we are stricter than the reference.
function documentedStrictness(reason: string | undefined, message: string | undefined): boolean {
  if (
    reason === "DeltaNameDuplicate" ||
    reason === "DeltaShapeOverflow" ||
    reason === "DeltaDtypeUnsupported"
  )
    return true;
  if (reason === "DeltaNameInvalid") return /empty name|longer than/.test(message ?? "");
  if (reason === "DeltaHeaderInvalid") return /unknown field|duplicate key/.test(message ?? "");
  return false;
}

const mutation = fc.oneof(
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("byte" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("length" as const), delta: fc.integer({ min: -16, max: 16 }) }),
  fc.record({ kind: fc.constant("append" as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
  fc.record({
    kind: fc.constant("text" as const),
    from: fc.constantFrom('"F32"', '"U8"', "[", ",", "0", "1", '"data_offsets"', '"shape"', "}"),
    to: fc.constantFrom(
      '"F4"',
      '"I8"',
      '"U16"',
      "[0,",
      "9",
      "2",
      "",
      ' "x":1,',
      "18446744073709551616",
      ",1",
      '"\\ud800"',
    ),
  }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(file: Uint8Array, m: Mutation): Uint8Array {
  const out = new Uint8Array(file);
  const headerLength = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  switch (m.kind) {
    case "truncate":
      return out.subarray(0, m.at % file.byteLength);
    case "byte":
      out[m.at % file.byteLength] = m.value;
      return out;
    case "length":
      new DataView(out.buffer).setBigUint64(0, BigInt(Math.max(0, headerLength + m.delta)), true);
      return out;
    case "append": {
      const longer = new Uint8Array(file.byteLength + m.bytes.byteLength);
      longer.set(file);
      longer.set(m.bytes, file.byteLength);
      return longer;
    }
    case "text": {
      const header = new TextDecoder().decode(file.subarray(8, 8 + headerLength));
      const changed = new TextEncoder().encode(header.replace(m.from, m.to));
      const rebuilt = new Uint8Array(8 + changed.byteLength + file.byteLength - 8 - headerLength);
      new DataView(rebuilt.buffer).setBigUint64(0, BigInt(changed.byteLength), true);
      rebuilt.set(changed, 8);
      rebuilt.set(file.subarray(8 + headerLength), 8 + changed.byteLength);
      return rebuilt;
    }
  }
}

oracleTest(
  title(
    "differential fuzz: on mutated files we never accept what the reference refuses, and agree on what both accept",
  ),
  async (t) => {
    const base = fc.array(
      fc.record({
        dtype: fc.constantFrom<Dtype>("F32", "U8", "F16", "I32"),
        shape: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 4 },
    );
    const cases = fc.sample(fc.tuple(base, mutation), { numRuns: 400, seed: 20261124 });
    const files: Uint8Array[] = [];
    for (const [specs, m] of cases) {
      const file = await collectBytes(
        writeSafetensors(
          specs.map((s, i) => ({
            name: `t${i}`,
            dtype: s.dtype,
            shape: s.shape,
            data: new Uint8Array(dtypeBytes(s.dtype) * s.shape.reduce((a, b) => a * b, 1)).fill(i + 1),
          })),
        ),
      );
      files.push(mutate(file, m));
    }
    const theirs = await withTempDir(async (dir) => {
      const paths = await Promise.all(
        files.map(async (f, i) => {
          const p = join(dir, `${i}.safetensors`);
          await writeFile(p, f);
          return p;
        }),
      );
      return python<PythonView[]>(READ_SCRIPT, { paths });
    });
    let bothAccept = 0;
    let bothRefuse = 0;
    let stricter = 0;
    for (const [i, file] of files.entries()) {
      const ours = await ourView(file);
      const ref = theirs[i] as PythonView;
      if (ours.ok) {
        t.true(ref.ok, `case ${i}: we accept a file the reference refuses (${ref.error})`);
        if (ref.ok) t.deepEqual(ours, ref, `case ${i}`);
        bothAccept++;
      } else if (ref.ok) {
        t.true(
          documentedStrictness(ours.reason, ours.message),
          `case ${i}: undocumented refusal ${ours.message}`,
        );
        stricter++;
      } else bothRefuse++;
    }
    t.log(
      `${files.length} mutated files: both accept ${bothAccept}, both refuse ${bothRefuse}, only we refuse ${stricter}`,
    );
    t.true(bothAccept > 20 && bothRefuse > 100);
  },
);
