import type { FileHandle } from 'node:fs/promises';
import { chmod, rename, unlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortedError,
  type BlobSource,
  type Descriptor,
  ErrorCode,
  type FetchOptions,
  isOciError,
  OciError,
} from '@ocipull/core';
import { createVerifier, type Verifier } from '@ocipull/digest';
import { syncDirectory } from './atomic-file.ts';
import { fsError, isErrno } from './fs-errors.ts';
import type { CacheLayout } from './layout.ts';
import { PartWriter } from './part-writer.ts';
import { PumpGate } from './pump-gate.ts';

/** How many fetches in a row may fail without delivering a byte before a download gives up. */
export const DEFAULT_MAX_ATTEMPTS = 5;

/** First retry delay; doubles per failure without progress, capped at `MAX_RETRY_DELAY_MS`. */
export const DEFAULT_RETRY_DELAY_MS = 200;
const MAX_RETRY_DELAY_MS = 5_000;

/** Read size when replaying a `.part` prefix from disk. */
const REPLAY_CHUNK_BYTES = 1024 * 1024;

/** What a blob stream from the cache says about where its bytes came from. */
export interface FetchThroughInfo {
  /** True when the blob was already committed and nothing was read from the source. */
  readonly cached: boolean;
  /** Bytes replayed from an earlier partial download (0 for a fresh one or a cached blob). */
  readonly resumedFrom: number;
  /** Resolves once the blob is committed (at once when cached); rejects when the stream failed. */
  readonly committed: Promise<void>;
}

/** A whole-blob stream from `BlobCache.fetchThrough`. */
export type BlobStream = Readable & FetchThroughInfo;

/** A progress report of a download through the cache. */
export interface FetchProgress {
  /** Bytes of the blob on disk so far, the resumed prefix included. */
  bytes: number;
  total: number;
  resumedFrom: number;
}

/** Everything one download through the cache needs; the caller already holds the digest's locks. */
export interface FetchThroughJob {
  layout: CacheLayout;
  descriptor: Descriptor;
  source: BlobSource;
  /** The `.part`, opened for reading and appending. */
  part: FileHandle;
  /** Bytes already in the `.part` (checked to be at most the declared size). */
  prefixLength: number;
  signal?: AbortSignal | undefined;
  /** The source fetch's `priority`. */
  priority?: number | undefined;
  onProgress?: ((event: FetchProgress) => void) | undefined;
  maxAttempts: number;
  retryDelayMs: number;
  /** Releases the digest's locks; called exactly once, before the stream ends or errors. */
  release: () => Promise<void>;
  /** Fires when the blob's lock was lost while held: another process may now write the `.part`. */
  lockLost?: AbortSignal | undefined;
  /**
   * Nobody reads the stream (`ingest`): it yields no data and chunks from `source.fetchInto` go to the
   * `.part` without a copy.
   */
  drain?: boolean;
  /**
   * End the stream once every byte is out and the digest matched, before the fsync and rename:
   * `committed` still settles only when the blob is committed (or its commit failed).
   */
  endWhenVerified?: boolean | undefined;
}

/** Errors a re-fetch from the current offset may cure: a cut body, a reset connection, a 5xx. */
export function isRetryable(error: unknown): boolean {
  if (isOciError(error)) return error.retryable || error.code === ErrorCode.BlobInterrupted;
  return isErrno(
    error,
    'ECONNRESET',
    'EPIPE',
    'ETIMEDOUT',
    'ECONNABORTED',
    'UND_ERR_SOCKET',
    'ERR_STREAM_PREMATURE_CLOSE',
  );
}

/** An error that ends the download at once: bad bytes, a full disk, a cancelled caller. */
class Fatal {
  readonly error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}

/**
 * The stream of one download through the cache. It yields the whole blob from byte 0: first the
 * `.part` prefix replayed from disk, then the source's bytes from the prefix's end as they are
 * appended to the `.part`; every byte is hashed and counted on the way. It ends only after the blob
 * is verified, fsynced, made read-only and renamed into `blobs/`, so a consumer that saw `end` can
 * rely on the blob being committed — or, with `endWhenVerified`, as soon as the digest matched, the
 * commit following in the background (`committed` tells its outcome; a failure then no longer errors
 * the ended stream). Pulls nothing from the source faster than its consumer reads.
 */
export class FetchThroughStream extends Readable implements FetchThroughInfo {
  readonly cached = false;
  readonly resumedFrom: number;
  readonly committed: Promise<void>;
  readonly #job: FetchThroughJob;
  readonly #verifier: Verifier;
  readonly #writer: PartWriter;
  readonly #controller = new AbortController();
  #resolveCommitted!: () => void;
  #rejectCommitted!: (error: unknown) => void;
  readonly #gate = new PumpGate();
  #released = false;
  #verified = false;
  /** The stream ended at verification (`endWhenVerified`); the commit runs on. */
  #endedEarly = false;
  /** The source body being read, destroyed with the stream so a stalled socket cannot pin it. */
  #body: Readable | undefined;
  readonly #onCallerAbort: () => void;
  readonly #onLockLost: () => void;
  /** Woken whenever more of the `.part` is on disk and when the download settles (`FollowStream`). */
  readonly #watchers = new Set<() => void>();

  constructor(job: FetchThroughJob) {
    super({ highWaterMark: 1024 * 1024 });
    this.#job = job;
    this.resumedFrom = job.prefixLength;
    this.#verifier = createVerifier({
      digest: job.descriptor.digest,
      size: job.descriptor.size,
      label: `blob ${job.descriptor.digest}`,
    });
    this.#writer = new PartWriter(job.part, job.prefixLength, (bytes) => {
      job.onProgress?.({ bytes, total: job.descriptor.size, resumedFrom: job.prefixLength });
      this.#wakeWatchers();
    });
    this.committed = new Promise((resolve, reject) => {
      this.#resolveCommitted = resolve;
      this.#rejectCommitted = reject;
    });
    // Nobody may be awaiting `committed`; its rejection is also delivered as the stream's error.
    this.committed.catch(() => {});
    this.#onCallerAbort = () => this.destroy(new AbortedError(job.signal?.reason));
    this.#onLockLost = () => this.destroy(job.lockLost?.reason as Error);
    if (job.signal?.aborted) queueMicrotask(this.#onCallerAbort);
    else job.signal?.addEventListener('abort', this.#onCallerAbort, { once: true });
    job.lockLost?.addEventListener('abort', this.#onLockLost, { once: true });
  }

  /** Bytes of the blob in the `.part` on disk so far (written, not necessarily fsynced), prefix included. */
  get bytesOnDisk(): number {
    return this.#writer.written;
  }

  /** True once every byte is in the `.part` and the digest matched (the commit may still be running). */
  get verified(): boolean {
    return this.#verified;
  }

  /** True once the download has begun to settle (commit done or failure): it writes no more. */
  get settling(): boolean {
    return this.#released;
  }

  /**
   * Calls `watcher` whenever more bytes are on disk and once the download settles, until the returned
   * function is called. For readers that follow the `.part` as it grows.
   */
  watch(watcher: () => void): () => void {
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  #wakeWatchers(): void {
    for (const watcher of this.#watchers) watcher();
  }

  /**
   * A piped consumer that stops early (an extractor done at the tar end marker, or one that failed)
   * is unpiped without destroying us: the rest is drained into the cache so the blob still commits and
   * the lock is freed. (`pipe()` calls this method on its source when the destination finishes,
   * closes or errors.)
   */
  override unpipe(destination?: NodeJS.WritableStream): this {
    super.unpipe(destination);
    queueMicrotask(() => {
      if (!this.destroyed && !this.readableEnded && this.readableFlowing !== true) this.resume();
    });
    return this;
  }

  override _read(): void {
    this.#gate.read(() => this.#run());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Nothing to stop when the stream ended at verification (the commit runs on; `committed` tells its
    // outcome) or is auto-destroyed after a normal end (the download has settled). Building the abort
    // reason anyway cost ~0.1 ms per stream (an error with its stack trace) on a 40-layer pull.
    if (this.#endedEarly || (error === null && this.#released)) {
      callback(error);
      return;
    }
    const reason = error ?? new AbortedError('the blob stream was destroyed');
    this.#controller.abort(reason);
    this.#gate.release();
    this.#body?.destroy();
    const settled = this.#gate.pump ?? this.#finish(reason);
    settled.then(
      () => callback(error),
      () => callback(error),
    );
  }

  async #run(): Promise<void> {
    try {
      await this.#replayPrefix();
      await this.#download();
      this.#verify();
      if (this.#job.endWhenVerified) {
        this.#endedEarly = true;
        this.push(null);
      }
      await this.#commit();
    } catch (caught) {
      const error = caught instanceof Fatal ? caught.error : caught;
      await this.#finish(error);
      if (!this.destroyed && !this.#endedEarly) this.destroy(error as Error);
      return;
    }
    await this.#finish(undefined);
    if (!this.#endedEarly) this.push(null);
  }

  /** Waits until the consumer wants more, or the stream is destroyed. A drained stream yields nothing. */
  async #deliver(chunk: Buffer): Promise<void> {
    if (this.#job.drain) {
      this.#throwIfStopped();
      return;
    }
    if (this.push(chunk)) return;
    await this.#gate.wait(this.#controller.signal);
    this.#throwIfStopped();
  }

  #throwIfStopped(): void {
    if (this.#controller.signal.aborted) throw new Fatal(this.#controller.signal.reason);
  }

  #feed(chunk: Buffer): void {
    try {
      this.#verifier.update(chunk);
    } catch (error) {
      throw new Fatal(error);
    }
  }

  /** Hands `chunk` to the `.part` writer; with `wait`, returns only once it is written. */
  async #write(chunk: Buffer, wait: boolean): Promise<void> {
    try {
      if (wait) await this.#writer.appendWritten(chunk);
      else await this.#writer.append(chunk);
    } catch (error) {
      throw new Fatal(fsError(error, `writing blob ${this.#job.descriptor.digest}`));
    }
  }

  async #replayPrefix(): Promise<void> {
    const { part, prefixLength } = this.#job;
    let position = 0;
    while (position < prefixLength) {
      this.#throwIfStopped();
      const buffer = Buffer.allocUnsafe(Math.min(REPLAY_CHUNK_BYTES, prefixLength - position));
      let bytesRead: number;
      try {
        ({ bytesRead } = await part.read(buffer, 0, buffer.length, position));
      } catch (error) {
        throw new Fatal(fsError(error, 'reading a partial download'));
      }
      if (bytesRead === 0) {
        throw new Fatal(new OciError(ErrorCode.Io, 'a partial download shrank while being resumed'));
      }
      const chunk = buffer.subarray(0, bytesRead);
      this.#feed(chunk);
      position += bytesRead;
      await this.#deliver(chunk);
    }
  }

  #fetchOptions(offset: number): FetchOptions {
    const { priority } = this.#job;
    return { offset, signal: this.#controller.signal, ...(priority === undefined ? {} : { priority }) };
  }

  async #download(): Promise<void> {
    const { descriptor, source } = this.#job;
    let offset = this.#job.prefixLength;
    // A resumed download starts its progress at the prefix, not at zero.
    if (offset > 0) this.#job.onProgress?.({ bytes: offset, total: descriptor.size, resumedFrom: offset });
    let failures = 0;
    while (offset < descriptor.size) {
      this.#throwIfStopped();
      let body: Readable | undefined;
      const progressBefore = offset;
      try {
        if (source.fetchInto) {
          // The source's chunks may live in buffers it reuses once the sink returns: a drained
          // download waits for each write; one with a reader hands both a copy.
          await source.fetchInto(
            descriptor,
            async (view) => {
              this.#feed(view);
              const chunk = this.#job.drain ? view : copyOf(view);
              await this.#write(chunk, this.#job.drain === true);
              offset += chunk.length;
              await this.#deliver(chunk);
            },
            this.#fetchOptions(offset),
          );
        } else {
          body = await source.fetch(descriptor, this.#fetchOptions(offset));
          this.#body = body;
          this.#throwIfStopped();
          for await (const received of body) {
            const chunk = Buffer.isBuffer(received) ? received : Buffer.from(received as Uint8Array);
            this.#feed(chunk);
            await this.#write(chunk, false);
            offset += chunk.length;
            await this.#deliver(chunk);
          }
        }
        if (offset < descriptor.size) {
          throw new OciError(
            ErrorCode.BlobInterrupted,
            `blob ${descriptor.digest} ended at byte ${offset} of ${descriptor.size}`,
            { retryable: true },
          );
        }
      } catch (error) {
        body?.destroy();
        this.#body = undefined;
        if (error instanceof Fatal) throw error;
        this.#throwIfStopped();
        failures = offset > progressBefore ? 0 : failures + 1;
        if (!isRetryable(error) || failures >= this.#job.maxAttempts) throw new Fatal(error);
        const delay = Math.min(this.#job.retryDelayMs * 2 ** failures, MAX_RETRY_DELAY_MS);
        try {
          await sleep(delay, undefined, { signal: this.#controller.signal });
        } catch {
          this.#throwIfStopped();
        }
      }
    }
  }

  /** Checks the digest and size of every byte; followers hear of it. */
  #verify(): void {
    try {
      this.#verifier.finish();
    } catch (error) {
      throw new Fatal(error);
    }
    this.#verified = true;
    this.#wakeWatchers();
  }

  /** fsync, read-only, rename, fsync the directory: only then is the verified blob visible. */
  async #commit(): Promise<void> {
    const { layout, descriptor, part } = this.#job;
    try {
      await this.#writer.flush();
      await part.sync();
      await part.close();
      const partPath = layout.partPath(descriptor.digest);
      await chmod(partPath, 0o444);
      await rename(partPath, layout.blobPath(descriptor.digest));
      await syncDirectory(layout.blobDirectory(descriptor.digest));
      await unlink(layout.sidecarPath(descriptor.digest)).catch(() => {});
    } catch (error) {
      throw new Fatal(fsError(error, `committing blob ${descriptor.digest}`));
    }
  }

  /**
   * Cleans up once: a mismatch or a full disk deletes the `.part` (bad bytes must not be resumed;
   * a full disk needs its space back), any other failure keeps it for the next run to resume.
   */
  async #finish(error: unknown): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    this.#wakeWatchers();
    this.#job.signal?.removeEventListener('abort', this.#onCallerAbort);
    this.#job.lockLost?.removeEventListener('abort', this.#onLockLost);
    const { layout, descriptor, part } = this.#job;
    await this.#writer.stop();
    await part.close().catch(() => {});
    if (
      error !== undefined &&
      isOciError(error) &&
      [ErrorCode.DigestMismatch, ErrorCode.SizeMismatch, ErrorCode.NoSpace].includes(error.code as never)
    ) {
      await unlink(layout.partPath(descriptor.digest)).catch(() => {});
      await unlink(layout.sidecarPath(descriptor.digest)).catch(() => {});
    }
    await this.#job.release().catch(() => {});
    if (error === undefined) this.#resolveCommitted();
    else this.#rejectCommitted(error);
  }
}

/** A copy of `view` in memory of its own (native memcpy; `Buffer.from` copies element by element). */
function copyOf(view: Buffer): Buffer {
  const copy = Buffer.allocUnsafe(view.length);
  view.copy(copy);
  return copy;
}
