export { discard, drained } from './drained.ts';
export { homeDirectory } from './home.ts';
export { isIndexMediaType, isManifestMediaType, MediaType } from './media-types.ts';
export type { OciErrorOptions } from './oci-error.ts';
export { AbortedError, ErrorCode, isOciError, OciError, throwIfAborted } from './oci-error.ts';
export type {
  BlobSink,
  BlobSource,
  BlobStore,
  Descriptor,
  Digest,
  FetchOptions,
  ImageConfig,
  ImageIndex,
  ImageManifest,
  ImageRuntimeConfig,
  IngestOptions,
  IngestResult,
  Platform,
} from './types.ts';
export { untilAborted } from './until-aborted.ts';
