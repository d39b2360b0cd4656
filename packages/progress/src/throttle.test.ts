import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createProgressThrottle,
  DEFAULT_THROTTLE_MS,
  type LayerDownloadProgressEvent,
  type ProgressEvent,
} from './index.ts';
import { fakeClock, LAYER0, LAYER1 } from './testing/fixtures/script.ts';

const progress = (index: number, bytes: number, total = 1000): LayerDownloadProgressEvent => ({
  type: 'layer-download-progress',
  index,
  digest: index === 0 ? LAYER0 : LAYER1,
  bytes,
  total,
});
const end = (index: number): ProgressEvent => ({
  type: 'layer-download-end',
  index,
  digest: index === 0 ? LAYER0 : LAYER1,
  cached: false,
  resumedFrom: 0,
  total: 1000,
});

describe('createProgressThrottle', () => {
  it('passes at most one counter per layer per 100 ms by default', () => {
    expect(DEFAULT_THROTTLE_MS).toBe(100);
    const clock = fakeClock();
    const throttle = createProgressThrottle({ now: clock.now });
    const passed: ProgressEvent[] = [];
    // One update every 10 ms for 1 s: 100 updates, none reaching the total.
    for (let step = 0; step < 100; step++) {
      clock.time = step * 10;
      passed.push(...throttle.push(progress(0, step, 1000)));
    }
    expect(passed.map((event) => (event as LayerDownloadProgressEvent).bytes)).toEqual([
      0, 10, 20, 30, 40, 50, 60, 70, 80, 90,
    ]);
    expect(throttle.pending).toBe(true);
  });

  it('throttles layers and phases independently', () => {
    const clock = fakeClock();
    const throttle = createProgressThrottle({ now: clock.now });
    expect(throttle.push(progress(0, 1))).toHaveLength(1);
    expect(throttle.push(progress(1, 1))).toHaveLength(1);
    const extract: ProgressEvent = {
      type: 'layer-extract-progress',
      index: 0,
      digest: LAYER0,
      bytes: 1,
      total: 9,
      entries: 1,
    };
    expect(throttle.push(extract)).toEqual([extract]);
    clock.time = 50;
    expect(throttle.push(progress(0, 2))).toEqual([]);
    expect(throttle.push(progress(1, 2))).toEqual([]);
  });

  it('always passes state changes, and a counter that reached its total', () => {
    const clock = fakeClock();
    const throttle = createProgressThrottle({ now: clock.now });
    throttle.push(progress(0, 1));
    expect(throttle.push(progress(0, 1000))).toEqual([progress(0, 1000)]);
    const start: ProgressEvent = { type: 'layer-extract-start', index: 0, digest: LAYER0, total: 1000 };
    expect(throttle.push(start)).toEqual([start]);
    expect(throttle.push(start)).toEqual([start]);
  });

  it('releases the held counter of a layer right before its next state change, not before other layers', () => {
    const clock = fakeClock();
    const throttle = createProgressThrottle({ now: clock.now });
    throttle.push(progress(0, 1));
    throttle.push(progress(1, 1));
    clock.time = 10;
    throttle.push(progress(0, 500));
    throttle.push(progress(1, 600));
    expect(throttle.push(end(1))).toEqual([progress(1, 600), end(1)]);
    expect(throttle.push(end(0))).toEqual([progress(0, 500), end(0)]);
    expect(throttle.pending).toBe(false);
  });

  it('releases everything at pull-end and on flush', () => {
    const clock = fakeClock();
    const throttle = createProgressThrottle({ now: clock.now });
    throttle.push(progress(0, 1));
    throttle.push(progress(0, 2));
    expect(throttle.flush()).toEqual([progress(0, 2)]);
    expect(throttle.flush()).toEqual([]);
    throttle.push(progress(1, 1));
    throttle.push(progress(1, 2));
    const pullEnd: ProgressEvent = { type: 'pull-end', durationMs: 5 };
    expect(throttle.push(pullEnd)).toEqual([progress(1, 2), pullEnd]);
  });

  it('never drops the last counter of a layer, and never reorders a layer', () => {
    const step = fc.record({
      layer: fc.integer({ min: 0, max: 2 }),
      advance: fc.integer({ min: 0, max: 150 }),
    });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 200 }), (steps) => {
        const clock = fakeClock();
        const throttle = createProgressThrottle({ now: clock.now });
        const bytes = [0, 0, 0];
        const delivered: ProgressEvent[] = [];
        const passedAt: number[][] = [[], [], []];
        for (const { layer, advance } of steps) {
          clock.time += advance;
          bytes[layer]! += 1;
          const released = throttle.push(progress(layer, bytes[layer]!, 1_000_000));
          if (released.length > 0) passedAt[layer]!.push(clock.time);
          delivered.push(...released);
        }
        for (const layer of [0, 1, 2]) delivered.push(...throttle.push(end(layer)));
        for (const layer of [0, 1, 2]) {
          const mine = delivered.filter((event) => 'index' in event && event.index === layer);
          const counters = mine
            .filter((event) => event.type === 'layer-download-progress')
            .map((event) => event.bytes);
          // Increasing, ending with the last value pushed, and the end event last.
          expect(counters).toEqual([...counters].sort((a, b) => a - b));
          if (bytes[layer]! > 0) expect(counters.at(-1)).toBe(bytes[layer]);
          expect(mine.at(-1)?.type).toBe('layer-download-end');
          // Rate bound: counters let through while streaming are at least 100 ms apart.
          const times = passedAt[layer]!;
          for (let index = 1; index < times.length; index++) {
            expect(times[index]! - times[index - 1]!).toBeGreaterThanOrEqual(100);
          }
        }
      }),
    );
  });
});
