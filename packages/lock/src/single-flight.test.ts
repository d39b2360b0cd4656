import { describe, expect, it } from 'vitest';
import { createSingleFlight, SingleFlight } from './index.ts';

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('SingleFlight', () => {
  it('runs once for concurrent callers of one key and shares the result', async () => {
    const group = createSingleFlight();
    expect(group).toBeInstanceOf(SingleFlight);
    const gate = deferred<string>();
    let calls = 0;
    const fn = () => {
      calls += 1;
      return gate.promise;
    };
    const callers = [group.run('a', fn), group.run('a', fn), group.run('a', fn)];
    expect(group.has('a')).toBe(true);
    expect(group.size).toBe(1);
    gate.resolve('blob');
    expect(await Promise.all(callers)).toEqual(['blob', 'blob', 'blob']);
    expect(calls).toBe(1);
  });

  it('shares an error with every caller', async () => {
    const group = createSingleFlight();
    const gate = deferred<never>();
    let calls = 0;
    const fn = () => {
      calls += 1;
      return gate.promise;
    };
    const callers = [group.run('k', fn), group.run('k', fn)];
    gate.reject(new Error('download failed'));
    for (const caller of callers) await expect(caller).rejects.toThrow('download failed');
    expect(calls).toBe(1);
  });

  it('turns a synchronous throw into a shared rejection', async () => {
    const group = createSingleFlight();
    const fn = () => {
      throw new Error('sync');
    };
    await expect(group.run('k', fn)).rejects.toThrow('sync');
    expect(group.size).toBe(0);
  });

  it('runs different keys independently', async () => {
    const group = createSingleFlight();
    let calls = 0;
    const results = await Promise.all([
      group.run('a', async () => ++calls),
      group.run('b', async () => ++calls),
    ]);
    expect(results.sort()).toEqual([1, 2]);
  });

  it('frees the key on settle, before callers continue, so the next call runs afresh', async () => {
    const group = createSingleFlight();
    let calls = 0;
    const fn = async () => ++calls;
    const first = await group.run('a', fn).then((value) => {
      expect(group.has('a')).toBe(false);
      return value;
    });
    expect(first).toBe(1);
    expect(await group.run('a', fn)).toBe(2);
    await expect(group.run('b', () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(group.has('b')).toBe(false);
    expect(await group.run('b', () => 'ok')).toBe('ok');
  });
});
