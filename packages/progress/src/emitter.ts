import { EventEmitter } from 'eventemitter3';
import {
  isProgressUpdate,
  type ProgressEvent,
  type ProgressEventOf,
  type ProgressEventType,
  type ProgressListener,
} from './events.ts';
import { createProgressThrottle, DEFAULT_THROTTLE_MS, type ProgressThrottle } from './throttle.ts';

/** Options for `createProgressEmitter`. */
export interface ProgressEmitterOptions {
  /** Per layer and phase, at most one `*-progress` event per this many ms. Default 100; 0 turns throttling off. */
  throttleMs?: number;
  /** The clock the throttle reads, in milliseconds. Default `performance.now`. */
  now?: () => number;
  /** Receives errors thrown by listeners (they never reach the producer). Default: `process.emitWarning`. */
  onListenerError?: (error: unknown, event: ProgressEvent) => void;
}

const ANY = '*';

/**
 * Carries progress events from a producer (a pull) to listeners (renderers) without ever blocking or
 * failing the producer: `emit` only queues, listeners run later on the event loop (a `setImmediate`
 * turn) with their errors caught, and while events wait, a newer counter of a layer replaces the older
 * one, so a slow consumer costs memory per layer, not per chunk. Built on eventemitter3.
 */
export class ProgressEmitter {
  readonly #events = new EventEmitter();
  readonly #throttle: ProgressThrottle | undefined;
  readonly #throttleMs: number;
  readonly #onListenerError: (error: unknown, event: ProgressEvent) => void;
  #queue: ProgressEvent[] = [];
  /** Queue positions of counters not yet delivered, by `type:index`, since the last state change. */
  readonly #queuedUpdates = new Map<string, number>();
  #scheduled: ReturnType<typeof setImmediate> | undefined;
  #trailing: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ProgressEmitterOptions = {}) {
    this.#throttleMs = options.throttleMs ?? DEFAULT_THROTTLE_MS;
    this.#throttle =
      this.#throttleMs > 0
        ? createProgressThrottle({
            intervalMs: this.#throttleMs,
            ...(options.now ? { now: options.now } : {}),
          })
        : undefined;
    this.#onListenerError =
      options.onListenerError ??
      ((error) =>
        process.emitWarning(error instanceof Error ? error : String(error), 'OcipullProgressWarning'));
  }

  /** Queues an event for the listeners; returns at once and never throws. Pass it as `onProgress`. */
  readonly emit = (event: ProgressEvent): void => {
    const released = this.#throttle ? this.#throttle.push(event) : [event];
    for (const each of released) this.#enqueue(each);
    if (this.#throttle?.pending) this.#armTrailing();
    else this.#disarmTrailing();
  };

  /** The same function as `emit`, named for the `onProgress` option libraries take. */
  get onProgress(): ProgressListener {
    return this.emit;
  }

  /** Calls `listener` with every event; returns a function that unsubscribes it. */
  subscribe(listener: ProgressListener): () => void {
    this.#events.on(ANY, listener);
    return () => this.#events.off(ANY, listener);
  }

  /** Calls `listener` with the events of one `type`; returns a function that unsubscribes it. */
  on<T extends ProgressEventType>(type: T, listener: (event: ProgressEventOf<T>) => void): () => void {
    this.#events.on(type, listener);
    return () => this.#events.off(type, listener);
  }

  /** Delivers everything queued or held back by the throttle now, synchronously (e.g. before exit). */
  flush(): void {
    this.#disarmTrailing();
    if (this.#throttle) for (const each of this.#throttle.flush()) this.#enqueue(each);
    this.#deliver();
  }

  #enqueue(event: ProgressEvent): void {
    if (isProgressUpdate(event)) {
      const key = `${event.type}:${event.index}`;
      const position = this.#queuedUpdates.get(key);
      if (position !== undefined) this.#queue[position] = event;
      else {
        this.#queuedUpdates.set(key, this.#queue.length);
        this.#queue.push(event);
      }
    } else {
      // Later counters must not move in front of this state change.
      this.#queuedUpdates.clear();
      this.#queue.push(event);
    }
    this.#scheduled ??= setImmediate(() => this.#deliver());
  }

  #deliver(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const queue = this.#queue;
    this.#queue = [];
    this.#queuedUpdates.clear();
    for (const event of queue) {
      for (const name of [ANY, event.type]) {
        for (const listener of this.#events.listeners(name)) {
          try {
            (listener as ProgressListener)(event);
          } catch (error) {
            this.#onListenerError(error, event);
          }
        }
      }
    }
  }

  /** Releases held-back counters after a quiet interval, so a stalled layer still shows its last value. */
  #armTrailing(): void {
    if (this.#trailing) return;
    this.#trailing = setTimeout(() => {
      this.#trailing = undefined;
      if (this.#throttle) for (const each of this.#throttle.flush()) this.#enqueue(each);
    }, this.#throttleMs);
    this.#trailing.unref();
  }

  #disarmTrailing(): void {
    if (this.#trailing) clearTimeout(this.#trailing);
    this.#trailing = undefined;
  }
}

/** Makes a progress emitter. */
export function createProgressEmitter(options: ProgressEmitterOptions = {}): ProgressEmitter {
  return new ProgressEmitter(options);
}
