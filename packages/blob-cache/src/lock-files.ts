import { join } from 'node:path';
import { acquireLock } from '@ocipull/lock';

/** Releases a lock taken with `lockTarget`; `signal` fires if the lock was lost while held. */
export interface Release {
  (): Promise<void>;
  readonly signal?: AbortSignal;
}

/** Options for `lockTarget`. */
export interface LockTargetOptions {
  timeoutMs: number;
  staleMs?: number | undefined;
  updateMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

/** The directory that exists while the lock `name` is held (or left behind by a dead holder). */
export function lockDirectory(locksDirectory: string, name: string): string {
  return join(locksDirectory, `${name}.lock`);
}

/** Takes the cross-process lock named `name`: the lock directory `<root>/locks/<name>.lock`. */
export async function lockTarget(
  locksDirectory: string,
  name: string,
  options: LockTargetOptions,
): Promise<Release> {
  return acquireLock(join(locksDirectory, name), {
    timeoutMs: options.timeoutMs,
    ...(options.staleMs === undefined ? {} : { staleMs: options.staleMs }),
    ...(options.updateMs === undefined ? {} : { updateMs: options.updateMs }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
}
