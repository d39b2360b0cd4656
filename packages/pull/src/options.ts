import type { BlobCache } from '@ocipull/blob-cache';
import type { Platform } from '@ocipull/core';
import type { CommonExtractOptions } from '@ocipull/layer-extract';
import type { ProgressListener } from '@ocipull/progress';
import type { RegistryClient, RegistryClientOptions } from '@ocipull/registry-client';

/**
 * Layers downloaded and extracted at once. crane's default; registries start throttling clients
 * that open more than about six connections per host.
 */
export const DEFAULT_CONCURRENCY = 4;

/**
 * Layers smaller than this take a quarter of a `concurrency` slot: their time goes to per-blob
 * round trips (request, lock, commit), not bandwidth, so an image of many small layers pulls up to
 * four times as many at once (measured: 40 layers of ~270 KB through the CLI, 0.82–0.87 s → 0.74–0.80 s). The
 * registry client still opens at most `DEFAULT_MAX_CONNECTIONS_PER_HOST` connections per host.
 */
export const SMALL_LAYER_BYTES = 1024 * 1024;

/**
 * When the registry is asked:
 * - `always`: re-resolve the tag (one manifest request); blobs still come from the cache.
 * - `missing`: no network at all when the reference and its blobs are already cached.
 * - `never`: cache only; `ERR_NOT_CACHED` otherwise.
 * A reference by digest never needs the network once its blobs are cached, whatever the policy.
 */
export type PullPolicy = 'always' | 'missing' | 'never';

/** `docker pull` semantics: a pull asks the registry what the tag points at now. */
export const DEFAULT_PULL_POLICY: PullPolicy = 'always';

/** The pull policies, for argument validation. */
export const PULL_POLICIES: readonly PullPolicy[] = ['always', 'missing', 'never'];

/**
 * With `rootfs` and `layers: false`, whether the layers above the one being applied extract into
 * staging trees along their downloads (merged into the rootfs by renames when their turn comes):
 * - `auto`: while the pull's event loop has time to spare (less than half busy over the last 50 ms),
 *   i.e. the network is slower than the extraction; over a fast registry extracting ahead would only
 *   queue for the same thread.
 * - `always`: from the start, up to `concurrency` layers at once.
 * - `never`: each layer when its turn comes.
 */
export type ExtractAhead = 'auto' | 'always' | 'never';

/** The default `extractAhead`. */
export const DEFAULT_EXTRACT_AHEAD: ExtractAhead = 'auto';

/** The `extractAhead` values, for argument validation. */
export const EXTRACT_AHEAD_MODES: readonly ExtractAhead[] = ['auto', 'always', 'never'];

/** Options of `pull`. */
export interface PullOptions {
  /** An open cache, or its root directory. Default: `defaultCacheRoot()` of `@ocipull/blob-cache`. */
  cache?: BlobCache | string;
  /** Wanted platform (`linux/arm64/v8` or a `Platform`). Default: this host's. */
  platform?: Platform | string;
  /** Accept older arm variants (v7 → v6 → v5) when the wanted one is missing. Default false. */
  variantFallback?: boolean;
  /** When to ask the registry. Default `DEFAULT_PULL_POLICY` (`always`). */
  policy?: PullPolicy;
  /** Extract each layer into the cache's `layers/<diffid>` tree. Default true. */
  layers?: boolean;
  /** Also flatten the image into this directory (must not exist yet; created atomically). */
  rootfs?: string;
  /**
   * Layers downloaded and extracted at once; a layer under `SMALL_LAYER_BYTES` counts a quarter.
   * Default `DEFAULT_CONCURRENCY`.
   */
  concurrency?: number;
  /** See `ExtractAhead`. Default `DEFAULT_EXTRACT_AHEAD` (`auto`). */
  extractAhead?: ExtractAhead;
  /** A registry client to use (not closed by `pull`), or options to make one (closed at the end). */
  client?: RegistryClient;
  /** Options for the registry client `pull` makes: credentials, mirrors, TLS, retries. */
  registry?: RegistryClientOptions;
  /** Extraction options: rootless, id maps, limits, lenient, xattr errors. */
  extract?: Omit<CommonExtractOptions, 'signal' | 'onProgress'>;
  /** Receives progress events (plain data). */
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

/** One layer of a pulled image, bottom to top. */
export interface PulledLayer {
  /** The blob digest (compressed). */
  digest: string;
  /** The uncompressed digest from the config's `rootfs.diff_ids`. */
  diffId: string;
  mediaType: string;
  /** Compressed size in bytes. */
  size: number;
  /** The blob in the cache. */
  blobPath: string;
  /** The extracted tree in the cache, when layers were extracted. */
  path?: string;
}
