import { isProgressUpdate, type ProgressEvent, type ProgressUpdateEvent } from './events.ts';

/** At most 10 updates a second per layer and phase: faster than the eye follows a bar, cheap to render. */
export const DEFAULT_THROTTLE_MS = 100;

/** Options for `createProgressThrottle`. */
export interface ProgressThrottleOptions {
  /** Minimum time between two updates of one layer's download (or extract) counter. Default 100. */
  intervalMs?: number;
  /** The clock, in milliseconds. Default `performance.now`. */
  now?: () => number;
}

/**
 * Rate-limits `*-progress` events per layer and phase while never losing information that matters:
 * state changes always pass, a counter that reached its total always passes, and a held-back update
 * is released before the next state change of its layer (so the last value precedes `*-end`), by
 * `flush()`, or by the next update after the interval.
 */
export interface ProgressThrottle {
  /** Takes one event and returns the events to deliver now, in order (possibly none). */
  push(event: ProgressEvent): ProgressEvent[];
  /** Returns every held-back update and forgets them. */
  flush(): ProgressEvent[];
  /** True while some update is held back. */
  readonly pending: boolean;
}

/** Makes a throttle for progress events (pure: no timers; see `createProgressEmitter` for a trailing flush). */
export function createProgressThrottle(options: ProgressThrottleOptions = {}): ProgressThrottle {
  const intervalMs = options.intervalMs ?? DEFAULT_THROTTLE_MS;
  const now = options.now ?? (() => performance.now());
  const lastSent = new Map<string, number>();
  const held = new Map<string, ProgressUpdateEvent>();
  const keyOf = (event: ProgressUpdateEvent) => `${event.type}:${event.index}`;

  return {
    push(event) {
      if (isProgressUpdate(event)) {
        const key = keyOf(event);
        const time = now();
        const last = lastSent.get(key);
        if (last === undefined || time - last >= intervalMs || event.bytes >= event.total) {
          held.delete(key);
          lastSent.set(key, time);
          return [event];
        }
        held.set(key, event);
        return [];
      }
      // A state change: release what is held for its layer first (or everything at the end of the pull).
      const released: ProgressEvent[] = [];
      for (const [key, update] of held) {
        if (event.type === 'pull-end' || ('index' in event && update.index === event.index)) {
          released.push(update);
          held.delete(key);
        }
      }
      released.push(event);
      return released;
    },
    flush() {
      const released = [...held.values()];
      const time = now();
      for (const key of held.keys()) lastSent.set(key, time);
      held.clear();
      return released;
    },
    get pending() {
      return held.size > 0;
    },
  };
}
