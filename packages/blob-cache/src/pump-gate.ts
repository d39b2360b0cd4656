/**
 * One party waits until another wakes it, or until `stopped` fires (whoever stops also wakes, so the
 * wait ends at once). At most one wait at a time.
 */
export class Waiter {
  #wake: (() => void) | undefined;

  /** Resolves at the next `wake()`, or at once when `stopped` has fired. */
  wait(stopped: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (stopped.aborted) resolve();
    });
  }

  /** Ends the wait in progress, if any. */
  wake(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/**
 * The demand handshake of a `Readable` fed by an async pump: the pump starts at the first `_read`,
 * and a push the consumer could not take waits for the next `_read` (or for the stream to stop).
 * `FetchThroughStream` and `FollowStream` both run on it.
 */
export class PumpGate {
  #pump: Promise<void> | undefined;
  readonly #demand = new Waiter();

  /** The pump, once started (it settles when the stream is done). */
  get pump(): Promise<void> | undefined {
    return this.#pump;
  }

  /** For `_read`: starts the pump the first time, afterwards lets a waiting push go on. */
  read(start: () => Promise<void>): void {
    if (this.#pump === undefined) {
      this.#pump = start();
      return;
    }
    this.release();
  }

  /** Waits for the consumer's next `_read`, or until `stopped` fires (a stop also calls `release`). */
  wait(stopped: AbortSignal): Promise<void> {
    return this.#demand.wait(stopped);
  }

  /** Lets a waiting push go on (at `_read`, and when the stream is destroyed). */
  release(): void {
    this.#demand.wake();
  }
}
