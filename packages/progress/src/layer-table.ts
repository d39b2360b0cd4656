import type { Digest } from '@ocipull/core';
import type { ProgressEvent } from './events.ts';

/** Where a layer stands, as the renderers show it. */
export type LayerPhase = 'waiting' | 'downloading' | 'downloaded' | 'cached' | 'extracting' | 'done';

/** The renderers' view of one layer. */
export interface LayerState {
  index: number;
  digest: Digest;
  total: number;
  phase: LayerPhase;
  /** Downloaded bytes, including `resumedFrom`. */
  bytes: number;
  resumedFrom: number;
  cached: boolean;
  downloadStartedAt: number | undefined;
  downloadEndedAt: number | undefined;
  extractBytes: number;
  extractTotal: number;
}

/** Folds events into per-layer state; shared by the TTY and plain renderers. */
export class LayerTable {
  readonly layers = new Map<number, LayerState>();
  /** Layer count from `resolve-end`, or undefined before it. */
  count: number | undefined;
  totalBytes = 0;
  firstDownloadAt: number | undefined;

  apply(event: ProgressEvent, now: number): LayerState | undefined {
    switch (event.type) {
      case 'resolve-end':
        this.count = event.layers.length;
        this.totalBytes = event.totalBytes;
        event.layers.forEach((layer, index) => {
          this.#layer(index, layer.digest, layer.size);
        });
        return undefined;
      case 'layer-download-start': {
        const layer = this.#layer(event.index, event.digest, event.total);
        layer.phase = 'downloading';
        layer.bytes = event.resumedFrom;
        layer.resumedFrom = event.resumedFrom;
        layer.downloadStartedAt = now;
        this.firstDownloadAt ??= now;
        return layer;
      }
      case 'layer-download-progress': {
        const layer = this.#layer(event.index, event.digest, event.total);
        if (layer.phase === 'waiting') layer.phase = 'downloading';
        layer.bytes = event.bytes;
        return layer;
      }
      case 'layer-download-end': {
        const layer = this.#layer(event.index, event.digest, event.total);
        layer.phase = event.cached ? 'cached' : 'downloaded';
        layer.cached = event.cached;
        layer.bytes = event.total;
        layer.resumedFrom = event.resumedFrom;
        layer.downloadEndedAt = now;
        return layer;
      }
      case 'layer-extract-start': {
        const layer = this.#layer(event.index, event.digest);
        layer.phase = 'extracting';
        layer.extractTotal = event.total;
        return layer;
      }
      case 'layer-extract-progress': {
        const layer = this.#layer(event.index, event.digest);
        layer.phase = 'extracting';
        layer.extractBytes = event.bytes;
        layer.extractTotal = event.total;
        return layer;
      }
      case 'layer-extract-end': {
        const layer = this.#layer(event.index, event.digest);
        layer.phase = 'done';
        layer.extractBytes = layer.extractTotal;
        return layer;
      }
      default:
        return undefined;
    }
  }

  /** Bytes that really crossed the network (not cached, not resumed), for the overall rate. */
  get transferred(): number {
    let sum = 0;
    for (const layer of this.layers.values())
      if (!layer.cached) sum += Math.max(0, layer.bytes - layer.resumedFrom);
    return sum;
  }

  /** Bytes present locally: downloaded, resumed or cached. */
  get present(): number {
    let sum = 0;
    for (const layer of this.layers.values()) sum += layer.cached ? layer.total : layer.bytes;
    return sum;
  }

  /** `1/3`, or `1` before the count is known. */
  position(index: number): string {
    return this.count === undefined ? String(index + 1) : `${index + 1}/${this.count}`;
  }

  #layer(index: number, digest: Digest, total?: number): LayerState {
    let layer = this.layers.get(index);
    if (!layer) {
      layer = {
        index,
        digest,
        total: total ?? 0,
        phase: 'waiting',
        bytes: 0,
        resumedFrom: 0,
        cached: false,
        downloadStartedAt: undefined,
        downloadEndedAt: undefined,
        extractBytes: 0,
        extractTotal: 0,
      };
      this.layers.set(index, layer);
    } else if (total !== undefined) layer.total = total;
    return layer;
  }
}
