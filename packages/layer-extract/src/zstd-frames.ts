import { Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { drained, ErrorCode, OciError } from '@ocipull/core';

const DATA_MAGIC = 0xfd2fb528;
/** Skippable frames: 0x184D2A50–0x184D2A5F (RFC 8878 §3.1.2). */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

/** What a little-endian 32-bit frame magic number starts: a data frame, a skippable frame, or neither. */
export function zstdFrameKind(magic: number): 'data' | 'skippable' | undefined {
  if (magic === DATA_MAGIC) return 'data';
  if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) return 'skippable';
  return undefined;
}

type State =
  | { kind: 'magic' }
  | { kind: 'skip-size' }
  | { kind: 'skip'; left: number }
  | { kind: 'descriptor' }
  | { kind: 'header'; left: number; checksum: boolean }
  | { kind: 'block-header'; checksum: boolean }
  | { kind: 'block'; left: number; last: boolean; checksum: boolean }
  | { kind: 'checksum'; left: number }
  | { kind: 'trailing' };

/**
 * zstd data is one or more frames (RFC 8878 §3.1), and some layers have many: zstd:chunked
 * (podman, containers/storage) compresses each file chunk as its own frame and keeps its table of
 * contents in skippable frames at the end; `zstd` and Go's decoders (containerd, umoci) read them
 * all. Node's ZstdDecompress stops at the end of the first frame and drops the rest silently, so this
 * Transform walks the frame structure — magic numbers, frame and block headers, no decompression —
 * hands each data frame to a fresh decompressor in turn and skips skippable frames. Zeros after the
 * last frame are ignored and anything else there is an error, as Node's gunzip does after its last
 * member.
 */
export class ZstdFrames extends Transform {
  readonly #chunkSize: number;
  #state: State = { kind: 'magic' };
  /** Bytes of a header field that arrived split across chunks. */
  #partial: Buffer = Buffer.alloc(0);
  #decoder: zlib.ZstdDecompress | undefined;
  #frames = 0;
  #failed = false;

  constructor(options: { chunkSize: number }) {
    super({ readableHighWaterMark: options.chunkSize });
    this.#chunkSize = options.chunkSize;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#feed(chunk).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    const state = this.#state;
    const between = state.kind === 'magic' || state.kind === 'trailing';
    // Fewer than 4 bytes of zero padding after the last frame end the stream as well as more do.
    const padding = this.#frames > 0 && this.#partial.every((byte) => byte === 0);
    if (!between || (this.#partial.length > 0 && !padding) || this.#frames === 0) {
      callback(
        new OciError(
          ErrorCode.InvalidLayer,
          this.#frames === 0 && between && this.#partial.length === 0
            ? 'zstd stream holds no frame'
            : 'zstd stream ends inside a frame',
        ),
      );
      return;
    }
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#decoder?.destroy();
    callback(error);
  }

  async #feed(chunk: Buffer): Promise<void> {
    let offset = 0;
    // The bytes of a data frame go to its decompressor as one range per chunk (headers included);
    // the walk below only finds where the frame ends.
    let rangeStart = this.#decoder === undefined ? undefined : 0;
    while (offset < chunk.length && !this.#failed) {
      const state = this.#state;
      switch (state.kind) {
        case 'trailing':
          // Zeros after the last frame are padding (gunzip ignores them too); anything else is not.
          for (let index = offset; index < chunk.length; index++) {
            if (chunk[index] !== 0) throw trailingData();
          }
          return;
        case 'magic':
        case 'skip-size': {
          const field = this.#take(chunk, offset, 4);
          offset = field.offset;
          if (field.bytes === undefined) return;
          const value = field.bytes.readUInt32LE(0);
          const frame = zstdFrameKind(value);
          if (state.kind === 'skip-size') {
            this.#state = { kind: 'skip', left: value };
          } else if (frame === 'data') {
            await this.#startFrame(Buffer.from(field.bytes));
            rangeStart = offset;
            this.#state = { kind: 'descriptor' };
          } else if (frame === 'skippable') {
            this.#state = { kind: 'skip-size' };
          } else if (this.#frames > 0) {
            if (value !== 0) throw trailingData();
            this.#state = { kind: 'trailing' };
          } else {
            throw new OciError(ErrorCode.InvalidLayer, 'zstd stream does not start with a frame');
          }
          break;
        }
        case 'skip': {
          const take = Math.min(state.left, chunk.length - offset);
          offset += take;
          state.left -= take;
          if (state.left === 0) this.#state = { kind: 'magic' };
          break;
        }
        case 'descriptor': {
          const field = this.#take(chunk, offset, 1);
          offset = field.offset;
          if (field.bytes === undefined) return this.#flushRange(chunk, rangeStart, offset);
          const descriptor = field.bytes[0] as number;
          const contentSizeFlag = descriptor >> 6;
          const singleSegment = (descriptor & 0x20) !== 0;
          const checksum = (descriptor & 0x04) !== 0;
          const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 0x03] as number;
          const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][contentSizeFlag] as number;
          const left = (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
          this.#state = left > 0 ? { kind: 'header', left, checksum } : { kind: 'block-header', checksum };
          break;
        }
        case 'header':
        case 'block':
        case 'checksum': {
          const take = Math.min(state.left, chunk.length - offset);
          offset += take;
          state.left -= take;
          if (state.left > 0) break;
          if (state.kind === 'header') this.#state = { kind: 'block-header', checksum: state.checksum };
          else if (state.kind === 'block' && !state.last) {
            this.#state = { kind: 'block-header', checksum: state.checksum };
          } else if (state.kind === 'block' && state.checksum) this.#state = { kind: 'checksum', left: 4 };
          else {
            await this.#flushRange(chunk, rangeStart, offset);
            rangeStart = undefined;
            await this.#endFrame();
          }
          break;
        }
        case 'block-header': {
          const field = this.#take(chunk, offset, 3);
          offset = field.offset;
          if (field.bytes === undefined) return this.#flushRange(chunk, rangeStart, offset);
          const header = field.bytes.readUIntLE(0, 3);
          const last = (header & 1) === 1;
          const type = (header >> 1) & 3;
          const size = header >> 3;
          if (type === 3) throw new OciError(ErrorCode.InvalidLayer, 'zstd block of the reserved type');
          // Raw and compressed blocks carry `size` bytes, an RLE block one byte repeated `size` times.
          const left = type === 1 ? 1 : size;
          if (left > 0) this.#state = { kind: 'block', left, last, checksum: state.checksum };
          else if (!last) this.#state = { kind: 'block-header', checksum: state.checksum };
          else if (state.checksum) this.#state = { kind: 'checksum', left: 4 };
          else {
            await this.#flushRange(chunk, rangeStart, offset);
            rangeStart = undefined;
            await this.#endFrame();
          }
          break;
        }
      }
    }
    await this.#flushRange(chunk, rangeStart, offset);
  }

  /** Writes the frame bytes of `chunk` from `start` to `end` to the current decompressor. */
  #flushRange(chunk: Buffer, start: number | undefined, end: number): Promise<void> {
    if (start === undefined || end <= start) return Promise.resolve();
    return this.#write(chunk.subarray(start, end));
  }

  /** Collects a `size`-byte field that may straddle chunks; `bytes` is undefined until it is whole. */
  #take(chunk: Buffer, offset: number, size: number): { bytes: Buffer | undefined; offset: number } {
    if (this.#partial.length === 0 && chunk.length - offset >= size) {
      return { bytes: chunk.subarray(offset, offset + size), offset: offset + size };
    }
    const take = Math.min(size - this.#partial.length, chunk.length - offset);
    this.#partial = Buffer.concat([this.#partial, chunk.subarray(offset, offset + take)]);
    if (this.#partial.length < size) return { bytes: undefined, offset: offset + take };
    const bytes = this.#partial;
    this.#partial = Buffer.alloc(0);
    return { bytes, offset: offset + take };
  }

  async #startFrame(magic: Buffer): Promise<void> {
    const decoder = zlib.createZstdDecompress({ chunkSize: this.#chunkSize });
    this.#decoder = decoder;
    decoder.on('data', (output: Buffer) => {
      if (!this.push(output)) decoder.pause();
    });
    decoder.on('error', (error) => {
      this.#failed = true;
      this.destroy(error);
    });
    await this.#write(magic);
  }

  async #write(bytes: Buffer): Promise<void> {
    const decoder = this.#decoder;
    if (decoder === undefined || bytes.length === 0) return;
    if (!decoder.write(bytes)) await drained(decoder);
  }

  /** Ends the current frame's decompressor and waits until all its output was pushed. */
  async #endFrame(): Promise<void> {
    const decoder = this.#decoder;
    this.#state = { kind: 'magic' };
    this.#frames++;
    if (decoder === undefined) return;
    await new Promise<void>((resolve) => {
      decoder.once('end', resolve);
      decoder.once('close', resolve);
      decoder.end();
    });
    this.#decoder = undefined;
  }

  override _read(size: number): void {
    this.#decoder?.resume();
    super._read(size);
  }
}

function trailingData(): OciError {
  return new OciError(ErrorCode.InvalidLayer, 'data after the last zstd frame is not a frame');
}
