import type { EventEmitter } from 'node:events';

/**
 * Resolves when a writable that refused a write wants more ('drain'), or is gone ('close', or already
 * destroyed: a stream destroyed before the call may have emitted its 'close' already, and waiting for
 * one would never end).
 */
export function drained(stream: Pick<EventEmitter, 'on' | 'off'> & { destroyed?: boolean }): Promise<void> {
  if (stream.destroyed === true) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * Destroys a stream that will never be read, without an unhandled 'error': one made with an aborted
 * signal may be about to emit its AbortError.
 */
export function discard(stream: Pick<EventEmitter, 'on'> & { destroy(): unknown }): void {
  stream.on('error', () => {});
  stream.destroy();
}
