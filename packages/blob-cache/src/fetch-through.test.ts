import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Descriptor, type Digest, ErrorCode, isOciError } from '@ocipull/core';
import { digestOf } from '@ocipull/digest';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import type { FetchThroughStream } from './fetch-through.ts';
import { FollowStream } from './follow-stream.ts';
import { type BlobCache, openCache, withCache } from './index.ts';
import { MemorySource } from './testing/fixtures/memory-source.ts';

const roots: string[] = [];
afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

async function freshCache(options: Parameters<typeof openCache>[0] = {}): Promise<BlobCache> {
  const root = await mkdtemp(join(tmpdir(), 'blob-cache-'));
  roots.push(root);
  return openCache({ root, retryDelayMs: 5, ...options });
}

function pseudoRandom(size: number, seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(size);
  let state = seed >>> 0 || 1;
  for (let index = 0; index < size; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

async function blob(size: number, seed = size): Promise<{ bytes: Buffer; descriptor: Descriptor }> {
  const bytes = pseudoRandom(size, seed);
  return {
    bytes,
    descriptor: { mediaType: 'application/octet-stream', digest: await digestOf(bytes), size },
  };
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  try {
    await promise;
    expect.unreachable(`expected ${code}`);
  } catch (error) {
    expect(isOciError(error) ? error.code : error).toBe(code);
  }
}

describe.each([
  ['fetch', false],
  ['fetchInto', true],
])('fetchThrough from a source read with %s', (_kind, fetchInto) => {
  let source: MemorySource;
  beforeEach(() => {
    source = new MemorySource({ fetchInto });
  });

  it('streams a missing blob whole, then commits it read-only and leaves no part behind', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(1_000_003);
    source.add(bytes, descriptor.digest);
    const progress: number[] = [];
    const stream = await cache.fetchThrough(descriptor, source, {
      onProgress: (event) => progress.push(event.bytes),
    });
    expect(stream.cached).toBe(false);
    expect(await cache.has(descriptor)).toBe(false);
    expect((await buffer(stream)).equals(bytes)).toBe(true);
    await stream.committed;
    expect(await cache.has(descriptor)).toBe(true);
    expect((await stat(cache.blobPath(descriptor.digest))).mode & 0o777).toBe(0o444);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
    expect(progress.at(-1)).toBe(bytes.length);

    const again = await cache.fetchThrough(descriptor, source);
    expect(again.cached).toBe(true);
    expect((await buffer(again)).equals(bytes)).toBe(true);
    expect(source.fetches).toHaveLength(1);
  });

  it("passes the caller's priority to the source: fetchThrough, ingest, and a resumed fetch", async () => {
    const cache = await freshCache();
    const first = await blob(200_000);
    const second = await blob(300_000);
    source.add(first.bytes, first.descriptor.digest);
    source.add(second.bytes, second.descriptor.digest);
    await buffer(await cache.fetchThrough(first.descriptor, source, { priority: 3 }));
    source.faults.push({ type: 'cut', afterBytes: 100_000 });
    await cache.ingest(second.descriptor, source, { priority: -1 });
    expect(source.fetches).toEqual([
      { digest: first.descriptor.digest, offset: 0, priority: 3 },
      { digest: second.descriptor.digest, offset: 0, priority: -1 },
      { digest: second.descriptor.digest, offset: 100_000, priority: -1 },
    ]);
  });

  it('resumes from an existing part: replays the prefix from disk and fetches only the rest', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(700_000);
    source.add(bytes, descriptor.digest);
    await writeFile(cache.layout.partPath(descriptor.digest), bytes.subarray(0, 300_001));
    await writeFile(
      cache.layout.sidecarPath(descriptor.digest),
      JSON.stringify({ digest: descriptor.digest, size: descriptor.size }),
    );
    const progress: number[] = [];
    const stream = await cache.fetchThrough(descriptor, source, {
      onProgress: (event) => progress.push(event.bytes),
    });
    expect(stream.resumedFrom).toBe(300_001);
    expect((await buffer(stream)).equals(bytes)).toBe(true);
    expect(source.fetches).toEqual([{ digest: descriptor.digest, offset: 300_001 }]);
    expect(source.bytesRead).toBe(700_000 - 300_001);
    expect(progress[0]).toBe(300_001);
    expect(progress.at(-1)).toBe(700_000);
    expect(await cache.has(descriptor)).toBe(true);
  });

  it('discards a part longer than the declared size, or one without a matching sidecar', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(100_000);
    source.add(bytes, descriptor.digest);
    await writeFile(cache.layout.partPath(descriptor.digest), Buffer.concat([bytes, Buffer.alloc(10)]));
    await writeFile(
      cache.layout.sidecarPath(descriptor.digest),
      JSON.stringify({ digest: descriptor.digest, size: descriptor.size }),
    );
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: false, resumedFrom: 0 });

    const other = await blob(50_000, 9);
    source.add(other.bytes, other.descriptor.digest);
    await writeFile(cache.layout.partPath(other.descriptor.digest), other.bytes.subarray(0, 10));
    await writeFile(
      cache.layout.sidecarPath(other.descriptor.digest),
      JSON.stringify({ digest: other.descriptor.digest, size: 12345 }),
    );
    expect(await cache.ingest(other.descriptor, source)).toEqual({ cached: false, resumedFrom: 0 });
    expect(source.fetches.map((fetch) => fetch.offset)).toEqual([0, 0]);
  });

  it('a part of wrong content at full length fails the stream with ERR_DIGEST_MISMATCH and is deleted; ingest retries from 0', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(200_000);
    source.add(bytes, descriptor.digest);
    const wrong = Buffer.from(bytes);
    wrong[5] = wrong[5]! ^ 1;
    const sidecar = JSON.stringify({ digest: descriptor.digest, size: descriptor.size });
    await writeFile(cache.layout.partPath(descriptor.digest), wrong);
    await writeFile(cache.layout.sidecarPath(descriptor.digest), sidecar);
    const stream = await cache.fetchThrough(descriptor, source);
    await expectCode(buffer(stream), ErrorCode.DigestMismatch);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
    expect(await cache.has(descriptor)).toBe(false);

    await writeFile(cache.layout.partPath(descriptor.digest), wrong);
    await writeFile(cache.layout.sidecarPath(descriptor.digest), sidecar);
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: false, resumedFrom: 0 });
    expect(await cache.has(descriptor)).toBe(true);
  });

  it('crash leftovers: a complete part is committed without fetching; a stray sidecar is harmless', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(250_000);
    source.add(bytes, descriptor.digest);
    // Killed after the last byte was written, before the rename.
    await writeFile(cache.layout.partPath(descriptor.digest), bytes);
    await writeFile(
      cache.layout.sidecarPath(descriptor.digest),
      JSON.stringify({ digest: descriptor.digest, size: descriptor.size }),
    );
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: false, resumedFrom: 250_000 });
    expect(source.fetches).toEqual([]);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
    // Killed after the rename, before the sidecar was removed: the blob is simply cached.
    await writeFile(cache.layout.sidecarPath(descriptor.digest), '{');
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: true, resumedFrom: 0 });
    expect((await cache.gc()).removedPartials).toBe(1);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
  });

  it('corrupt bytes from the source: ERR_DIGEST_MISMATCH, nothing committed, part deleted', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(300_000);
    source.add(bytes, descriptor.digest);
    source.faults.push({ type: 'corrupt', offset: 123_456 });
    await expectCode(cache.ingest(descriptor, source), ErrorCode.DigestMismatch);
    expect(await cache.has(descriptor)).toBe(false);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
  });

  it('endWhenVerified: ends once the digest matched, before the commit, which follows in the background', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(1_000_003);
    source.add(bytes, descriptor.digest);
    const stream = await cache.fetchThrough(descriptor, source, { endWhenVerified: true });
    let committedAtEnd: boolean | undefined;
    stream.on('end', () => {
      committedAtEnd = existsSync(cache.blobPath(descriptor.digest));
    });
    expect((await buffer(stream)).equals(bytes)).toBe(true);
    expect(committedAtEnd).toBe(false);
    await stream.committed;
    expect(await cache.has(descriptor)).toBe(true);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
  });

  it('endWhenVerified: bad bytes still fail the stream; a commit failing after the end only rejects committed', async () => {
    const cache = await freshCache();
    const bad = await blob(300_000, 7);
    source.add(bad.bytes, bad.descriptor.digest);
    source.faults.push({ type: 'corrupt', offset: 123_456 });
    const corrupt = await cache.fetchThrough(bad.descriptor, source, { endWhenVerified: true });
    await expectCode(buffer(corrupt), ErrorCode.DigestMismatch);
    await expectCode(corrupt.committed, ErrorCode.DigestMismatch);

    const { bytes, descriptor } = await blob(300_000, 8);
    source.add(bytes, descriptor.digest);
    const stream = await cache.fetchThrough(descriptor, source, { endWhenVerified: true });
    // The blobs directory vanishes as the stream ends: the rename that commits the blob must fail.
    stream.on('end', () => rmSync(dirname(cache.blobPath(descriptor.digest)), { recursive: true }));
    expect((await buffer(stream)).equals(bytes)).toBe(true);
    await expect(stream.committed).rejects.toThrow(/committing blob/);
    expect(existsSync(cache.blobPath(descriptor.digest))).toBe(false);
  });

  it('more bytes than declared: ERR_SIZE_MISMATCH at once, part deleted', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(100_000);
    source.add(bytes, descriptor.digest);
    source.faults.push({ type: 'overflow', extra: 5 });
    await expectCode(cache.ingest(descriptor, source), ErrorCode.SizeMismatch);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
  });

  it('a cut or short body is resumed from the new offset; the consumer sees one continuous stream', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(1_000_000);
    source.add(bytes, descriptor.digest);
    source.faults.push({ type: 'cut', afterBytes: 200_000 }, { type: 'short', afterBytes: 300_000 });
    const stream = await cache.fetchThrough(descriptor, source);
    expect((await buffer(stream)).equals(bytes)).toBe(true);
    // A cut loses what was buffered but unread; each re-fetch starts exactly where the part ends.
    const [first, second, third] = source.fetches.map((fetch) => fetch.offset);
    expect(first).toBe(0);
    expect(second).toBeGreaterThan(0);
    expect(second).toBeLessThanOrEqual(200_000);
    expect(third).toBe(second! + 300_000);
    expect(await cache.has(descriptor)).toBe(true);
  });

  it('gives up after maxAttempts failures without progress and keeps the part for the next run', async () => {
    const cache = await freshCache({ maxAttempts: 3 });
    const { bytes, descriptor } = await blob(400_000);
    source.add(bytes, descriptor.digest);
    source.faults.push(
      { type: 'cut', afterBytes: 100_000 },
      { type: 'cut', afterBytes: 0 },
      { type: 'cut', afterBytes: 0 },
      { type: 'cut', afterBytes: 0 },
    );
    await expectCode(cache.ingest(descriptor, source), ErrorCode.BlobInterrupted);
    const kept = (await stat(cache.layout.partPath(descriptor.digest))).size;
    expect(kept).toBeGreaterThan(0);
    // The first failure made progress; then three in a row without a byte (maxAttempts) end it.
    expect(source.fetches.map((fetch) => fetch.offset)).toEqual([0, kept, kept, kept]);
    source.faults.length = 0;
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: false, resumedFrom: kept });
  });

  it('a non-retryable source failure is not retried', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(10_000);
    source.add(bytes, descriptor.digest);
    source.faults.push({ type: 'fail' });
    await expectCode(cache.ingest(descriptor, source), ErrorCode.Denied);
    expect(source.fetches).toHaveLength(1);
    // The lock was released: the next attempt proceeds.
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: false, resumedFrom: 0 });
  });

  it('propagates backpressure: a paused consumer stops the source', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(8 * 1024 * 1024);
    source.add(bytes, descriptor.digest);
    const stream = await cache.fetchThrough(descriptor, source);
    stream.pause();
    stream.read(0);
    await sleep(200);
    // Only buffers' worth (stream high-water marks, a few MiB at most) may be read ahead.
    expect(source.bytesRead).toBeLessThan(3 * 1024 * 1024);
    expect((await buffer(stream)).equals(bytes)).toBe(true);
  });

  it('an abort keeps the part, releases the lock, and the next call resumes', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(2_000_000);
    source.add(bytes, descriptor.digest);
    const controller = new AbortController();
    const stream = await cache.fetchThrough(descriptor, source, { signal: controller.signal });
    let seen = 0;
    const consumed = (async () => {
      for await (const chunk of stream) {
        seen += (chunk as Buffer).length;
        if (seen >= 500_000) controller.abort(new Error('stop'));
      }
    })();
    await expectCode(consumed, ErrorCode.Aborted);
    await expectCode(stream.committed, ErrorCode.Aborted);
    const kept = (await stat(cache.layout.partPath(descriptor.digest))).size;
    expect(kept).toBeGreaterThanOrEqual(500_000);
    const resumed = await cache.fetchThrough(descriptor, source);
    expect(resumed.resumedFrom).toBe(kept);
    expect((await buffer(resumed)).equals(bytes)).toBe(true);
  });

  it('a consumer that destroys the stream releases the lock', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(2_000_000);
    source.add(bytes, descriptor.digest);
    const stream = await cache.fetchThrough(descriptor, source);
    for await (const _chunk of stream) break;
    await stream.committed.catch(() => {});
    expect(await cache.ingest(descriptor, source)).toMatchObject({ cached: false });
    expect(await cache.has(descriptor)).toBe(true);
  });

  it('a piped consumer that stops early still lets the blob commit', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(4_000_000);
    source.add(bytes, descriptor.digest);
    const stream = await cache.fetchThrough(descriptor, source);
    let seen = 0;
    const early = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, callback) {
        seen += chunk.length;
        callback();
        // Done early, like an extractor at the tar end marker.
        if (seen > 100_000) this.destroy();
      },
    });
    stream.pipe(early);
    await stream.committed;
    expect(seen).toBeLessThan(bytes.length);
    expect(await cache.has(descriptor)).toBe(true);
  });

  it('concurrent callers in one process download once and all get the whole blob', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(1_500_000);
    source.add(bytes, descriptor.digest);
    const results = await Promise.all(
      Array.from({ length: 6 }, async () => buffer(await cache.fetchThrough(descriptor, source))),
    );
    for (const result of results) expect(result.equals(bytes)).toBe(true);
    expect(source.fetches).toHaveLength(1);
  });

  it('handles an empty blob without fetching', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(0);
    source.add(bytes, descriptor.digest);
    expect(await cache.ingest(descriptor, source)).toEqual({ cached: false, resumedFrom: 0 });
    expect(await cache.has(descriptor)).toBe(true);
    expect(source.fetches).toHaveLength(0);
  });

  it('rejects a descriptor whose size contradicts the cached blob', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(1000);
    source.add(bytes, descriptor.digest);
    await cache.ingest(descriptor, source);
    expect(await cache.has({ ...descriptor, size: 999 })).toBe(false);
    await expectCode(cache.fetchThrough({ ...descriptor, size: 999 }, source), ErrorCode.SizeMismatch);
    await expectCode(
      cache.fetch({ ...descriptor, digest: `sha256:${'1'.repeat(64)}` as Digest }),
      ErrorCode.BlobUnknown,
    );
  });
});

describe('a second reader while the blob downloads in this process', () => {
  /** A leader that has handed its consumer `upTo` bytes (and holds the rest back while paused). */
  async function leaderAt(cache: BlobCache, source: MemorySource, descriptor: Descriptor, upTo: number) {
    const leader = await cache.fetchThrough(descriptor, source);
    const chunks: Buffer[] = [];
    let seen = 0;
    await new Promise<void>((resolve, reject) => {
      leader.on('error', reject);
      leader.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        seen += chunk.length;
        if (seen >= upTo) {
          leader.pause();
          resolve();
        }
      });
    });
    leader.removeAllListeners('data');
    /** Reads the rest of the leader's stream; until called the leader stays paused. */
    const finish = async () => {
      for await (const chunk of leader) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    };
    return { leader, finish };
  }

  it('follows the .part as it grows, without a second fetch, and ends only once the blob is committed', async () => {
    const cache = await freshCache();
    const source = new MemorySource({ fetchInto: true });
    const { bytes, descriptor } = await blob(3_000_000);
    source.add(bytes, descriptor.digest);
    const { finish } = await leaderAt(cache, source, descriptor, 500_000);
    const follower = await cache.fetchThrough(descriptor, source);
    expect(follower.cached).toBe(false);
    let committedAtEnd: boolean | undefined;
    follower.on('end', () => {
      committedAtEnd = existsSync(cache.blobPath(descriptor.digest));
    });
    const followed = buffer(follower);
    expect((await finish()).equals(bytes)).toBe(true);
    expect((await followed).equals(bytes)).toBe(true);
    await follower.committed;
    expect(committedAtEnd).toBe(true);
    expect(source.fetches).toEqual([{ digest: descriptor.digest, offset: 0 }]);
  });

  it('endWhenVerified: a follower ends once the download verified the bytes; committed waits for the commit', async () => {
    // A scripted download: its bytes are all in the .part and verified, its commit held until released.
    const dir = await mkdtemp(join(tmpdir(), 'blob-cache-follow-'));
    roots.push(dir);
    const { bytes, descriptor } = await blob(3_000_000);
    const partPath = join(dir, 'blob.part');
    await writeFile(partPath, bytes);
    let commit!: () => void;
    const committed = new Promise<void>((resolve) => {
      commit = resolve;
    });
    const watchers = new Set<() => void>();
    const leader = {
      resumedFrom: 0,
      committed,
      bytesOnDisk: bytes.length,
      settling: false,
      verified: false,
      watch(watcher: () => void) {
        watchers.add(watcher);
        return () => watchers.delete(watcher);
      },
    };
    const follow = (endWhenVerified: boolean) =>
      new FollowStream(leader as unknown as FetchThroughStream, {
        descriptor,
        partPath,
        blobPath: join(dir, 'blob'),
        takeOver: () => Promise.reject(new Error('no take-over expected')),
        endWhenVerified,
      });
    const early = follow(true);
    const late = follow(false);
    const lateRead = buffer(late);
    let lateEnded = false;
    lateRead.then(() => {
      lateEnded = true;
    });
    let earlyCommitted = false;
    early.committed.then(() => {
      earlyCommitted = true;
    });
    // Not verified yet: every byte is out, but the stream does not end.
    const earlyRead = buffer(early);
    await sleep(50);
    expect(early.readableEnded).toBe(false);
    leader.verified = true;
    for (const watcher of watchers) watcher();
    expect((await earlyRead).equals(bytes)).toBe(true);
    // Ended at verification; its `committed` and the default follower wait for the commit.
    await sleep(20);
    expect(earlyCommitted).toBe(false);
    expect(lateEnded).toBe(false);
    commit();
    await early.committed;
    expect((await lateRead).equals(bytes)).toBe(true);
  });

  it('reads along before the download is done: the follower is not held until the commit', async () => {
    const cache = await freshCache();
    const source = new MemorySource({ fetchInto: true });
    const { bytes, descriptor } = await blob(4_000_000);
    source.add(bytes, descriptor.digest);
    const { finish } = await leaderAt(cache, source, descriptor, 2_000_000);
    // The leader is paused at ~2 MB: what is on disk is readable now.
    const follower = await cache.fetchThrough(descriptor, source);
    let early = 0;
    await new Promise<void>((resolve) => {
      follower.on('data', (chunk: Buffer) => {
        early += chunk.length;
        if (early >= 1_000_000) {
          follower.pause();
          resolve();
        }
      });
    });
    expect(await cache.has(descriptor)).toBe(false);
    follower.removeAllListeners('data');
    const tail = buffer(follower);
    await finish();
    expect((await tail).length).toBe(bytes.length - early);
  });

  it('takes over when the download stops for its own reason, and skips what it already delivered', async () => {
    const cache = await freshCache();
    const source = new MemorySource({ fetchInto: true });
    const { bytes, descriptor } = await blob(3_000_000);
    source.add(bytes, descriptor.digest);
    const { leader } = await leaderAt(cache, source, descriptor, 1_000_000);
    const follower = await cache.fetchThrough(descriptor, source);
    const followed = buffer(follower);
    await sleep(50);
    leader.destroy();
    expect((await followed).equals(bytes)).toBe(true);
    await follower.committed;
    expect(await cache.has(descriptor)).toBe(true);
    const offsets = source.fetches.map((fetch) => fetch.offset);
    expect(offsets).toHaveLength(2);
    expect(offsets[0]).toBe(0);
    // The take-over resumed the .part where the stopped download left it.
    expect(offsets[1]).toBeGreaterThan(0);
  });

  it('fails with the download when its bytes prove wrong', async () => {
    const cache = await freshCache();
    const source = new MemorySource({ fetchInto: true });
    const { bytes, descriptor } = await blob(2_000_000);
    source.add(bytes, descriptor.digest);
    source.faults.push({ type: 'corrupt', offset: 1_500_000 });
    const { finish } = await leaderAt(cache, source, descriptor, 300_000);
    const follower = await cache.fetchThrough(descriptor, source);
    const followed = buffer(follower);
    await expectCode(finish(), ErrorCode.DigestMismatch);
    await expectCode(followed, ErrorCode.DigestMismatch);
    await expectCode(follower.committed, ErrorCode.DigestMismatch);
    expect(source.fetches).toHaveLength(1);
    expect(await cache.has(descriptor)).toBe(false);
  });

  it("a follower's abort leaves the download alone", async () => {
    const cache = await freshCache();
    const source = new MemorySource({ fetchInto: true });
    const { bytes, descriptor } = await blob(2_000_000);
    source.add(bytes, descriptor.digest);
    const { leader, finish } = await leaderAt(cache, source, descriptor, 300_000);
    const controller = new AbortController();
    const follower = await cache.fetchThrough(descriptor, source, { signal: controller.signal });
    const followed = buffer(follower);
    controller.abort(new Error('not wanted'));
    await expectCode(followed, ErrorCode.Aborted);
    expect((await finish()).equals(bytes)).toBe(true);
    await leader.committed;
    expect(await cache.has(descriptor)).toBe(true);
  });

  it('ingest waits for the running download instead of reading along, and stores the bytes of a reused-buffer source', async () => {
    const cache = await freshCache();
    const source = new MemorySource({ fetchInto: true });
    const { bytes, descriptor } = await blob(2_000_000);
    source.add(bytes, descriptor.digest);
    const { finish } = await leaderAt(cache, source, descriptor, 300_000);
    const ingested = cache.ingest(descriptor, source);
    await sleep(20);
    await finish();
    expect(await ingested).toEqual({ cached: true, resumedFrom: 0 });
    expect(source.fetches).toHaveLength(1);

    const other = await blob(1_500_000, 99);
    source.add(other.bytes, other.descriptor.digest);
    expect(await cache.ingest(other.descriptor, source)).toEqual({ cached: false, resumedFrom: 0 });
    expect((await readFile(cache.blobPath(other.descriptor.digest))).equals(other.bytes)).toBe(true);
  });
});

describe('BlobCache reads and writes', () => {
  it('fetch reads a committed blob from an offset', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(100_000);
    const source = new MemorySource();
    source.add(bytes, descriptor.digest);
    await cache.ingest(descriptor, source);
    expect(
      (await buffer(await cache.fetch(descriptor, { offset: 99_000 }))).equals(bytes.subarray(99_000)),
    ).toBe(true);
    expect((await buffer(await cache.open(descriptor))).equals(bytes)).toBe(true);
    expect(await cache.stat(descriptor.digest)).toEqual({ size: 100_000 });
  });

  it('writeBlob verifies and stores in-memory bytes; readBlob re-verifies', async () => {
    const cache = await freshCache();
    const manifest = Buffer.from('{"schemaVersion":2}');
    const written = await cache.writeBlob(manifest, {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
    });
    expect(written).toEqual({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: await digestOf(manifest),
      size: manifest.length,
    });
    expect((await cache.readBlob(written.digest)).equals(manifest)).toBe(true);
    expect((await stat(cache.blobPath(written.digest))).mode & 0o777).toBe(0o444);
    await expectCode(cache.writeBlob('other', { digest: written.digest }), ErrorCode.DigestMismatch);
    await expectCode(cache.writeBlob(manifest, { size: 3 }), ErrorCode.SizeMismatch);
    await rm(cache.blobPath(written.digest));
    await writeFile(cache.blobPath(written.digest), '{"schemaVersion":3}');
    await expectCode(cache.readBlob(written.digest), ErrorCode.CacheCorrupt);
    await expectCode(cache.readBlob(`sha256:${'2'.repeat(64)}`), ErrorCode.BlobUnknown);
    expect(await readdir(cache.layout.ingest)).toEqual([]);
  });

  it('remove deletes a blob; a reference untags instead', async () => {
    const cache = await freshCache();
    const written = await cache.writeBlob('abc');
    await cache.putImage('example.com/a:1', written);
    await cache.remove('example.com/a:1');
    expect(await cache.listImages()).toEqual([]);
    expect(await cache.has(written)).toBe(true);
    await cache.remove(written.digest);
    expect(await cache.has(written)).toBe(false);
    await cache.remove(written.digest);
  });

  it('withCache serves through the cache and honours offsets', async () => {
    const cache = await freshCache();
    const { bytes, descriptor } = await blob(300_000);
    const source = new MemorySource();
    source.add(bytes, descriptor.digest);
    const cached = withCache(source, cache);
    expect(
      (await buffer(await cached.fetch(descriptor, { offset: 1000 }))).equals(bytes.subarray(1000)),
    ).toBe(true);
    expect(await cache.has(descriptor)).toBe(true);
    expect((await buffer(await cached.fetch(descriptor, { offset: 5 }))).equals(bytes.subarray(5))).toBe(
      true,
    );
    expect((await buffer(await cached.fetch(descriptor))).equals(bytes)).toBe(true);
    expect(source.fetches).toHaveLength(1);
  });

  it('openCache creates the layout idempotently, also many at once', async () => {
    const root = await mkdtemp(join(tmpdir(), 'blob-cache-'));
    roots.push(root);
    await Promise.all(Array.from({ length: 8 }, () => openCache({ root })));
    await openCache({ root });
    expect((await readdir(root)).sort()).toEqual([
      'blobs',
      'index.json',
      'ingest',
      'layers',
      'locks',
      'oci-layout',
    ]);
    expect(await readFile(join(root, 'oci-layout'), 'utf8')).toBe('{"imageLayoutVersion":"1.0.0"}');
    expect(JSON.parse(await readFile(join(root, 'index.json'), 'utf8'))).toMatchObject({
      schemaVersion: 2,
      manifests: [],
    });
    expect(await readdir(join(root, 'ingest'))).toEqual([]);
  });
});
