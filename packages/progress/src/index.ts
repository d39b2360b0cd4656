export type { CreateRendererOptions, ProgressFormat } from './create-renderer.ts';
export { createRenderer } from './create-renderer.ts';
export type { ProgressEmitterOptions } from './emitter.ts';
export { createProgressEmitter, ProgressEmitter } from './emitter.ts';
export type {
  LayerDownloadEndEvent,
  LayerDownloadProgressEvent,
  LayerDownloadStartEvent,
  LayerEventBase,
  LayerExtractEndEvent,
  LayerExtractProgressEvent,
  LayerExtractStartEvent,
  MirrorFallbackEvent,
  ProgressEvent,
  ProgressEventOf,
  ProgressEventType,
  ProgressListener,
  ProgressUpdateEvent,
  PullEndEvent,
  ResolveEndEvent,
  ResolveStartEvent,
  RetryEvent,
} from './events.ts';
export { isProgressUpdate, PROGRESS_EVENT_VERSION } from './events.ts';
export { formatBytes, formatDuration } from './format.ts';
export { createNdjsonRenderer } from './ndjson-renderer.ts';
export { createPlainRenderer } from './plain-renderer.ts';
export type { ProgressOutput, ProgressRenderer, RendererOptions } from './renderer.ts';
export type { ProgressThrottle, ProgressThrottleOptions } from './throttle.ts';
export { createProgressThrottle, DEFAULT_THROTTLE_MS } from './throttle.ts';
export type { TtyRendererOptions } from './tty-renderer.ts';
export { createTtyRenderer, DEFAULT_REDRAW_INTERVAL_MS } from './tty-renderer.ts';
