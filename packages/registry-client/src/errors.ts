import { AbortedError, ErrorCode, OciError } from '@ocipull/core';

/** One entry of a registry's error body (distribution spec, "Error Codes"). */
export interface RegistryErrorDetail {
  code: string;
  message?: string;
  detail?: unknown;
}

/** Structured fields of a `RegistryError`. */
export interface RegistryErrorOptions {
  status?: number;
  errors?: RegistryErrorDetail[];
  registry?: string;
  retryable?: boolean;
  /** How long the registry asked us to wait (`Retry-After`), in milliseconds. */
  retryAfterMs?: number;
  cause?: unknown;
}

/**
 * An error answer (or a failure to get one) from a registry. Keeps the HTTP status and the registry's
 * `errors[]` as sent, and says whether trying again may help. Never carries credentials or tokens.
 */
export class RegistryError extends OciError {
  /** The HTTP status, when a response arrived. */
  readonly status: number | undefined;
  /** The registry's `errors[]` diagnostics, as sent (possibly empty). */
  readonly errors: RegistryErrorDetail[];
  /** The registry host the request went to (a mirror's host for mirror failures). */
  readonly registry: string | undefined;
  /** The wait the registry asked for with `Retry-After`, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, options: RegistryErrorOptions = {}) {
    super(code, message, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      retryable: options.retryable ?? false,
    });
    this.name = 'RegistryError';
    this.status = options.status;
    this.errors = options.errors ?? [];
    this.registry = options.registry;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** Thrown by `parseReference` for input that is not an image reference; `reason` says why. */
export class InvalidReferenceError extends OciError {
  /** The rejected input (truncated to 300 characters). */
  readonly input: string;
  /** Why it was rejected. */
  readonly reason: string;

  constructor(input: unknown, reason: string) {
    const shown = (typeof input === 'string' ? input : `[${input === null ? 'null' : typeof input}]`).slice(
      0,
      300,
    );
    super(ErrorCode.InvalidReference, `invalid reference ${JSON.stringify(shown)}: ${reason}`);
    this.name = 'InvalidReferenceError';
    this.input = shown;
    this.reason = reason;
  }
}

/**
 * A blob body stopped before its end. `offset` is the absolute position in the blob that the caller
 * received up to (start offset + bytes delivered): fetch again from there to resume.
 */
export class BlobInterruptedError extends OciError {
  /** Absolute blob offset reached: the next fetch should start here. */
  readonly offset: number;
  /** The digest of the interrupted blob. */
  readonly digest: string;

  constructor(digest: string, offset: number, reason: string, cause?: unknown) {
    super(ErrorCode.BlobInterrupted, `blob ${digest} interrupted at byte ${offset}: ${reason}`, {
      cause,
      retryable: true,
    });
    this.name = 'BlobInterruptedError';
    this.offset = offset;
    this.digest = digest;
  }
}

/** Thrown when no entry of an index matches the wanted platform; `available` lists what it offers. */
export class PlatformNotFoundError extends OciError {
  /** The platform asked for, as `os/arch[/variant]`. */
  readonly wanted: string;
  /** The platforms the index offers, as `os/arch[/variant]`. */
  readonly available: string[];

  constructor(wanted: string, available: string[]) {
    super(
      ErrorCode.PlatformNotFound,
      `no manifest for platform ${wanted} in the index; it offers ${available.length === 0 ? 'none' : available.join(', ')}`,
    );
    this.name = 'PlatformNotFoundError';
    this.wanted = wanted;
    this.available = available;
  }
}

/** Thrown for malformed, oversized or refused (schema 1) manifests. */
export class InvalidManifestError extends OciError {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.InvalidManifest, message, cause === undefined ? {} : { cause });
    this.name = 'InvalidManifestError';
  }
}

/** What the failed request was after, to pick the code of a bare 404. */
export type RequestKind = 'manifest' | 'blob' | 'token' | 'ping';

const REGISTRY_CODES: Record<string, ErrorCode> = {
  MANIFEST_UNKNOWN: ErrorCode.ManifestUnknown,
  MANIFEST_BLOB_UNKNOWN: ErrorCode.ManifestUnknown,
  BLOB_UNKNOWN: ErrorCode.BlobUnknown,
  NAME_UNKNOWN: ErrorCode.NameUnknown,
  UNAUTHORIZED: ErrorCode.Unauthorized,
  DENIED: ErrorCode.Denied,
  TOOMANYREQUESTS: ErrorCode.TooManyRequests,
};

/** Statuses worth another try (RFC 9110: 408; 429; 5xx except 501 and 505, which will not change). */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

/** Parses a registry error body; tolerates anything (HTML error pages, empty bodies). */
export function parseErrorBody(text: string): RegistryErrorDetail[] {
  if (text.length === 0) return [];
  try {
    const parsed = JSON.parse(text) as { errors?: unknown };
    if (!Array.isArray(parsed?.errors)) return [];
    return parsed.errors
      .filter((entry): entry is Record<string, unknown> => typeof entry === 'object' && entry !== null)
      .map((entry) => ({
        code: typeof entry.code === 'string' ? entry.code : 'UNKNOWN',
        ...(typeof entry.message === 'string' ? { message: entry.message } : {}),
        ...(entry.detail === undefined ? {} : { detail: entry.detail }),
      }));
  } catch {
    return [];
  }
}

/**
 * Maps an HTTP error response to a `RegistryError` with a stable code and a retry verdict.
 * `context.registry` is the host that answered; `redirectedFrom`, when set, is the registry whose
 * redirect led there (object storage, a CDN): no credentials went to that host, so its 401 or 403 is
 * no verdict on them and maps to `ERR_REGISTRY`.
 */
export function errorFromResponse(
  status: number,
  errors: RegistryErrorDetail[],
  context: {
    registry: string;
    what: string;
    kind: RequestKind;
    retryAfterMs?: number;
    redirectedFrom?: string;
  },
): RegistryError {
  let code: ErrorCode | undefined;
  for (const entry of errors) {
    code = REGISTRY_CODES[entry.code];
    if (code) break;
  }
  if (!code) {
    if (status === 401) code = ErrorCode.Unauthorized;
    else if (status === 403) code = ErrorCode.Denied;
    else if (status === 429) code = ErrorCode.TooManyRequests;
    else if (status === 404 && context.kind === 'manifest') code = ErrorCode.ManifestUnknown;
    else if (status === 404 && context.kind === 'blob') code = ErrorCode.BlobUnknown;
    else code = ErrorCode.Registry;
  }
  const { redirectedFrom } = context;
  if (redirectedFrom !== undefined && (code === ErrorCode.Unauthorized || code === ErrorCode.Denied)) {
    code = ErrorCode.Registry;
  }
  const said = errors
    .map((entry) => (entry.message ? `${entry.code}: ${entry.message}` : entry.code))
    .join('; ')
    .slice(0, 500);
  const via = redirectedFrom === undefined ? '' : `, where ${redirectedFrom} redirected it`;
  return new RegistryError(
    code,
    `${context.registry} answered ${status} for ${context.what}${via}${said ? ` (${said})` : ''}`,
    {
      status,
      errors,
      registry: context.registry,
      retryable: isRetryableStatus(status),
      ...(context.retryAfterMs === undefined ? {} : { retryAfterMs: context.retryAfterMs }),
    },
  );
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
const PERMANENT_NETWORK_CODES = new Set(['ENOTFOUND', 'UND_ERR_INVALID_ARG', 'ERR_INVALID_URL']);

/** Finds a TLS verification failure in an error chain (Node reports them by `code`). */
function tlsFailure(error: { code?: unknown; message?: unknown }): boolean {
  const code = typeof error.code === 'string' ? error.code : '';
  return (
    /^(CERT_|ERR_TLS_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_)/.test(code) ||
    code === 'ERR_SSL_WRONG_VERSION_NUMBER' ||
    code === 'EPROTO'
  );
}

/**
 * Maps a thrown transport error (undici, socket, TLS) to an `OciError`: `ERR_ABORTED` when the signal
 * fired, `ERR_TIMEOUT` for connect/header/body-idle timeouts, `ERR_NETWORK` otherwise. TLS
 * verification failures are not retryable and say which option changes the verdict.
 */
export function errorFromTransport(error: unknown, registry: string, signal?: AbortSignal): OciError {
  if (signal?.aborted) return new AbortedError(signal.reason);
  if (OciError.isInstance(error)) return error;
  const record = (typeof error === 'object' && error !== null ? error : {}) as {
    code?: unknown;
    message?: unknown;
    cause?: { code?: unknown; message?: unknown };
  };
  const code = typeof record.code === 'string' ? record.code : '';
  // OpenSSL messages carry a trailing newline and source paths after the first line.
  const message = (typeof record.message === 'string' ? record.message : String(error))
    .split('\n')[0]!
    .trim();
  if (TIMEOUT_CODES.has(code)) {
    const which =
      code === 'UND_ERR_CONNECT_TIMEOUT'
        ? 'connect'
        : code === 'UND_ERR_HEADERS_TIMEOUT'
          ? 'headers'
          : 'body';
    return new RegistryError(ErrorCode.Timeout, `${registry}: ${which} timeout`, {
      cause: error,
      registry,
      retryable: true,
    });
  }
  const inner = record.cause && typeof record.cause === 'object' ? record.cause : undefined;
  if (tlsFailure(record) || (inner && tlsFailure(inner))) {
    return new RegistryError(
      ErrorCode.Network,
      `${registry}: TLS failed (${message}); trust its CA (registry option ca) or, for a test registry, skip verification (skipVerify)`,
      { cause: error, registry, retryable: false },
    );
  }
  return new RegistryError(ErrorCode.Network, `${registry}: ${code ? `${code} ` : ''}${message}`, {
    cause: error,
    registry,
    retryable: !PERMANENT_NETWORK_CODES.has(code),
  });
}
