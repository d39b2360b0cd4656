import { setMaxListeners } from 'node:events';
import { lstatSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { type BlobCache, openCache } from '@ocipull/blob-cache';
import {
  type BlobSource,
  type Descriptor,
  type Digest,
  ErrorCode,
  type ImageConfig,
  type ImageManifest,
  isOciError,
  MediaType,
  OciError,
  type Platform,
  throwIfAborted,
  untilAborted,
} from '@ocipull/core';
import { parseDigest, verifyBytes } from '@ocipull/digest';
import { extractLayer, flattenLayers, isMissingLinkTarget } from '@ocipull/layer-extract';
import type { ProgressEvent } from '@ocipull/progress';
import {
  createRegistryClient,
  formatPlatform,
  hostPlatform,
  normalizeAuthKey,
  normalizePlatform,
  parseManifest,
  parsePlatform,
  parseReference,
  type Reference,
  type RegistryClient,
  type RegistryEvent,
  type ResolvedImage,
  selectManifest,
} from '@ocipull/registry-client';
import { corruptCacheOr } from './cache-verdict.ts';
import { type ImageSummary, summarizeConfig } from './image-summary.ts';
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_EXTRACT_AHEAD,
  DEFAULT_PULL_POLICY,
  EXTRACT_AHEAD_MODES,
  PULL_POLICIES,
  type PulledLayer,
  type PullOptions,
  SMALL_LAYER_BYTES,
} from './options.ts';
import { runBounded } from './run-bounded.ts';

/** What `pull` hands back. */
export interface PullResult {
  /** The normalised reference that was pulled (`docker.io/library/alpine:3.20`). */
  reference: string;
  /** The digest of the platform-specific image manifest. */
  manifestDigest: Digest;
  /** The digest of the index the manifest was picked from, when the reference named one. */
  indexDigest?: Digest;
  manifest: ImageManifest;
  config: ImageConfig;
  /** The config's runtime fields (Env, Cmd, Entrypoint, User, …), normalised. */
  summary: ImageSummary;
  platform: Platform;
  /** Bottom to top. */
  layers: PulledLayer[];
  /** The flattened root filesystem, when asked for. */
  rootfs?: string;
  /** True when no registry request was made. */
  offline: boolean;
  durationMs: number;
  /**
   * What the extraction could not write as the image describes it — device nodes recorded, not made
   * (rootless), xattrs refused, entries skipped — each as `layer N: <entry>: <why>`, bottom layer first;
   * before them, that a single-platform image is for another platform than `options.platform`.
   * Empty when nothing was left out (and for layer trees reused from the cache).
   */
  warnings: string[];
}

/** The manifest chosen for a reference (the registry client's answer), and whether the cache gave it. */
export type ResolvedManifest = ResolvedImage & { offline: boolean };

/**
 * Pulls an image: resolves the reference (through an index to the wanted platform), downloads every
 * blob once into the verified cache, extracts each layer (one streaming pass: the network bytes are
 * verified and written to the cache while the same bytes are decompressed, diff_id-checked and
 * extracted), optionally flattens a rootfs, and returns the parsed config. Progress goes to
 * `options.onProgress`; `options.signal` cancels and leaves the cache consistent.
 */
export async function pull(input: string, options: PullOptions = {}): Promise<PullResult> {
  try {
    return await pullOnce(input, options);
  } catch (error) {
    const upstreamOnly = withoutMirrors(input, options, error);
    if (upstreamOnly === undefined) throw error;
    // A mirror that served bad bytes: the digest check comes after the bytes were taken (into the
    // cache, into the rootfs), too late for the client's own fallback. The failed pull left the cache
    // consistent and nothing half-built, so the upstream is asked for the whole pull once more (what
    // is already verified in the cache is not fetched again).
    options.onProgress?.({
      type: 'mirror-fallback',
      mirror: upstreamOnly.mirrors.map((mirror) => mirrorHost(mirror)).join(', '),
      registry: upstreamOnly.registry,
      reason: (error as OciError).code,
    });
    return pullOnce(input, upstreamOnly.options);
  }
}

/**
 * The options of a pull from the upstream registry alone, when `error` is bad bytes (digest or size
 * mismatch) and the reference's registry has mirrors a pull of ours may have taken them from.
 */
function withoutMirrors(
  input: string,
  options: PullOptions,
  error: unknown,
): { options: PullOptions; registry: string; mirrors: string[] } | undefined {
  if (!isOciError(error, ErrorCode.DigestMismatch) && !isOciError(error, ErrorCode.SizeMismatch))
    return undefined;
  if (options.client !== undefined || options.signal?.aborted) return undefined;
  const registries = options.registry?.registries;
  if (registries === undefined) return undefined;
  const registry = parseReference(input).registry;
  const key = Object.keys(registries).find((name) => normalizeAuthKey(name) === normalizeAuthKey(registry));
  const mirrors = key === undefined ? [] : (registries[key]?.mirrors ?? []);
  if (key === undefined || mirrors.length === 0) return undefined;
  return {
    options: {
      ...options,
      registry: {
        ...options.registry,
        registries: { ...registries, [key]: { ...registries[key], mirrors: [] } },
      },
    },
    registry,
    mirrors,
  };
}

/** A mirror URL's host, without user info (progress never shows credentials). */
function mirrorHost(mirror: string): string {
  try {
    return new URL(mirror.includes('://') ? mirror : `https://${mirror}`).host;
  } catch {
    return 'mirror';
  }
}

async function pullOnce(input: string, options: PullOptions): Promise<PullResult> {
  const started = performance.now();
  const policy = options.policy ?? DEFAULT_PULL_POLICY;
  if (!PULL_POLICIES.includes(policy)) {
    throw new OciError(ErrorCode.InvalidArgument, `unknown pull policy ${JSON.stringify(policy)}`);
  }
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new OciError(
      ErrorCode.InvalidArgument,
      `concurrency must be a positive integer, got ${concurrency}`,
    );
  }
  const extractAhead = options.extractAhead ?? DEFAULT_EXTRACT_AHEAD;
  if (!EXTRACT_AHEAD_MODES.includes(extractAhead)) {
    throw new OciError(
      ErrorCode.InvalidArgument,
      `extractAhead must be auto, always or never, got ${JSON.stringify(extractAhead)}`,
    );
  }
  const reference = parseReference(input);
  // The flatten refuses an existing rootfs too, but only once the image is resolved: refused here, a
  // mistake costs no request and leaves nothing in the cache.
  if (options.rootfs === '') throw new OciError(ErrorCode.InvalidArgument, 'rootfs is an empty string');
  if (options.rootfs !== undefined && exists(options.rootfs)) {
    throw new OciError(
      ErrorCode.InvalidArgument,
      `destination ${resolvePath(options.rootfs)} already exists`,
    );
  }
  const emit = (event: ProgressEvent) => {
    try {
      options.onProgress?.(event);
    } catch {
      // A listener never fails the pull (nor, thrown inside a stream callback, the process).
    }
  };
  const controller = new AbortController();
  const forwardAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', forwardAbort, { once: true });
  if (options.signal?.aborted) forwardAbort();
  const signal = controller.signal;
  // Every running download, follower and request listens to it: more than 10 at once is normal for an
  // image of many small layers (4 per slot). Node 24 sets no limit on an AbortSignal; Node 20 warned
  // at 10 (seen on a 40-layer pull), and this keeps any Node that does quiet.
  setMaxListeners(0, signal);

  const ownsCache = typeof options.cache !== 'object';
  const cache =
    typeof options.cache === 'object'
      ? options.cache
      : await openCache(options.cache === undefined ? {} : { root: options.cache });
  const clients = new LazyClient(options, emit);
  // Blob commits that run in the background: awaited before the image is recorded, and settled
  // before the pull returns either way.
  const stored: Stored[] = [];
  let idle: SpareTime | undefined;
  try {
    emit({ type: 'resolve-start', reference: reference.toString() });
    const { resolved, stored: manifestStored } = await resolveManifestLater(reference, cache, clients, {
      ...options,
      policy,
      signal,
    });
    stored.push(manifestStored);
    manifestStored.catch(() => {});
    const source = policy === 'never' ? notCachedSource(reference) : clients.blobSource(reference);

    const layers = resolved.manifest.layers;
    // The config is fetched while the layer blobs start downloading (their bytes need no diff_id), as
    // containerd does: one request's latency less before the first layer byte. Layer events wait for
    // `resolve-end`, which carries the platform the config names.
    let resolveEnded = false;
    const held: ProgressEvent[] = [];
    const layerEmit: Emit = (event) => {
      if (resolveEnded) emit(event);
      else held.push(event);
    };
    const configReady = readConfigLater(resolved.manifest, cache, source, signal).then(
      ({ config, stored: configStored }) => {
        stored.push(configStored);
        configStored.catch(() => {});
        const diffIds = imageDiffIds(resolved.manifest, config);
        const platform: Platform = resolved.platform ?? {
          os: config.os,
          architecture: config.architecture,
          ...(config.variant ? { variant: config.variant } : {}),
        };
        emit({
          type: 'resolve-end',
          manifestDigest: resolved.manifestDigest,
          platform,
          layers: layers.map((layer) => ({ digest: layer.digest, size: layer.size })),
          totalBytes: layers.reduce((sum, layer) => sum + layer.size, 0),
        });
        resolveEnded = true;
        for (const event of held.splice(0)) emit(event);
        return { config, diffIds, platform };
      },
    );
    // Handled below (a failure fails the pull); until then it must not count as unhandled.
    configReady.catch(() => {});

    const wantTrees = options.layers ?? true;
    // Per layer, once each: a layer extracted as a tree and into the rootfs says the same things twice.
    const warnings = layers.map(() => new Set<string>());
    const warn = (index: number, said: string[]) => {
      for (const warning of said) warnings[index]?.add(warning);
    };
    // One progress tracker per layer, shared by whichever path downloads it (a layer task or the
    // rootfs flattener), so each layer reports one start and one end.
    const downloads = layers.map((layer, index) => downloadProgress(layer, index, layerEmit));
    // Resolved with each layer's committed tree: a layer with a hardlink into a lower layer waits for
    // the trees below it and copies the target up (see `extractLayer`'s `lowerLayers`).
    const treeReady = layers.map(() => deferred<string>());
    for (const ready of treeReady) ready.promise.catch(() => {});
    const lowerTrees = (index: number) => Promise.all(treeReady.slice(0, index).map((tree) => tree.promise));
    const flattenOnly = !wantTrees && options.rootfs !== undefined;
    // Flattening only: resolved once a layer task's download is under way (or over). The flattener
    // opens an upper layer only then, to follow that download: had it begun the download itself, it
    // would not read it before the layers below were applied, and the task would wait behind it.
    const begun = layers.map(() => deferred<void>());
    const tasks = layers.map((layer, index) => async (freeSlot: () => void) => {
      // Flattening only: the flattener needs the bottom layer first and streams it in one pass itself;
      // the other layers are downloaded into the cache meanwhile.
      if (flattenOnly && index === 0) return undefined;
      try {
        const path = wantTrees
          ? await pullLayerTree(
              cache,
              source,
              layer,
              parseDigest((await configReady).diffIds[index]),
              index,
              { ...options, signal },
              emit,
              downloads[index]!,
              () => lowerTrees(index),
              (said) => warn(index, said),
            )
          : await downloadLayer(
              cache,
              source,
              layer,
              index,
              announcing(downloads[index]!, () => begun[index]!.resolve()),
              signal,
              freeSlot,
            );
        if (path) treeReady[index]!.resolve(path);
        return path;
      } catch (error) {
        treeReady[index]!.reject(error);
        throw error;
      } finally {
        begun[index]!.resolve();
      }
    });

    // The first failure wins: it aborts the rest, whose own (abort) errors must not mask it.
    let failure: { error: unknown } | undefined;
    const fail = (error: unknown) => {
      failure ??= { error };
      controller.abort(error);
    };
    const weights = layers.map((layer) => (layer.size < SMALL_LAYER_BYTES ? 0.25 : 1));
    const layerWork = runBounded(tasks, weights, concurrency, signal, fail);
    /** The layer whose failure failed the flatten. */
    let failedLayer: Descriptor | undefined;
    /** Set once the flattened rootfs is in place (it is this pull's: an existing one was refused). */
    let rootfsMade = false;
    if (flattenOnly && extractAhead === 'auto') idle = spareTime();
    // The flattener takes each layer through the cache: a blob already committed is read from disk;
    // one a layer task is downloading is followed as it grows (flattening only, an upper layer is
    // opened only once its task has begun); one nobody downloads (the bottom layer when flattening
    // only) is downloaded right here, in a single pass into both cache and the rootfs.
    // It starts at once, without the config: each layer's diff_id is awaited only when the layer's
    // bytes are all applied, so the bottom layer downloads while the config does.
    const rootfsWork = options.rootfs
      ? flattenLayers(
          layers.map((layer, index) => ({
            open: async () => {
              if (flattenOnly && index > 0) await untilAborted(begun[index]!.promise, signal);
              const progress = downloads[index]!;
              // Ends once its bytes are verified, before the blob's fsync and rename (the next
              // layer need not wait for the disk); the commit joins the background ones.
              const stream = await cache.fetchThrough(layer, source, {
                signal,
                priority: index,
                onProgress: progress.onProgress,
                endWhenVerified: true,
              });
              stored.push(stream.committed);
              stream.committed.then(
                () => progress.end(stream.cached, stream.resumedFrom),
                () => {},
              );
              return stream;
            },
            mediaType: layer.mediaType,
            diffId: async () => (await configReady).diffIds[index]!,
            weight: weights[index]!,
          })),
          {
            ...options.extract,
            destination: options.rootfs,
            signal,
            // The next layer's cache lookup, open and first read overlap this layer's extraction.
            openAhead: true,
            // Flattening only (and by default only while this thread has time to spare: a network
            // slower than the extraction), the layers above extract into staging trees along their
            // downloads.
            ...(flattenOnly && extractAhead !== 'never' ? { stageAhead: concurrency } : {}),
            ...(idle ? { stageWhen: () => idle?.spare === true } : {}),
            onLayerError: (index) => {
              failedLayer = layers[index];
            },
          },
        ).then(
          (flattened) => {
            rootfsMade = true;
            for (const [index, layer] of flattened.layers.entries()) warn(index, layer.warnings);
          },
          async (error: unknown) => {
            fail(
              failedLayer ? await explainFlattenFailure(cache, source, failedLayer, error, signal) : error,
            );
          },
        )
      : undefined;
    const [paths] = await Promise.all([layerWork, rootfsWork, configReady.catch(fail)]);
    if (failure) {
      // The rootfs may be complete (a layer tree or the config failed after the flatten): a failed pull
      // leaves none.
      if (rootfsMade) await rm(options.rootfs!, { recursive: true, force: true });
      throw failure.error;
    }
    const { config, diffIds, platform } = await configReady;
    // The config told the platform (a single-platform image, or an index entry that names none).
    const asked = options.platform ?? (resolved.index ? hostPlatform() : undefined);
    const platformWarning = asked && !resolved.platform ? otherPlatform(platform, asked) : undefined;

    // Record the image only once every blob it needs is committed: index.json never names an
    // incomplete image, so the cache stays a valid OCI layout at every instant.
    try {
      await Promise.all(stored);
    } catch (error) {
      // A blob could not be committed: the pull fails, so no rootfs either (flattenLayers made it).
      if (options.rootfs) await rm(options.rootfs, { recursive: true, force: true });
      throw error;
    }
    const top = topDescriptor(resolved);
    try {
      // Every blob is leased (taken from the cache or written by this pull), so the record names a
      // whole image; putImage still refuses a top blob that is gone (ERR_BLOB_UNKNOWN).
      if (!resolved.offline || !(await cache.resolveImage(reference.toString()))) {
        await cache.putImage(reference.toString(), top);
      }
    } catch (error) {
      if (options.rootfs) await rm(options.rootfs, { recursive: true, force: true });
      throw error;
    }
    const durationMs = performance.now() - started;
    emit({ type: 'pull-end', durationMs });
    return {
      reference: reference.toString(),
      manifestDigest: resolved.manifestDigest,
      ...(resolved.index ? { indexDigest: resolved.index.digest } : {}),
      manifest: resolved.manifest,
      config,
      summary: summarizeConfig(config),
      platform,
      layers: layers.map((layer, index) => ({
        digest: layer.digest,
        diffId: diffIds[index]!,
        mediaType: layer.mediaType,
        size: layer.size,
        blobPath: cache.blobPath(layer.digest),
        ...(paths[index] ? { path: paths[index] } : {}),
      })),
      ...(options.rootfs ? { rootfs: options.rootfs } : {}),
      offline: !clients.used,
      warnings: [...(platformWarning ? [platformWarning] : []), ...layerWarnings(warnings)],
      durationMs,
    };
  } finally {
    idle?.stop();
    await Promise.allSettled(stored);
    options.signal?.removeEventListener('abort', forwardAbort);
    await clients.close();
    if (ownsCache) await cache.close();
  }
}

/** Warnings said per layer (bottom first), each as `layer N: <warning>`: `PullResult.warnings`. */
export function layerWarnings(perLayer: Iterable<string>[]): string[] {
  return perLayer.flatMap((said, index) => [...said].map((warning) => `layer ${index + 1}: ${warning}`));
}

/**
 * The config's `rootfs.diff_ids`: one digest per layer, or `ERR_INVALID_MANIFEST` (and, for an OCI
 * artifact — a config that is not an image config and names no layers' diff_ids — ERR_UNSUPPORTED_MEDIA_TYPE
 * saying so).
 */
export function imageDiffIds(manifest: ImageManifest, config: ImageConfig): string[] {
  const diffIds: unknown = config.rootfs?.diff_ids;
  const count = manifest.layers.length;
  const configType = manifest.config.mediaType;
  if (
    !Array.isArray(diffIds) &&
    configType !== MediaType.OciConfig &&
    configType !== MediaType.DockerConfig
  ) {
    throw new OciError(
      ErrorCode.UnsupportedMediaType,
      `not a container image: its config is ${configType} (an artifact, with no root filesystem)`,
    );
  }
  if (!Array.isArray(diffIds) || diffIds.length !== count) {
    throw new OciError(
      ErrorCode.InvalidManifest,
      `the config lists ${Array.isArray(diffIds) ? diffIds.length : 'no'} diff_ids for ${count} layers`,
    );
  }
  for (const [index, diffId] of diffIds.entries()) {
    try {
      if (typeof diffId !== 'string') throw new TypeError(`a ${typeof diffId}`);
      parseDigest(diffId);
    } catch (error) {
      throw new OciError(
        ErrorCode.InvalidManifest,
        `the config's diff_id for layer ${index + 1} is not a digest: ${JSON.stringify(diffId)}`,
        { cause: error },
      );
    }
  }
  return diffIds as string[];
}

/**
 * A single-platform image (or an index entry that names no platform) leaves nothing to choose from:
 * like skopeo, the pull takes it as it is, and says so when its config names another platform than the
 * one wanted. Undefined when they agree (or the config names none).
 */
function otherPlatform(image: Platform, wanted: Platform | string): string | undefined {
  if (!image.os || !image.architecture) return undefined;
  const have = normalizePlatform(image);
  const want = typeof wanted === 'string' ? parsePlatform(wanted) : normalizePlatform(wanted);
  if (have.os === want.os && have.architecture === want.architecture && have.variant === want.variant) {
    return undefined;
  }
  return `the image is for ${formatPlatform(have)}, not ${formatPlatform(want)}: no manifest names the platform to choose by, so it was pulled as it is`;
}

/** Whether anything (a symlink too) is at `path`; an unreadable path is left to whoever writes there. */
function exists(path: string): boolean {
  try {
    return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
  } catch {
    return false;
  }
}

/**
 * Finds the manifest for a reference: from the cache when the policy allows and everything needed is
 * there, else from the registry (and then stores the index and manifest bytes in the cache).
 */
export async function resolveManifest(
  reference: Reference,
  cache: BlobCache,
  clients: { client(): RegistryClient },
  options: Pick<PullOptions, 'platform' | 'variantFallback' | 'policy'> & { signal?: AbortSignal },
): Promise<ResolvedManifest> {
  const { resolved, stored } = await resolveManifestLater(reference, cache, clients, options);
  await stored;
  return resolved;
}

/** Work a pull waits for only before it records the image: blob commits that run in the background. */
type Stored = Promise<unknown>;

/**
 * `resolveManifest` without waiting for the index and manifest blobs to be committed (their fsyncs
 * need not hold up the config and the layers): `stored` settles once they are.
 */
async function resolveManifestLater(
  reference: Reference,
  cache: BlobCache,
  clients: { client(): RegistryClient },
  options: Pick<PullOptions, 'platform' | 'variantFallback' | 'policy'> & { signal?: AbortSignal },
): Promise<{ resolved: ResolvedManifest; stored: Stored }> {
  const policy = options.policy ?? DEFAULT_PULL_POLICY;
  if (policy !== 'always' || reference.digest) {
    const local = await resolveFromCache(reference, cache, options);
    if (local) return { resolved: local, stored: Promise.resolve() };
    if (policy === 'never') {
      throw new OciError(
        ErrorCode.NotCached,
        `${reference.toString()} is not in the cache (pull policy never)`,
      );
    }
  }
  throwIfAborted(options.signal);
  const remote = await clients.client().resolve(reference, {
    ...(options.platform ? { platform: options.platform } : {}),
    ...(options.variantFallback ? { variantFallback: true } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const stored = Promise.all([
    remote.index
      ? cache.writeBlob(remote.index.bytes, {
          digest: remote.index.digest,
          mediaType: remote.index.mediaType,
        })
      : undefined,
    cache.writeBlob(remote.manifestBytes, { digest: remote.manifestDigest, mediaType: remote.mediaType }),
  ]);
  const resolved: ResolvedManifest = {
    reference: remote.reference,
    manifestDigest: remote.manifestDigest,
    manifest: remote.manifest,
    manifestBytes: remote.manifestBytes,
    mediaType: remote.mediaType,
    ...(remote.index ? { index: remote.index } : {}),
    ...(remote.platform ? { platform: remote.platform } : {}),
    offline: false,
  };
  return { resolved, stored };
}

async function resolveFromCache(
  reference: Reference,
  cache: BlobCache,
  options: Pick<PullOptions, 'platform' | 'variantFallback'> & { signal?: AbortSignal },
): Promise<ResolvedManifest | undefined> {
  const digest = reference.digest ?? (await cache.resolveImage(reference.toString()))?.digest;
  // Leased before they are read, like every blob a pull takes from the cache: an `rm` and a `prune`
  // meanwhile keep them, so the image this pull records (again, if its record went) is whole.
  const use = { signal: options.signal };
  if (!digest || !(await cache.useBlob({ digest }, use))) return undefined;
  const bytes = await cache.readBlob(digest);
  const parsed = parseManifest(bytes);
  if (parsed.kind === 'manifest') {
    return {
      reference,
      manifestDigest: digest,
      manifest: parsed.manifest,
      manifestBytes: bytes,
      mediaType: parsed.mediaType,
      offline: true,
    };
  }
  const wanted = options.platform ?? hostPlatform();
  const entry = selectManifest(parsed.manifest, typeof wanted === 'string' ? parsePlatform(wanted) : wanted, {
    variantFallback: options.variantFallback ?? false,
  });
  if (!(await cache.useBlob(entry, use))) return undefined;
  const manifestBytes = await cache.readBlob(entry.digest);
  const manifest = parseManifest(manifestBytes, entry.mediaType);
  if (manifest.kind !== 'manifest') {
    throw new OciError(ErrorCode.InvalidManifest, `index entry ${entry.digest} is not an image manifest`);
  }
  return {
    reference,
    manifestDigest: entry.digest,
    manifest: manifest.manifest,
    manifestBytes,
    mediaType: manifest.mediaType,
    index: { digest, manifest: parsed.manifest, bytes, mediaType: parsed.mediaType },
    ...(entry.platform ? { platform: entry.platform } : {}),
    offline: true,
  };
}

function topDescriptor(resolved: ResolvedManifest): Descriptor {
  if (resolved.index) {
    return {
      mediaType: resolved.index.mediaType,
      digest: resolved.index.digest,
      size: resolved.index.bytes.byteLength,
    };
  }
  return {
    mediaType: resolved.mediaType,
    digest: resolved.manifestDigest,
    size: resolved.manifestBytes.byteLength,
  };
}

/** Reads (downloading if needed) and parses the image config. */
export async function readConfig(
  manifest: ImageManifest,
  cache: BlobCache,
  source: BlobSource,
  signal?: AbortSignal,
): Promise<ImageConfig> {
  const { config, stored } = await readConfigLater(manifest, cache, source, signal);
  await stored;
  return config;
}

/** `readConfig` without waiting for the config blob's commit: `stored` settles once it is committed. */
async function readConfigLater(
  manifest: ImageManifest,
  cache: BlobCache,
  source: BlobSource,
  signal?: AbortSignal,
): Promise<{ config: ImageConfig; stored: Stored }> {
  const stream = await cache.fetchThrough(manifest.config, source, {
    ...(signal ? { signal } : {}),
    // Ahead of every layer: each layer's diff_id is in it.
    priority: -1,
    endWhenVerified: true,
  });
  const bytes = await buffer(stream);
  // Read from the cache, the config was verified when it was committed, but it is small enough to
  // check again on every read: a config that rotted since must not decide the rootfs or the diff_ids.
  if (stream.cached) {
    try {
      verifyBytes(bytes, { digest: manifest.config.digest, size: manifest.config.size, label: 'config' });
    } catch (error) {
      throw new OciError(
        ErrorCode.CacheCorrupt,
        `cached config ${manifest.config.digest} no longer matches its digest`,
        { cause: error },
      );
    }
  }
  return { config: parseConfig(manifest, bytes), stored: stream.committed };
}

function parseConfig(manifest: ImageManifest, bytes: Buffer): ImageConfig {
  let config: unknown;
  try {
    config = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new OciError(
      ErrorCode.InvalidManifest,
      `image config ${manifest.config.digest} is not valid JSON`,
      {
        cause: error,
      },
    );
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new OciError(
      ErrorCode.InvalidManifest,
      `image config ${manifest.config.digest} is not a JSON object`,
    );
  }
  return config as ImageConfig;
}

type Emit = (event: ProgressEvent) => void;

/**
 * Downloads one layer blob into the cache (no extraction), with progress. `bytesIn` is called once
 * every byte is on disk: the fsync and rename that follow need no connection, so the next download
 * may start meanwhile.
 */
async function downloadLayer(
  cache: BlobCache,
  source: BlobSource,
  layer: Descriptor,
  index: number,
  progress: DownloadProgress,
  signal: AbortSignal,
  bytesIn?: () => void,
): Promise<undefined> {
  const result = await cache.ingest(layer, source, {
    signal,
    priority: index,
    onProgress: (event) => {
      progress.onProgress(event);
      if (event.bytes >= event.total) bytesIn?.();
    },
  });
  progress.end(result.cached, result.resumedFrom);
  return undefined;
}

/**
 * One layer's single pass: the blob streams through the cache (verified, written, committed) straight
 * into the extractor, which checks the diff_id and renames the tree into `layers/<diffid>`.
 */
async function pullLayerTree(
  cache: BlobCache,
  source: BlobSource,
  layer: Descriptor,
  diffId: Digest,
  index: number,
  options: PullOptions & { signal: AbortSignal },
  emit: Emit,
  progress: DownloadProgress,
  lowerTrees: () => Promise<string[]>,
  warn: (warnings: string[]) => void,
): Promise<string> {
  const { signal } = options;
  const reused = await cache.useLayer(diffId, { signal });
  if (reused !== undefined) {
    // The tree is there (perhaps from a zstd twin of this layer), leased so a concurrent gc keeps
    // it; the blob still belongs in the layout so the cache stays a complete OCI image.
    await downloadLayer(cache, source, layer, index, progress, signal);
    emit({ type: 'layer-extract-end', index, digest: layer.digest, diffId, cached: true, entries: 0 });
    return reused;
  }
  // The extractor wants a destination that does not exist yet (it renames its own temp into place);
  // a child of the cache's lease-protected temp directory is on the same filesystem as layers/.
  const temp = await cache.createLayerTemp(diffId);
  const tree = join(temp, 'tree');
  try {
    // The stream ends once its bytes are verified; the tree is committed only after the blob (below).
    const stream = await cache.fetchThrough(layer, source, {
      signal,
      priority: index,
      onProgress: progress.onProgress,
      endWhenVerified: true,
    });
    stream.committed.then(
      () => progress.end(stream.cached, stream.resumedFrom),
      () => {},
    );
    emit({ type: 'layer-extract-start', index, digest: layer.digest, total: layer.size });
    const counter = new ByteCounter();
    // pipe() does not forward errors: a verification failure in the cache stream must reach the
    // extractor. Attached before any await: an abort can destroy the stream with an error at once.
    stream.once('error', (error) => counter.destroy(error));
    let last = 0;
    const result = await extractLayer(stream.pipe(counter), {
      ...options.extract,
      destination: tree,
      mediaType: layer.mediaType,
      diffId,
      signal,
      onProgress: (extracted) => {
        const now = performance.now();
        if (now - last < 100) return;
        last = now;
        emit({
          type: 'layer-extract-progress',
          index,
          digest: layer.digest,
          bytes: counter.bytes,
          total: layer.size,
          entries: extracted.entries,
        });
      },
    })
      .catch(async (error: unknown) => {
        const explained = await explainExtractFailure(stream, counter, error);
        throw stream.cached ? await corruptCacheOr(cache, layer, explained) : explained;
      })
      .catch(async (error: unknown) => {
        if (!isMissingLinkTarget(error)) throw error;
        // A hardlink into a lower layer: once the blob is committed and the lower trees exist,
        // extract again from the cache with them, so the target can be copied up.
        await stream.committed;
        const lowers = (await lowerTrees()).reverse();
        await rm(tree, { recursive: true, force: true });
        return extractLayer(await cache.fetch(layer, { signal }), {
          ...options.extract,
          destination: tree,
          mediaType: layer.mediaType,
          diffId,
          signal,
          lowerLayers: lowers,
        });
      });
    await stream.committed;
    warn(result.warnings);
    const { path } = await cache.commitLayer(diffId, tree, { signal });
    emit({
      type: 'layer-extract-end',
      index,
      digest: layer.digest,
      diffId,
      cached: false,
      entries: result.entries,
    });
    return path;
  } finally {
    await rm(temp, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * A layer the extractor could not read may simply be corrupt in transit: drain the rest of the blob
 * through the cache's verifier so the user hears "digest mismatch" (the cause) rather than a
 * decompression error (the symptom), as containerd reports it. Aborts and other errors pass as they are.
 */
async function explainExtractFailure(
  stream: Readable & { committed: Promise<void> },
  counter: Transform,
  error: unknown,
): Promise<unknown> {
  if (isOciError(error, ErrorCode.Aborted) || stream.destroyed) {
    stream.destroy();
    return error;
  }
  stream.unpipe(counter);
  stream.resume();
  return badBytesOr(stream.committed, error);
}

/** The blob's verdict when it says the bytes were bad (digest or size mismatch), else `error`. */
async function badBytesOr(verdict: Promise<unknown>, error: unknown): Promise<unknown> {
  try {
    await verdict;
  } catch (failure) {
    if (isOciError(failure, ErrorCode.DigestMismatch) || isOciError(failure, ErrorCode.SizeMismatch))
      return failure;
  }
  return error;
}

/**
 * The flattener reads a layer as it arrives, often from the `.part` a layer task is still writing, so it
 * can trip over bytes corrupted in transit before any download can tell: a layer it could not read or
 * whose diff_id did not match gets the cache's verdict on its blob first (waiting for the running download
 * or finishing it), and a digest or size mismatch is reported as the cause. Other errors pass as they are.
 */
async function explainFlattenFailure(
  cache: BlobCache,
  source: BlobSource,
  layer: Descriptor,
  error: unknown,
  signal: AbortSignal,
): Promise<unknown> {
  if (!isOciError(error, ErrorCode.InvalidLayer) && !isOciError(error, ErrorCode.DiffIdMismatch))
    return error;
  const verdict = await badBytesOr(cache.ingest(layer, source, { signal }), error);
  // Bytes that came from the cache (committed before this pull) may have rotted there since.
  return verdict === error ? corruptCacheOr(cache, layer, error) : verdict;
}

/** Whether this thread had time to spare lately: its event loop was mostly idle. */
interface SpareTime {
  readonly spare: boolean;
  stop(): void;
}

/** The share of a window this thread may be busy and still count as having time to spare. */
const SPARE_UTILIZATION = 0.5;
const SPARE_WINDOW_MS = 50;

/**
 * Samples the event loop's utilization every 50 ms. A pull over a fast registry keeps this thread busy
 * (hashing, writing, extracting): extracting more layers at once would only make them queue for it and
 * leave the blobs' fsyncs for the end. Over a slow network the thread mostly waits for bytes.
 */
function spareTime(): SpareTime {
  let last = performance.eventLoopUtilization();
  const state = { spare: false, stop: () => clearInterval(timer) };
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    state.spare = performance.eventLoopUtilization(now, last).utilization < SPARE_UTILIZATION;
    last = now;
  }, SPARE_WINDOW_MS);
  timer.unref();
  return state;
}

/** `progress`, calling `begun` at its first event (the download is under way, or was not needed). */
function announcing(progress: DownloadProgress, begun: () => void): DownloadProgress {
  return {
    onProgress(event) {
      begun();
      progress.onProgress(event);
    },
    end(cached, resumedFrom) {
      begun();
      progress.end(cached, resumedFrom);
    },
  };
}

/** Download progress of one layer: one start, throttling left to the listener, one end. */
interface DownloadProgress {
  onProgress(event: { bytes: number; total: number; resumedFrom: number }): void;
  end(cached: boolean, resumedFrom: number): void;
}

function downloadProgress(layer: Descriptor, index: number, emit: Emit): DownloadProgress {
  let started = false;
  let ended = false;
  return {
    onProgress(event: { bytes: number; total: number; resumedFrom: number }) {
      if (!started) {
        started = true;
        emit({
          type: 'layer-download-start',
          index,
          digest: layer.digest,
          total: layer.size,
          resumedFrom: event.resumedFrom,
        });
      }
      emit({
        type: 'layer-download-progress',
        index,
        digest: layer.digest,
        bytes: event.bytes,
        total: layer.size,
      });
    },
    end(cached: boolean, resumedFrom: number) {
      if (ended) return;
      ended = true;
      emit({
        type: 'layer-download-end',
        index,
        digest: layer.digest,
        // The path that ends it may have found the blob committed by the other one (a layer task
        // and the rootfs flattener race): bytes this pull wrote mean it was not cached.
        cached: cached && !started,
        resumedFrom,
        total: layer.size,
      });
    },
  };
}

/** Counts the compressed bytes the extractor has consumed, for extract progress. */
class ByteCounter extends Transform {
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.byteLength;
    callback(null, chunk);
  }
}

/** Makes the registry client on first use, so a fully cached pull opens no connection at all. */
class LazyClient {
  #client: RegistryClient | undefined;
  readonly #options: PullOptions;
  readonly #emit: Emit;
  used = false;

  constructor(options: PullOptions, emit: Emit) {
    this.#options = options;
    this.#emit = emit;
  }

  client(): RegistryClient {
    this.used = true;
    if (this.#options.client) return this.#options.client;
    this.#client ??= createRegistryClient({
      ...this.#options.registry,
      onEvent: (event: RegistryEvent) => {
        this.#options.registry?.onEvent?.(event);
        if (event.type === 'request-retry') {
          this.#emit({
            type: 'retry',
            attempt: event.attempt + 1,
            delayMs: event.delayMs,
            reason: event.status ? `${event.code} (HTTP ${event.status})` : event.code,
          });
        } else if (event.type === 'mirror-fallback') {
          this.#emit({
            type: 'mirror-fallback',
            mirror: event.mirror,
            registry: event.registry,
            reason: event.status ? `${event.code ?? 'error'} (HTTP ${event.status})` : (event.code ?? 'miss'),
          });
        }
      },
    });
    return this.#client;
  }

  /** The repository's blobs, through the client made at the first fetch (what `client.blobSource` is). */
  blobSource(reference: Reference): BlobSource {
    return {
      fetch: (descriptor, options) => this.client().fetchBlob(reference, descriptor, options),
      fetchInto: (descriptor, sink, options) =>
        this.client().fetchBlobInto(reference, descriptor, sink, options),
    };
  }

  async close(): Promise<void> {
    await this.#client?.close();
  }
}

function notCachedSource(reference: Reference): BlobSource {
  return {
    fetch: async (descriptor) => {
      throw new OciError(
        ErrorCode.NotCached,
        `blob ${descriptor.digest} of ${reference.toString()} is not in the cache (pull policy never)`,
      );
    },
  };
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
