/** The brand that marks every ocipull error, shared across duplicate installs of this package. */
const BRAND = Symbol.for('ocipull.error');

/**
 * The stable error codes of ocipull. Users match on these; they never change meaning once published.
 * Packages add codes here rather than inventing their own so that one table documents them all.
 */
export const ErrorCode = {
  /** A value is not a valid `algorithm:encoded` digest (OCI image spec, descriptor.md#digests). */
  InvalidDigest: 'ERR_INVALID_DIGEST',
  /** Bytes hashed to another digest than the one expected. */
  DigestMismatch: 'ERR_DIGEST_MISMATCH',
  /** A stream carried fewer or more bytes than its descriptor declared. */
  SizeMismatch: 'ERR_SIZE_MISMATCH',
  /** An extracted layer's uncompressed digest differs from the config's `rootfs.diff_ids`. */
  DiffIdMismatch: 'ERR_DIFF_ID_MISMATCH',
  /** A lock could not be taken before the timeout. */
  LockTimeout: 'ERR_LOCK_TIMEOUT',
  /** A held lock was lost (its lockfile removed or taken over) while the work under it ran. */
  LockCompromised: 'ERR_LOCK_COMPROMISED',
  /** The operation was cancelled through its AbortSignal. */
  Aborted: 'ERR_ABORTED',
  /** An option or argument is out of its allowed range or shape. */
  InvalidArgument: 'ERR_INVALID_ARGUMENT',
  /** An image reference cannot be parsed. */
  InvalidReference: 'ERR_INVALID_REFERENCE',
  /** The registry refused the credentials, or needs some. */
  Unauthorized: 'ERR_UNAUTHORIZED',
  /** The registry understood who we are and refused access. */
  Denied: 'ERR_DENIED',
  /** The repository does not exist (or is hidden from us). */
  NameUnknown: 'ERR_NAME_UNKNOWN',
  /** The manifest (tag or digest) does not exist. */
  ManifestUnknown: 'ERR_MANIFEST_UNKNOWN',
  /** The blob does not exist. */
  BlobUnknown: 'ERR_BLOB_UNKNOWN',
  /** The registry rate-limited us and retries ran out. */
  TooManyRequests: 'ERR_TOO_MANY_REQUESTS',
  /** Any other registry error response; `status` and `errors[]` say more. */
  Registry: 'ERR_REGISTRY',
  /** A connection failed, reset, or a body stopped mid-way. */
  Network: 'ERR_NETWORK',
  /** A connect, header or body-idle timeout fired. */
  Timeout: 'ERR_TIMEOUT',
  /** A blob stream ended early; `offset` says how far it got so the caller can resume. */
  BlobInterrupted: 'ERR_BLOB_INTERRUPTED',
  /** A manifest or index is malformed, too large, or of a kind we refuse (schema 1). */
  InvalidManifest: 'ERR_INVALID_MANIFEST',
  /** A media type is not one this operation supports. */
  UnsupportedMediaType: 'ERR_UNSUPPORTED_MEDIA_TYPE',
  /** No index entry matches the wanted platform; `available` lists what the index offers. */
  PlatformNotFound: 'ERR_PLATFORM_NOT_FOUND',
  /** The disk is full (ENOSPC); nothing was committed. */
  NoSpace: 'ERR_NO_SPACE',
  /** A local filesystem operation failed. */
  Io: 'ERR_IO',
  /** The image is not in the cache and the pull policy forbids the network. */
  NotCached: 'ERR_NOT_CACHED',
  /** A cached blob or record no longer matches its name. */
  CacheCorrupt: 'ERR_CACHE_CORRUPT',
  /** A tar entry would escape the extraction root or write through a link. */
  UnsafePath: 'ERR_UNSAFE_PATH',
  /** A layer exceeded a configured limit (entries, bytes, path length). */
  LimitExceeded: 'ERR_LIMIT_EXCEEDED',
  /** A layer is not a readable tar stream in a supported compression. */
  InvalidLayer: 'ERR_INVALID_LAYER',
} as const;

/** One of the stable ocipull error codes. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Options every ocipull error accepts. */
export interface OciErrorOptions {
  /** The underlying error, kept for `--debug` cause chains. */
  cause?: unknown;
  /** Whether trying the same operation again may succeed. Defaults to false. */
  retryable?: boolean;
}

/**
 * The root of every error ocipull throws. Match on `code`, never on the message; use
 * `OciError.isInstance(value)` (or `isOciError`) rather than `instanceof` when two copies of the
 * package may be installed.
 */
export class OciError extends Error {
  /** The stable machine-readable code. */
  readonly code: ErrorCode;
  /** Whether trying the same operation again may succeed. */
  readonly retryable: boolean;
  declare readonly [BRAND]: true;

  constructor(code: ErrorCode, message: string, options: OciErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OciError';
    this.code = code;
    this.retryable = options.retryable ?? false;
    Object.defineProperty(this, BRAND, { value: true, enumerable: false });
  }

  /** True for any ocipull error, including ones made by another copy of this package. */
  static isInstance(value: unknown): value is OciError {
    return typeof value === 'object' && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true;
  }
}

/** True when `value` is an ocipull error, optionally with the given code. */
export function isOciError(value: unknown, code?: ErrorCode): value is OciError {
  return OciError.isInstance(value) && (code === undefined || value.code === code);
}

/** The error thrown when an AbortSignal fires, carrying the signal's reason as its cause. */
export class AbortedError extends OciError {
  constructor(reason?: unknown) {
    super(ErrorCode.Aborted, 'the operation was aborted', { cause: reason });
    this.name = 'AbortedError';
  }
}

/** Throws an `AbortedError` when the signal has fired; a cheap check for loops. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError(signal.reason);
}
