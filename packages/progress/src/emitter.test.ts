import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  createProgressEmitter,
  type LayerDownloadProgressEvent,
  ProgressEmitter,
  type ProgressEvent,
} from './index.ts';
import { fakeClock, LAYER0, SCRIPT } from './testing/fixtures/script.ts';

const progress = (bytes: number, index = 0): LayerDownloadProgressEvent => ({
  type: 'layer-download-progress',
  index,
  digest: LAYER0,
  bytes,
  total: 1_000_000,
});

afterEach(() => {
  vi.useRealTimers();
});

describe('ProgressEmitter', () => {
  it('queues on emit and delivers on a later turn, in order, to every subscriber', async () => {
    const emitter = createProgressEmitter({ throttleMs: 0 });
    expect(emitter).toBeInstanceOf(ProgressEmitter);
    const seen: ProgressEvent[] = [];
    const resolves: ProgressEvent[] = [];
    emitter.subscribe((event) => seen.push(event));
    emitter.on('resolve-end', (event) => resolves.push(event));
    for (const [, event] of SCRIPT) emitter.emit(event);
    expect(seen).toEqual([]); // the producer never runs listener code
    await nextTurn();
    // Two counters of layer 0 were queued back to back: only the newer one is delivered.
    expect(seen).toEqual(SCRIPT.filter((_, index) => index !== 6).map(([, event]) => event));
    expect(resolves).toEqual([SCRIPT[2]![1]]);
  });

  it('isolates the producer from throwing listeners', async () => {
    const errors: unknown[] = [];
    const emitter = createProgressEmitter({ onListenerError: (error) => errors.push(error) });
    const seen: ProgressEvent[] = [];
    emitter.subscribe(() => {
      throw new Error('renderer bug');
    });
    emitter.subscribe((event) => seen.push(event));
    expect(() => emitter.emit(SCRIPT[0]![1])).not.toThrow();
    emitter.flush();
    expect(seen).toEqual([SCRIPT[0]![1]]);
    expect((errors[0] as Error).message).toBe('renderer bug');
  });

  it('keeps one pending counter per layer while the consumer has not run (bounded memory)', async () => {
    const emitter = createProgressEmitter({ throttleMs: 0 });
    const seen: ProgressEvent[] = [];
    emitter.subscribe((event) => seen.push(event));
    for (let bytes = 1; bytes <= 10_000; bytes++) emitter.emit(progress(bytes));
    emitter.emit(progress(7, 1));
    emitter.emit({
      type: 'layer-download-end',
      index: 0,
      digest: LAYER0,
      cached: false,
      resumedFrom: 0,
      total: 10,
    });
    emitter.emit(progress(8, 1));
    await nextTurn();
    expect(seen).toEqual([
      progress(10_000),
      progress(7, 1),
      { type: 'layer-download-end', index: 0, digest: LAYER0, cached: false, resumedFrom: 0, total: 10 },
      progress(8, 1),
    ]);
  });

  it('throttles counters with the injected clock, and flush releases what is held', async () => {
    const clock = fakeClock();
    const emitter = createProgressEmitter({ now: clock.now });
    const seen: number[] = [];
    emitter.on('layer-download-progress', (event) => seen.push(event.bytes));
    for (let step = 0; step < 50; step++) {
      clock.time = step * 20;
      emitter.emit(progress(step));
      await nextTurn(); // the consumer keeps up
    }
    emitter.flush();
    expect(seen).toEqual([0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49]);
  });

  it('releases a held counter after a quiet interval (trailing flush)', () => {
    vi.useFakeTimers();
    const clock = fakeClock();
    const emitter = createProgressEmitter({ now: clock.now });
    const seen: number[] = [];
    emitter.subscribe((event) => seen.push((event as LayerDownloadProgressEvent).bytes));
    emitter.emit(progress(1));
    clock.time = 10;
    emitter.emit(progress(2)); // held: the producer then stalls
    vi.advanceTimersByTime(99);
    expect(seen).toEqual([1]);
    vi.advanceTimersByTime(1);
    vi.runOnlyPendingTimers();
    expect(seen).toEqual([1, 2]);
  });

  it('works as onProgress and stops calling an unsubscribed listener', () => {
    const emitter = createProgressEmitter();
    const seen: ProgressEvent[] = [];
    const unsubscribe = emitter.subscribe((event) => seen.push(event));
    const onProgress = emitter.onProgress;
    onProgress(SCRIPT[0]![1]);
    emitter.flush();
    unsubscribe();
    onProgress(SCRIPT[1]![1]);
    emitter.flush();
    expect(seen).toEqual([SCRIPT[0]![1]]);
  });
});
