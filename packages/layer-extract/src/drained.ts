import type { EventEmitter } from 'node:events';

/** Resolves when a writable that refused a write wants more ('drain'), or is gone ('close'). */
export function drained(stream: Pick<EventEmitter, 'on' | 'off'>): Promise<void> {
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
