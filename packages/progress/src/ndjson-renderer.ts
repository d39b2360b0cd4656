import { PROGRESS_EVENT_VERSION } from './events.ts';
import type { ProgressOutput, ProgressRenderer, RendererOptions } from './renderer.ts';

/**
 * Writes one JSON object per event and line, `{"v":1,"type":…,…}`: the event as emitted plus the
 * version of its shape. JSON escapes control characters, so a line never breaks a log.
 */
export function createNdjsonRenderer(
  output: ProgressOutput,
  _options: RendererOptions = {},
): ProgressRenderer {
  let closed = false;
  return {
    handle(event) {
      if (closed) return;
      output.write(`${JSON.stringify({ v: PROGRESS_EVENT_VERSION, ...event })}\n`);
    },
    close() {
      closed = true;
    },
  };
}
