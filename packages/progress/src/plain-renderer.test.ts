import { describe, expect, it } from 'vitest';
import { createPlainRenderer, createRenderer } from './index.ts';
import { fakeClock, play, SCRIPT, stringSink } from './testing/fixtures/script.ts';

describe('createPlainRenderer', () => {
  it('writes one line per state change and none for byte counters', () => {
    const clock = fakeClock();
    const { sink, text } = stringSink();
    play(createPlainRenderer(sink, { now: clock.now }), clock);
    expect(text().split('\n')).toEqual([
      'resolving docker.io/library/alpine:3.20',
      'mirror mirror.local:5000 failed (connection refused); using docker.io',
      `resolved sha256:${'a'.repeat(64)} for linux/amd64: 2 layers, 3.0 MiB`,
      'layer 2/2 sha256:111111111111: cached',
      'layer 1/2 sha256:000000000000: downloading 3.0 MiB (resuming at 1.0 MiB)',
      'layer 1/2: retrying (attempt 2) in 500 ms: HTTP 503?[2J',
      'layer 1/2 sha256:000000000000: downloaded 3.0 MiB in 1.0s (2.0 MiB/s)',
      'layer 1/2 sha256:000000000000: extracting',
      'layer 1/2 sha256:000000000000: extracted 42 entries',
      'layer 2/2 sha256:111111111111: already extracted',
      'done in 2.3s',
      '',
    ]);
  });

  it('never writes a control character other than the line feed', () => {
    const clock = fakeClock();
    const { sink, text } = stringSink();
    play(createPlainRenderer(sink, { now: clock.now }), clock);
    expect(text()).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
  });

  it('numbers layers without a count when resolve-end was not seen, and ignores events after close', () => {
    const { sink, text } = stringSink();
    const renderer = createPlainRenderer(sink, { now: () => 0 });
    renderer.handle(SCRIPT[4]![1]);
    renderer.close();
    renderer.handle(SCRIPT[13]![1]);
    expect(text()).toBe('layer 1 sha256:000000000000: downloading 3.0 MiB (resuming at 1.0 MiB)\n');
  });

  it('is what createRenderer picks for a non-TTY output', () => {
    const { sink, text } = stringSink();
    const renderer = createRenderer(sink);
    renderer.handle({ type: 'pull-end', durationMs: 65_000 });
    expect(text()).toBe('done in 1m05s\n');
  });
});
