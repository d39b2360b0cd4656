import { AbortedError, ErrorCode, OciError } from '@ocipull/core';

/** Throws `ERR_INVALID_ARGUMENT` unless `value` is a byte count: a non-negative safe integer. */
export function checkByteCount(name: string, value: number | undefined): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new OciError(
      ErrorCode.InvalidArgument,
      `${name} must be a non-negative integer, got ${String(value)}`,
    );
  }
}

/**
 * Maps the `AbortError` a Node stream raises for a fired signal to `ERR_ABORTED`, so callers match on
 * one code whichever layer noticed the abort first.
 */
export function abortedOr(error: unknown, signal: AbortSignal | undefined): unknown {
  return signal?.aborted && !OciError.isInstance(error) ? new AbortedError(signal.reason) : error;
}
