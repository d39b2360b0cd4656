import { ErrorCode, OciError } from '@ocipull/core';

/** Thrown when a value is not a valid `algorithm:encoded` digest. */
export class InvalidDigestError extends OciError {
  /** The rejected input, as given (truncated to 200 characters). */
  readonly input: string;

  constructor(input: unknown, reason: string) {
    const shown = describe(input).slice(0, 200);
    super(ErrorCode.InvalidDigest, `invalid digest ${JSON.stringify(shown)}: ${reason}`);
    this.name = 'InvalidDigestError';
    this.input = shown;
  }
}

/** Thrown when bytes hash to another digest than the expected one. */
export class DigestMismatchError extends OciError {
  readonly expected: string;
  readonly actual: string;

  constructor(expected: string, actual: string, what = 'content') {
    super(ErrorCode.DigestMismatch, `${what} digest mismatch: expected ${expected}, got ${actual}`);
    this.name = 'DigestMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

/** Thrown when a stream carries fewer or more bytes than declared. */
export class SizeMismatchError extends OciError {
  readonly expected: number;
  /** Bytes seen; for an overflow, the count at the moment the declared size was exceeded. */
  readonly actual: number;

  constructor(expected: number, actual: number, what = 'content') {
    const relation = actual > expected ? 'more than' : 'fewer than';
    super(
      ErrorCode.SizeMismatch,
      `${what} size mismatch: expected ${expected} bytes, got ${actual > expected ? 'at least ' : ''}${actual} (${relation} declared)`,
    );
    this.name = 'SizeMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * Renders any rejected input for a message without ever calling into it: `String()` throws on
 * null-prototype objects and runs hostile `toString`s, and an error constructor that throws would
 * replace `ERR_INVALID_DIGEST` with a TypeError.
 */
function describe(input: unknown): string {
  if (typeof input === 'string') return input;
  if (input === null || (typeof input !== 'object' && typeof input !== 'function')) {
    return typeof input === 'symbol' ? input.toString() : String(input);
  }
  return Array.isArray(input) ? '[array]' : `[${typeof input}]`;
}
