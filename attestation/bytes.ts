import { EvidenceParseError } from "./errors.ts";

export const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

/** Strict hex: even length, hex digits only (whitespace around is trimmed, an optional 0x is dropped). */
export function fromHex(text: string, what: string): Uint8Array {
  const clean = text.trim().replace(/^0x/i, "");
  if (clean.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(clean)) {
    throw new EvidenceParseError(what, "expected an even number of hex digits and nothing else");
  }
  return new Uint8Array(Buffer.from(clean, "hex"));
}

export const equalBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((byte, i) => byte === b[i]);

/** Bounds-checked little-endian reader: every read past the end is an EvidenceParseError, never a RangeError. */
export class ByteReader {
  readonly bytes: Uint8Array;
  readonly what: string;
  offset: number;
  constructor(bytes: Uint8Array, what: string, offset = 0) {
    this.bytes = bytes;
    this.what = what;
    this.offset = offset;
  }
  get remaining(): number {
    return this.bytes.length - this.offset;
  }
  take(length: number, field: string): Uint8Array {
    if (length < 0 || length > this.remaining) {
      throw new EvidenceParseError(
        this.what,
        `${field} needs ${length} bytes but only ${this.remaining} remain; the data is truncated or a length field lies`,
        this.offset,
      );
    }
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }
  u8(field: string): number {
    return this.take(1, field)[0] as number;
  }
  u16(field: string): number {
    const b = this.take(2, field);
    return (b[0] as number) | ((b[1] as number) << 8);
  }
  u24(field: string): number {
    const b = this.take(3, field);
    return (b[0] as number) | ((b[1] as number) << 8) | ((b[2] as number) << 16);
  }
}
