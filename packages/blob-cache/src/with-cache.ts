import { type Readable, Transform, type TransformCallback } from 'node:stream';
import type { BlobSource, Descriptor, FetchOptions } from '@ocipull/core';
import type { BlobCache } from './blob-cache.ts';

/** Drops the first `count` bytes of a stream. */
class SkipBytes extends Transform {
  #remaining: number;

  constructor(count: number) {
    super();
    this.#remaining = count;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.#remaining >= chunk.length) {
      this.#remaining -= chunk.length;
      callback();
      return;
    }
    const rest = chunk.subarray(this.#remaining);
    this.#remaining = 0;
    callback(null, rest);
  }
}

/**
 * Wraps a source so every blob it serves goes through the cache: cached blobs are read from disk,
 * missing ones are downloaded once (verified, resumable) by `cache.fetchThrough` while they stream.
 * A fetch with an `offset` of an uncached blob still downloads it whole and skips the first bytes.
 */
export function withCache(source: BlobSource, cache: BlobCache): BlobSource {
  return {
    async fetch(descriptor: Descriptor, options: FetchOptions = {}): Promise<Readable> {
      const offset = options.offset ?? 0;
      const signalOption = options.signal ? { signal: options.signal } : {};
      if (offset > 0 && (await cache.has(descriptor))) return cache.fetch(descriptor, options);
      const stream = await cache.fetchThrough(descriptor, source, signalOption);
      if (offset === 0) return stream;
      const skipping = new SkipBytes(offset);
      stream.on('error', (error) => skipping.destroy(error));
      skipping.on('close', () => {
        if (!stream.readableEnded) stream.destroy();
      });
      return stream.pipe(skipping);
    },
  };
}
