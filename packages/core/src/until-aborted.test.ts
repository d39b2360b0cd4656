import { describe, expect, it } from 'vitest';
import { ErrorCode, isOciError } from './oci-error.ts';
import { untilAborted } from './until-aborted.ts';

describe('untilAborted', () => {
  it('passes the value or the error through, and is the promise itself without a signal', async () => {
    const promise = Promise.resolve(7);
    expect(untilAborted(promise, undefined)).toBe(promise);
    expect(await untilAborted(Promise.resolve(5), new AbortController().signal)).toBe(5);
    await expect(
      untilAborted(Promise.reject(new Error('boom')), new AbortController().signal),
    ).rejects.toThrow('boom');
  });

  it('rejects with ERR_ABORTED at once when the signal fires first, or already has', async () => {
    const controller = new AbortController();
    const never = new Promise<never>(() => {});
    const waiting = untilAborted(never, controller.signal);
    controller.abort(new Error('stop'));
    const error = await waiting.catch((caught: unknown) => caught);
    expect(isOciError(error, ErrorCode.Aborted)).toBe(true);
    const late = await untilAborted(never, controller.signal).catch((caught: unknown) => caught);
    expect(isOciError(late, ErrorCode.Aborted)).toBe(true);
  });

  it('stops listening once the promise settles', async () => {
    const controller = new AbortController();
    let listeners = 0;
    const { signal } = controller;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = ((...args: Parameters<typeof add>) => {
      listeners++;
      add(...args);
    }) as typeof add;
    signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
      listeners--;
      remove(...args);
    }) as typeof remove;
    await untilAborted(Promise.resolve(1), signal);
    await untilAborted(Promise.reject(new Error('x')), signal).catch(() => {});
    expect(listeners).toBe(0);
  });
});
