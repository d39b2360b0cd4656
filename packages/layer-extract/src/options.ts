import type { Digest } from '@ocipull/core';

/** Upper bounds that stop tar bombs before they fill the disk or the inode table. */
export interface ExtractLimits {
  /** Most tar entries one layer may hold. */
  maxEntries: number;
  /** Most uncompressed bytes one layer may hold (the whole tar stream, headers included). */
  maxBytes: number;
  /** Longest entry name or link target, in bytes. */
  maxPathLength: number;
}

/** Default entry cap: 1,000,000 is ~100× a full Debian rootfs (~6,600 entries) and well below any inode table. */
export const DEFAULT_MAX_ENTRIES = 1_000_000;
/** Default byte cap: 64 GiB uncompressed; the largest public images (CUDA, ML stacks) stay under ~20 GiB. */
export const DEFAULT_MAX_BYTES = 64 * 1024 ** 3;
/** Default name cap: Linux PATH_MAX (4096 bytes, limits.h); longer names cannot be opened anyway. */
export const DEFAULT_MAX_PATH_LENGTH = 4096;

/** The limits used when `options.limits` leaves a field out. */
export const DEFAULT_LIMITS: Readonly<ExtractLimits> = Object.freeze({
  maxEntries: DEFAULT_MAX_ENTRIES,
  maxBytes: DEFAULT_MAX_BYTES,
  maxPathLength: DEFAULT_MAX_PATH_LENGTH,
});

/** One user-namespace style id range: container ids `[containerId, containerId+size)` map to `[hostId, hostId+size)`. */
export interface IdMapping {
  containerId: number;
  hostId: number;
  size: number;
}

/** What `filter` sees of a tar entry before anything is written. */
export interface EntryInfo {
  /**
   * Normalised relative path (`usr/bin/env`). A name whose bytes are not UTF-8 carries each invalid
   * byte as the lone surrogate U+DC80–U+DCFF (Python's surrogateescape); `encodeRawName` gives the
   * bytes back, `displayName` a printable form. Also for `SkippedEntry` and `RecordedDevice` paths.
   */
  path: string;
  type:
    | 'file'
    | 'directory'
    | 'symlink'
    | 'hardlink'
    | 'fifo'
    | 'char-device'
    | 'block-device'
    | 'whiteout'
    | 'opaque';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Symlink target (verbatim) or hardlink target (normalised). */
  linkname?: string;
}

/** How whiteouts are kept in a per-layer tree (`extractLayer`). */
export type WhiteoutFormat = 'overlayfs' | 'aufs';

/** Progress of one extraction, as plain data. */
export interface ExtractProgress {
  /** Tar entries processed so far. */
  entries: number;
  /** Uncompressed bytes read so far. */
  bytes: number;
}

/** Options common to `extractLayer`, `applyLayer` and `flattenLayers`. */
export interface CommonExtractOptions {
  /** Cancels the extraction; partial output is discarded (`extractLayer`, `flattenLayers`). */
  signal?: AbortSignal;
  /** Called every few hundred entries and once at the end. */
  onProgress?: (progress: ExtractProgress) => void;
  /** Record ownership in `user.containers.override_stat` instead of chown. Default: the process is not uid 0. */
  rootless?: boolean;
  /** Container→host uid ranges; ids outside every range are refused. Default: identity. */
  uidMap?: IdMapping[];
  /** Container→host gid ranges. Default: identity. */
  gidMap?: IdMapping[];
  /** Return false to skip an entry (its bytes are still read and hashed). Default: keep all. */
  filter?: (entry: EntryInfo) => boolean;
  /** Keep the mtimes from the tar (true) or leave the time of extraction (false). Default true. */
  preserveMtimes?: boolean;
  /** Skip and report unsafe entries in `skipped` instead of failing. Default false. */
  lenient?: boolean;
  /** Bomb limits; missing fields come from `DEFAULT_LIMITS`. */
  limits?: Partial<ExtractLimits>;
  /** What a failed xattr write does: reported in `warnings` (default) or fatal (`ERR_IO`). */
  xattrErrors?: 'report' | 'fail';
}

/** Options of one layer stream. */
export interface LayerStreamOptions extends CommonExtractOptions {
  /** The descriptor's media type; compression is detected from magic bytes anyway. Default: detect. */
  mediaType?: string;
  /** The config's `rootfs.diff_ids` entry; a mismatch throws `ERR_DIFF_ID_MISMATCH`. Default: not checked. */
  diffId?: Digest | string;
}

/** An entry that was not written, and why. */
export interface SkippedEntry {
  path: string;
  reason: string;
  /** The error code it would have thrown without `lenient` (or none for filtered entries). */
  code?: string;
}

/** What one extraction did. */
export interface ExtractResult {
  /** Tar entries read. */
  entries: number;
  /** Uncompressed bytes read (the whole tar stream). */
  bytes: number;
  /** The digest of the uncompressed stream: the layer's diff_id. */
  diffId: Digest;
  /** Entries not written: filtered out, or unsafe under `lenient`. */
  skipped: SkippedEntry[];
  /** Non-fatal problems: xattrs the filesystem refused, device nodes recorded rather than created, media type lies. */
  warnings: string[];
}
