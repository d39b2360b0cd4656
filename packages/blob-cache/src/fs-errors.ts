import { type Stats, statSync } from 'node:fs';
import { ErrorCode, isOciError, OciError } from '@ocipull/core';

/** The errno of a Node system error, or undefined. */
export function errnoOf(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string'
    ? (error as { code: string }).code
    : undefined;
}

/** True for a Node system error with one of the given errno codes. */
export function isErrno(error: unknown, ...codes: string[]): boolean {
  const code = errnoOf(error);
  return code !== undefined && codes.includes(code);
}

/**
 * Turns a filesystem failure into an `OciError`: `ENOSPC` and `EDQUOT` become `ERR_NO_SPACE` (the one
 * disk failure users act on), everything else `ERR_IO`. Errors that already are `OciError`s pass through.
 */
export function fsError(error: unknown, what: string): OciError {
  if (isOciError(error)) return error;
  if (isErrno(error, 'ENOSPC', 'EDQUOT')) {
    return new OciError(ErrorCode.NoSpace, `no space left on device while ${what}`, { cause: error });
  }
  return new OciError(ErrorCode.Io, `${what} failed: ${(error as Error)?.message ?? String(error)}`, {
    cause: error,
  });
}

/**
 * `stat` for paths that are often absent (a blob not yet cached, a `.part` not yet started): undefined
 * for ENOENT/ENOTDIR without building an Error. Synchronous on purpose: a stat is microseconds on a
 * local disk, while the promise API makes a threadpool round trip and, for a missing path, an Error
 * with a stack trace — about five of them per downloaded blob before this existed.
 */
export function statIfExists(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch (error) {
    if (isErrno(error, 'ENOTDIR')) return undefined;
    throw error;
  }
}
