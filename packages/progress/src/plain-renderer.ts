import type { ProgressEvent } from './events.ts';
import { clean, formatBytes, formatDuration, formatPlatform, formatRate, shortDigest } from './format.ts';
import { LayerTable } from './layer-table.ts';
import type { ProgressOutput, ProgressRenderer, RendererOptions } from './renderer.ts';

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

/**
 * Renders one line per state change and nothing for byte counters: for CI logs and other non-TTY
 * output. Lines hold no control characters (event strings are cleaned).
 */
export function createPlainRenderer(output: ProgressOutput, options: RendererOptions = {}): ProgressRenderer {
  const now = options.now ?? (() => performance.now());
  const table = new LayerTable();
  let closed = false;

  const lineFor = (event: ProgressEvent): string | undefined => {
    const time = now();
    const layer = table.apply(event, time);
    const prefix = layer ? `layer ${table.position(layer.index)} ${shortDigest(layer.digest)}: ` : '';
    switch (event.type) {
      case 'resolve-start':
        return `resolving ${clean(event.reference)}`;
      case 'resolve-end':
        return `resolved ${clean(event.manifestDigest)} for ${formatPlatform(event.platform)}: ${plural(event.layers.length, 'layer')}, ${formatBytes(event.totalBytes)}`;
      case 'layer-download-start':
        return `${prefix}downloading ${formatBytes(event.total)}${event.resumedFrom > 0 ? ` (resuming at ${formatBytes(event.resumedFrom)})` : ''}`;
      case 'layer-download-end': {
        if (event.cached) return `${prefix}cached`;
        const started = layer?.downloadStartedAt;
        if (started === undefined) return `${prefix}downloaded ${formatBytes(event.total)}`;
        const elapsed = time - started;
        const rate = formatRate(event.total - event.resumedFrom, elapsed);
        return `${prefix}downloaded ${formatBytes(event.total)} in ${formatDuration(elapsed)}${rate ? ` (${rate})` : ''}`;
      }
      case 'layer-extract-start':
        return `${prefix}extracting`;
      case 'layer-extract-end':
        return event.cached
          ? `${prefix}already extracted`
          : `${prefix}extracted ${plural(event.entries, 'entry', 'entries')}`;
      case 'retry': {
        const where = event.index === undefined ? '' : `layer ${table.position(event.index)}: `;
        return `${where}retrying (attempt ${event.attempt}) in ${formatDuration(event.delayMs)}: ${clean(event.reason)}`;
      }
      case 'mirror-fallback':
        return `mirror ${clean(event.mirror)} failed (${clean(event.reason)}); using ${clean(event.registry)}`;
      case 'pull-end':
        return `done in ${formatDuration(event.durationMs)}`;
      default:
        return undefined;
    }
  };

  return {
    handle(event) {
      if (closed) return;
      const line = lineFor(event);
      if (line !== undefined) output.write(`${line}\n`);
    },
    close() {
      closed = true;
    },
  };
}
