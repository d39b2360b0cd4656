import { type BlobCache, openCache } from '@ocipull/blob-cache';
import {
  type Descriptor,
  type Digest,
  ErrorCode,
  type ImageConfig,
  type ImageManifest,
  isOciError,
  OciError,
  type Platform,
} from '@ocipull/core';
import { flattenLayers } from '@ocipull/layer-extract';
import { formatPlatform, hostPlatform, parseReference, type Reference } from '@ocipull/registry-client';
import { corruptCacheOr } from './cache-verdict.ts';
import { type ImageSummary, summarizeConfig } from './image-summary.ts';
import type { PullOptions } from './options.ts';
import { imageDiffIds, layerWarnings, readConfig, resolveManifest } from './pull.ts';

/** A cached image as `inspect` shows it. */
export interface ImageInspection {
  reference: string;
  manifestDigest: Digest;
  indexDigest?: Digest;
  mediaType: string;
  manifest: ImageManifest;
  config: ImageConfig;
  summary: ImageSummary;
  platform: Platform;
  layers: Array<{
    digest: string;
    diffId: string;
    mediaType: string;
    size: number;
    /** True when the extracted tree of this layer is in the cache. */
    extracted: boolean;
  }>;
  /** Sum of the compressed layer sizes. */
  size: number;
}

/** Options of `inspectImage` and `unpackImage`: they read the cache only, never the network. */
export type CacheReadOptions = Pick<PullOptions, 'cache' | 'platform' | 'variantFallback' | 'signal'>;

async function withCache<T>(options: CacheReadOptions, work: (cache: BlobCache) => Promise<T>): Promise<T> {
  if (typeof options.cache === 'object') return work(options.cache);
  const cache = await openCache(options.cache === undefined ? {} : { root: options.cache });
  try {
    return await work(cache);
  } finally {
    await cache.close();
  }
}

const offline = {
  client(): never {
    throw new OciError(ErrorCode.NotCached, 'the image is not in the cache');
  },
};

const noSource = {
  fetch: async (): Promise<never> => {
    throw new OciError(ErrorCode.NotCached, 'a blob of the image is not in the cache');
  },
};

/**
 * Leases a blob of `reference` the way a pull does (`BlobCache.useBlob`: an `rm` and a `prune` while
 * it is read keep it), or fails with `ERR_NOT_CACHED` — before anything is written for it.
 */
async function useCached(
  cache: BlobCache,
  descriptor: Descriptor,
  what: string,
  reference: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (!(await cache.useBlob(descriptor, { signal }))) {
    // A committed blob of another size than its descriptor's was cut or grown since it was verified.
    const found = await cache.stat(descriptor.digest);
    if (found !== undefined) {
      throw new OciError(
        ErrorCode.CacheCorrupt,
        `cached ${what} ${descriptor.digest} of ${reference} is ${found.size} bytes, not ${descriptor.size}`,
      );
    }
    throw new OciError(
      ErrorCode.NotCached,
      `${what} ${descriptor.digest} of ${reference} is not in the cache`,
    );
  }
}

/**
 * The cached manifest for `reference`, offline; `ERR_NOT_CACHED` saying whether the reference is not
 * there at all or is an index cached for other platforms only.
 */
async function resolveCached(reference: Reference, cache: BlobCache, options: CacheReadOptions) {
  try {
    return await resolveManifest(reference, cache, offline, { ...options, policy: 'never' });
  } catch (error) {
    if (!isOciError(error, ErrorCode.NotCached)) throw error;
    const recorded = reference.digest === undefined && (await cache.resolveImage(reference.toString()));
    const platform = options.platform ?? hostPlatform();
    throw new OciError(
      ErrorCode.NotCached,
      recorded
        ? `${reference.toString()} is in the cache, but not for ${typeof platform === 'string' ? platform : formatPlatform(platform)}`
        : `${reference.toString()} is not in the cache`,
    );
  }
}

/** Describes a cached image (manifest, config, layers, sizes) without touching the network. */
export function inspectImage(input: string, options: CacheReadOptions = {}): Promise<ImageInspection> {
  const reference = parseReference(input);
  return withCache(options, async (cache) => {
    const resolved = await resolveCached(reference, cache, options);
    await useCached(cache, resolved.manifest.config, 'config', reference.toString(), options.signal);
    const config = await readConfig(resolved.manifest, cache, noSource, options.signal);
    const diffIds = config.rootfs?.diff_ids ?? [];
    const layers = await Promise.all(
      resolved.manifest.layers.map(async (layer, index) => {
        const diffId = diffIds[index] ?? '';
        return {
          digest: layer.digest,
          diffId,
          mediaType: layer.mediaType,
          size: layer.size,
          extracted: diffId !== '' && (await cache.hasLayer(diffId)),
        };
      }),
    );
    return {
      reference: reference.toString(),
      manifestDigest: resolved.manifestDigest,
      ...(resolved.index ? { indexDigest: resolved.index.digest } : {}),
      mediaType: resolved.mediaType,
      manifest: resolved.manifest,
      config,
      summary: summarizeConfig(config),
      platform: resolved.platform ?? {
        os: config.os,
        architecture: config.architecture,
        ...(config.variant ? { variant: config.variant } : {}),
      },
      layers,
      size: layers.reduce((sum, layer) => sum + layer.size, 0),
    };
  });
}

/**
 * Flattens an already-cached image into `destination` (which must not exist; it appears atomically
 * when complete). Never touches the network: `ERR_NOT_CACHED` when a blob is missing. `warnings` as
 * `PullResult.warnings` says.
 */
export function unpackImage(
  input: string,
  destination: string,
  options: CacheReadOptions & Pick<PullOptions, 'extract'> = {},
): Promise<{ destination: string; layers: number; warnings: string[] }> {
  const reference = parseReference(input);
  return withCache(options, async (cache) => {
    const resolved = await resolveCached(reference, cache, options);
    await useCached(cache, resolved.manifest.config, 'config', reference.toString(), options.signal);
    const config = await readConfig(resolved.manifest, cache, noSource, options.signal);
    const diffIds = imageDiffIds(resolved.manifest, config);
    const layers = resolved.manifest.layers;
    // Every layer is leased before the first is applied: the flatten opens each only when it gets
    // there, and an `rm` plus a `prune` meanwhile must not take the ones it has not opened yet.
    for (const layer of layers) await useCached(cache, layer, 'layer', reference.toString(), options.signal);
    let failed: Descriptor | undefined;
    const flattened = await flattenLayers(
      layers.map((layer, index) => ({
        open: () => cache.fetch(layer, options.signal ? { signal: options.signal } : {}),
        mediaType: layer.mediaType,
        diffId: diffIds[index]!,
      })),
      {
        ...options.extract,
        destination,
        ...(options.signal ? { signal: options.signal } : {}),
        // The next blob's open and first read overlap this layer's extraction.
        openAhead: true,
        onLayerError: (index) => {
          failed = layers[index];
        },
      },
    ).catch(async (error: unknown) => {
      throw failed ? await corruptCacheOr(cache, failed, error) : error;
    });
    const warnings = layerWarnings(flattened.layers.map((layer) => layer.warnings));
    return { destination, layers: layers.length, warnings };
  });
}
