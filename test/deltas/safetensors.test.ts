import test from "ava";
import {
  collectBytes,
  type DeltaReason,
  encodeHeader,
  openSafetensors,
  readSafetensors,
  writeSafetensors,
} from "../../deltas/mod.ts";
import { chunked, f32Bytes, rawFile, rejectsWith } from "./helpers.ts";

const read = (bytes: Uint8Array, sizes?: number[]) => readSafetensors(chunked(bytes, sizes));

test("writes a header padded to 8 bytes with offsets in the given order, and reads it back from 1-byte chunks", async (t) => {
  const bytes = await collectBytes(
    writeSafetensors(
      [
        { name: "w", dtype: "F32", shape: [2, 2], data: f32Bytes([1, 2, 3, 4]) },
        { name: "empty", dtype: "I8", shape: [3, 0], data: new Uint8Array(0) },
        { name: "scalar", dtype: "F64", shape: [], data: new Uint8Array(new Float64Array([Math.PI]).buffer) },
        {
          name: "é/ünï.code",
          dtype: "U8",
          shape: [3],
          data: () => [new Uint8Array([1]), new Uint8Array([2, 3])],
        },
      ],
      { metadata: { format: "pt" } },
    ),
  );
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  t.is(headerLength % 8, 0);
  const { header, tensors } = await read(bytes, [1]);
  t.deepEqual({ ...header.metadata }, { format: "pt" });
  t.deepEqual(
    header.tensors.map((x) => [x.name, x.dtype, x.shape, x.start, x.end]),
    [
      ["w", "F32", [2, 2], 0, 16],
      ["empty", "I8", [3, 0], 16, 16],
      ["scalar", "F64", [], 16, 24],
      ["é/ünï.code", "U8", [3], 24, 27],
    ],
  );
  t.deepEqual([...new Float32Array(tensors.get("w")?.bytes.slice().buffer as ArrayBuffer)], [1, 2, 3, 4]);
  t.deepEqual([...new Float64Array(tensors.get("scalar")?.bytes.slice().buffer as ArrayBuffer)], [Math.PI]);
  t.deepEqual([...(tensors.get("é/ünï.code")?.bytes ?? [])], [1, 2, 3]);
  t.is(header.totalBytes, bytes.byteLength);
});

test("hands on element-aligned chunks whatever the transport's chunk boundaries", async (t) => {
  const values = Array.from({ length: 100 }, (_, i) => i + 0.5);
  const bytes = await collectBytes(
    writeSafetensors([{ name: "x", dtype: "F32", shape: [100], data: f32Bytes(values) }]),
  );
  const stream = await openSafetensors(chunked(bytes, [3, 7, 1, 13]));
  const seen: number[] = [];
  for await (const chunk of stream.chunks()) {
    t.is(chunk.bytes.byteLength % 4, 0);
    t.is(chunk.offset, seen.length * 4);
    seen.push(...new Float32Array(chunk.bytes.slice().buffer));
  }
  t.deepEqual(seen, values);
});

test("reads tensors in offset order whatever the header's key order", async (t) => {
  const header =
    '{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}';
  const { header: parsed, tensors } = await read(rawFile(header, new Uint8Array([7, 9])));
  t.deepEqual(
    parsed.tensors.map((x) => x.name),
    ["a", "b"],
  );
  t.deepEqual([...(tensors.get("b")?.bytes ?? [])], [9]);
});

test("accepts a null __metadata__ as absent, as the reference does", async (t) => {
  const { header } = await read(rawFile('{"__metadata__":null}'));
  t.is(header.metadata, undefined);
  t.deepEqual(header.tensors, []);
});

const u8 = (offsets: string, shape = "[1]", dtype = "U8") =>
  `{"dtype":"${dtype}","shape":${shape},"data_offsets":${offsets}}`;

const rejections: Array<[string, Uint8Array, DeltaReason]> = [
  ["an empty file", new Uint8Array(0), "DeltaTruncated"],
  ["a file shorter than the length prefix", new Uint8Array([1, 0, 0]), "DeltaTruncated"],
  ["a header length beyond the file", rawFile("{}", new Uint8Array(0), 1000n), "DeltaTruncated"],
  ["a header length of 2^64-1", rawFile("{}", new Uint8Array(0), 2n ** 64n - 1n), "DeltaHeaderTooLarge"],
  ["a header length over 100 MB", rawFile("{}", new Uint8Array(0), 100_000_001n), "DeltaHeaderTooLarge"],
  ["a zero header length", rawFile(""), "DeltaHeaderInvalid"],
  ["a header that is not JSON", rawFile("{nope}"), "DeltaHeaderInvalid"],
  ["a header that is a list", rawFile("[]"), "DeltaHeaderInvalid"],
  ["a header with trailing NULs", rawFile("{}\0\0"), "DeltaHeaderInvalid"],
  ["a header padded with NULs instead of spaces", rawFile("{}      \0"), "DeltaHeaderInvalid"],
  [
    "invalid UTF-8 in a name",
    rawFile(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x7b, 0x7d, 0x7d])),
    "DeltaNameInvalid",
  ],
  [
    "a lone surrogate in a name",
    rawFile(`{"\\ud800":${u8("[0,1]")}}`, new Uint8Array(1)),
    "DeltaNameInvalid",
  ],
  ["an empty name", rawFile(`{"":${u8("[0,1]")}}`, new Uint8Array(1)), "DeltaNameInvalid"],
  [
    "a duplicate name",
    rawFile(`{"a":${u8("[0,1]")},"a":${u8("[1,2]")}}`, new Uint8Array(2)),
    "DeltaNameDuplicate",
  ],
  [
    "an unknown dtype",
    rawFile(`{"a":${u8("[0,1]", "[1]", "Q7")}}`, new Uint8Array(1)),
    "DeltaDtypeUnsupported",
  ],
  [
    "a sub-byte dtype",
    rawFile(`{"a":${u8("[0,1]", "[2]", "F4")}}`, new Uint8Array(1)),
    "DeltaDtypeUnsupported",
  ],
  ["a negative dimension", rawFile(`{"a":${u8("[0,1]", "[-1]")}}`, new Uint8Array(1)), "DeltaHeaderInvalid"],
  [
    "a fractional dimension",
    rawFile(`{"a":${u8("[0,1]", "[1.0]")}}`, new Uint8Array(1)),
    "DeltaHeaderInvalid",
  ],
  [
    "an exponent dimension",
    rawFile(`{"a":${u8("[0,1]", "[1e0]")}}`, new Uint8Array(1)),
    "DeltaHeaderInvalid",
  ],
  ["a dimension past 2^53", rawFile(`{"a":${u8("[0,1]", "[18446744073709551615]")}}`), "DeltaShapeOverflow"],
  [
    "a shape whose product overflows 64 bits",
    rawFile(`{"a":${u8("[0,8]", "[4294967296,4294967296,2]", "F64")}}`, new Uint8Array(8)),
    "DeltaShapeOverflow",
  ],
  [
    "offsets that disagree with the shape",
    rawFile(`{"a":${u8("[0,2]")}}`, new Uint8Array(2)),
    "DeltaShapeMismatch",
  ],
  [
    "an end before the start",
    rawFile(`{"a":${u8("[1,0]", "[0]")}}`, new Uint8Array(0)),
    "DeltaOffsetsOutOfBounds",
  ],
  [
    "overlapping offsets",
    rawFile(`{"a":${u8("[0,2]", "[2]")},"b":${u8("[1,3]", "[2]")}}`, new Uint8Array(3)),
    "DeltaOffsetsOverlap",
  ],
  [
    "identical offsets",
    rawFile(`{"a":${u8("[0,1]")},"b":${u8("[0,1]")}}`, new Uint8Array(1)),
    "DeltaOffsetsOverlap",
  ],
  ["a gap before the first tensor", rawFile(`{"a":${u8("[1,2]")}}`, new Uint8Array(2)), "DeltaOffsetsGap"],
  [
    "a gap between tensors",
    rawFile(`{"a":${u8("[0,1]")},"b":${u8("[2,3]")}}`, new Uint8Array(3)),
    "DeltaOffsetsGap",
  ],
  ["data cut inside a tensor", rawFile(`{"a":${u8("[0,4]", "[4]")}}`, new Uint8Array(3)), "DeltaTruncated"],
  [
    "data cut inside an element",
    rawFile(`{"a":${u8("[0,8]", "[2]", "F32")}}`, new Uint8Array(6)),
    "DeltaTruncated",
  ],
  ["bytes after the last tensor", rawFile(`{"a":${u8("[0,1]")}}`, new Uint8Array(2)), "DeltaTrailingBytes"],
  ["a string in __metadata__ that is a number", rawFile('{"__metadata__":{"a":1}}'), "DeltaHeaderInvalid"],
  ["a __metadata__ that is a list", rawFile('{"__metadata__":[]}'), "DeltaHeaderInvalid"],
  [
    "an unknown field in a tensor",
    rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`),
    "DeltaHeaderInvalid",
  ],
  [
    "a missing dtype",
    rawFile(`{"a":{"shape":[1],"data_offsets":[0,1]}}`, new Uint8Array(1)),
    "DeltaHeaderInvalid",
  ],
  ["three offsets", rawFile(`{"a":${u8("[0,1,2]")}}`, new Uint8Array(1)), "DeltaHeaderInvalid"],
  ["deep nesting", rawFile(`{"__metadata__":${"[".repeat(5000)}}`), "DeltaHeaderInvalid"],
];

for (const [what, bytes, reason] of rejections) {
  test(`refuses ${what} with ${reason}`, async (t) => {
    await rejectsWith(t, read(bytes), reason);
    await rejectsWith(t, read(bytes, [1]), reason);
  });
}

test("enforces the caller's header, data and size limits before reading data", async (t) => {
  const bytes = await collectBytes(
    writeSafetensors([{ name: "x", dtype: "F32", shape: [1024], data: new Uint8Array(4096) }]),
  );
  await rejectsWith(t, readSafetensors([bytes], { maxHeaderBytes: 8 }), "DeltaHeaderTooLarge");
  await rejectsWith(t, readSafetensors([bytes], { maxDataBytes: 4095 }), "DeltaTooLarge");
  await rejectsWith(
    t,
    readSafetensors([bytes], { expectedTotalBytes: bytes.byteLength - 1 }),
    "DeltaOffsetsOutOfBounds",
  );
  await rejectsWith(
    t,
    readSafetensors([bytes], { expectedTotalBytes: bytes.byteLength + 1 }),
    "DeltaTrailingBytes",
  );
  t.is(
    (await readSafetensors([bytes], { maxDataBytes: 4096, expectedTotalBytes: bytes.byteLength })).tensors
      .size,
    1,
  );
});

test("the writer refuses sources of the wrong length, bad names and duplicates", async (t) => {
  await rejectsWith(
    t,
    collectBytes(writeSafetensors([{ name: "x", dtype: "F32", shape: [2], data: new Uint8Array(7) }])),
    "DeltaShapeMismatch",
  );
  await rejectsWith(
    t,
    collectBytes(
      writeSafetensors([
        { name: "x", dtype: "F32", shape: [2], data: [new Uint8Array(8), new Uint8Array(1)] },
      ]),
    ),
    "DeltaShapeMismatch",
  );
  t.throws(() => encodeHeader([{ name: "\ud800", dtype: "U8", shape: [1] }]), {
    message: /DeltaNameInvalid/,
  });
  t.throws(() => encodeHeader([{ name: "__metadata__", dtype: "U8", shape: [1] }]), {
    message: /DeltaNameInvalid/,
  });
  t.throws(
    () =>
      encodeHeader([
        { name: "a", dtype: "U8", shape: [1] },
        { name: "a", dtype: "U8", shape: [1] },
      ]),
    { message: /DeltaNameDuplicate/ },
  );
  t.throws(() => encodeHeader([{ name: "a", dtype: "U8", shape: [2 ** 40, 2 ** 40] }]), {
    message: /DeltaShapeOverflow/,
  });
});

test("streams a large tensor without collecting it: memory stays flat", async (t) => {
  const chunkBytes = 1 << 20;
  const chunks = 256; // 256 MiB through the reader
  const chunk = new Uint8Array(chunkBytes).fill(1);
  const file = writeSafetensors([
    {
      name: "big",
      dtype: "F32",
      shape: [(chunkBytes * chunks) / 4],
      data: function* () {
        for (let i = 0; i < chunks; i++) yield chunk;
      },
    },
  ]);
  const before = process.memoryUsage().rss;
  const stream = await openSafetensors(file);
  let seen = 0;
  let peak = before;
  for await (const c of stream.chunks()) {
    seen += c.bytes.byteLength;
    if (seen % (32 * chunkBytes) === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  t.is(seen, chunkBytes * chunks);
  t.log(`RSS grew by ${((peak - before) / 2 ** 20).toFixed(1)} MiB while streaming ${chunks} MiB`);
  t.true(peak - before < 64 * 2 ** 20);
});
