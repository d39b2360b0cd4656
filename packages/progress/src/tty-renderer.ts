import type { Platform } from '@ocipull/core';
import { isProgressUpdate, type ProgressEvent } from './events.ts';
import { clean, formatBytes, formatDuration, formatPlatform, formatRate, shortDigest } from './format.ts';
import { type LayerState, LayerTable } from './layer-table.ts';
import type { ProgressOutput, ProgressRenderer, RendererOptions } from './renderer.ts';

/** Options for `createTtyRenderer`. */
export interface TtyRendererOptions extends RendererOptions {
  /** Width when the output has no `columns`. Default 80. */
  columns?: number;
  /** Height when the output has no `rows`. Default 24. */
  rows?: number;
  /** Byte counters redraw the block at most this often; state changes always redraw. Default 50. */
  redrawIntervalMs?: number;
}

/**
 * A redraw rewrites every line, so counters fed unthrottled (one per network chunk) must not each
 * cost one: 20 frames a second looks smooth, and the next state change or `close` draws the latest.
 */
export const DEFAULT_REDRAW_INTERVAL_MS = 50;

/** Below this many cells a bar says nothing; the line drops it and keeps the numbers. */
const MIN_BAR_WIDTH = 8;
const MAX_BAR_WIDTH = 40;
/** Room kept for the numbers right of a bar: ` 66% 512.0 MiB/1.2 GiB 10.5 MiB/s`. */
const RIGHT_RESERVE = 34;

/** ANSI: cursor up `n` lines (CSI n A), erase the whole line (CSI 2 K), erase to end of screen (CSI J). */
const cursorUp = (lines: number) => `\u001b[${lines}A`;
const ERASE_LINE = '\u001b[2K';
const ERASE_DOWN = '\u001b[J';

function bar(fraction: number, width: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

function percent(fraction: number): string {
  return `${Math.floor(Math.min(1, Math.max(0, fraction)) * 100)}%`.padStart(4);
}

/**
 * Renders a block that is redrawn in place: a header (reference, platform, manifest), one bar per
 * layer with bytes and rate, and a total line. Each redraw moves the cursor up over the previous block
 * and rewrites every line, truncated to the terminal width (`output.columns`) so nothing wraps and the
 * line count stays exact. Retries and mirror fallbacks are printed as lines above the block.
 */
export function createTtyRenderer(
  output: ProgressOutput,
  options: TtyRendererOptions = {},
): ProgressRenderer {
  const now = options.now ?? (() => performance.now());
  const table = new LayerTable();
  let reference = 'image';
  let resolved: { platform: Platform; manifestDigest: string } | undefined;
  let durationMs: number | undefined;
  let drawnLines = 0;
  let drawnAt = Number.NEGATIVE_INFINITY;
  let closed = false;
  const redrawIntervalMs = options.redrawIntervalMs ?? DEFAULT_REDRAW_INTERVAL_MS;

  // A pty of unknown size (script(1), some CI runners) reports 0 columns: treat that as unknown.
  const width = () => Math.max(20, output.columns || options.columns || 80) - 1;
  // Lines a block may take: the cursor cannot move up past the top of the screen, so a taller block
  // would be drawn again below itself at every redraw (one line is left for the cursor).
  const height = () => Math.max(4, output.rows || options.rows || 24) - 1;

  function header(): string {
    if (!resolved) return `resolving ${reference}`;
    const base = `${reference} ${formatPlatform(resolved.platform)} ${shortDigest(resolved.manifestDigest)}`;
    return durationMs === undefined ? base : `${base} done in ${formatDuration(durationMs)}`;
  }

  function layerParts(layer: LayerState, time: number): { fraction: number; right: string } {
    switch (layer.phase) {
      case 'waiting':
        return { fraction: 0, right: 'waiting' };
      case 'downloading': {
        const fraction = layer.total > 0 ? layer.bytes / layer.total : 0;
        const started = layer.downloadStartedAt;
        const rate =
          started === undefined ? undefined : formatRate(layer.bytes - layer.resumedFrom, time - started);
        return {
          fraction,
          right: `${percent(fraction)} ${formatBytes(layer.bytes)}/${formatBytes(layer.total)}${rate ? ` ${rate}` : ''}`,
        };
      }
      case 'downloaded':
        return { fraction: 1, right: `${percent(1)} ${formatBytes(layer.total)} downloaded` };
      case 'cached':
        return { fraction: 1, right: `${percent(1)} ${formatBytes(layer.total)} cached` };
      case 'extracting': {
        const fraction = layer.extractTotal > 0 ? layer.extractBytes / layer.extractTotal : 0;
        return { fraction, right: `${percent(fraction)} extracting` };
      }
      case 'done':
        return { fraction: 1, right: `${percent(1)} ${formatBytes(layer.total)} done` };
    }
  }

  function line(left: string, fraction: number, right: string, barWidth: number, columns: number): string {
    const text =
      barWidth >= MIN_BAR_WIDTH ? `${left} ${bar(fraction, barWidth)} ${right}` : `${left} ${right}`;
    return text.length > columns ? text.slice(0, columns) : text;
  }

  function block(): string[] {
    const columns = width();
    const time = now();
    const lines = [header().slice(0, columns)];
    const layers = [...table.layers.values()].sort((a, b) => a.index - b.index);
    if (layers.length === 0) return lines;
    // More layers than the screen holds: the ones at work first, then those waiting, then those done,
    // each in layer order; a line says how many are not shown.
    const room = height() - 2;
    let shown = layers;
    let hidden = 0;
    if (layers.length > room) {
      const rank = (layer: (typeof layers)[number]) =>
        layer.phase === 'downloading' || layer.phase === 'extracting'
          ? 0
          : layer.phase === 'waiting' || layer.phase === 'downloaded'
            ? 1
            : 2;
      const keep = new Set(
        [...layers].sort((a, b) => rank(a) - rank(b) || a.index - b.index).slice(0, room - 1),
      );
      shown = layers.filter((layer) => keep.has(layer));
      hidden = layers.length - shown.length;
    }
    const rows = shown.map((layer) => ({
      left: `${table.position(layer.index)} ${shortDigest(layer.digest)}`,
      ...layerParts(layer, time),
    }));
    const totalBytes = table.totalBytes || layers.reduce((sum, layer) => sum + layer.total, 0);
    const present = table.present;
    const fraction = totalBytes > 0 ? present / totalBytes : 1;
    const first = table.firstDownloadAt;
    // The overall rate covers the time downloads ran, so it does not decay while layers extract.
    const downloading = layers.some((layer) => layer.phase === 'downloading');
    const until = downloading
      ? time
      : Math.max(first ?? 0, ...layers.map((layer) => layer.downloadEndedAt ?? 0));
    const rate = first === undefined ? undefined : formatRate(table.transferred, until - first);
    rows.push({
      left: 'total',
      fraction,
      right: `${percent(fraction)} ${formatBytes(present)}/${formatBytes(totalBytes)}${rate ? ` ${rate}` : ''}`,
    });
    // One bar width for the whole block so the bars line up; the reserve keeps it steady as numbers grow.
    const leftWidth = Math.max(...rows.map((row) => row.left.length));
    const rightWidth = Math.max(RIGHT_RESERVE, ...rows.map((row) => row.right.length));
    const barWidth = Math.min(MAX_BAR_WIDTH, columns - leftWidth - rightWidth - 4);
    for (const row of rows)
      lines.push(line(row.left.padStart(leftWidth), row.fraction, row.right, barWidth, columns));
    if (hidden > 0) lines.splice(lines.length - 1, 0, `… ${hidden} more layers`.slice(0, columns));
    return lines;
  }

  function draw(note?: string): void {
    const lines = block();
    let text = drawnLines > 0 ? cursorUp(drawnLines) : '';
    if (note !== undefined) text += `${ERASE_DOWN}${note.slice(0, width())}\n`;
    for (const each of lines) text += `${ERASE_LINE}${each}\n`;
    if (note === undefined && lines.length < drawnLines) text += ERASE_DOWN;
    drawnLines = lines.length;
    drawnAt = now();
    output.write(text);
  }

  function handle(event: ProgressEvent): void {
    if (closed) return;
    const time = now();
    table.apply(event, time);
    if (isProgressUpdate(event) && time - drawnAt < redrawIntervalMs) return;
    switch (event.type) {
      case 'resolve-start':
        reference = clean(event.reference);
        break;
      case 'resolve-end':
        resolved = { platform: event.platform, manifestDigest: event.manifestDigest };
        break;
      case 'pull-end':
        durationMs = event.durationMs;
        break;
      case 'retry': {
        const where = event.index === undefined ? '' : `layer ${table.position(event.index)}: `;
        draw(
          `${where}retrying (attempt ${event.attempt}) in ${formatDuration(event.delayMs)}: ${clean(event.reason)}`,
        );
        return;
      }
      case 'mirror-fallback':
        draw(`mirror ${clean(event.mirror)} failed (${clean(event.reason)}); using ${clean(event.registry)}`);
        return;
    }
    draw();
  }

  return {
    handle,
    close() {
      if (closed) return;
      if (drawnLines > 0) draw();
      closed = true;
    },
  };
}
