export type { LayerCompression } from './decompress.ts';
export { compressionOfMediaType, detectCompression } from './decompress.ts';
export { DiffIdMismatchError, isMissingLinkTarget, LimitExceededError, UnsafePathError } from './errors.ts';
export type {
  ApplyLayerOptions,
  ExtractLayerOptions,
  FlattenLayer,
  FlattenLayersOptions,
  FlattenResult,
  LayerExtractResult,
} from './extract-layer.ts';
export { applyLayer, extractLayer, flattenLayers } from './extract-layer.ts';
export type {
  CommonExtractOptions,
  EntryInfo,
  ExtractLimits,
  ExtractProgress,
  ExtractResult,
  IdMapping,
  LayerStreamOptions,
  SkippedEntry,
  WhiteoutFormat,
} from './options.ts';
export {
  DEFAULT_LIMITS,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_ENTRIES,
  DEFAULT_MAX_PATH_LENGTH,
} from './options.ts';
export { decodeRawName, displayName, encodeRawName } from './raw-name.ts';
export type { RecordedDevice } from './tree-writer.ts';
export { OVERLAY_OPAQUE_XATTR, OVERRIDE_STAT_XATTR } from './tree-writer.ts';
