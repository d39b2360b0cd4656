import { createReadStream } from 'node:fs';
import { type Digest, throwIfAborted } from '@ocipull/core';
import { abortedOr, checkByteCount } from './checks.ts';
import { Hasher } from './hasher.ts';
import type { DigestAlgorithm } from './parse-digest.ts';

/** What `digestOf` can hash: bytes, text (UTF-8), or any async iterable of bytes such as a Readable. */
export type DigestInput = Uint8Array | string | AsyncIterable<Uint8Array | string>;

/** Options for `digestOf`, `measure` and `digestOfFile`. */
export interface DigestOfOptions {
  /** Default `sha256`. */
  algorithm?: DigestAlgorithm;
  /** `digestOfFile` only: hash just the first `length` bytes (a download's prefix when resuming). */
  length?: number;
  /** Cancels hashing a stream or file with `ERR_ABORTED`. */
  signal?: AbortSignal;
}

/** The digest and byte count of some content. */
export interface DigestResult {
  digest: Digest;
  size: number;
}

/** Read size for files: large reads keep the hash, not the syscalls, the bottleneck. */
const FILE_CHUNK_BYTES = 1024 * 1024;

/** Hashes bytes, a string (UTF-8) or a stream and resolves to its digest. */
export async function digestOf(input: DigestInput, options: DigestOfOptions = {}): Promise<Digest> {
  return (await measure(input, options)).digest;
}

/**
 * Hashes a file (or its first `length` bytes) and resolves to its digest and size. A file shorter
 * than `length` resolves with the smaller size: callers that need the full prefix compare `size`.
 */
export async function digestOfFile(path: string, options: DigestOfOptions = {}): Promise<DigestResult> {
  checkByteCount('length', options.length);
  throwIfAborted(options.signal);
  if (options.length === 0) return { digest: new Hasher(options.algorithm).digest(), size: 0 };
  const stream = createReadStream(path, {
    highWaterMark: FILE_CHUNK_BYTES,
    ...(options.length === undefined ? {} : { end: options.length - 1 }),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return measure(stream, { ...options, length: undefined });
}

/** Hashes bytes, a string or a stream and resolves to its digest and size. */
export async function measure(input: DigestInput, options: DigestOfOptions = {}): Promise<DigestResult> {
  throwIfAborted(options.signal);
  const hasher = new Hasher(options.algorithm);
  if (typeof input === 'string') hasher.update(Buffer.from(input, 'utf8'));
  else if (input instanceof Uint8Array) hasher.update(input);
  else {
    try {
      for await (const chunk of input) {
        throwIfAborted(options.signal);
        hasher.update(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
      }
    } catch (error) {
      throw abortedOr(error, options.signal);
    }
  }
  return { digest: hasher.digest(), size: hasher.bytes };
}
