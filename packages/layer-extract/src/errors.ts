import { ErrorCode, OciError } from '@ocipull/core';

/** Thrown when a tar entry would escape the root, write through a link, or is otherwise unsafe to write. */
export class UnsafePathError extends OciError {
  /** The entry name as written in the tar. */
  readonly path: string;
  /** Why it was refused. */
  readonly reason: string;

  /**
   * True when the entry is a hardlink to a target this layer does not have: legal in an image (the
   * target is in a lower layer), so a per-layer extraction may retry with `lowerLayers`.
   */
  readonly missingLinkTarget: boolean;

  constructor(path: string, reason: string, options: { missingLinkTarget?: boolean } = {}) {
    super(ErrorCode.UnsafePath, `unsafe tar entry ${JSON.stringify(path.slice(0, 300))}: ${reason}`);
    this.name = 'UnsafePathError';
    this.path = path;
    this.reason = reason;
    this.missingLinkTarget = options.missingLinkTarget ?? false;
  }
}

/** True for the error of a hardlink whose target is not in the layer (see `lowerLayers`). */
export function isMissingLinkTarget(error: unknown): boolean {
  return OciError.isInstance(error) && (error as Partial<UnsafePathError>).missingLinkTarget === true;
}

/** Thrown when a layer's uncompressed digest differs from the config's `rootfs.diff_ids` entry. */
export class DiffIdMismatchError extends OciError {
  readonly expected: string;
  readonly actual: string;

  constructor(expected: string, actual: string) {
    super(ErrorCode.DiffIdMismatch, `layer diff_id mismatch: expected ${expected}, got ${actual}`);
    this.name = 'DiffIdMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

/** Thrown when a layer exceeds a configured limit (entries, bytes, path length). */
export class LimitExceededError extends OciError {
  /** Which limit: `maxEntries`, `maxBytes` or `maxPathLength`. */
  readonly limit: string;
  readonly value: number;

  constructor(limit: string, value: number, detail: string) {
    super(ErrorCode.LimitExceeded, `layer exceeds ${limit} (${value}): ${detail}`);
    this.name = 'LimitExceededError';
    this.limit = limit;
    this.value = value;
  }
}

/** Wraps a filesystem error in an `OciError` (`ERR_NO_SPACE` for ENOSPC, else `ERR_IO`); OciErrors pass through. */
export function toOciError(error: unknown, what: string): OciError {
  if (OciError.isInstance(error)) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC')
    return new OciError(ErrorCode.NoSpace, `no space left while ${what}`, { cause: error });
  // zlib's gzip and zstd decoders fail with Z_* / ZSTD_* codes: the layer bytes are bad, not the disk.
  if (typeof code === 'string' && /^(Z|ZSTD)_/.test(code)) {
    const message = error instanceof Error ? error.message : String(error);
    return new OciError(ErrorCode.InvalidLayer, `${what}: cannot decompress the layer: ${message}`, {
      cause: error,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new OciError(ErrorCode.Io, `${what}: ${message}`, { cause: error });
}
