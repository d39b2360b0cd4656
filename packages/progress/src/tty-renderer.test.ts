import type { Digest } from '@ocipull/core';
import { describe, expect, it } from 'vitest';
import { createRenderer, createTtyRenderer } from './index.ts';
import { fakeClock, LAYER0, MiB, play, SCRIPT, screen, stringSink } from './testing/fixtures/script.ts';

const ESC = '\u001b';
const UP = /^\u001b\[(\d+)A/;

describe('createTtyRenderer', () => {
  it('redraws the block in place: cursor up over the previous block, then every line erased and rewritten', () => {
    const clock = fakeClock();
    const { sink, writes } = stringSink({ columns: 80 });
    play(createTtyRenderer(sink, { now: clock.now }), clock);

    // Before resolve-end the block is one line (the header); afterwards header + 2 layers + total.
    expect(writes[0]).toBe(`${ESC}[2Kresolving docker.io/library/alpine:3.20\n`);
    expect(writes[0]).not.toMatch(UP);
    const ups = writes.slice(1).map((write) => Number(UP.exec(write)?.[1]));
    expect(ups).toEqual([1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]);
    for (const write of writes) {
      const body = write.replace(UP, '');
      // Notes (retry, mirror) erase down and print one line above the block; block lines are erased first.
      const lines = body.split('\n').slice(0, -1);
      for (const [position, line] of lines.entries()) {
        if (position === 0 && line.startsWith(`${ESC}[J`)) continue;
        expect(line.startsWith(`${ESC}[2K`)).toBe(true);
      }
    }
    // The last write is close()'s final redraw of the same block.
    expect(writes.at(-1)).toBe(writes.at(-2));
  });

  it('shows one bar per layer with bytes and rate, and a total', () => {
    const clock = fakeClock();
    const { sink, writes } = stringSink({ columns: 80 });
    let midDownload: string[] = [];
    play(createTtyRenderer(sink, { now: clock.now }), clock, (index) => {
      if (index === 6) midDownload = screen(writes.join(''));
    });
    // At t=630: 2 of 3 MiB, 1 MiB resumed, so 1 MiB transferred in 0.5 s since download start.
    expect(midDownload).toEqual([
      'mirror mirror.local:5000 failed (connection refused); using docker.io',
      'layer 1/2: retrying (attempt 2) in 500 ms: HTTP 503?[2J',
      `docker.io/library/alpine:3.20 linux/amd64 sha256:${'a'.repeat(12)}`,
      `1/2 sha256:${'0'.repeat(12)} [############......]  66% 2.0 MiB/3.0 MiB 2.0 MiB/s`,
      `2/2 sha256:${'1'.repeat(12)} [##################] 100% 1.0 KiB cached`,
      `                  total [############......]  66% 2.0 MiB/3.0 MiB 2.0 MiB/s`,
    ]);
    expect(screen(writes.join(''))).toEqual([
      'mirror mirror.local:5000 failed (connection refused); using docker.io',
      'layer 1/2: retrying (attempt 2) in 500 ms: HTTP 503?[2J',
      `docker.io/library/alpine:3.20 linux/amd64 sha256:${'a'.repeat(12)} done in 2.3s`,
      `1/2 sha256:${'0'.repeat(12)} [##################] 100% 3.0 MiB done`,
      `2/2 sha256:${'1'.repeat(12)} [##################] 100% 1.0 KiB done`,
      `                  total [##################] 100% 3.0 MiB/3.0 MiB 2.0 MiB/s`,
    ]);
  });

  it('computes a layer rate from the injected clock, excluding resumed bytes', () => {
    const clock = fakeClock(1000);
    const { sink, writes } = stringSink({ columns: 100 });
    const renderer = createTtyRenderer(sink, { now: clock.now });
    renderer.handle({
      type: 'layer-download-start',
      index: 0,
      digest: LAYER0,
      total: 3 * MiB,
      resumedFrom: MiB,
    });
    clock.time = 3000;
    renderer.handle({
      type: 'layer-download-progress',
      index: 0,
      digest: LAYER0,
      bytes: 2 * MiB,
      total: 3 * MiB,
    });
    const lines = screen(writes.join(''));
    expect(lines[1]).toMatch(/ 66% 2\.0 MiB\/3\.0 MiB 512\.0 KiB\/s$/);
  });

  it('fits every line to the width the stream reports, re-read at each redraw', () => {
    const clock = fakeClock();
    const { sink, writes } = stringSink({ columns: 120 });
    const renderer = createTtyRenderer(sink, { now: clock.now });
    for (const [time, event] of SCRIPT.slice(0, 7)) {
      clock.time = time;
      renderer.handle(event);
    }
    const wide = screen(writes.join('')).slice(-3);
    expect(wide[0]).toContain(`[${'#'.repeat(27)}${'.'.repeat(13)}]`); // the 40-cell maximum bar
    sink.columns = 40;
    writes.length = 0;
    clock.time = SCRIPT[7]![0];
    renderer.handle(SCRIPT[7]![1]);
    const narrow = writes[0]!
      .split('\n')
      .slice(0, -1)
      .map((line) => line.replace(/\u001b\[\d*[AKJ]/g, ''));
    for (const line of narrow) expect(line.length).toBeLessThanOrEqual(39);
    // Too narrow for a bar: the numbers stay.
    expect(narrow[1]).toBe(`1/2 sha256:${'0'.repeat(12)} 100% 3.0 MiB/3.`);
  });

  it('never lets event strings inject control sequences', () => {
    const clock = fakeClock();
    const { sink, writes } = stringSink({ columns: 80 });
    const renderer = createTtyRenderer(sink, { now: clock.now });
    renderer.handle({ type: 'resolve-start', reference: `evil${ESC}[2J${ESC}]0;title\u0007` });
    renderer.handle({ type: 'mirror-fallback', mirror: 'm', registry: 'r', reason: `x${ESC}[1A\r` });
    // screen() throws on any escape sequence other than the renderer's own.
    expect(screen(writes.join(''))).toEqual([
      'mirror m failed (x?[1A?); using r',
      'resolving evil?[2J?]0;title?',
    ]);
  });

  it('is what createRenderer picks for a TTY', () => {
    const { sink, text } = stringSink({ columns: 80 });
    createRenderer(sink, { now: () => 0 }).handle(SCRIPT[0]![1]);
    expect(text()).toBe(`${ESC}[2Kresolving docker.io/library/alpine:3.20\n`);
    const plain = stringSink();
    createRenderer(plain.sink, { format: 'tty', columns: 50 }).handle(SCRIPT[0]![1]);
    expect(plain.text()).toContain(`${ESC}[2K`);
  });

  it('limits redraws for counters fed unthrottled, and the next state change shows the latest value', () => {
    const clock = fakeClock();
    const { sink, writes } = stringSink({ columns: 100 });
    const renderer = createTtyRenderer(sink, { now: clock.now });
    renderer.handle({
      type: 'layer-download-start',
      index: 0,
      digest: LAYER0,
      total: 1000 * 1024,
      resumedFrom: 0,
    });
    const before = writes.length;
    // 1000 counters, one per millisecond: at most one redraw per 50 ms.
    for (let step = 1; step <= 1000; step++) {
      clock.time = step;
      renderer.handle({
        type: 'layer-download-progress',
        index: 0,
        digest: LAYER0,
        bytes: step * 1024,
        total: 1000 * 1024,
      });
    }
    expect(writes.length - before).toBe(20);
    clock.time = 1003;
    renderer.handle({
      type: 'layer-download-progress',
      index: 0,
      digest: LAYER0,
      bytes: 999 * 1024,
      total: 1000 * 1024,
    });
    expect(writes.length - before).toBe(20); // held: drawn 3 ms ago
    renderer.close();
    expect(screen(writes.join(''))[1]).toMatch(/ {2}99% 999\.0 KiB\/1000\.0 KiB /);
  });

  it('draws nothing on close when nothing was drawn, and nothing after close', () => {
    const { sink, writes } = stringSink({ columns: 80 });
    const renderer = createTtyRenderer(sink);
    renderer.close();
    renderer.handle(SCRIPT[0]![1]);
    expect(writes).toEqual([]);
  });

  it('keeps the block within the terminal height: layers at work first, and how many are not shown', () => {
    const clock = fakeClock();
    const { sink, writes } = stringSink({ columns: 80, rows: 10 });
    const renderer = createTtyRenderer(sink, { now: clock.now, redrawIntervalMs: 0 });
    const digest = (index: number) => `sha256:${index.toString(16).padStart(64, '0')}` as Digest;
    const layers = Array.from({ length: 30 }, (_, index) => ({ digest: digest(index), size: 1000 }));
    renderer.handle({ type: 'resolve-start', reference: 'r.example/big:1' });
    renderer.handle({
      type: 'resolve-end',
      manifestDigest: digest(999),
      platform: { os: 'linux', architecture: 'amd64' },
      layers,
      totalBytes: 30_000,
    });
    for (let index = 0; index < 30; index++) {
      renderer.handle({
        type: 'layer-download-start',
        index,
        digest: digest(index),
        total: 1000,
        resumedFrom: 0,
      });
      if (index < 25) {
        renderer.handle({
          type: 'layer-download-end',
          index,
          digest: digest(index),
          cached: false,
          resumedFrom: 0,
          total: 1000,
        });
      }
    }
    renderer.close();
    // Never more than rows - 1 lines redrawn: the cursor can move up over all of them.
    for (const write of writes) {
      const up = Number(UP.exec(write)?.[1] ?? 0);
      expect(up).toBeLessThanOrEqual(9);
      expect(write.replace(UP, '').split('\n').length - 1).toBeLessThanOrEqual(9);
    }
    const last = screen(writes.join(''));
    expect(last).toHaveLength(9);
    // The five still downloading (26–30) are shown, then the first done ones; the rest counted.
    expect(last.filter((line) => /^2[6-9]\/30|^30\/30/.test(line))).toHaveLength(5);
    expect(last).toContain('… 24 more layers');
    expect(last.at(-1)).toMatch(/total/);
  });
});
