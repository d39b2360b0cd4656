import { AbortedError } from '@ocipull/core';

/** Retries after the first attempt: crane and containerd both stop around 3-5. */
export const DEFAULT_RETRIES = 4;
/** First backoff step; doubles per attempt (go-containerregistry's default backoff starts at 1 s). */
export const DEFAULT_RETRY_BASE_MS = 250;
/** Longest backoff between two attempts without a `Retry-After`. */
export const DEFAULT_RETRY_MAX_MS = 10_000;
/**
 * Longest `Retry-After` we honour. Docker Hub asks for hours once a pull quota is spent; waiting that
 * long inside a pull helps nobody, so a longer ask fails at once with `ERR_TOO_MANY_REQUESTS`.
 */
export const DEFAULT_MAX_RETRY_AFTER_MS = 60_000;

/** How a client retries. */
export interface RetryPolicy {
  /** Retries after the first attempt. Default `DEFAULT_RETRIES` (4). */
  retries: number;
  /** First backoff in ms, doubled per attempt. Default 250. */
  baseMs: number;
  /** Backoff ceiling in ms. Default 10 000. */
  maxMs: number;
  /** Ceiling for `Retry-After` in ms; longer asks are not waited for. Default 60 000. */
  maxRetryAfterMs: number;
}

/** The default retry policy. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  retries: DEFAULT_RETRIES,
  baseMs: DEFAULT_RETRY_BASE_MS,
  maxMs: DEFAULT_RETRY_MAX_MS,
  maxRetryAfterMs: DEFAULT_MAX_RETRY_AFTER_MS,
};

/**
 * The wait before retry number `attempt` (0-based): exponential with "equal jitter" (half fixed, half
 * random), so concurrent clients spread out but none retries immediately.
 */
export function backoffDelay(
  attempt: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date. Returns milliseconds from
 * `now`, at least 0; undefined when absent or unreadable.
 */
export function parseRetryAfter(
  value: string | readonly string[] | undefined,
  now = Date.now(),
): number | undefined {
  const text = typeof value === 'string' ? value.trim() : value?.[0]?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // An HTTP date always spells a month; Date.parse alone would take "-1" for a year.
  if (!/[A-Za-z]{3}/.test(text)) return undefined;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Waits `ms`, rejecting with `AbortedError` when the signal fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError(signal.reason));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AbortedError(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
