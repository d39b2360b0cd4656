import { describe, expect, it } from 'vitest';
import { groupSync } from './atomic-file.ts';

/** A scripted sync: each run is recorded and ends when the test says so. */
function scriptedSync() {
  const runs: { key: string; startedAt: number; end: (error?: Error) => void }[] = [];
  let clock = 0;
  const sync = (key: string) =>
    new Promise<void>((resolve, reject) => {
      runs.push({ key, startedAt: clock++, end: (error) => (error ? reject(error) : resolve()) });
    });
  return { runs, sync, tick: () => clock++ };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('groupSync', () => {
  it('resolves each call only after a run that started after the call, sharing runs between callers', async () => {
    const { runs, sync, tick } = scriptedSync();
    const grouped = groupSync(sync);
    const settled: string[] = [];
    const call = (name: string, key = 'd') => {
      const calledAt = tick();
      const done = grouped(key).then(() => settled.push(name));
      return { calledAt, done };
    };

    const a = call('a');
    expect(runs).toHaveLength(1);
    // b, c and d arrive while a's run is in flight: one queued run serves all three.
    const b = call('b');
    const c = call('c');
    await flush();
    const d = call('d');
    expect(runs).toHaveLength(1);
    runs[0]!.end();
    await a.done;
    await flush();
    expect(settled).toEqual(['a']);
    expect(runs).toHaveLength(2);
    for (const late of [b, c, d]) expect(runs[1]!.startedAt).toBeGreaterThan(late.calledAt);
    // e arrives during the second run: it must not be served by it.
    const e = call('e');
    runs[1]!.end();
    await Promise.all([b.done, c.done, d.done]);
    await flush();
    expect(settled).toEqual(['a', 'b', 'c', 'd']);
    expect(runs).toHaveLength(3);
    expect(runs[2]!.startedAt).toBeGreaterThan(e.calledAt);
    runs[2]!.end();
    await e.done;
    // Idle again: the next call starts a run at once.
    const f = call('f');
    expect(runs).toHaveLength(4);
    runs[3]!.end();
    await f.done;
    expect(settled).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  });

  it('keeps keys apart and rejects exactly the calls a failed run served', async () => {
    const { runs, sync } = scriptedSync();
    const grouped = groupSync(sync);
    const first = grouped('x');
    const other = grouped('y');
    expect(runs.map((run) => run.key)).toEqual(['x', 'y']);
    const queued = [grouped('x'), grouped('x')];
    runs[0]!.end(new Error('disk gone'));
    await expect(first).rejects.toThrow('disk gone');
    await flush();
    expect(runs.map((run) => run.key)).toEqual(['x', 'y', 'x']);
    runs[2]!.end(new Error('still gone'));
    for (const call of queued) await expect(call).rejects.toThrow('still gone');
    runs[1]!.end();
    await other;
    // After failures the key is idle: a new call runs afresh and can succeed.
    const again = grouped('x');
    expect(runs).toHaveLength(4);
    runs[3]!.end();
    await again;
  });
});
