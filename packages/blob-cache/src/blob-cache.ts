import { createReadStream, existsSync, type Stats } from 'node:fs';
import { type FileHandle, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import {
  type BlobSource,
  type BlobStore,
  type Descriptor,
  type Digest,
  discard,
  ErrorCode,
  type FetchOptions,
  type IngestOptions,
  type IngestResult,
  isOciError,
  OciError,
  throwIfAborted,
  untilAborted,
} from '@ocipull/core';
import {
  digestEncoded,
  digestOf,
  isDigest,
  parseDigest,
  SizeMismatchError,
  verifyBytes,
} from '@ocipull/digest';
import { syncDirectory, syncTree, uniqueSuffix, writeFileAtomic } from './atomic-file.ts';
import { defaultCacheRoot } from './cache-root.ts';
import {
  type BlobStream,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RETRY_DELAY_MS,
  type FetchProgress,
  FetchThroughStream,
} from './fetch-through.ts';
import { FollowStream } from './follow-stream.ts';
import { fsError, isErrno, statIfExists } from './fs-errors.ts';
import {
  checkRef,
  type ImageRecord,
  readIndex,
  recordsOf,
  withImage,
  withImageUsed,
  withoutImage,
  writeIndex,
} from './image-records.ts';
import { CacheLayout, initLayout } from './layout.ts';
import { Lease, type LeaseKey } from './leases.ts';
import { lockDirectory, lockTarget, type Release } from './lock-files.ts';
import {
  collectGarbage,
  computeUsage,
  GC_LOCK,
  type GcOptions,
  type GcResult,
  type UsageReport,
  type VerifyOptions,
  type VerifyReport,
  verifyBlobs,
} from './maintenance.ts';
import { removeTree } from './remove-tree.ts';

/**
 * How long a caller waits for another process's download of the same blob (or any other cache lock)
 * before `ERR_LOCK_TIMEOUT`. Long, because the holder may be streaming a multi-gigabyte layer; a dead
 * holder is detected much sooner through the lock's staleness (`lockStaleMs`).
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 30 * 60_000;

/** Upper bound for `readBlob`: manifests and configs are small; the distribution spec caps manifests at 4 MiB. */
export const DEFAULT_MAX_READ_BYTES = 16 * 1024 * 1024;

/** Options for `openCache`. */
export interface OpenCacheOptions {
  /** The cache directory. Default `defaultCacheRoot()`. */
  root?: string;
  /** How long to wait for a lock held by another process. Default `DEFAULT_LOCK_TIMEOUT_MS`. */
  lockTimeoutMs?: number;
  /** A lock not refreshed for this long belongs to a dead process. Default: `@ocipull/lock`'s. */
  lockStaleMs?: number;
  /** How often held locks are refreshed. Default: `@ocipull/lock`'s. */
  lockUpdateMs?: number;
  /** Failed fetches in a row (no byte gained) before a download gives up. Default `DEFAULT_MAX_ATTEMPTS`. */
  maxAttempts?: number;
  /** First delay between re-fetches, doubled per failure. Default `DEFAULT_RETRY_DELAY_MS`. */
  retryDelayMs?: number;
}

/** Options for `fetchThrough` and `ingest`. */
export interface FetchThroughOptions {
  signal?: AbortSignal;
  /** Passed to the source's fetch: see `FetchOptions.priority` in `@ocipull/core`. */
  priority?: number;
  /** Called as bytes reach the `.part` file (not for a cached blob). */
  onProgress?: (event: FetchProgress) => void;
  /**
   * End a downloading stream as soon as every byte is out and the digest matched, without waiting
   * for the fsync and rename that commit the blob (a consumer that only needs the bytes need not wait
   * for the disk); `committed` still settles with the commit's outcome, so await it before relying on
   * the blob being in the cache. A commit failure after the end no longer errors the stream.
   */
  endWhenVerified?: boolean;
}

/** Options for `commitLayer`. */
export interface CommitLayerOptions {
  signal?: AbortSignal;
  /**
   * fsync every file and directory of the tree before the rename, so a power loss cannot leave a
   * committed tree with missing content. Default true; false trades that for speed (process crashes
   * stay safe either way: the rename is atomic).
   */
  durable?: boolean;
}

/** What `commitLayer` did. */
export interface CommitLayerResult {
  /** False when the layer was already there and the temp tree was discarded. */
  committed: boolean;
  path: string;
}

/** The sidecar next to a `.part`: what the bytes are meant to become. */
interface PartSidecar {
  digest: string;
  size: number;
  mediaType?: string;
}

function checkDescriptor(descriptor: Pick<Descriptor, 'digest' | 'size'>): Digest {
  const digest = parseDigest(descriptor.digest);
  if (!Number.isSafeInteger(descriptor.size) || descriptor.size < 0) {
    throw new OciError(
      ErrorCode.InvalidArgument,
      `descriptor ${digest} has an invalid size ${descriptor.size}`,
    );
  }
  return digest;
}

/**
 * A content-addressed blob store in an OCI image layout: verified read-only blobs in `blobs/`,
 * resumable downloads in `ingest/`, image records in `index.json`, extracted layer trees in
 * `layers/`. Safe to share between threads and processes (and hosts, over NFS): every writer takes a
 * per-digest lock, every visible file appears by an atomic rename after fsync.
 */
export class BlobCache implements BlobStore {
  readonly root: string;
  readonly layout: CacheLayout;
  readonly #options: Required<Pick<OpenCacheOptions, 'lockTimeoutMs' | 'maxAttempts' | 'retryDelayMs'>> &
    Pick<OpenCacheOptions, 'lockStaleMs' | 'lockUpdateMs'>;
  #lease: Lease;
  /**
   * False when this process may only read the cache (a read-only mount, another user's cache): reads
   * take no lease (none can be written), writes fail with `ERR_IO`.
   */
  readonly writable: boolean;
  /** In-process gates per lock name: callers of one process queue here rather than poll the lock file. */
  readonly #gates = new Map<string, Promise<void>>();
  /** Downloads running in this process, by digest: a second reader follows one rather than wait for it. */
  readonly #downloads = new Map<Digest, FetchThroughStream>();

  /** `access.writable` (default true) is what `openCache` found; false makes a read-only cache. */
  constructor(layout: CacheLayout, options: OpenCacheOptions = {}, access: { writable?: boolean } = {}) {
    this.root = layout.root;
    this.layout = layout;
    this.writable = access.writable ?? true;
    this.#options = {
      lockTimeoutMs: options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS,
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retryDelayMs: options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS,
      ...(options.lockStaleMs === undefined ? {} : { lockStaleMs: options.lockStaleMs }),
      ...(options.lockUpdateMs === undefined ? {} : { lockUpdateMs: options.lockUpdateMs }),
    };
    this.#lease = new Lease(layout.leases, { staleMs: options.lockStaleMs, updateMs: options.lockUpdateMs });
  }

  // ---------------------------------------------------------------- locks

  /**
   * Takes the lock `name`: first the in-process gate (so one process never polls against itself),
   * then the cross-process lock file. Resolves to a release function that opens both.
   */
  async lock(
    name: string,
    options: { signal?: AbortSignal | undefined; timeoutMs?: number } = {},
  ): Promise<Release> {
    const leaveGate = await this.#enterGate(name, options.signal, options.timeoutMs !== 0);
    try {
      const release = await lockTarget(this.layout.locks, name, {
        timeoutMs: options.timeoutMs ?? this.#options.lockTimeoutMs,
        staleMs: this.#options.lockStaleMs,
        updateMs: this.#options.lockUpdateMs,
        signal: options.signal,
      });
      let released = false;
      const releaseBoth = async () => {
        if (released) return;
        released = true;
        try {
          await release();
        } finally {
          leaveGate();
        }
      };
      return release.signal ? Object.assign(releaseBoth, { signal: release.signal }) : releaseBoth;
    } catch (error) {
      leaveGate();
      throw error;
    }
  }

  async #enterGate(name: string, signal: AbortSignal | undefined, wait: boolean): Promise<() => void> {
    for (;;) {
      throwIfAborted(signal);
      const current = this.#gates.get(name);
      if (current === undefined) break;
      if (!wait) throw new OciError(ErrorCode.LockTimeout, `lock ${name} is held in this process`);
      await settledUnlessAborted(current, signal);
    }
    let open!: () => void;
    this.#gates.set(
      name,
      new Promise<void>((resolve) => {
        open = resolve;
      }),
    );
    return () => {
      this.#gates.delete(name);
      open();
    };
  }

  // ---------------------------------------------------------------- blobs

  /** Where the committed blob `digest` lives (it may not exist). */
  blobPath(digest: Digest | string): string {
    return this.layout.blobPath(parseDigest(digest));
  }

  /** True when the blob is committed (and, if the descriptor gives a size, has that size). */
  async has(descriptor: Pick<Descriptor, 'digest'> & Partial<Descriptor>): Promise<boolean> {
    const found = await this.stat(descriptor.digest);
    return found !== undefined && (descriptor.size === undefined || found.size === descriptor.size);
  }

  /**
   * `has`, after leasing the blob for this cache's lifetime: how a reader makes sure a blob it found —
   * a manifest it is about to read, a layer it opens later — is not removed by a concurrent `gc`
   * (`has` only looks). Like `useLayer`, and like `fetchThrough` of a cached blob.
   */
  async useBlob(
    descriptor: Pick<Descriptor, 'digest'> & Partial<Descriptor>,
    options: { signal?: AbortSignal } = {},
  ): Promise<boolean> {
    const digest = parseDigest(descriptor.digest);
    await this.#use(`blob:${digest}`, this.layout.blobLockName(digest), options.signal);
    return this.has(descriptor);
  }

  /** The size of a committed blob, or undefined when it is not in the cache. */
  async stat(digest: Digest | string): Promise<{ size: number } | undefined> {
    let stats: Stats | undefined;
    try {
      stats = statIfExists(this.blobPath(digest));
    } catch (error) {
      throw fsError(error, `checking blob ${digest}`);
    }
    return stats?.isFile() ? { size: stats.size } : undefined;
  }

  /**
   * Reads a committed blob from `offset` (BlobSource). Fails with `ERR_BLOB_UNKNOWN` when it is not
   * cached and `ERR_SIZE_MISMATCH` when the descriptor declares another size.
   */
  async fetch(descriptor: Descriptor, options: FetchOptions = {}): Promise<Readable> {
    const stream = await this.#openCommitted(descriptor, options);
    if (stream === undefined) {
      throw new OciError(ErrorCode.BlobUnknown, `blob ${descriptor.digest} is not in the cache`);
    }
    return stream;
  }

  /** Alias of `fetch`. */
  open(descriptor: Descriptor, options: FetchOptions = {}): Promise<Readable> {
    return this.fetch(descriptor, options);
  }

  /** Opens the committed blob (by file descriptor, so a concurrent gc cannot pull it away), if any. */
  async #openCommitted(descriptor: Descriptor, options: FetchOptions = {}): Promise<BlobStream | undefined> {
    const handle = await this.#openCommittedHandle(descriptor, options);
    return handle === undefined ? undefined : committedStream(handle, descriptor.size, options);
  }

  /** The committed blob's file handle, its size and the wanted offset checked; undefined when absent. */
  async #openCommittedHandle(descriptor: Descriptor, options: FetchOptions): Promise<FileHandle | undefined> {
    const digest = checkDescriptor(descriptor);
    throwIfAborted(options.signal);
    const path = this.layout.blobPath(digest);
    let handle: FileHandle;
    try {
      // Most calls are for blobs not there yet: find that out without a failing open (see statIfExists).
      if (statIfExists(path) === undefined) return undefined;
      handle = await open(path, 'r');
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return undefined;
      throw fsError(error, `opening blob ${digest}`);
    }
    try {
      const { size } = await handle.stat();
      if (size !== descriptor.size)
        throw new SizeMismatchError(descriptor.size, size, `cached blob ${digest}`);
      const offset = options.offset ?? 0;
      if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
        throw new OciError(ErrorCode.InvalidArgument, `offset ${offset} is outside blob ${digest}`);
      }
      return handle;
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Returns the whole blob from byte 0, downloading it through the cache when it is missing: the one
   * streaming pass of a cold pull. When the blob is committed it is read from disk. Otherwise the
   * per-digest lock is taken (waiting while another caller or process downloads it; if that one
   * committed it, the file is returned), an existing `.part` is resumed, and the returned stream
   * replays the `.part` prefix and then the source's bytes from `source.fetch(descriptor, { offset })`
   * as they are appended. Bytes are verified as they flow; a cut or retryable failure re-fetches from
   * the new offset (bounded), so the consumer sees one continuous stream. The stream ends only after
   * the blob is fsynced, made read-only and renamed into `blobs/` (with `endWhenVerified`, once its
   * digest matched; the commit follows and `committed` reports it); on a digest or size mismatch the
   * `.part` is deleted and the stream errors with `ERR_DIGEST_MISMATCH` / `ERR_SIZE_MISMATCH`.
   * The stream holds the blob's lock until it ends, errors or is destroyed: consume or destroy it.
   */
  fetchThrough(
    descriptor: Descriptor,
    source: BlobSource,
    options: FetchThroughOptions = {},
  ): Promise<BlobStream> {
    return this.#fetchThrough(descriptor, source, options, false);
  }

  /** `fetchThrough`; with `drain`, a download started here yields no data (`ingest` reads none). */
  async #fetchThrough(
    descriptor: Descriptor,
    source: BlobSource,
    options: FetchThroughOptions,
    drain: boolean,
  ): Promise<BlobStream> {
    const digest = checkDescriptor(descriptor);
    throwIfAborted(options.signal);
    await this.#use(`blob:${digest}`, this.layout.blobLockName(digest), options.signal);
    const cached = await this.#openCommitted(descriptor, options);
    if (cached) return cached;
    this.#requireWritable(`download blob ${digest}`);
    const running = this.#downloads.get(digest);
    if (running !== undefined && !running.settling) {
      return new FollowStream(running, {
        descriptor: { ...descriptor, digest },
        partPath: this.layout.partPath(digest),
        blobPath: this.layout.blobPath(digest),
        takeOver: (signal) =>
          this.fetchThrough(descriptor, source, {
            signal,
            endWhenVerified: options.endWhenVerified ?? false,
            ...(options.priority === undefined ? {} : { priority: options.priority }),
          }),
        signal: options.signal,
        endWhenVerified: options.endWhenVerified,
      });
    }

    const release = await this.lock(this.layout.blobLockName(digest), { signal: options.signal });
    let part: FileHandle | undefined;
    try {
      // The stream is made only after the lock is released: one made with the caller's signal may
      // error at once on abort, and nobody listens to it before it is returned.
      const committed = await this.#openCommittedHandle(descriptor, options);
      if (committed) {
        try {
          await release();
        } catch (error) {
          await committed.close();
          throw error;
        }
        return committedStream(committed, descriptor.size, options);
      }
      const prefixLength = await this.#preparePart(descriptor);
      try {
        part = await open(this.layout.partPath(digest), 'a+');
      } catch (error) {
        throw fsError(error, `opening the partial download of ${digest}`);
      }
      const stream = new FetchThroughStream({
        layout: this.layout,
        descriptor: { ...descriptor, digest },
        source,
        part,
        prefixLength,
        signal: options.signal,
        priority: options.priority,
        onProgress: options.onProgress,
        maxAttempts: this.#options.maxAttempts,
        retryDelayMs: this.#options.retryDelayMs,
        release,
        lockLost: release.signal,
        drain,
        endWhenVerified: options.endWhenVerified,
      });
      this.#downloads.set(digest, stream);
      const forget = () => {
        if (this.#downloads.get(digest) === stream) this.#downloads.delete(digest);
      };
      stream.committed.then(forget, forget);
      return stream;
    } catch (error) {
      await part?.close().catch(() => {});
      await release();
      throw error;
    }
  }

  /**
   * Decides how much of an existing `.part` to keep (under the blob's lock): all of it unless the
   * sidecar describes another blob size or the part is longer than the declared size, in which case
   * it starts over. Writes the sidecar before any byte, so every `.part` is explained.
   */
  async #preparePart(descriptor: Descriptor): Promise<number> {
    const digest = descriptor.digest;
    const partPath = this.layout.partPath(digest);
    const sidecarPath = this.layout.sidecarPath(digest);
    let partSize = 0;
    try {
      partSize = statIfExists(partPath)?.size ?? 0;
    } catch (error) {
      throw fsError(error, `checking the partial download of ${digest}`);
    }
    let sidecar: PartSidecar | undefined;
    // Without a part there is nothing for a sidecar to explain: write a new one without reading.
    if (partSize > 0) {
      try {
        sidecar = JSON.parse(await readFile(sidecarPath, 'utf8')) as PartSidecar;
      } catch {
        sidecar = undefined;
      }
    }
    const matches = sidecar !== undefined && sidecar.digest === digest && sidecar.size === descriptor.size;
    if (partSize > 0 && (!matches || partSize > descriptor.size)) {
      await unlink(partPath).catch(() => {});
      partSize = 0;
    }
    if (!matches) {
      const content: PartSidecar = { digest, size: descriptor.size, mediaType: descriptor.mediaType };
      // Atomic but not fsynced (two fsyncs less per blob): after a crash a sidecar is either whole
      // or missing/empty/unparsable, and the latter only makes the next run start the part over.
      await writeFileAtomic(sidecarPath, JSON.stringify(content), { durable: false });
    }
    return partSize;
  }

  /**
   * Downloads a blob into the cache unless it is there (BlobStore): `fetchThrough` drained. A resumed
   * download whose prefix turns out corrupt (digest mismatch at full length) is retried once from
   * byte 0, since no consumer has seen its bytes.
   */
  async ingest(
    descriptor: Descriptor,
    source: BlobSource,
    options: IngestOptions = {},
  ): Promise<IngestResult> {
    const digest = checkDescriptor(descriptor);
    // Leased and past a running gc before it counts as cached: found here, it stays (see #passGc).
    await this.#use(`blob:${digest}`, this.layout.blobLockName(digest), options.signal);
    if (await this.has(descriptor)) return { cached: true, resumedFrom: 0 };
    for (let attempt = 0; ; attempt++) {
      // A download of it running in this process: wait for its verdict rather than read along.
      const running = this.#downloads.get(digest);
      if (running !== undefined) await settledUnlessAborted(running.committed, options.signal);
      const stream = await this.#fetchThrough(descriptor, source, options, true);
      if (stream.cached) {
        // Another caller committed it while we waited: nothing to read.
        discard(stream);
        return { cached: true, resumedFrom: 0 };
      }
      try {
        for await (const _chunk of stream) {
          // Drained: the bytes are written by the stream itself.
        }
        return { cached: stream.cached, resumedFrom: stream.resumedFrom };
      } catch (error) {
        if (attempt === 0 && stream.resumedFrom > 0 && isOciError(error, ErrorCode.DigestMismatch)) continue;
        throw error;
      }
    }
  }

  /**
   * Stores bytes held in memory (manifests, configs) as a blob: verified against `expected` when it
   * names a digest or size, written to a temp file, fsynced, made read-only and renamed into place.
   * Returns the blob's descriptor (media type from `expected`, else `application/octet-stream`).
   */
  async writeBlob(
    bytes: Uint8Array | string,
    expected: Partial<Pick<Descriptor, 'digest' | 'size' | 'mediaType' | 'annotations'>> = {},
  ): Promise<Descriptor> {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    const digest =
      expected.digest === undefined
        ? await digestOf(data)
        : verifyBytes(data, {
            digest: expected.digest,
            ...(expected.size === undefined ? {} : { size: expected.size }),
            label: 'blob',
          });
    if (expected.size !== undefined && expected.size !== data.byteLength) {
      throw new SizeMismatchError(expected.size, data.byteLength, 'blob');
    }
    const descriptor: Descriptor = {
      mediaType: expected.mediaType ?? 'application/octet-stream',
      digest,
      size: data.byteLength,
      ...(expected.annotations ? { annotations: expected.annotations } : {}),
    };
    // A blob found here is returned as stored: it must not be one a running gc is removing.
    await this.#use(`blob:${digest}`, this.layout.blobLockName(digest));
    if (await this.has(descriptor)) return descriptor;
    this.#requireWritable(`write blob ${digest}`);
    const target = this.layout.blobPath(digest);
    const temp = join(this.layout.ingest, `.${digestEncoded(digest)}.${uniqueSuffix()}.tmp`);
    try {
      await mkdir(this.layout.blobDirectory(digest), { recursive: true });
      const handle = await open(temp, 'wx', 0o444);
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, target);
      await syncDirectory(this.layout.blobDirectory(digest));
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw fsError(error, `writing blob ${digest}`);
    }
    return descriptor;
  }

  /**
   * Reads a small committed blob (manifest, config) into memory and re-verifies it, so a blob that
   * rotted on disk fails with `ERR_CACHE_CORRUPT` instead of being parsed. `ERR_BLOB_UNKNOWN` when
   * it is not cached; `ERR_LIMIT_EXCEEDED` above `maxBytes` (default `DEFAULT_MAX_READ_BYTES`).
   */
  async readBlob(digest: Digest | string, options: { maxBytes?: number } = {}): Promise<Buffer> {
    const parsed = parseDigest(digest);
    const path = this.layout.blobPath(parsed);
    const found = await this.stat(parsed);
    if (found === undefined) throw new OciError(ErrorCode.BlobUnknown, `blob ${parsed} is not in the cache`);
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_READ_BYTES;
    if (found.size > maxBytes) {
      throw new OciError(ErrorCode.LimitExceeded, `blob ${parsed} is ${found.size} bytes, above ${maxBytes}`);
    }
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (error) {
      if (isErrno(error, 'ENOENT'))
        throw new OciError(ErrorCode.BlobUnknown, `blob ${parsed} is not in the cache`);
      throw fsError(error, `reading blob ${parsed}`);
    }
    try {
      verifyBytes(bytes, { digest: parsed, label: `cached blob ${parsed}` });
    } catch (error) {
      throw new OciError(ErrorCode.CacheCorrupt, `cached blob ${parsed} no longer matches its digest`, {
        cause: error,
      });
    }
    return bytes;
  }

  /**
   * Removes a committed blob (BlobStore), under its lock; a reference instead of a digest untags that
   * image (its blobs stay until `gc`). Missing blobs are not an error.
   */
  async remove(digestOrRef: Digest | string): Promise<void> {
    if (!isDigest(digestOrRef)) {
      await this.untag(digestOrRef);
      return;
    }
    const release = await this.lock(this.layout.blobLockName(digestOrRef));
    try {
      await unlink(this.layout.blobPath(digestOrRef));
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) throw fsError(error, `removing blob ${digestOrRef}`);
    } finally {
      await release();
    }
  }

  // ---------------------------------------------------------------- images

  /**
   * Records `ref` (the full normalised reference, e.g. `docker.io/library/alpine:3.20`) as pointing at
   * a manifest or index, in `index.json` with the `org.opencontainers.image.ref.name` annotation.
   * Replaces an earlier record of the same ref. Under the index lock; rewritten atomically.
   */
  async putImage(ref: string, descriptor: Descriptor): Promise<void> {
    checkRef(ref);
    const digest = checkDescriptor(descriptor);
    this.#requireWritable(`record ${ref}`);
    // index.json never names a blob that is not there: the blob is leased and past a running gc
    // before it is looked at, so what is found stays until this cache's lease ends — by when the
    // record protects it (gc reads the leases before index.json).
    await this.#use(`blob:${digest}`, this.layout.blobLockName(digest));
    const found = await this.stat(digest);
    if (found === undefined) {
      throw new OciError(ErrorCode.BlobUnknown, `cannot record ${ref}: blob ${digest} is not in the cache`);
    }
    if (found.size !== descriptor.size) {
      throw new SizeMismatchError(descriptor.size, found.size, `cached blob ${digest} recorded as ${ref}`);
    }
    await this.#updateIndex((index) => withImage(index, ref, descriptor));
  }

  /** The descriptor `ref` points at, or undefined. */
  async resolveImage(ref: string): Promise<Descriptor | undefined> {
    checkRef(ref);
    const records = recordsOf(await readIndex(this.layout.indexJson));
    return records.findLast((record) => record.ref === ref)?.descriptor;
  }

  /** Every image recorded in the cache. */
  async listImages(): Promise<ImageRecord[]> {
    return recordsOf(await readIndex(this.layout.indexJson));
  }

  /** Marks `ref` as used now (the LRU order of `gc({ maxBlobBytes })`); a no-op for unknown refs. */
  async touchImage(ref: string): Promise<void> {
    checkRef(ref);
    await this.#updateIndex((index) => withImageUsed(index, ref));
  }

  /** Drops the record of `ref`; resolves to whether there was one. Blobs stay until `gc`. */
  async untag(ref: string): Promise<boolean> {
    checkRef(ref);
    let removed = false;
    await this.#updateIndex((index) => {
      const result = withoutImage(index, ref);
      removed = result.removed;
      return result.index;
    });
    return removed;
  }

  async #updateIndex(change: (index: Awaited<ReturnType<typeof readIndex>>) => ReturnType<typeof withImage>) {
    this.#requireWritable('update index.json');
    const release = await this.lock('index.json');
    try {
      const index = await readIndex(this.layout.indexJson);
      await writeIndex(this.layout.indexJson, change(index));
    } finally {
      await release();
    }
  }

  // ---------------------------------------------------------------- layers

  /** Where the extracted tree of the layer with uncompressed digest `diffId` lives (it may not exist). */
  layerPath(diffId: Digest | string): string {
    return this.layout.layerPath(parseDigest(diffId));
  }

  /**
   * The committed tree of `diffId` leased for this cache's lifetime, or undefined when there is none:
   * how a pull reuses an extracted layer. Unlike `hasLayer`, a concurrent `gc` can no longer remove
   * a tree this returned.
   */
  async useLayer(
    diffId: Digest | string,
    options: { signal?: AbortSignal } = {},
  ): Promise<string | undefined> {
    const parsed = parseDigest(diffId);
    await this.#use(`layer:${parsed}`, this.layout.layerLockName(parsed), options.signal);
    return (await this.hasLayer(parsed)) ? this.layerPath(parsed) : undefined;
  }

  /**
   * Leases `key` for this cache's lifetime and passes a running gc (`#passGc`): how every reader
   * makes sure a committed item it then finds stays. A cache this process cannot write takes no
   * lease: it could not write one, and no gc of its own can run there.
   */
  async #use(key: LeaseKey, lockName: string, signal?: AbortSignal): Promise<void> {
    if (!this.writable) return;
    await this.#lease.add(key);
    await this.#passGc(lockName, signal);
  }

  /** Throws `ERR_IO` when this process may not write the cache: `what` needed a write. */
  #requireWritable(what: string): void {
    if (this.writable) return;
    throw new OciError(ErrorCode.Io, `cannot ${what}: the cache ${this.root} is read-only for this process`);
  }

  /**
   * Called after leasing an item and before reusing what is committed: when a `gc` may be running
   * (its lock exists), takes the item's lock once. gc removes an item only under that lock after
   * reading the leases again, so either it sees this lease or the removal is done before we look.
   * Without a gc running it costs one `access()` (no Error when the lock is absent).
   */
  async #passGc(lockName: string, signal: AbortSignal | undefined): Promise<void> {
    if (!existsSync(lockDirectory(this.layout.locks, GC_LOCK))) return;
    const release = await this.lock(lockName, { signal });
    await release();
  }

  /** True when the extracted tree of `diffId` is committed. */
  async hasLayer(diffId: Digest | string): Promise<boolean> {
    try {
      return statIfExists(this.layerPath(diffId))?.isDirectory() ?? false;
    } catch (error) {
      throw fsError(error, `checking layer ${diffId}`);
    }
  }

  /**
   * Makes an empty directory on the same filesystem as `layers/` to extract `diffId` into; hand it to
   * `commitLayer` when the tree is complete. `gc` removes it if this process dies first.
   */
  async createLayerTemp(diffId: Digest | string): Promise<string> {
    const parsed = parseDigest(diffId);
    this.#requireWritable(`extract layer ${parsed}`);
    await this.#lease.add(`layer:${parsed}`);
    // The lease id in the name lets gc tell a live extraction from an abandoned one.
    const path = join(this.layout.layerTemps, `${digestEncoded(parsed)}.${this.#lease.id}.${uniqueSuffix()}`);
    try {
      await mkdir(this.layout.layerTemps, { recursive: true });
      await mkdir(path);
    } catch (error) {
      throw fsError(error, `creating a temp directory for layer ${parsed}`);
    }
    return path;
  }

  /**
   * Moves a complete extracted tree into `layers/` by an atomic rename under the layer's lock. When
   * another caller committed it first, the temp tree is discarded and `committed` is false.
   */
  async commitLayer(
    diffId: Digest | string,
    tempDirectory: string,
    options: CommitLayerOptions = {},
  ): Promise<CommitLayerResult> {
    const parsed = parseDigest(diffId);
    const path = this.layout.layerPath(parsed);
    // Only a tree in a `createLayerTemp` directory is moved into the cache (or removed): never a
    // caller's own directory elsewhere.
    const inTemps = relative(resolve(this.layout.layerTemps), resolve(tempDirectory));
    if (inTemps === '' || inTemps.startsWith('..') || isAbsolute(inTemps)) {
      throw new OciError(
        ErrorCode.InvalidArgument,
        `commitLayer takes a directory made by createLayerTemp (in ${this.layout.layerTemps}), not ${tempDirectory}`,
      );
    }
    this.#requireWritable(`commit layer ${parsed}`);
    await this.#lease.add(`layer:${parsed}`);
    const release = await this.lock(this.layout.layerLockName(parsed), { signal: options.signal });
    try {
      if (await this.hasLayer(parsed)) {
        await removeTree(tempDirectory);
        return { committed: false, path };
      }
      try {
        // The tree's files reach the disk before its name does, so a power loss never leaves a
        // committed-looking tree with missing content.
        if (options.durable !== false) await syncTree(tempDirectory);
        await mkdir(this.layout.layerDirectory(parsed), { recursive: true });
        await rename(tempDirectory, path);
        await syncDirectory(this.layout.layerDirectory(parsed));
      } catch (error) {
        throw fsError(error, `committing layer ${parsed}`);
      }
      return { committed: true, path };
    } finally {
      await release();
    }
  }

  /** Removes an extracted layer tree: renamed away first (atomic disappearance), then deleted. */
  async removeLayer(diffId: Digest | string): Promise<boolean> {
    const parsed = parseDigest(diffId);
    const release = await this.lock(this.layout.layerLockName(parsed));
    try {
      const doomed = join(this.layout.layerTemps, `${digestEncoded(parsed)}.removing.${uniqueSuffix()}`);
      try {
        await rename(this.layout.layerPath(parsed), doomed);
      } catch (error) {
        if (isErrno(error, 'ENOENT')) return false;
        throw fsError(error, `removing layer ${parsed}`);
      }
      await removeTree(doomed);
      return true;
    } finally {
      await release();
    }
  }

  // ---------------------------------------------------------------- maintenance

  /**
   * Re-hashes blobs (all, or `digests`), moving bad ones to `quarantine/` (or deleting them); a verify
   * of everything then checks that every image `index.json` records has all the blobs it needs.
   */
  verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    return verifyBlobs(this, options);
  }

  /** Bytes per image, shared and unique, plus totals. */
  usage(): Promise<UsageReport> {
    return computeUsage(this);
  }

  /**
   * Mark and sweep: keeps what `index.json` reaches (indexes, manifests, configs, layers, and the
   * extracted trees of configs' `rootfs.diff_ids`) plus everything a live lease protects (a pull in
   * progress), removes the rest: blobs, layer trees, abandoned `.part` files and temp trees.
   */
  gc(options: GcOptions = {}): Promise<GcResult> {
    return collectGarbage(this, options);
  }

  /** The lease options, for maintenance. @internal */
  get leaseOptions(): { staleMs?: number | undefined; updateMs?: number | undefined } {
    return { staleMs: this.#options.lockStaleMs, updateMs: this.#options.lockUpdateMs };
  }

  /** The id of this cache's lease (what it protects from gc). @internal */
  get leaseId(): string {
    return this.#lease.id;
  }

  /**
   * Ends this cache's lease: blobs and layers it wrote or used stop being protected from `gc` unless an
   * image record reaches them. Call when a pull is done (after `putImage`); the cache stays usable.
   */
  async close(): Promise<void> {
    const lease = this.#lease;
    this.#lease = new Lease(this.layout.leases, lease.options);
    await lease.close();
  }
}

/**
 * Opens (creating if needed) the cache at `options.root` (default `defaultCacheRoot()`). Creating the
 * layout is idempotent and safe when many processes do it at once.
 */
export async function openCache(options: OpenCacheOptions = {}): Promise<BlobCache> {
  if (options.root === '') {
    // Not "the current directory": a variable that came out empty must not make one a cache.
    throw new OciError(ErrorCode.InvalidArgument, 'the cache root is an empty string');
  }
  const layout = new CacheLayout(options.root ?? defaultCacheRoot());
  const { writable } = await initLayout(layout);
  return new BlobCache(layout, options, { writable });
}

/**
 * A stream over a committed blob's open handle (closed with the stream). Made synchronously, right
 * before it is handed over: with an aborted `signal` it errors on the next tick, by when the caller
 * listens.
 */
function committedStream(handle: FileHandle, size: number, options: FetchOptions): BlobStream {
  const start = options.offset ?? 0;
  const stream = createReadStream('', {
    fd: handle,
    start,
    // The end tells each read its exact length: a read that came short of its buffer (a blob under
    // 1 MiB, or the tail of any) would be copied into one that fits, and a small blob would still
    // cost a 1 MiB buffer (40 layers of 263 KB: ~0.2 ms each of copies and collections).
    ...(start < size ? { end: size - 1 } : {}),
    highWaterMark: 1024 * 1024,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return Object.assign(stream, { cached: true, resumedFrom: 0, committed: Promise.resolve() });
}

/** Waits until `promise` settles (either way); rejects with `ERR_ABORTED` if `signal` aborts first. */
async function settledUnlessAborted(
  promise: Promise<unknown>,
  signal: AbortSignal | undefined,
): Promise<void> {
  const settled = promise.then(
    () => {},
    () => {},
  );
  await untilAborted(settled, signal);
}
