export type { ImageSummary } from './image-summary.ts';
export { summarizeConfig } from './image-summary.ts';
export type { CacheReadOptions, ImageInspection } from './inspect.ts';
export { inspectImage, unpackImage } from './inspect.ts';
export type { ExtractAhead, PulledLayer, PullOptions, PullPolicy } from './options.ts';
export {
  DEFAULT_CONCURRENCY,
  DEFAULT_EXTRACT_AHEAD,
  DEFAULT_PULL_POLICY,
  EXTRACT_AHEAD_MODES,
  PULL_POLICIES,
  SMALL_LAYER_BYTES,
} from './options.ts';
export type { PullResult, ResolvedManifest } from './pull.ts';
export { pull, readConfig, resolveManifest } from './pull.ts';
