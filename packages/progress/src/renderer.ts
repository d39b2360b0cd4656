import type { ProgressEvent } from './events.ts';

/** Where a renderer writes: `process.stderr`, a file stream, or any string sink. */
export interface ProgressOutput {
  write(chunk: string): unknown;
  /** Set on terminals; picks the TTY renderer in `createRenderer`. */
  isTTY?: boolean;
  /** Terminal width, read at every redraw (so resizing works). */
  columns?: number;
  /** Terminal height, read at every redraw: a block taller than it could not be redrawn in place. */
  rows?: number;
}

/** Turns progress events into output. `handle` is bound: pass it straight to `subscribe` or `onProgress`. */
export interface ProgressRenderer {
  handle(event: ProgressEvent): void;
  /** Draws the final state and stops; later events are ignored. Does not end the stream. */
  close(): void;
}

/** Options every renderer takes. */
export interface RendererOptions {
  /** The clock for rates and durations, in milliseconds. Default `performance.now`. */
  now?: () => number;
}
