import { createNdjsonRenderer } from './ndjson-renderer.ts';
import { createPlainRenderer } from './plain-renderer.ts';
import type { ProgressOutput, ProgressRenderer } from './renderer.ts';
import { createTtyRenderer, type TtyRendererOptions } from './tty-renderer.ts';

/** The output formats; `auto` is `tty` on a terminal and `plain` elsewhere (pipes, files, CI). */
export type ProgressFormat = 'auto' | 'tty' | 'plain' | 'ndjson';

/** Options for `createRenderer`. */
export interface CreateRendererOptions extends TtyRendererOptions {
  /** Default `auto`. */
  format?: ProgressFormat;
}

/** Makes the renderer for a format, choosing TTY bars or plain lines from `output.isTTY` for `auto`. */
export function createRenderer(
  output: ProgressOutput,
  options: CreateRendererOptions = {},
): ProgressRenderer {
  const { format = 'auto', ...rest } = options;
  switch (format) {
    case 'ndjson':
      return createNdjsonRenderer(output, rest);
    case 'plain':
      return createPlainRenderer(output, rest);
    case 'tty':
      return createTtyRenderer(output, rest);
    case 'auto':
      return output.isTTY === true ? createTtyRenderer(output, rest) : createPlainRenderer(output, rest);
  }
}
