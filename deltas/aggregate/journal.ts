// The undo journal that makes a delta's accumulation all-or-nothing. Before the kernel
// changes a range of sums, the range and its old values are recorded; a delta that fails
// mid-stream is undone by writing the old values back, which restores the sums bit for bit
// (subtracting the delta again would not: fp32 addition is not invertible). A committed delta
// just drops its journal.
//
// Memory stays bounded: old values are kept in memory up to `memoryBytes`; from half of that
// on they are written, in order and in the background (overlapping the accumulation), to an
// unlinked temporary file, so nothing is left behind if the process dies. Over the budget the
// accumulation waits for the disk. Ranges are recorded merged, so a tensor streamed in order
// costs one range entry. Disk use is at most one model's fp32 size.

import type { FileHandle } from "node:fs/promises";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** 4 MiB of fp32 per in-memory segment and per file write. */
const SEGMENT_ELEMENTS = 1 << 20;

interface Range {
  tensor: number;
  at: number;
  length: number;
}

export interface JournalOptions {
  /** Old values kept in memory (segments of 4 MiB, at least two). Default 64 MiB. */
  memoryBytes?: number;
  /** Where the spill file is created (then unlinked at once). Default os.tmpdir(). Use a disk, not tmpfs: tmpfs is memory. */
  directory?: string;
}

export class UndoJournal {
  readonly #memoryElements: number;
  readonly #directory: string;
  readonly #ranges: Range[] = [];
  /** Segments not handed to the writer, oldest first; the last one is being filled. */
  #segments: Float32Array[] = [];
  #fill = 0;
  /** Segments handed to the writer and not yet written, in file order. */
  #writing: Float32Array[] = [];
  /** Sequential writes; a failed write stops the ones after it (their data stays in #writing). */
  #chain: Promise<void> = Promise.resolve();
  readonly #free: Float32Array[] = [];
  #file: FileHandle | undefined;
  /** Bytes of this delta's old values reserved in, and written to, the spill file. */
  #reservedBytes = 0;
  #writtenBytes = 0;
  /** Bytes ever spilled, for reports. */
  spilledBytes = 0;

  /** Whether a whole delta's old values fit the budget, so that nothing is ever written. */
  readonly #fits: boolean;

  /** `modelElements`: how many values one delta can journal at most (the model's size). */
  constructor(options: JournalOptions = {}, modelElements = Number.POSITIVE_INFINITY) {
    this.#memoryElements = Math.max(
      2 * SEGMENT_ELEMENTS,
      Math.floor((options.memoryBytes ?? 64 * 2 ** 20) / 4),
    );
    this.#fits = modelElements <= this.#memoryElements;
    this.#directory = options.directory ?? tmpdir();
  }

  /** Records that tensor[at, at + length) is about to change; `old`, when given, holds its current values. */
  save(tensor: number, at: number, length: number, old?: Float32Array): void {
    const last = this.#ranges[this.#ranges.length - 1];
    if (last && last.tensor === tensor && last.at + last.length === at) last.length += length;
    else this.#ranges.push({ tensor, at, length });
    if (!old) return;
    let from = 0;
    while (from < old.length) {
      let segment = this.#segments[this.#segments.length - 1];
      if (!segment || this.#fill === SEGMENT_ELEMENTS) {
        segment = this.#free.pop() ?? new Float32Array(SEGMENT_ELEMENTS);
        this.#segments.push(segment);
        this.#fill = 0;
      }
      const take = Math.min(SEGMENT_ELEMENTS - this.#fill, old.length - from);
      segment.set(old.subarray(from, from + take), this.#fill);
      this.#fill += take;
      from += take;
    }
  }

  /**
   * Keeps memory within budget. From half the budget on, full segments are handed to a
   * background writer (so that disk writes overlap the accumulation); over the whole budget
   * the returned promise makes the caller wait for the writer. Undefined means go on.
   */
  relieve(): Promise<void> | undefined {
    const full = this.#segments.length - 1;
    if (this.#fits || full < 1 || (full + 1) * SEGMENT_ELEMENTS < this.#memoryElements / 2) return undefined;
    for (const segment of this.#segments.slice(0, full)) this.#enqueue(segment);
    this.#segments = this.#segments.slice(full);
    if ((this.#writing.length + 1) * SEGMENT_ELEMENTS <= this.#memoryElements) return undefined;
    return this.#chain;
  }

  #enqueue(segment: Float32Array) {
    const bytes = new Uint8Array(segment.buffer, segment.byteOffset, segment.byteLength);
    const position = this.#reservedBytes;
    this.#reservedBytes += bytes.byteLength;
    this.#writing.push(segment);
    this.#chain = this.#chain.then(async () => {
      this.#file ??= await openUnlinked(this.#directory);
      await writeAll(this.#file, bytes, position);
      this.#writtenBytes += bytes.byteLength;
      this.spilledBytes += bytes.byteLength;
      this.#writing.shift();
      this.#free.push(segment);
    });
  }

  /**
   * Undoes every saved range: `restore(tensor, at, old)` for ranges saved with old values,
   * `clear(tensor, at, length)` for those saved without. Then the journal is empty. Old values
   * come from the spill file as far as it was written, then from memory (including segments a
   * failed write left behind).
   */
  async rollback(
    restore: (tensor: number, at: number, old: Float32Array) => void,
    clear: (tensor: number, at: number, length: number) => void,
    withValues: boolean,
  ): Promise<void> {
    await this.#chain.catch(() => {});
    if (!withValues) {
      for (const range of this.#ranges) clear(range.tensor, range.at, range.length);
      await this.commit();
      return;
    }
    const values = this.#readValues();
    for (const range of this.#ranges) {
      let done = 0;
      while (done < range.length) {
        const part = await values.next(range.length - done);
        restore(range.tensor, range.at + done, part);
        done += part.length;
      }
    }
    await this.commit();
  }

  /** Forgets the journal (the delta was committed, or rolled back). */
  async commit(): Promise<void> {
    // A write still in flight must land before its segment is reused or its file range rewritten.
    await this.#chain.catch(() => {});
    this.#chain = Promise.resolve();
    this.#ranges.length = 0;
    for (const segment of [...this.#writing, ...this.#segments]) this.#free.push(segment);
    this.#writing = [];
    this.#segments = [];
    this.#fill = 0;
    this.#reservedBytes = 0;
    this.#writtenBytes = 0;
    // Keep at most the in-memory budget of recycled segments.
    this.#free.length = Math.min(this.#free.length, Math.ceil(this.#memoryElements / SEGMENT_ELEMENTS));
  }

  async close(): Promise<void> {
    await this.commit();
    this.#free.length = 0;
    const file = this.#file;
    this.#file = undefined;
    await file?.close();
  }

  /** The saved values in order: the written part of the spill file, then the segments in memory. */
  #readValues() {
    const file = this.#file;
    const fileBytes = this.#writtenBytes;
    const segments = [...this.#writing, ...this.#segments];
    const fill = this.#fill;
    let filePosition = 0;
    let buffer: Float32Array = new Float32Array(0);
    let bufferAt = 0;
    let segmentIndex = 0;
    const refill = async () => {
      if (filePosition < fileBytes && file) {
        const length = Math.min(SEGMENT_ELEMENTS * 4, fileBytes - filePosition);
        const bytes = new Uint8Array(length);
        await readAll(file, bytes, filePosition);
        filePosition += length;
        buffer = new Float32Array(bytes.buffer);
      } else {
        const segment = segments[segmentIndex] as Float32Array;
        const used = segmentIndex === segments.length - 1 ? fill : SEGMENT_ELEMENTS;
        buffer = segment.subarray(0, used);
        segmentIndex++;
      }
      bufferAt = 0;
    };
    return {
      async next(max: number): Promise<Float32Array> {
        if (bufferAt === buffer.length) await refill();
        const take = Math.min(max, buffer.length - bufferAt);
        const out = buffer.subarray(bufferAt, bufferAt + take);
        bufferAt += take;
        return out;
      },
    };
  }
}

async function openUnlinked(directory: string): Promise<FileHandle> {
  const dir = await mkdtemp(join(directory, "sovereign-aggregate-"));
  const path = join(dir, "undo.f32");
  const handle = await open(path, "w+", 0o600);
  // The open handle keeps the data; nothing remains on disk once it is closed or the process ends.
  await rm(dir, { recursive: true, force: true });
  return handle;
}

async function writeAll(file: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await file.write(bytes, done, bytes.byteLength - done, position + done);
    done += bytesWritten;
  }
}

async function readAll(file: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesRead } = await file.read(bytes, done, bytes.byteLength - done, position + done);
    if (bytesRead === 0) throw new Error("the undo journal's spill file is shorter than written");
    done += bytesRead;
  }
}
