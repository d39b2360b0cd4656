export type {
  CommitLayerOptions,
  CommitLayerResult,
  FetchThroughOptions,
  OpenCacheOptions,
} from './blob-cache.ts';
export { BlobCache, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_MAX_READ_BYTES, openCache } from './blob-cache.ts';
export { defaultCacheRoot } from './cache-root.ts';
export type { BlobStream, FetchProgress, FetchThroughInfo } from './fetch-through.ts';
export { DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_DELAY_MS, isRetryable } from './fetch-through.ts';
export type { ImageRecord } from './image-records.ts';
export { LAST_USED_ANNOTATION, REF_NAME_ANNOTATION } from './image-records.ts';
export { CacheLayout, OCI_LAYOUT_CONTENT } from './layout.ts';
export type {
  GcOptions,
  GcResult,
  ImageUsage,
  IncompleteImage,
  UsageReport,
  VerifyOptions,
  VerifyReport,
} from './maintenance.ts';
export { TEMP_GRACE_MS } from './maintenance.ts';
export { MAX_UNWRITTEN_BYTES, WRITEBACK_INTERVAL_BYTES } from './part-writer.ts';
export { withCache } from './with-cache.ts';
