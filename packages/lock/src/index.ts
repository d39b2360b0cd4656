export { LockCompromisedError, LockTimeoutError } from './errors.ts';
export type { LockOptions, LockRelease } from './lock.ts';
export {
  acquireLock,
  DEFAULT_LOCK_STALE_MS,
  DEFAULT_LOCK_TIMEOUT_MS,
  MIN_LOCK_STALE_MS,
  withLock,
} from './lock.ts';
export { createSingleFlight, SingleFlight } from './single-flight.ts';
