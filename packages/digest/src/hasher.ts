import { createHash, type Hash } from 'node:crypto';
import { type Digest, ErrorCode, OciError } from '@ocipull/core';
import type { DigestAlgorithm } from './parse-digest.ts';

/** Default algorithm for new content: the only one every registry accepts. */
export const DEFAULT_ALGORITHM: DigestAlgorithm = 'sha256';

/**
 * An incremental hasher that also counts bytes. Backed by OpenSSL through `node:crypto` (SHA-NI where
 * the CPU has it), which is several times faster than WebAssembly hashers on large blobs.
 */
export class Hasher {
  readonly algorithm: DigestAlgorithm;
  #hash: Hash;
  #bytes = 0;

  constructor(algorithm: DigestAlgorithm = DEFAULT_ALGORITHM) {
    this.algorithm = algorithm;
    this.#hash = createHash(algorithm);
  }

  /** Bytes hashed so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Feeds bytes to the hash. */
  update(chunk: Uint8Array): this {
    if (!(chunk instanceof Uint8Array)) {
      // A string would hash as UTF-8 but count no bytes: the size check would be blind to it.
      throw new OciError(
        ErrorCode.InvalidArgument,
        `update takes bytes (a Uint8Array), not a ${typeof chunk}`,
      );
    }
    this.#hash.update(chunk);
    this.#bytes += chunk.byteLength;
    return this;
  }

  /** The digest of the bytes so far; the hasher stays usable. */
  digest(): Digest {
    return `${this.algorithm}:${this.#hash.copy().digest('hex')}` as Digest;
  }
}

/** Makes an incremental hasher. */
export function createHasher(algorithm: DigestAlgorithm = DEFAULT_ALGORITHM): Hasher {
  return new Hasher(algorithm);
}
