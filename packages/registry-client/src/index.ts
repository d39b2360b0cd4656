/** Re-exported from `@ocipull/core`, where `BlobSource.fetchInto` uses it. */
export type { BlobSink } from '@ocipull/core';
export { BLOB_HIGH_WATER_MARK, type BlobBodyOptions, BlobBodyStream } from './blob-stream.ts';
export { type Challenge, formatChallenges, parseChallenges, pickChallenge } from './challenge.ts';
export type {
  CredentialCheck,
  FetchedManifest,
  FetchManifestOptions,
  ManifestHead,
  RegistryClient,
  RegistryClientOptions,
  RegistryEvent,
  ResolvedImage,
  ResolveOptions,
} from './client.ts';
export {
  createRegistryClient,
  DEFAULT_USER_AGENT,
  DIRECT_BLOB_MIN_BYTES,
  MAX_REDIRECTS,
  MIRROR_COOLDOWN_MS,
} from './client.ts';
export type { Credentials, CredentialsOption } from './credentials.ts';
export {
  authFilePaths,
  CREDENTIAL_HELPER_TIMEOUT_MS,
  DOCKER_HUB_CONFIG_KEY,
  lookupConfigCredentials,
  normalizeAuthKey,
  runCredentialHelper,
} from './credentials.ts';
export type { RegistryErrorDetail, RegistryErrorOptions, RequestKind } from './errors.ts';
export {
  BlobInterruptedError,
  errorFromResponse,
  errorFromTransport,
  InvalidManifestError,
  InvalidReferenceError,
  isRetryableStatus,
  PlatformNotFoundError,
  parseErrorBody,
  RegistryError,
} from './errors.ts';
export {
  baseMediaType,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_BYTES,
  type ParsedManifest,
  parseManifest,
} from './manifest.ts';
export {
  formatPlatform,
  hostPlatform,
  isAttestation,
  normalizePlatform,
  parsePlatform,
  type SelectManifestOptions,
  selectManifest,
} from './platform.ts';
export type { ParseReferenceOptions, Reference } from './reference.ts';
export {
  DEFAULT_REGISTRY,
  DEFAULT_TAG,
  DOCKER_HUB_API_HOST,
  isLoopbackRegistry,
  makeReference,
  parseReference,
  registryHostname,
  toReference,
} from './reference.ts';
export type { RetryPolicy } from './retry.ts';
export {
  backoffDelay,
  DEFAULT_MAX_RETRY_AFTER_MS,
  DEFAULT_RETRIES,
  DEFAULT_RETRY_BASE_MS,
  DEFAULT_RETRY_MAX_MS,
  DEFAULT_RETRY_POLICY,
  parseRetryAfter,
} from './retry.ts';
export type { RegistryTransportOptions, Timeouts } from './transport.ts';
export { DEFAULT_KEEP_ALIVE_MS, DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_TIMEOUTS } from './transport.ts';
