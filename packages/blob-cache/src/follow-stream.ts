import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { AbortedError, type Descriptor, ErrorCode, isOciError, OciError } from '@ocipull/core';
import type { BlobStream, FetchThroughInfo, FetchThroughStream } from './fetch-through.ts';
import { fsError, isErrno } from './fs-errors.ts';
import { PumpGate, Waiter } from './pump-gate.ts';

/** Largest read from the followed file. */
const FOLLOW_CHUNK_BYTES = 1024 * 1024;

/**
 * While the download is running, a read waits until at least this much is new on disk: the writer
 * appends in 64 KiB-ish batches, and one thread-pool read per batch would cost more than it saves.
 */
const FOLLOW_MIN_READ_BYTES = 256 * 1024;

/** Failures that say the followed bytes are bad or cannot be stored: the follower ends with them. */
const FINAL_FAILURES: readonly string[] = [
  ErrorCode.DigestMismatch,
  ErrorCode.SizeMismatch,
  ErrorCode.NoSpace,
];

/** What a follower needs besides the download it follows. */
export interface FollowJob {
  descriptor: Descriptor;
  /** The download's `.part`, and where it is renamed to on commit. */
  partPath: string;
  blobPath: string;
  /**
   * Opens the blob anew (`fetchThrough` again, resuming the `.part`) when the followed download
   * stopped for a reason of its own; the follower skips what it already delivered.
   */
  takeOver: (signal: AbortSignal) => Promise<BlobStream>;
  signal?: AbortSignal | undefined;
  /** End once the download has verified every byte, not committed them (`committed` still waits). */
  endWhenVerified?: boolean | undefined;
}

/**
 * A second reader of a blob this process is downloading right now (`FetchThroughStream`): it reads
 * the `.part` from byte 0 as the download appends to it, from its own file descriptor, so neither
 * waits for the other, and ends only once the download has committed the blob (or, with
 * `endWhenVerified`, verified it); `committed` reports the download's commit. If the download fails
 * with bad bytes or a full disk, so does the follower; if it stops for any other reason (its caller
 * gave up, its retries ran out, its lock was lost), the follower carries on through a fresh
 * `fetchThrough` and skips what it already delivered.
 * It holds no lock: the download's own lock covers the `.part`.
 */
export class FollowStream extends Readable implements FetchThroughInfo {
  readonly cached = false;
  readonly resumedFrom: number;
  readonly committed: Promise<void>;
  readonly #leader: FetchThroughStream;
  readonly #job: FollowJob;
  readonly #controller = new AbortController();
  readonly #unwatch: () => void;
  readonly #onCallerAbort: () => void;
  #resolveCommitted!: () => void;
  #rejectCommitted!: (error: unknown) => void;
  /** The followed download's verdict, once it has one. */
  #verdict: { error?: unknown } | undefined;
  #handle: FileHandle | undefined;
  /** Bytes delivered so far. */
  #position = 0;
  readonly #gate = new PumpGate();
  /** Woken by more bytes on disk, the download's verdict or a stop. */
  readonly #news = new Waiter();
  /** The fresh stream after a take-over. */
  #rest: BlobStream | undefined;
  /** Every byte delivered and cleaned up: the stream has ended (or is about to) normally. */
  #ended = false;
  /** The commit this stream's `committed` reports: the download's, or the take-over's. */
  #commit: Promise<void>;

  constructor(leader: FetchThroughStream, job: FollowJob) {
    super({ highWaterMark: FOLLOW_CHUNK_BYTES });
    this.#leader = leader;
    this.#job = job;
    this.resumedFrom = leader.resumedFrom;
    this.committed = new Promise((resolve, reject) => {
      this.#resolveCommitted = resolve;
      this.#rejectCommitted = reject;
    });
    this.committed.catch(() => {});
    this.#commit = leader.committed;
    leader.committed.then(
      () => this.#settle({}),
      (error: unknown) => this.#settle({ error }),
    );
    this.#unwatch = leader.watch(() => this.#news.wake());
    this.#onCallerAbort = () => this.destroy(new AbortedError(job.signal?.reason));
    if (job.signal?.aborted) queueMicrotask(this.#onCallerAbort);
    else job.signal?.addEventListener('abort', this.#onCallerAbort, { once: true });
  }

  override _read(): void {
    this.#gate.read(() => this.#run());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // The auto-destroy after a normal end: everything is cleaned up already.
    if (error === null && this.#ended) {
      callback(error);
      return;
    }
    const reason = error ?? new AbortedError('the blob stream was destroyed');
    this.#controller.abort(reason);
    this.#gate.release();
    this.#news.wake();
    this.#rest?.destroy();
    const settled = this.#gate.pump ?? this.#cleanUp(reason);
    settled.then(
      () => callback(error),
      () => callback(error),
    );
  }

  #settle(verdict: { error?: unknown }): void {
    this.#verdict = verdict;
    this.#news.wake();
  }

  /** Waits for more bytes on disk, the download's verdict or a stop. */
  async #sleep(): Promise<void> {
    await this.#news.wait(this.#controller.signal);
    this.#throwIfStopped();
  }

  #throwIfStopped(): void {
    if (this.#controller.signal.aborted) throw this.#controller.signal.reason;
  }

  async #run(): Promise<void> {
    let failure: unknown;
    try {
      await this.#follow();
    } catch (error) {
      failure = error;
    }
    await this.#cleanUp(failure);
    if (failure === undefined) {
      this.#ended = true;
      this.push(null);
    } else if (!this.destroyed) this.destroy(failure as Error);
  }

  async #cleanUp(error: unknown): Promise<void> {
    this.#unwatch();
    this.#job.signal?.removeEventListener('abort', this.#onCallerAbort);
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close().catch(() => {});
    if (error === undefined) this.#commit.then(this.#resolveCommitted, this.#rejectCommitted);
    else this.#rejectCommitted(error);
  }

  async #follow(): Promise<void> {
    const { size } = this.#job.descriptor;
    this.#handle = await this.#openFile();
    while (this.#position < size) {
      this.#throwIfStopped();
      if (this.#verdict?.error !== undefined) return this.#takeOver(this.#verdict.error);
      const committed = this.#verdict !== undefined;
      if (this.#handle === undefined) {
        // Neither path existed when we looked: the download had committed in between (or failed).
        if (committed) this.#handle = await this.#openFile();
        if (this.#handle === undefined) {
          if (committed)
            throw new OciError(ErrorCode.Io, `blob ${this.#job.descriptor.digest} vanished after its commit`);
          await this.#sleep();
        }
        continue;
      }
      const onDisk = committed ? size : this.#leader.bytesOnDisk;
      const available = onDisk - this.#position;
      if (available <= 0 || (available < FOLLOW_MIN_READ_BYTES && onDisk < size && !this.#leader.settling)) {
        await this.#sleep();
        continue;
      }
      const buffer = Buffer.allocUnsafe(Math.min(FOLLOW_CHUNK_BYTES, available));
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.#handle.read(buffer, 0, buffer.length, this.#position));
      } catch (error) {
        throw fsError(error, `reading blob ${this.#job.descriptor.digest} as it downloads`);
      }
      if (bytesRead === 0) {
        throw new OciError(ErrorCode.Io, `blob ${this.#job.descriptor.digest} shrank while being read`);
      }
      this.#position += bytesRead;
      await this.#deliver(buffer.subarray(0, bytesRead));
    }
    // Every byte is out; the stream ends only once the download has verified and committed them
    // (or only verified them: `endWhenVerified`).
    while (this.#verdict === undefined && !(this.#job.endWhenVerified && this.#leader.verified)) {
      await this.#sleep();
    }
    if (this.#verdict?.error !== undefined) return this.#takeOver(this.#verdict.error);
  }

  /** The `.part`, or the committed blob if the download renamed it meanwhile; undefined if neither. */
  async #openFile(): Promise<FileHandle | undefined> {
    for (const path of [this.#job.partPath, this.#job.blobPath]) {
      try {
        return await open(path, 'r');
      } catch (error) {
        if (!isErrno(error, 'ENOENT')) throw fsError(error, `opening blob ${this.#job.descriptor.digest}`);
      }
    }
    return undefined;
  }

  async #takeOver(error: unknown): Promise<void> {
    if (isOciError(error) && FINAL_FAILURES.includes(error.code)) throw error;
    this.#throwIfStopped();
    const rest = await this.#job.takeOver(this.#controller.signal);
    this.#rest = rest;
    if (this.#controller.signal.aborted) {
      rest.destroy();
      this.#throwIfStopped();
    }
    let skip = this.#position;
    for await (const received of rest) {
      let chunk = received as Buffer;
      if (skip > 0) {
        const dropped = Math.min(skip, chunk.length);
        skip -= dropped;
        chunk = chunk.subarray(dropped);
        if (chunk.length === 0) continue;
      }
      this.#position += chunk.length;
      await this.#deliver(chunk);
    }
    this.#commit = rest.committed;
    if (!this.#job.endWhenVerified) await rest.committed;
  }

  /** Pushes a chunk; waits while the consumer is full. */
  async #deliver(chunk: Buffer): Promise<void> {
    if (this.push(chunk)) return;
    await this.#gate.wait(this.#controller.signal);
    this.#throwIfStopped();
  }
}
