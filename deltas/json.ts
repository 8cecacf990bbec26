// A strict JSON parser over UTF-8 bytes, for inputs an attacker writes (safetensors headers,
// manifests). JSON.parse is not enough: it keeps the last of duplicate keys, accepts lone
// surrogates that the reference (serde_json) rejects, rounds integers past 2^53 silently, and
// only sees text after a lossy or throwing decode, so it cannot say whether a bad byte sat
// in a tensor name. Numbers are kept as their source text for the caller to interpret.

export type JsonValue =
  | { kind: "object"; entries: Array<[string, JsonValue]> }
  | { kind: "array"; items: JsonValue[] }
  | { kind: "string"; value: string }
  | { kind: "number"; text: string }
  | { kind: "boolean"; value: boolean }
  | { kind: "null" };

export class JsonSyntaxError extends Error {
  override name = "JsonSyntaxError";
  readonly position: number;
  /** Object depth (1 = top level) of the key whose text was not valid Unicode, if that was the fault. */
  readonly badKeyDepth: number | undefined;
  /** The duplicated key, if that was the fault. */
  readonly duplicateKey: string | undefined;
  readonly duplicateKeyDepth: number | undefined;

  constructor(
    message: string,
    position: number,
    extra: { badKeyDepth?: number; duplicateKey?: string; duplicateKeyDepth?: number } = {},
  ) {
    super(`${message} at byte ${position}`);
    this.position = position;
    this.badKeyDepth = extra.badKeyDepth;
    this.duplicateKey = extra.duplicateKey;
    this.duplicateKeyDepth = extra.duplicateKeyDepth;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const MAX_DEPTH = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isWhitespace(b: number | undefined): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

export function parseJson(bytes: Uint8Array): JsonValue {
  let pos = 0;

  const fail = (message: string, extra?: ConstructorParameters<typeof JsonSyntaxError>[2]): never => {
    throw new JsonSyntaxError(message, pos, extra);
  };
  const skipWhitespace = () => {
    while (isWhitespace(bytes[pos])) pos++;
  };
  const expectLiteral = (literal: string) => {
    for (let i = 0; i < literal.length; i++) {
      if (bytes[pos + i] !== literal.charCodeAt(i)) fail(`expected '${literal}'`);
    }
    pos += literal.length;
  };

  // Returns undefined when the string's bytes or escapes are not valid Unicode, so the
  // caller can tell a bad key from a bad value.
  const parseString = (): string | undefined => {
    pos++; // opening quote
    const start = pos;
    let hasEscape = false;
    for (;;) {
      const b = bytes[pos];
      if (b === undefined) fail("unterminated string");
      if (b === QUOTE) break;
      if (b === BACKSLASH) {
        hasEscape = true;
        pos += 2;
        continue;
      }
      if ((b as number) < 0x20) fail("control character in string");
      pos++;
    }
    const raw = bytes.subarray(start, pos);
    pos++; // closing quote
    let text: string;
    try {
      text = utf8.decode(raw);
    } catch {
      return undefined;
    }
    if (!hasEscape) return text;
    return resolveEscapes(text, start);
  };

  const resolveEscapes = (text: string, start: number): string | undefined => {
    let out = "";
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c !== "\\") {
        out += c;
        continue;
      }
      const e = text[++i];
      switch (e) {
        case '"':
        case "\\":
        case "/":
          out += e;
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "n":
          out += "\n";
          break;
        case "r":
          out += "\r";
          break;
        case "t":
          out += "\t";
          break;
        case "u": {
          const hex = text.slice(i + 1, i + 5);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) {
            pos = start;
            fail("bad \\u escape");
          }
          out += String.fromCharCode(Number.parseInt(hex, 16));
          i += 4;
          break;
        }
        default:
          pos = start;
          fail("bad escape");
      }
    }
    // serde_json refuses lone surrogates; so do we, or a name could differ between readers.
    return out.isWellFormed() ? out : undefined;
  };

  const parseNumber = (): JsonValue => {
    const start = pos;
    if (bytes[pos] === 0x2d) pos++;
    if (bytes[pos] === 0x30) pos++;
    else if (isDigit(bytes[pos], true)) while (isDigit(bytes[pos], false)) pos++;
    else fail("bad number");
    if (bytes[pos] === 0x2e) {
      pos++;
      if (!isDigit(bytes[pos], false)) fail("bad fraction");
      while (isDigit(bytes[pos], false)) pos++;
    }
    if (bytes[pos] === 0x65 || bytes[pos] === 0x45) {
      pos++;
      if (bytes[pos] === 0x2b || bytes[pos] === 0x2d) pos++;
      if (!isDigit(bytes[pos], false)) fail("bad exponent");
      while (isDigit(bytes[pos], false)) pos++;
    }
    let text = "";
    for (let i = start; i < pos; i++) text += String.fromCharCode(bytes[i] as number);
    return { kind: "number", text };
  };

  const parseValue = (depth: number): JsonValue => {
    skipWhitespace();
    const b = bytes[pos];
    switch (b) {
      case 0x7b:
        return parseObject(depth + 1);
      case 0x5b:
        return parseArray(depth + 1);
      case QUOTE: {
        const value = parseString();
        if (value === undefined) fail("string is not valid Unicode");
        return { kind: "string", value: value as string };
      }
      case 0x74:
        expectLiteral("true");
        return { kind: "boolean", value: true };
      case 0x66:
        expectLiteral("false");
        return { kind: "boolean", value: false };
      case 0x6e:
        expectLiteral("null");
        return { kind: "null" };
      default:
        if (b === 0x2d || isDigit(b, false)) return parseNumber();
        return fail(b === undefined ? "unexpected end" : "unexpected byte");
    }
  };

  const parseObject = (depth: number): JsonValue => {
    if (depth > MAX_DEPTH) fail("nesting too deep");
    pos++;
    const entries: Array<[string, JsonValue]> = [];
    const seen = new Set<string>();
    skipWhitespace();
    if (bytes[pos] === 0x7d) {
      pos++;
      return { kind: "object", entries };
    }
    for (;;) {
      skipWhitespace();
      if (bytes[pos] !== QUOTE) fail("expected a key");
      const keyAt = pos;
      const key = parseString();
      if (key === undefined) {
        pos = keyAt;
        fail("key is not valid Unicode", { badKeyDepth: depth });
      }
      if (seen.has(key as string)) {
        pos = keyAt;
        fail("duplicate key", { duplicateKey: key as string, duplicateKeyDepth: depth });
      }
      seen.add(key as string);
      skipWhitespace();
      if (bytes[pos] !== 0x3a) fail("expected ':'");
      pos++;
      entries.push([key as string, parseValue(depth)]);
      skipWhitespace();
      if (bytes[pos] === 0x2c) {
        pos++;
        continue;
      }
      if (bytes[pos] === 0x7d) {
        pos++;
        return { kind: "object", entries };
      }
      fail("expected ',' or '}'");
    }
  };

  const parseArray = (depth: number): JsonValue => {
    if (depth > MAX_DEPTH) fail("nesting too deep");
    pos++;
    const items: JsonValue[] = [];
    skipWhitespace();
    if (bytes[pos] === 0x5d) {
      pos++;
      return { kind: "array", items };
    }
    for (;;) {
      items.push(parseValue(depth));
      skipWhitespace();
      if (bytes[pos] === 0x2c) {
        pos++;
        continue;
      }
      if (bytes[pos] === 0x5d) {
        pos++;
        return { kind: "array", items };
      }
      fail("expected ',' or ']'");
    }
  };

  const value = parseValue(0);
  skipWhitespace();
  if (pos !== bytes.length) fail("trailing characters");
  return value;
}

function isDigit(b: number | undefined, nonZero: boolean): boolean {
  return b !== undefined && b >= (nonZero ? 0x31 : 0x30) && b <= 0x39;
}

/** A non-negative integer written as plain digits (as serde reads a usize), or undefined. */
export function plainUnsignedInteger(value: JsonValue): bigint | undefined {
  if (value.kind !== "number" || !/^(0|[1-9][0-9]*)$/.test(value.text)) return undefined;
  return BigInt(value.text);
}
