/**
 * Deduplicates concurrent work within one process: while a call for a key is in flight, further
 * callers for that key share its result or error instead of starting their own. The key is freed as
 * soon as the call settles, so a later caller starts afresh (nothing is cached).
 */
export class SingleFlight {
  readonly #inflight = new Map<string, Promise<unknown>>();

  /** Runs `fn` for `key`, or joins the run already in flight for it. */
  run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    const existing = this.#inflight.get(key);
    if (existing) return existing as Promise<T>;
    // Deferred by a microtask so that a synchronous throw in `fn` becomes a shared rejection, and the
    // key is deleted before any caller's continuation runs.
    const shared = Promise.resolve()
      .then(fn)
      .finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, shared);
    return shared;
  }

  /** True while a call for `key` is in flight. */
  has(key: string): boolean {
    return this.#inflight.has(key);
  }

  /** The number of keys in flight. */
  get size(): number {
    return this.#inflight.size;
  }
}

/** Makes a `SingleFlight` group. */
export function createSingleFlight(): SingleFlight {
  return new SingleFlight();
}
