/**
 * The demand handshake of a `Readable` fed by an async pump: the pump starts at the first `_read`,
 * and a push the consumer could not take waits for the next `_read` (or for the stream to stop).
 * `FetchThroughStream` and `FollowStream` both run on it.
 */
export class PumpGate {
  #pump: Promise<void> | undefined;
  #demand: (() => void) | undefined;

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
    return new Promise<void>((resolve) => {
      this.#demand = resolve;
      if (stopped.aborted) resolve();
    });
  }

  /** Lets a waiting push go on (at `_read`, and when the stream is destroyed). */
  release(): void {
    const demand = this.#demand;
    this.#demand = undefined;
    demand?.();
  }
}
