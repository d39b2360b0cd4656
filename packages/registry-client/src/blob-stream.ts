import { Readable } from 'node:stream';
import { AbortedError, type OciError } from '@ocipull/core';
import { SizeMismatchError } from '@ocipull/digest';
import { BlobInterruptedError, errorFromTransport } from './errors.ts';

/**
 * Buffer of the stream handed to callers. 1 MiB keeps the socket busy while a consumer hashes and
 * writes (the hash and the disk both prefer large chunks) and keeps RSS flat for any blob size.
 */
export const BLOB_HIGH_WATER_MARK = 1024 * 1024;

/**
 * A 206's `Content-Range` value (`bytes <first>-<last>/<total or *>`): its first byte and the whole
 * blob's size (undefined for `*`); undefined when it is not that shape.
 */
export function parseContentRange(value: string | undefined): { first: number; total?: number } | undefined {
  const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value ?? '');
  if (range === null) return undefined;
  return range[3] === '*'
    ? { first: Number(range[1]) }
    : { first: Number(range[1]), total: Number(range[3]) };
}

/** Whether a 206's `Content-Range` value starts at `offset`. */
export function contentRangeStartsAt(value: string | undefined, offset: number): boolean {
  return parseContentRange(value)?.first === offset;
}

/** Where a blob body starts and how long it must be. */
export interface BlobBodyOptions {
  digest: string;
  registry: string;
  /** Absolute blob offset of the first byte handed to the caller. */
  start: number;
  /** Bytes to drop first: a server that ignored `Range` sends the blob from 0. */
  skip: number;
  /** Bytes the caller must receive: descriptor size minus start. */
  expected: number;
  signal?: AbortSignal;
}

/**
 * The caller's view of a blob body: exactly `expected` bytes from `start`, never more (a hostile or
 * confused registry cannot overfill the cache: one extra byte fails with `ERR_SIZE_MISMATCH`), and a
 * body that stops early fails with `BlobInterruptedError` whose `offset` counts only bytes the caller
 * actually received, so a resume never leaves a hole.
 */
export class BlobBodyStream extends Readable {
  readonly #body: Readable;
  readonly #options: BlobBodyOptions;
  #toSkip: number;
  #pushed = 0;
  #done = false;

  constructor(body: Readable, options: BlobBodyOptions) {
    super({ highWaterMark: BLOB_HIGH_WATER_MARK });
    this.#body = body;
    this.#options = options;
    this.#toSkip = options.skip;
    body.on('data', (chunk: Buffer) => this.#onData(chunk));
    body.on('end', () => this.#onEnd());
    body.on('error', (error) => this.#fail(this.#mapError(error)));
    body.on('close', () => {
      if (!this.#done) this.#fail(this.#interrupted('connection closed', undefined));
    });
    body.pause();
  }

  override _read(): void {
    this.#body.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#done = true;
    if (!this.#body.destroyed) this.#body.destroy();
    callback(error);
  }

  #onData(chunk: Buffer): void {
    if (this.#done) return;
    let data = chunk;
    if (this.#toSkip > 0) {
      if (data.byteLength <= this.#toSkip) {
        this.#toSkip -= data.byteLength;
        return;
      }
      data = data.subarray(this.#toSkip);
      this.#toSkip = 0;
    }
    if (this.#pushed + data.byteLength > this.#options.expected) {
      const total = this.#options.start + this.#pushed + data.byteLength;
      this.#fail(
        new SizeMismatchError(
          this.#options.start + this.#options.expected,
          total,
          `blob ${this.#options.digest}`,
        ),
      );
      return;
    }
    this.#pushed += data.byteLength;
    if (!this.push(data)) this.#body.pause();
  }

  #onEnd(): void {
    if (this.#done) return;
    if (this.#pushed < this.#options.expected) {
      this.#fail(
        this.#interrupted(`body ended after ${this.#pushed} of ${this.#options.expected} bytes`, undefined),
      );
      return;
    }
    this.#done = true;
    this.push(null);
  }

  #mapError(error: unknown): OciError {
    if (this.#options.signal?.aborted) return new AbortedError(this.#options.signal.reason);
    const mapped = errorFromTransport(error, this.#options.registry, this.#options.signal);
    return this.#interrupted(mapped.message, mapped);
  }

  #interrupted(reason: string, cause: unknown): BlobInterruptedError {
    // Bytes still in our buffer are lost when the stream is destroyed: they do not count as received.
    const offset = this.#options.start + this.#pushed - this.readableLength;
    return new BlobInterruptedError(this.#options.digest, offset, reason, cause);
  }

  #fail(error: OciError): void {
    if (this.#done) return;
    this.#done = true;
    this.destroy(error);
  }
}
