import { describe, expect, it } from 'vitest';
import { createNdjsonRenderer, createRenderer, PROGRESS_EVENT_VERSION } from './index.ts';
import { fakeClock, MiB, play, SCRIPT, stringSink } from './testing/fixtures/script.ts';

describe('createNdjsonRenderer', () => {
  it('writes one versioned JSON object per event and line, in order', () => {
    const clock = fakeClock();
    const { sink, text } = stringSink();
    play(createNdjsonRenderer(sink), clock);
    const lines = text().split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(SCRIPT.length);
    expect(lines[0]).toBe('{"v":1,"type":"resolve-start","reference":"docker.io/library/alpine:3.20"}');
    expect(lines[6]).toBe(
      `{"v":1,"type":"layer-download-progress","index":0,"digest":"sha256:${'0'.repeat(64)}","bytes":${2 * MiB},"total":${3 * MiB}}`,
    );
    expect(lines[13]).toBe('{"v":1,"type":"pull-end","durationMs":2300}');
    lines.forEach((line, index) => {
      expect(JSON.parse(line)).toEqual({ v: PROGRESS_EVENT_VERSION, ...SCRIPT[index]![1] });
    });
  });

  it('escapes control characters inside strings so a line never breaks', () => {
    const { sink, text } = stringSink();
    const renderer = createRenderer(sink, { format: 'ndjson' });
    renderer.handle(SCRIPT[5]![1]);
    expect(text()).toContain('"reason":"HTTP 503\\u001b[2J"');
    expect(text().slice(0, -1)).not.toMatch(/[\u0000-\u001f]/);
  });
});
