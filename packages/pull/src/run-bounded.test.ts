import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { runBounded } from './run-bounded.ts';

/** A task that records when it runs and settles when `finish` is called. */
function gate() {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  return { done, finish };
}

describe('runBounded', () => {
  it('keeps at most `limit` weight in flight and runs tasks in order', async () => {
    const started: number[] = [];
    const gates = Array.from({ length: 5 }, gate);
    const run = runBounded(
      gates.map((item, index) => async () => {
        started.push(index);
        await item.done;
        return index;
      }),
      [1, 1, 1, 1, 1],
      2,
      new AbortController().signal,
      () => {},
    );
    await sleep(10);
    expect(started).toEqual([0, 1]);
    gates[1]!.finish();
    await sleep(10);
    expect(started).toEqual([0, 1, 2]);
    for (const item of gates) item.finish();
    expect(await run).toEqual([0, 1, 2, 3, 4]);
  });

  it('a task that gives its slot back lets the next one start, and the run still waits for it', async () => {
    const started: number[] = [];
    const gates = Array.from({ length: 3 }, gate);
    const frees: Array<() => void> = [];
    let settled = false;
    const run = runBounded(
      gates.map((item, index) => async (freeSlot: () => void) => {
        started.push(index);
        frees[index] = freeSlot;
        await item.done;
        return index;
      }),
      [1, 1, 1],
      1,
      new AbortController().signal,
      () => {},
    ).then((results) => {
      settled = true;
      return results;
    });
    await sleep(10);
    expect(started).toEqual([0]);
    frees[0]!();
    frees[0]!();
    await sleep(10);
    // Freed once (a second call is a no-op): exactly one more task started.
    expect(started).toEqual([0, 1]);
    gates[1]!.finish();
    await sleep(10);
    expect(started).toEqual([0, 1, 2]);
    gates[2]!.finish();
    await sleep(10);
    // Task 0 gave its slot back but has not settled: the run is not over.
    expect(settled).toBe(false);
    gates[0]!.finish();
    expect(await run).toEqual([0, 1, 2]);
  });

  it('after a failure and abort, no further task starts', async () => {
    const controller = new AbortController();
    const started: number[] = [];
    const failures: unknown[] = [];
    const results = await runBounded(
      [0, 1, 2].map((index) => async () => {
        started.push(index);
        if (index === 0) throw new Error('boom');
        return index;
      }),
      [1, 1, 1],
      1,
      controller.signal,
      (error) => {
        failures.push(error);
        controller.abort(error);
      },
    );
    expect(started).toEqual([0]);
    expect(failures).toHaveLength(1);
    expect(results).toHaveLength(3);
  });
});
