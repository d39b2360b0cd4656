import { ErrorCode, OciError } from '@ocipull/core';

/** Thrown when a lock could not be taken before `timeoutMs` ran out. */
export class LockTimeoutError extends OciError {
  /** The locked path (the target, not the lockfile). */
  readonly path: string;
  readonly timeoutMs: number;

  constructor(path: string, timeoutMs: number, cause?: unknown) {
    super(ErrorCode.LockTimeout, `timed out after ${timeoutMs} ms waiting for the lock on ${path}`, {
      cause,
      retryable: true,
    });
    this.name = 'LockTimeoutError';
    this.path = path;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Thrown by `withLock` when the lock was lost while the work ran: its lockfile vanished or another
 * process took it over because our updates stopped for longer than `staleMs`.
 */
export class LockCompromisedError extends OciError {
  /** The locked path (the target, not the lockfile). */
  readonly path: string;

  constructor(path: string, cause?: unknown) {
    super(ErrorCode.LockCompromised, `the lock on ${path} was compromised while held`, {
      cause,
      retryable: true,
    });
    this.name = 'LockCompromisedError';
    this.path = path;
  }
}
