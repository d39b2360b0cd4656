import { createReadStream } from 'node:fs';
import type { Digest } from '@ocipull/core';
import { Hasher } from './hasher.ts';
import type { DigestAlgorithm } from './parse-digest.ts';

/** What `digestOf` can hash: bytes, text (UTF-8), or any async iterable of bytes such as a Readable. */
export type DigestInput = Uint8Array | string | AsyncIterable<Uint8Array | string>;

/** Options for `digestOf` and `digestOfFile`. */
export interface DigestOfOptions {
  /** Default `sha256`. */
  algorithm?: DigestAlgorithm;
  /** Stop after this many bytes (file prefixes when resuming). */
  length?: number;
  signal?: AbortSignal;
}

/** The digest and byte count of some content. */
export interface DigestResult {
  digest: Digest;
  size: number;
}

/** Hashes bytes, a string (UTF-8) or a stream and resolves to its digest. */
export async function digestOf(input: DigestInput, options: DigestOfOptions = {}): Promise<Digest> {
  return (await measure(input, options)).digest;
}

/** Hashes a file (or its first `length` bytes) and resolves to its digest and size. */
export async function digestOfFile(path: string, options: DigestOfOptions = {}): Promise<DigestResult> {
  if (options.length === 0) return { digest: new Hasher(options.algorithm).digest(), size: 0 };
  const stream = createReadStream(path, {
    highWaterMark: 1024 * 1024,
    ...(options.length === undefined ? {} : { end: options.length - 1 }),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return measure(stream, options);
}

/** Hashes bytes, a string or a stream and resolves to its digest and size. */
export async function measure(input: DigestInput, options: DigestOfOptions = {}): Promise<DigestResult> {
  const hasher = new Hasher(options.algorithm);
  if (typeof input === 'string') hasher.update(Buffer.from(input, 'utf8'));
  else if (input instanceof Uint8Array) hasher.update(input);
  else {
    for await (const chunk of input) {
      options.signal?.throwIfAborted();
      hasher.update(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
    }
  }
  return { digest: hasher.digest(), size: hasher.bytes };
}
