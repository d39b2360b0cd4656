import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import type { Digest } from '@ocipull/core';
import { DigestMismatchError, SizeMismatchError } from './errors.ts';
import { Hasher } from './hasher.ts';
import { digestAlgorithm, parseDigest } from './parse-digest.ts';

/** What a verifier checks. */
export interface VerifierOptions {
  /** The expected digest; its algorithm picks the hash. */
  digest: Digest | string;
  /** The declared size in bytes; when given, one byte more fails at once and fewer fails at the end. */
  size?: number;
  /** Names the content in error messages (`layer sha256:…`, `manifest`). */
  label?: string;
}

/**
 * Hashes and counts bytes as they pass and checks them against a descriptor. `update` throws
 * `SizeMismatchError` the moment more bytes arrive than declared (a hostile registry must not fill the
 * disk); `finish` throws `SizeMismatchError` or `DigestMismatchError` with expected and actual.
 */
export class Verifier {
  readonly expected: Digest;
  readonly size: number | undefined;
  readonly #label: string;
  readonly #hasher: Hasher;

  constructor(options: VerifierOptions, hasher?: Hasher) {
    this.expected = parseDigest(options.digest);
    this.size = options.size;
    this.#label = options.label ?? 'content';
    this.#hasher = hasher ?? new Hasher(digestAlgorithm(this.expected));
    if (this.size !== undefined && this.#hasher.bytes > this.size) {
      throw new SizeMismatchError(this.size, this.#hasher.bytes, this.#label);
    }
  }

  /** Bytes seen so far, including a resumed prefix. */
  get bytes(): number {
    return this.#hasher.bytes;
  }

  /** Feeds bytes; throws at once when they overflow the declared size. */
  update(chunk: Uint8Array): void {
    if (this.size !== undefined && this.#hasher.bytes + chunk.byteLength > this.size) {
      throw new SizeMismatchError(this.size, this.#hasher.bytes + chunk.byteLength, this.#label);
    }
    this.#hasher.update(chunk);
  }

  /** Checks size and digest of everything fed; returns the digest on success. */
  finish(): Digest {
    if (this.size !== undefined && this.#hasher.bytes !== this.size) {
      throw new SizeMismatchError(this.size, this.#hasher.bytes, this.#label);
    }
    const actual = this.#hasher.digest();
    if (actual !== this.expected) throw new DigestMismatchError(this.expected, actual, this.#label);
    return actual;
  }
}

/** Makes a verifier for a descriptor. */
export function createVerifier(options: VerifierOptions): Verifier {
  return new Verifier(options);
}

/**
 * Makes a verifier that has already seen the first `length` bytes of `path` (default: the whole
 * file): the resume path. Re-hashing the prefix with OpenSSL costs about 0.2 s per 400 MB on this
 * hardware, less than saving and restoring hash state would complicate the cache's crash safety.
 */
export async function resumeVerifier(
  options: VerifierOptions & { path: string; length?: number; signal?: AbortSignal },
): Promise<Verifier> {
  const expected = parseDigest(options.digest);
  const hasher = new Hasher(digestAlgorithm(expected));
  if (options.length !== 0) {
    const stream = createReadStream(options.path, {
      highWaterMark: 1024 * 1024,
      ...(options.length === undefined ? {} : { end: options.length - 1 }),
    });
    for await (const chunk of stream) {
      options.signal?.throwIfAborted();
      hasher.update(chunk as Buffer);
    }
  }
  if (options.length !== undefined && hasher.bytes !== options.length) {
    throw new SizeMismatchError(
      options.length,
      hasher.bytes,
      `resumed prefix of ${options.label ?? 'content'}`,
    );
  }
  return new Verifier({ ...options, digest: expected }, hasher);
}

/**
 * A pass-through stream that verifies what flows through it: errors the stream on overflow at once and
 * on digest or size mismatch at the end, so a pipeline never reports success for bad bytes.
 */
export class VerifyStream extends Transform {
  readonly verifier: Verifier;

  constructor(verifier: Verifier) {
    super();
    this.verifier = verifier;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.verifier.update(chunk);
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.verifier.finish();
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }
}

/** Makes a pass-through verifying stream for a descriptor (or around a resumed verifier). */
export function createVerifyStream(options: VerifierOptions | Verifier): VerifyStream {
  return new VerifyStream(options instanceof Verifier ? options : new Verifier(options));
}

/** Verifies bytes held in memory (manifests, configs); throws on size or digest mismatch. */
export function verifyBytes(bytes: Uint8Array, options: VerifierOptions): Digest {
  const verifier = new Verifier(options);
  verifier.update(bytes);
  return verifier.finish();
}
