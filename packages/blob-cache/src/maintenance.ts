import { lstat, mkdir, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Descriptor,
  type Digest,
  ErrorCode,
  isIndexMediaType,
  isManifestMediaType,
  isOciError,
  MediaType,
  throwIfAborted,
} from '@ocipull/core';
import { digestOfFile, isDigest, parseDigest } from '@ocipull/digest';
import { childPath, uniqueSuffix } from './atomic-file.ts';
import type { BlobCache } from './blob-cache.ts';
import { fsError, isErrno } from './fs-errors.ts';
import { LAST_USED_ANNOTATION, REF_NAME_ANNOTATION, readIndex, recordsOf } from './image-records.ts';
import { leaseIsLive, readLeases } from './leases.ts';
import { removeTree } from './remove-tree.ts';

/**
 * Temp files (`.*.tmp` from atomic writes) younger than this may belong to a write in progress; gc
 * leaves them alone. Ten minutes is far above the seconds an atomic write of a small file takes.
 */
export const TEMP_GRACE_MS = 10 * 60_000;

/** Media types whose blob is a config with `rootfs.diff_ids`. */
const CONFIG_MEDIA_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);

/** Manifests, indexes and configs above this are not parsed while marking (the spec caps manifests at 4 MiB). */
const MAX_JSON_BYTES = 16 * 1024 * 1024;

/** What a walk from some roots reaches. */
export interface Reachable {
  blobs: Set<Digest>;
  layers: Set<Digest>;
}

/**
 * A small blob parsed as a JSON object; undefined when it is too large, not JSON or not an object.
 * Blobs that cannot be read (gone, rotted) are undefined too, or with `strict` the `readBlob` error.
 */
async function readJson(
  cache: BlobCache,
  descriptor: Descriptor,
  options: { strict?: boolean } = {},
): Promise<Record<string, unknown> | undefined> {
  if (descriptor.size > MAX_JSON_BYTES) return undefined;
  let bytes: Buffer;
  try {
    bytes = await cache.readBlob(descriptor.digest, { maxBytes: MAX_JSON_BYTES });
  } catch (error) {
    if (options.strict && !isOciError(error, ErrorCode.LimitExceeded)) throw error;
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(bytes.toString('utf8'));
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function descriptorsIn(value: unknown): Descriptor[] {
  if (!Array.isArray(value)) return [];
  return value.filter(
    (item): item is Descriptor =>
      typeof item === 'object' && item !== null && isDigest((item as Descriptor).digest),
  );
}

/**
 * Marks what `roots` reach: an index's manifests, a manifest's config, layers and subject, a config's
 * `rootfs.diff_ids` (extracted trees). Blobs that are missing are skipped (a partly cached image);
 * unknown media types are sniffed as JSON when small.
 */
export async function markReachable(
  cache: BlobCache,
  roots: Descriptor[],
  into: Reachable = { blobs: new Set(), layers: new Set() },
  signal?: AbortSignal,
): Promise<Reachable> {
  const visit = async (descriptor: Descriptor, role: 'node' | 'config' | 'layer'): Promise<void> => {
    throwIfAborted(signal);
    if (!isDigest(descriptor.digest) || into.blobs.has(descriptor.digest)) return;
    into.blobs.add(descriptor.digest);
    if (role === 'layer' || !(await cache.has({ digest: descriptor.digest }))) return;
    const json = await readJson(cache, descriptor);
    if (json === undefined) return;
    if (role === 'config' || CONFIG_MEDIA_TYPES.has(descriptor.mediaType)) {
      const rootfs = json.rootfs as { diff_ids?: unknown } | undefined;
      if (Array.isArray(rootfs?.diff_ids)) {
        for (const diffId of rootfs.diff_ids) if (isDigest(diffId)) into.layers.add(diffId);
      }
      return;
    }
    if (isIndexMediaType(descriptor.mediaType) || Array.isArray(json.manifests)) {
      for (const child of descriptorsIn(json.manifests)) await visit(child, 'node');
    }
    if (isManifestMediaType(descriptor.mediaType) || json.config !== undefined) {
      const [config] = descriptorsIn([json.config]);
      if (config) await visit(config, 'config');
      for (const layer of descriptorsIn(json.layers)) await visit(layer, 'layer');
    }
    const [subject] = descriptorsIn([json.subject]);
    if (subject) await visit(subject, 'node');
  };
  for (const root of roots) await visit(root, 'node');
  return into;
}

/** A committed blob found on disk. */
interface BlobEntry {
  digest: Digest;
  path: string;
  size: number;
}

async function listDirectory(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return [];
    throw fsError(error, `listing ${path}`);
  }
}

/** Every committed blob (names that are not valid digests are ignored, never deleted). */
export async function listBlobs(cache: BlobCache): Promise<BlobEntry[]> {
  const entries: BlobEntry[] = [];
  for (const algorithm of await listDirectory(cache.layout.blobs)) {
    for (const encoded of await listDirectory(join(cache.layout.blobs, algorithm))) {
      const digest = `${algorithm}:${encoded}`;
      if (!isDigest(digest)) continue;
      const path = join(cache.layout.blobs, algorithm, encoded);
      try {
        const stats = await lstat(path);
        if (stats.isFile()) entries.push({ digest, path, size: stats.size });
      } catch (error) {
        if (!isErrno(error, 'ENOENT')) throw fsError(error, `checking ${path}`);
      }
    }
  }
  return entries;
}

async function listLayers(cache: BlobCache): Promise<Array<{ diffId: Digest; path: string }>> {
  const layers: Array<{ diffId: Digest; path: string }> = [];
  for (const algorithm of await listDirectory(cache.layout.layers)) {
    if (algorithm.startsWith('.')) continue;
    for (const encoded of await listDirectory(join(cache.layout.layers, algorithm))) {
      const diffId = `${algorithm}:${encoded}`;
      if (isDigest(diffId)) layers.push({ diffId, path: join(cache.layout.layers, algorithm, encoded) });
    }
  }
  return layers;
}

/** Bytes a tree occupies (apparent sizes of its files), without following symlinks; names read as bytes. */
async function treeBytes(path: string | Buffer): Promise<number> {
  let total = 0;
  const stats = await lstat(path).catch(() => undefined);
  if (stats === undefined) return 0;
  if (!stats.isDirectory()) return stats.size;
  const directory = typeof path === 'string' ? Buffer.from(path) : path;
  for (const name of await readdir(directory, { encoding: 'buffer' }).catch(() => [] as Buffer[]))
    total += await treeBytes(childPath(directory, name));
  return total;
}

/** The lock `gc` holds while it runs; readers that reuse cached items look for it (`BlobCache.#passGc`). */
export const GC_LOCK = 'gc';

/**
 * Runs `action` under `name`'s lock if nobody holds it; returns false (doing nothing) if someone does,
 * or if `action` returned false (it decided to keep the item).
 */
async function ifUnlocked(cache: BlobCache, name: string, action: () => Promise<unknown>): Promise<boolean> {
  let release: (() => Promise<void>) | undefined;
  try {
    release = await cache.lock(name, { timeoutMs: 0 });
  } catch (error) {
    if (isOciError(error, ErrorCode.LockTimeout) || isOciError(error, ErrorCode.Aborted)) return false;
    throw error;
  }
  try {
    return (await action()) !== false;
  } finally {
    await release();
  }
}

/**
 * Whether `key` is leased now, read under the item's lock just before removing it: a reader that
 * leased the item after the sweep's lease reads, and passed its lock (see `BlobCache.#passGc`), is seen.
 */
async function leasedNow(cache: BlobCache, key: string): Promise<boolean> {
  return (await readLeases(cache.layout.leases, cache.leaseOptions)).keys.has(key);
}

/** Options for `gc`. */
export interface GcOptions {
  signal?: AbortSignal;
  /** Report what would go without removing anything. Default false. */
  dryRun?: boolean;
  /**
   * After the sweep, evict least recently used images until committed blobs take at most this many
   * bytes (extracted layer trees follow their images). Default: no bound.
   */
  maxBlobBytes?: number;
}

/** What `gc` removed. */
export interface GcResult {
  removedBlobs: Digest[];
  removedLayers: Digest[];
  /** Abandoned `.part` downloads and temp files or trees removed. */
  removedPartials: number;
  freedBytes: number;
  /** Blobs and layers kept: reachable from `index.json` or protected by a live lease. */
  keptBlobs: number;
  keptLayers: number;
  /** References untagged by `maxBlobBytes` eviction, oldest first. */
  evictedImages: string[];
}

/**
 * Mark and sweep under the gc lock. Order matters for concurrent pulls: blobs are listed first, then
 * live leases are read, then `index.json`. A pull leases a digest before writing it and records its
 * image before ending its lease, so any blob the listing saw is either leased when the leases are read
 * or already reachable from the `index.json` read after them. Leases are read again just before the
 * sweep (for downloads and layer temps started since); what either read leases is kept, and each
 * removal takes the item's lock without waiting (a held lock means in use: skipped).
 */
export async function collectGarbage(cache: BlobCache, options: GcOptions = {}): Promise<GcResult> {
  const result: GcResult = {
    removedBlobs: [],
    removedLayers: [],
    removedPartials: 0,
    freedBytes: 0,
    keptBlobs: 0,
    keptLayers: 0,
    evictedImages: [],
  };
  const release = await cache.lock(GC_LOCK, { signal: options.signal });
  try {
    await sweep(cache, options, result);
    if (options.maxBlobBytes !== undefined && !options.dryRun) await evict(cache, options, result);
  } finally {
    await release();
  }
  return result;
}

/**
 * Size-bounded LRU: while committed blobs exceed `maxBlobBytes`, untag the least recently used image
 * (`io.ocipull.last-used`, set by `putImage`/`touchImage`; images without it go first) and sweep again.
 */
async function evict(cache: BlobCache, options: GcOptions, result: GcResult): Promise<void> {
  const limit = options.maxBlobBytes ?? Number.POSITIVE_INFINITY;
  for (;;) {
    throwIfAborted(options.signal);
    const total = (await listBlobs(cache)).reduce((sum, blob) => sum + blob.size, 0);
    if (total <= limit) return;
    const records = recordsOf(await readIndex(cache.layout.indexJson));
    if (records.length === 0) return;
    const lastUsed = (record: (typeof records)[number]) =>
      Date.parse(record.descriptor.annotations?.[LAST_USED_ANNOTATION] ?? '') || 0;
    const oldest = records.reduce((best, record) => (lastUsed(record) < lastUsed(best) ? record : best));
    await cache.untag(oldest.ref);
    result.evictedImages.push(oldest.ref);
    // Kept counts describe the last pass only.
    result.keptBlobs = 0;
    result.keptLayers = 0;
    await sweep(cache, options, result);
  }
}

/** One mark-and-sweep pass (the caller holds the gc lock); adds to `result`. */
async function sweep(cache: BlobCache, options: GcOptions, result: GcResult): Promise<void> {
  const { signal } = options;
  const blobs = await listBlobs(cache);
  const layers = await listLayers(cache);
  // Both lease reads count: a pull that recorded its image and ended its lease between the index
  // read and the second lease read is protected by the first one (using only the second lost its
  // blobs: the multi-process gc test caught it, gc-race.test.ts pins the window).
  const before = await readLeases(cache.layout.leases, cache.leaseOptions);
  const index = await readIndex(cache.layout.indexJson);
  const reachable = await markReachable(cache, index.manifests, undefined, signal);
  const after = await readLeases(cache.layout.leases, cache.leaseOptions);
  const leases = {
    keys: new Set([...before.keys, ...after.keys]),
    liveIds: new Set([...before.liveIds, ...after.liveIds]),
  };
  const protectedBlob = (digest: Digest) => reachable.blobs.has(digest) || leases.keys.has(`blob:${digest}`);
  const protectedLayer = (diffId: Digest) =>
    reachable.layers.has(diffId) || leases.keys.has(`layer:${diffId}`);

  for (const blob of blobs) {
    throwIfAborted(signal);
    if (protectedBlob(blob.digest)) {
      result.keptBlobs += 1;
      continue;
    }
    const removed = await ifUnlocked(cache, cache.layout.blobLockName(blob.digest), async () => {
      if (await leasedNow(cache, `blob:${blob.digest}`)) return false;
      if (options.dryRun) return true;
      try {
        await unlink(blob.path);
      } catch (error) {
        if (!isErrno(error, 'ENOENT')) throw fsError(error, `removing blob ${blob.digest}`);
      }
      return true;
    });
    if (removed) {
      result.removedBlobs.push(blob.digest);
      result.freedBytes += blob.size;
    } else result.keptBlobs += 1;
  }

  for (const layer of layers) {
    throwIfAborted(signal);
    if (protectedLayer(layer.diffId)) {
      result.keptLayers += 1;
      continue;
    }
    const bytes = await treeBytes(layer.path);
    const removed = await ifUnlocked(cache, cache.layout.layerLockName(layer.diffId), async () => {
      if (await leasedNow(cache, `layer:${layer.diffId}`)) return false;
      if (options.dryRun) return true;
      const doomed = join(
        cache.layout.layerTemps,
        `${parseDigest(layer.diffId).split(':')[1]}.removing.${uniqueSuffix()}`,
      );
      try {
        await rename(layer.path, doomed);
      } catch (error) {
        if (isErrno(error, 'ENOENT')) return true;
        throw fsError(error, `removing layer ${layer.diffId}`);
      }
      await removeTree(doomed);
      return true;
    });
    if (removed) {
      result.removedLayers.push(layer.diffId);
      result.freedBytes += bytes;
    } else result.keptLayers += 1;
  }

  await sweepIngest(cache, leases.keys, result, options);
  await sweepLayerTemps(cache, leases.liveIds, result, options);
  await sweepTempFiles(cache.root, result, options);
}

/** Removes `.part` downloads nobody is writing (their blob lock is free) and no live lease wants. */
async function sweepIngest(
  cache: BlobCache,
  leased: Set<string>,
  result: GcResult,
  options: GcOptions,
): Promise<void> {
  const names = await listDirectory(cache.layout.ingest);
  const encodings = new Set(
    names
      .filter((n) => n.endsWith('.part') || n.endsWith('.json'))
      .map((n) => n.replace(/\.(part|json)$/, '')),
  );
  for (const encoded of encodings) {
    throwIfAborted(options.signal);
    const digest = `${encoded.length === 128 ? 'sha512' : 'sha256'}:${encoded}`;
    if (!isDigest(digest)) continue;
    // A leased download may be resumed by its owner; leftovers of a committed blob never are.
    if (leased.has(`blob:${digest}`) && !(await cache.has({ digest }))) continue;
    const part = cache.layout.partPath(digest);
    const bytes = (await stat(part).catch(() => undefined))?.size ?? 0;
    const removed = await ifUnlocked(cache, cache.layout.blobLockName(digest), async () => {
      if (options.dryRun) return;
      await unlink(part).catch(() => {});
      await unlink(cache.layout.sidecarPath(digest)).catch(() => {});
    });
    if (removed) {
      result.removedPartials += 1;
      result.freedBytes += bytes;
    }
  }
  await sweepTempFiles(cache.layout.ingest, result, options);
}

/** Removes extraction temp trees whose lease is dead, and leftovers of interrupted layer removals. */
async function sweepLayerTemps(
  cache: BlobCache,
  liveIds: Set<string>,
  result: GcResult,
  options: GcOptions,
): Promise<void> {
  for (const name of await listDirectory(cache.layout.layerTemps)) {
    throwIfAborted(options.signal);
    const [, owner] = name.split('.');
    if (owner === undefined || owner === cache.leaseId || liveIds.has(owner)) continue;
    // A pull that started after the lease reads: its lease is live though the reads missed it.
    if (owner !== 'removing' && (await leaseIsLive(cache.layout.leases, owner, cache.leaseOptions))) continue;
    const path = join(cache.layout.layerTemps, name);
    if (owner === 'removing') {
      // A removal in progress in another process renames then deletes; give it the grace period.
      const stats = await lstat(path).catch(() => undefined);
      if (stats === undefined || Date.now() - stats.mtimeMs < TEMP_GRACE_MS) continue;
    }
    const bytes = await treeBytes(path);
    if (!options.dryRun) await removeTree(path);
    result.removedPartials += 1;
    result.freedBytes += bytes;
  }
}

/** Removes `.<name>.<pid>-<id>.tmp` files of atomic writes that died, once older than `TEMP_GRACE_MS`. */
async function sweepTempFiles(directory: string, result: GcResult, options: GcOptions): Promise<void> {
  for (const name of await listDirectory(directory)) {
    if (!(name.startsWith('.') && name.endsWith('.tmp'))) continue;
    const path = join(directory, name);
    const stats = await lstat(path).catch(() => undefined);
    if (stats === undefined || !stats.isFile() || Date.now() - stats.mtimeMs < TEMP_GRACE_MS) continue;
    if (!options.dryRun) await unlink(path).catch(() => {});
    result.removedPartials += 1;
    result.freedBytes += stats.size;
  }
}

/** Options for `verify`. */
export interface VerifyOptions {
  /** Only these blobs (and no image is checked). Default: every committed blob, then every image. */
  digests?: Array<Digest | string>;
  /** Move bad blobs to `quarantine/` (true) or delete them (false). Default true. */
  quarantine?: boolean;
  signal?: AbortSignal;
}

/** What `verify` found. */
export interface VerifyReport {
  /** Blobs re-hashed. */
  checked: number;
  /** Bytes re-hashed. */
  bytes: number;
  /** Requested digests that are not in the cache. */
  missing: Digest[];
  /** Blobs whose bytes no longer hash to their name; they were moved away (or deleted). */
  corrupt: Array<{ digest: Digest; actual: Digest; size: number; quarantinedTo?: string }>;
  /**
   * Images `index.json` records that lack blobs they need — after the blobs found corrupt were taken
   * out. Empty when `digests` was given (images are checked only by a verify of everything).
   */
  incompleteImages: IncompleteImage[];
  /** Why `index.json` cannot be read as an image index (then no image was checked); absent when it can. */
  indexCorrupt?: string;
}

/**
 * An image recorded in `index.json` that a pull with `--pull never`, `unpack` or skopeo could not
 * read whole: blobs it needs are not in `blobs/`.
 */
export interface IncompleteImage {
  /** Its reference (the `org.opencontainers.image.ref.name` annotation); absent for an entry without one. */
  ref?: string;
  /** The manifest or index `index.json` records for it. */
  digest: Digest;
  /**
   * The blobs it lacks: the recorded manifest or index itself, a manifest's config and layers and,
   * for an index of which no manifest is cached at all, its manifests (an index needs only the
   * manifests that were pulled: each cached one must be whole).
   */
  missing: Digest[];
}

/** Re-hashes committed blobs and takes the bad ones out of `blobs/` (under their lock). */
export async function verifyBlobs(cache: BlobCache, options: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, bytes: 0, missing: [], corrupt: [], incompleteImages: [] };
  let entries: BlobEntry[];
  if (options.digests === undefined) entries = await listBlobs(cache);
  else {
    entries = [];
    for (const value of options.digests) {
      const digest = parseDigest(value);
      const found = await cache.stat(digest);
      if (found === undefined) report.missing.push(digest);
      else entries.push({ digest, path: cache.layout.blobPath(digest), size: found.size });
    }
  }
  for (const entry of entries) {
    throwIfAborted(options.signal);
    let actual: Digest;
    try {
      const [algorithm] = entry.digest.split(':') as ['sha256' | 'sha512'];
      actual = (
        await digestOfFile(entry.path, { algorithm, ...(options.signal ? { signal: options.signal } : {}) })
      ).digest;
    } catch (error) {
      if (isErrno(error, 'ENOENT')) continue;
      throw fsError(error, `verifying blob ${entry.digest}`);
    }
    report.checked += 1;
    report.bytes += entry.size;
    if (actual === entry.digest) continue;
    const bad: VerifyReport['corrupt'][number] = { digest: entry.digest, actual, size: entry.size };
    const release = await cache.lock(
      cache.layout.blobLockName(entry.digest),
      options.signal ? { signal: options.signal } : {},
    );
    try {
      if (options.quarantine === false) await unlink(entry.path).catch(() => {});
      else {
        const target = join(cache.layout.quarantine, `${entry.digest.replace(':', '-')}.${uniqueSuffix()}`);
        try {
          await mkdir(cache.layout.quarantine, { recursive: true });
          await rename(entry.path, target);
        } catch (error) {
          throw fsError(error, `quarantining blob ${entry.digest}`);
        }
        bad.quarantinedTo = target;
      }
    } finally {
      await release();
    }
    report.corrupt.push(bad);
  }
  // Last, so that what was just quarantined counts as missing.
  if (options.digests === undefined) await verifyImages(cache, report, options.signal);
  return report;
}

/**
 * Walks every image `index.json` records (index → manifests → config and layers, as gc marks them)
 * and adds the ones that lack blobs to `report.incompleteImages`; a corrupt `index.json` is reported
 * in `report.indexCorrupt`. An image untagged while it was walked (an `rm` and a `prune`) is not one.
 */
async function verifyImages(cache: BlobCache, report: VerifyReport, signal?: AbortSignal): Promise<void> {
  const read = async () => {
    try {
      return await readIndex(cache.layout.indexJson);
    } catch (error) {
      if (!isOciError(error, ErrorCode.CacheCorrupt)) throw error;
      report.indexCorrupt = error.message;
      return undefined;
    }
  };
  const index = await read();
  if (index === undefined) return;
  const found: IncompleteImage[] = [];
  for (const [position, entry] of index.manifests.entries()) {
    throwIfAborted(signal);
    const ref = entry?.annotations?.[REF_NAME_ANNOTATION];
    if (!isDigest(entry?.digest)) {
      const name = ref === undefined ? '' : ` (${ref})`;
      report.indexCorrupt = `${cache.layout.indexJson}: entry ${position + 1}${name} has no valid digest`;
      continue;
    }
    const missing = await missingBlobs(cache, entry, signal);
    if (missing.length > 0)
      found.push({ ...(ref === undefined ? {} : { ref }), digest: entry.digest, missing });
  }
  if (found.length === 0) return;
  const now = (await read())?.manifests ?? [];
  const stillRecorded = (image: IncompleteImage) =>
    now.some(
      (entry) => entry?.digest === image.digest && entry.annotations?.[REF_NAME_ANNOTATION] === image.ref,
    );
  report.incompleteImages.push(...found.filter(stillRecorded));
}

/** The blobs the image `root` needs that are not committed (see `IncompleteImage.missing`). */
async function missingBlobs(cache: BlobCache, root: Descriptor, signal?: AbortSignal): Promise<Digest[]> {
  const missing = new Set<Digest>();
  const seen = new Set<Digest>();
  const visit = async (descriptor: Descriptor, role: 'node' | 'leaf'): Promise<void> => {
    throwIfAborted(signal);
    if (seen.has(descriptor.digest)) return;
    seen.add(descriptor.digest);
    if (!(await cache.has({ digest: descriptor.digest }))) {
      missing.add(descriptor.digest);
      return;
    }
    if (role === 'leaf') return;
    let json: Record<string, unknown> | undefined;
    try {
      json = await readJson(cache, descriptor, { strict: true });
    } catch (error) {
      // Gone or rotted since it was found: as good as missing.
      if (!isOciError(error, ErrorCode.BlobUnknown) && !isOciError(error, ErrorCode.CacheCorrupt))
        throw error;
      missing.add(descriptor.digest);
      return;
    }
    if (json === undefined) return;
    if (isIndexMediaType(descriptor.mediaType) || Array.isArray(json.manifests)) {
      const children = descriptorsIn(json.manifests);
      const cached: Descriptor[] = [];
      for (const child of children) if (await cache.has({ digest: child.digest })) cached.push(child);
      if (cached.length === 0) for (const child of children) missing.add(child.digest);
      for (const child of cached) await visit(child, 'node');
    }
    if (isManifestMediaType(descriptor.mediaType) || json.config !== undefined) {
      const [config] = descriptorsIn([json.config]);
      if (config) await visit(config, 'leaf');
      for (const layer of descriptorsIn(json.layers)) await visit(layer, 'leaf');
    }
  };
  await visit(root, 'node');
  return [...missing];
}

/** Disk use of one image. */
export interface ImageUsage {
  ref: string;
  digest: Digest;
  /** Bytes of every cached blob the image reaches. */
  bytes: number;
  /** Bytes of blobs no other image reaches (what removing it would free). */
  uniqueBytes: number;
  /** Bytes of blobs shared with at least one other image. */
  sharedBytes: number;
}

/** What `usage` reports. */
export interface UsageReport {
  images: ImageUsage[];
  /** Bytes of every committed blob. */
  blobBytes: number;
  /** Bytes of blobs reached by two or more images, counted once. */
  sharedBytes: number;
  /** Bytes of blobs no image reaches (what `gc` would free, leases aside). */
  unreferencedBytes: number;
  /** Bytes of partial downloads in `ingest/`. */
  partialBytes: number;
}

/** Bytes per image, shared vs unique, from the image records and the blobs on disk. */
export async function computeUsage(cache: BlobCache): Promise<UsageReport> {
  const blobs = await listBlobs(cache);
  const sizes = new Map(blobs.map((blob) => [blob.digest, blob.size]));
  const records = recordsOf(await readIndex(cache.layout.indexJson));
  const reach = new Map<string, Set<Digest>>();
  const counts = new Map<Digest, number>();
  for (const record of records) {
    const { blobs: reached } = await markReachable(cache, [record.descriptor]);
    const present = new Set([...reached].filter((digest) => sizes.has(digest)));
    reach.set(record.ref, present);
  }
  // Two refs to the same manifest are one image's worth of blobs: count sharing per distinct digest.
  const seenRoots = new Map<Digest, Set<Digest>>();
  for (const record of records) seenRoots.set(record.descriptor.digest, reach.get(record.ref)!);
  for (const set of seenRoots.values())
    for (const digest of set) counts.set(digest, (counts.get(digest) ?? 0) + 1);
  const images: ImageUsage[] = records.map((record) => {
    let bytes = 0;
    let uniqueBytes = 0;
    for (const digest of reach.get(record.ref)!) {
      const size = sizes.get(digest) ?? 0;
      bytes += size;
      if ((counts.get(digest) ?? 0) <= 1) uniqueBytes += size;
    }
    return {
      ref: record.ref,
      digest: record.descriptor.digest,
      bytes,
      uniqueBytes,
      sharedBytes: bytes - uniqueBytes,
    };
  });
  let blobBytes = 0;
  let sharedBytes = 0;
  let unreferencedBytes = 0;
  for (const blob of blobs) {
    blobBytes += blob.size;
    const count = counts.get(blob.digest) ?? 0;
    if (count >= 2) sharedBytes += blob.size;
    if (count === 0) unreferencedBytes += blob.size;
  }
  let partialBytes = 0;
  for (const name of await listDirectory(cache.layout.ingest)) {
    if (name.endsWith('.part'))
      partialBytes += (await stat(join(cache.layout.ingest, name)).catch(() => undefined))?.size ?? 0;
  }
  return { images, blobBytes, sharedBytes, unreferencedBytes, partialBytes };
}
