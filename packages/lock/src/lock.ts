import { mkdir, rmdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, ErrorCode, OciError, throwIfAborted } from '@ocipull/core';
import lockfile from 'proper-lockfile';
import { LockCompromisedError, LockTimeoutError } from './errors.ts';

/**
 * How long `acquireLock` waits by default: long enough for another process to finish downloading a
 * large layer over a slow link while we wait for it, short enough that a wedged holder surfaces as an
 * error rather than a hang.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 10 * 60_000;

/**
 * After how long without an update a lock counts as abandoned (its process died): proper-lockfile's
 * default, long enough to ride out a busy event loop or a slow NFS server.
 */
export const DEFAULT_LOCK_STALE_MS = 10_000;

/** proper-lockfile refreshes a lock at most once a second, so a lock cannot be stale sooner than 2 s. */
export const MIN_LOCK_STALE_MS = 2000;

/** proper-lockfile's floor for the refresh interval. */
const MIN_LOCK_UPDATE_MS = 1000;

/**
 * Backoff between attempts: starts short so a lock that is released quickly is taken quickly, and is
 * capped so a waiter notices a release within half a second (mkdir + stat per try is cheap, NFS too).
 */
const RETRY_MIN_DELAY_MS = 10;
const RETRY_MAX_DELAY_MS = 500;

/**
 * proper-lockfile's own stale check removes a stale lockfile without coordination, so two waiters that
 * both see it stale can remove each other's fresh lock. We disable it and take over stale locks
 * ourselves, one takeover at a time (see `takeOverIfStale`).
 */
const NEVER_STALE_MS = 2 ** 31 - 1;

/** Options for `acquireLock` and `withLock`. */
export interface LockOptions {
  /** Give up with `ERR_LOCK_TIMEOUT` after waiting this long. Default `DEFAULT_LOCK_TIMEOUT_MS` (10 min); 0 tries once. */
  timeoutMs?: number;
  /** A lock not refreshed for this long belongs to a dead process and is taken over. Default 10 000, minimum 2000. */
  staleMs?: number;
  /** How often the holder refreshes the lock. Default `staleMs / 2`; between 1000 and `staleMs / 2`. */
  updateMs?: number;
  /** The lock directory. Default `<path>.lock`; its parent directories are created. */
  lockfilePath?: string;
  /** Stops waiting with `ERR_ABORTED`. */
  signal?: AbortSignal;
  /** Called once if the lock is lost while held (`acquireLock` only; `withLock` aborts `fn`'s signal). */
  onCompromised?: (error: LockCompromisedError) => void;
}

/** Releases a lock taken by `acquireLock`. Calling it again returns the same promise. */
export interface LockRelease {
  (): Promise<void>;
  /** Fires (with a `LockCompromisedError` as reason) if the lock is lost while held. */
  readonly signal: AbortSignal;
}

interface ResolvedOptions {
  target: string;
  lockfilePath: string;
  timeoutMs: number;
  staleMs: number;
  updateMs: number;
}

function resolveOptions(path: string, options: LockOptions): ResolvedOptions {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
  const updateMs = options.updateMs ?? staleMs / 2;
  const invalid = (message: string) => new OciError(ErrorCode.InvalidArgument, message);
  if (typeof path !== 'string' || path.length === 0) throw invalid('lock path must be a non-empty string');
  if (
    options.lockfilePath !== undefined &&
    (typeof options.lockfilePath !== 'string' || options.lockfilePath === '')
  ) {
    throw invalid('lockfilePath must be a non-empty string');
  }
  if (!(timeoutMs >= 0)) throw invalid(`timeoutMs must be >= 0, got ${timeoutMs}`);
  if (!(staleMs >= MIN_LOCK_STALE_MS))
    throw invalid(`staleMs must be >= ${MIN_LOCK_STALE_MS}, got ${staleMs}`);
  if (!(updateMs >= MIN_LOCK_UPDATE_MS && updateMs <= staleMs / 2)) {
    throw invalid(`updateMs must be between ${MIN_LOCK_UPDATE_MS} and staleMs / 2, got ${updateMs}`);
  }
  const target = resolve(path);
  return {
    target,
    lockfilePath: resolve(options.lockfilePath ?? `${target}.lock`),
    timeoutMs,
    staleMs,
    updateMs,
  };
}

function ioError(message: string, cause: unknown): OciError {
  const detail = (cause as { code?: unknown } | null)?.code;
  return new OciError(ErrorCode.Io, typeof detail === 'string' ? `${message}: ${detail}` : message, {
    cause,
  });
}

function isCode(error: unknown, code: string): boolean {
  return (error as { code?: unknown } | null)?.code === code;
}

/** Milliseconds since the lock directory was last refreshed, or undefined when it is gone. */
async function ageOf(path: string): Promise<number | undefined> {
  try {
    return Date.now() - (await stat(path)).mtimeMs;
  } catch (error) {
    if (isCode(error, 'ENOENT')) return undefined;
    throw error;
  }
}

/**
 * Removes the lock directory when its holder stopped refreshing it for `staleMs`. Takeovers run one at
 * a time under a guard directory, and the age is checked again under the guard: without that, two
 * waiters that both saw the dead lock could each remove it, the second removing the lock the first had
 * just taken. The guard is held for milliseconds; one left by a process that died mid-takeover is
 * itself removed once older than `staleMs`. True when the lock is gone (removed here or by its holder),
 * so the caller should try again at once.
 */
async function takeOverIfStale(resolved: ResolvedOptions): Promise<boolean> {
  const age = await ageOf(resolved.lockfilePath);
  // Gone meanwhile: worth another attempt at once.
  if (age === undefined) return true;
  if (age <= resolved.staleMs) return false;
  const guard = `${resolved.lockfilePath}.takeover`;
  try {
    await mkdir(guard);
  } catch (error) {
    if (!isCode(error, 'EEXIST')) throw error;
    const guardAge = await ageOf(guard);
    if (guardAge !== undefined && guardAge > resolved.staleMs) await rmdir(guard).catch(() => {});
    return false;
  }
  try {
    const ageNow = await ageOf(resolved.lockfilePath);
    if (ageNow === undefined) return true;
    if (ageNow <= resolved.staleMs) return false;
    await rmdir(resolved.lockfilePath).catch((error: unknown) => {
      if (!isCode(error, 'ENOENT')) throw error;
    });
    return true;
  } finally {
    await rmdir(guard).catch(() => {});
  }
}

/**
 * Takes an exclusive cross-process lock on `path` (which need not exist) and resolves to its release
 * function. Waits with jittered exponential backoff up to `timeoutMs` (`ERR_LOCK_TIMEOUT`), takes over
 * locks whose holder stopped refreshing them for `staleMs` (a dead process), refreshes the lock every
 * `updateMs` while held, and rejects with `ERR_ABORTED` when `signal` fires while waiting. The lock is
 * a directory (`<path>.lock`), made with mkdir, which is atomic on local filesystems and NFS alike.
 */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<LockRelease> {
  const resolved = resolveOptions(path, options);
  const { signal } = options;
  throwIfAborted(signal);
  await mkdir(dirname(resolved.lockfilePath), { recursive: true }).catch((error: unknown) => {
    throw ioError(`cannot create the directory of lock ${resolved.lockfilePath}`, error);
  });
  const deadline = Date.now() + resolved.timeoutMs;
  const compromised = new AbortController();
  let lastError: unknown;
  let takeovers = 0;
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(signal);
    try {
      const unlock = await lockfile.lock(resolved.target, {
        realpath: false,
        lockfilePath: resolved.lockfilePath,
        stale: NEVER_STALE_MS,
        update: resolved.updateMs,
        retries: 0,
        onCompromised: (cause) => {
          const error = new LockCompromisedError(resolved.target, cause);
          compromised.abort(error);
          // This runs in proper-lockfile's refresh timer: a throwing callback must not crash the process.
          try {
            options.onCompromised?.(error);
          } catch (callbackError) {
            process.emitWarning(callbackError instanceof Error ? callbackError : String(callbackError));
          }
        },
      });
      const release = makeRelease(unlock, compromised.signal);
      if (signal?.aborted) {
        await release();
        throw new AbortedError(signal.reason);
      }
      return release;
    } catch (error) {
      if (OciError.isInstance(error)) throw error;
      if (!isCode(error, 'ELOCKED')) throw ioError(`cannot lock ${resolved.target}`, error);
      lastError = error;
    }
    // Staleness is checked only once the lock was found taken: an uncontended lock costs a mkdir and
    // no stat that fails first (an Error with a stack per lock, and a threadpool round trip).
    const gone = await takeOverIfStale(resolved).catch((error: unknown) => {
      throw ioError(`cannot take over the stale lock ${resolved.lockfilePath}`, error);
    });
    // Gone: try again at once, even past the deadline (a stale lock is taken over with timeoutMs 0),
    // but three times per acquire at most: a path that mkdir finds and stat does not (a dangling
    // symlink) must not spin.
    if (gone && takeovers++ < 3) continue;
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new LockTimeoutError(resolved.target, resolved.timeoutMs, lastError);
    const backoff = Math.min(RETRY_MAX_DELAY_MS, RETRY_MIN_DELAY_MS * 2 ** Math.min(attempt, 16));
    // Jitter spreads waiters that started together so they do not retry in lockstep.
    const delay = Math.min(remaining, backoff / 2 + Math.random() * (backoff / 2));
    try {
      await sleep(delay, undefined, signal ? { signal } : {});
    } catch (error) {
      throw signal?.aborted ? new AbortedError(signal.reason) : error;
    }
  }
}

function makeRelease(unlock: () => Promise<void>, compromised: AbortSignal): LockRelease {
  let released: Promise<void> | undefined;
  const release = () => {
    released ??= unlock().catch((error: unknown) => {
      // A compromised lock is no longer ours to remove: the loss was already reported through `signal`.
      if (compromised.aborted && (isCode(error, 'ERELEASED') || isCode(error, 'ENOTACQUIRED'))) return;
      throw error;
    });
    return released;
  };
  return Object.assign(release, { signal: compromised });
}

/**
 * Runs `fn` while holding the lock on `path` and releases it in `finally`. `fn` receives a signal that
 * fires when `options.signal` fires or the lock is compromised; when the lock was compromised,
 * `withLock` rejects with `ERR_LOCK_COMPROMISED` even if `fn` succeeded, since its work ran unguarded.
 */
export async function withLock<T>(
  path: string,
  fn: (signal: AbortSignal) => Promise<T> | T,
  options: Omit<LockOptions, 'onCompromised'> = {},
): Promise<T> {
  const release = await acquireLock(path, options);
  const signal = options.signal ? AbortSignal.any([options.signal, release.signal]) : release.signal;
  try {
    const result = await fn(signal);
    if (release.signal.aborted) throw release.signal.reason;
    return result;
  } catch (error) {
    throw release.signal.aborted ? release.signal.reason : error;
  } finally {
    await release();
  }
}
