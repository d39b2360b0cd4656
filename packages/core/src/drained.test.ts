import { once } from 'node:events';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { drained } from './index.ts';

describe('drained', () => {
  it('resolves on drain, on close, and at once for a stream already destroyed and closed', async () => {
    const slow = new Writable({
      highWaterMark: 4,
      write: (_chunk, _encoding, callback) => setTimeout(callback, 5),
    });
    expect(slow.write(Buffer.alloc(8))).toBe(false);
    await drained(slow);
    expect(slow.writableLength).toBe(0);

    const stuck = new Writable({ highWaterMark: 4, write: () => {} });
    expect(stuck.write(Buffer.alloc(8))).toBe(false);
    const waiting = drained(stuck);
    stuck.destroy();
    await waiting;

    // Destroyed and its 'close' already emitted: no event will come, waiting must not hang.
    const gone = new Writable({ write: (_chunk, _encoding, callback) => callback() });
    gone.destroy();
    await once(gone, 'close');
    const outcome = await Promise.race([
      drained(gone).then(() => 'resolved'),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 500)),
    ]);
    expect(outcome).toBe('resolved');
  });
});
