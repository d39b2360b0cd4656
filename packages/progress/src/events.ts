import type { Digest, Platform } from '@ocipull/core';

/** The version of the event shapes; NDJSON lines carry it as `v`. Bumped on any incompatible change. */
export const PROGRESS_EVENT_VERSION = 1;

/**
 * What every layer event carries: the layer's position in the manifest (0-based, bottom to top) and
 * its (compressed) blob digest.
 */
export interface LayerEventBase {
  index: number;
  digest: Digest;
}

/** The reference is being resolved to a manifest (registry round trips, index → platform manifest). */
export interface ResolveStartEvent {
  type: 'resolve-start';
  /** The normalised reference, e.g. `docker.io/library/alpine:3.20`. Never holds credentials. */
  reference: string;
}

/** The manifest for the wanted platform is known. */
export interface ResolveEndEvent {
  type: 'resolve-end';
  manifestDigest: Digest;
  platform: Platform;
  /** The manifest's layers, bottom to top; `index` in layer events points into this list. */
  layers: ReadonlyArray<{ digest: Digest; size: number }>;
  /** Sum of the layer sizes (compressed bytes to download when nothing is cached). */
  totalBytes: number;
}

/** A layer blob starts downloading (not emitted when it was already cached). */
export interface LayerDownloadStartEvent extends LayerEventBase {
  type: 'layer-download-start';
  /** The blob size from the descriptor. */
  total: number;
  /** Bytes already on disk from an interrupted download; 0 for a fresh one. */
  resumedFrom: number;
}

/** Bytes of a layer blob have arrived (throttled; `bytes` includes `resumedFrom`). */
export interface LayerDownloadProgressEvent extends LayerEventBase {
  type: 'layer-download-progress';
  bytes: number;
  total: number;
}

/** A layer blob is verified and committed to the cache, or was there already (`cached`). */
export interface LayerDownloadEndEvent extends LayerEventBase {
  type: 'layer-download-end';
  /** True when no byte was downloaded because the blob was already in the cache. */
  cached: boolean;
  /** Bytes that came from an earlier interrupted download; 0 when none. */
  resumedFrom: number;
  /** The blob size. */
  total: number;
}

/** A layer starts being extracted (decompressed and unpacked). */
export interface LayerExtractStartEvent extends LayerEventBase {
  type: 'layer-extract-start';
  /** Compressed bytes to read: the blob size. */
  total: number;
}

/** Extraction advanced: `bytes` of the compressed blob consumed so far, `entries` written. */
export interface LayerExtractProgressEvent extends LayerEventBase {
  type: 'layer-extract-progress';
  bytes: number;
  total: number;
  entries: number;
}

/** A layer is extracted (or its extracted directory was already in the cache: `cached`). */
export interface LayerExtractEndEvent extends LayerEventBase {
  type: 'layer-extract-end';
  /** The uncompressed digest that names `layers/<diffid>`. */
  diffId: Digest;
  cached: boolean;
  entries: number;
}

/**
 * A request failed in a way that may pass on a second try and will be retried after `delayMs`.
 * Carries the layer when the request was for one of its bytes.
 */
export interface RetryEvent {
  type: 'retry';
  /** The attempt about to start (2 for the first retry). */
  attempt: number;
  delayMs: number;
  /** One short line: status or error code, never credentials or response bodies. */
  reason: string;
  index?: number;
  digest?: Digest;
}

/** A configured mirror failed and the pull continues against the upstream registry. */
export interface MirrorFallbackEvent {
  type: 'mirror-fallback';
  /** The mirror's host (no user info). */
  mirror: string;
  /** The upstream registry host that takes over. */
  registry: string;
  reason: string;
}

/** The pull finished; nothing follows. */
export interface PullEndEvent {
  type: 'pull-end';
  durationMs: number;
}

/** Every progress event a pull emits, discriminated by `type` (`<noun>-<action>`). */
export type ProgressEvent =
  | ResolveStartEvent
  | ResolveEndEvent
  | LayerDownloadStartEvent
  | LayerDownloadProgressEvent
  | LayerDownloadEndEvent
  | LayerExtractStartEvent
  | LayerExtractProgressEvent
  | LayerExtractEndEvent
  | RetryEvent
  | MirrorFallbackEvent
  | PullEndEvent;

/** The `type` of a progress event. */
export type ProgressEventType = ProgressEvent['type'];

/** The event with a given `type`. */
export type ProgressEventOf<T extends ProgressEventType> = Extract<ProgressEvent, { type: T }>;

/** A consumer of progress events: what libraries accept as `onProgress`. */
export type ProgressListener = (event: ProgressEvent) => void;

/** The high-frequency events: throttled, and the only ones a throttle may hold back. */
export type ProgressUpdateEvent = LayerDownloadProgressEvent | LayerExtractProgressEvent;

/** True for `*-progress` events (byte counters), false for state changes. */
export function isProgressUpdate(event: ProgressEvent): event is ProgressUpdateEvent {
  return event.type === 'layer-download-progress' || event.type === 'layer-extract-progress';
}
