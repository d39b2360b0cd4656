import type { Digest } from '@ocipull/core';
import { InvalidDigestError } from './errors.ts';

/** The digest algorithms ocipull hashes with (OCI image spec descriptor.md, registered algorithms). */
export type DigestAlgorithm = 'sha256' | 'sha512';

/** Encoded lengths of the registered algorithms: lowercase hex only, as the spec requires. */
const ENCODED = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ } as const;

/** The grammar of descriptor.md: `algorithm ":" encoded`. */
const GRAMMAR = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/**
 * Parses `algorithm:encoded` and returns it as a branded `Digest`. Accepts sha256 (64 lowercase hex)
 * and sha512 (128); throws `InvalidDigestError` (`ERR_INVALID_DIGEST`) naming the input otherwise.
 */
export function parseDigest(value: unknown): Digest {
  if (typeof value !== 'string') throw new InvalidDigestError(value, 'not a string');
  if (value.length === 0) throw new InvalidDigestError(value, 'empty');
  const match = GRAMMAR.exec(value);
  if (!match) throw new InvalidDigestError(value, 'not of the form algorithm:encoded');
  const [, algorithm, encoded] = match as unknown as [string, string, string];
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new InvalidDigestError(value, `unsupported algorithm ${JSON.stringify(algorithm)}`);
  }
  if (!ENCODED[algorithm].test(encoded)) {
    const length = algorithm === 'sha256' ? 64 : 128;
    throw new InvalidDigestError(value, `${algorithm} needs ${length} lowercase hex characters`);
  }
  return value as Digest;
}

/** True when `value` is a valid sha256 or sha512 digest. */
export function isDigest(value: unknown): value is Digest {
  if (typeof value !== 'string') return false;
  const colon = value.indexOf(':');
  const algorithm = value.slice(0, colon);
  return (
    (algorithm === 'sha256' || algorithm === 'sha512') && ENCODED[algorithm].test(value.slice(colon + 1))
  );
}

/** The algorithm part of a digest. */
export function digestAlgorithm(digest: Digest): DigestAlgorithm {
  return digest.slice(0, digest.indexOf(':')) as DigestAlgorithm;
}

/** The encoded (hex) part of a digest: the file name under `blobs/<algorithm>/`. */
export function digestEncoded(digest: Digest): string {
  return digest.slice(digest.indexOf(':') + 1);
}
