import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Descriptor } from '@ocipull/core';
import { digestOfFile } from '@ocipull/digest';
import { buildImage, file, type HarnessRegistry, Prng, startRegistry } from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCache } from './index.ts';
import { spawnIngestChild } from './testing/fixtures/children.ts';

const MiB = 1024 * 1024;

let workDir: string;
let registry: HarnessRegistry;
let layer: Descriptor;
const name = 'e2e/big';

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'blob-cache-e2e-'));
  // An uncompressed layer of random bytes: ~40 MiB on the wire, cheap to build.
  const image = await buildImage(
    { layers: [{ entries: [file('data.bin', { size: 40 * MiB, seed: 42 })], compression: 'none' }] },
    { dir: join(workDir, 'layout'), tag: 'v1' },
  );
  layer = image.manifests[0]!.layers[0]!.descriptor;
  registry = await startRegistry({ repositories: { [name]: image.dir } });
}, 120_000);

afterAll(async () => {
  await registry?.close();
  await rm(workDir, { recursive: true, force: true });
});

function blobGets(since = 0) {
  return registry.requests.filter(
    (record) =>
      record.id > since &&
      record.kind === 'blob' &&
      record.method === 'GET' &&
      record.digest === layer.digest,
  );
}

function rangeStart(range: string | undefined): number {
  if (range === undefined) return 0;
  const match = /^bytes=(\d+)-$/.exec(range);
  if (!match) throw new Error(`unexpected Range ${range}`);
  return Number(match[1]);
}

describe('many processes, one download', () => {
  it('10 processes ingesting the same blob at once download it exactly once and all get it', async () => {
    const root = join(workDir, 'cache-storm');
    await openCache({ root });
    // Throttled so the downloads would overlap: the other nine must wait on the lock, not re-fetch.
    const throttle = registry.faults.add({
      match: { kind: 'blob', digest: layer.digest },
      action: { type: 'throttle', bytesPerSecond: 40 * MiB },
    });
    const lastId = registry.requests.at(-1)?.id ?? 0;
    try {
      const children = Array.from({ length: 10 }, () =>
        spawnIngestChild({ root, registryUrl: registry.url, name, descriptor: layer }),
      );
      const outcomes = await Promise.all(children.map((child) => child.done));
      for (const outcome of outcomes) {
        expect(outcome.code, outcome.stderr).toBe(0);
        expect(outcome.lines.at(-1)).toMatchObject({ ok: true });
      }
      expect(outcomes.filter((outcome) => outcome.lines.at(-1)!.cached === false)).toHaveLength(1);
      const gets = blobGets(lastId);
      const withBody = gets.filter((record) => record.bytesSent > 0);
      expect(withBody).toHaveLength(1);
      expect(withBody[0]!.bytesSent).toBe(layer.size);
      expect(gets.reduce((sum, record) => sum + record.bytesSent, 0)).toBe(layer.size);
    } finally {
      throttle.remove();
    }
    const blob = join(root, 'blobs', 'sha256', layer.digest.slice(7));
    expect(await digestOfFile(blob)).toEqual({ digest: layer.digest, size: layer.size });
    expect(await readdir(join(root, 'ingest'))).toEqual([]);
  }, 120_000);
});

describe('SIGKILL at random points', () => {
  it('every next run resumes where the bytes stopped; the last one completes and verifies', async () => {
    const root = join(workDir, 'cache-kill');
    const cache = await openCache({ root });
    const partPath = cache.layout.partPath(layer.digest);
    // ~1.3 s for the whole blob, so a kill lands mid-stream.
    const throttle = registry.faults.add({
      match: { kind: 'blob', digest: layer.digest },
      action: { type: 'throttle', bytesPerSecond: 30 * MiB },
    });
    const prng = new Prng(20_261_128);
    const trials: Array<{ partBefore: number; ranges: number[]; sent: number; killedAt: string }> = [];
    try {
      for (let trial = 0; trial < 12; trial++) {
        if (await cache.has(layer)) break;
        const partBefore = (await stat(partPath).catch(() => undefined))?.size ?? 0;
        const lastId = registry.requests.at(-1)?.id ?? 0;
        const child = spawnIngestChild({
          root,
          registryUrl: registry.url,
          name,
          descriptor: layer,
          lockStaleMs: 2000,
        });
        let exited = false;
        void child.done.then(() => {
          exited = true;
        });
        let killedAt: string;
        if (trial % 3 === 2) {
          // A kill at a random instant: during start-up, the lock wait, the prefix replay or the download.
          const delay = prng.nextInt(3000);
          await sleep(delay);
          killedAt = `${delay} ms`;
        } else {
          // A kill once the registry has sent a random share of the remaining bytes.
          const target = partBefore + prng.nextInt(Math.floor((layer.size - partBefore) * 0.6) + 1);
          for (;;) {
            const reached = Math.max(
              0,
              ...blobGets(lastId).map((record) => rangeStart(record.range) + record.bytesSent),
            );
            if (reached >= target || exited) break;
            await sleep(5);
          }
          killedAt = `byte ${target}`;
        }
        child.process.kill('SIGKILL');
        const outcome = await child.done;
        expect(outcome.signal === 'SIGKILL' || outcome.code === 0, outcome.stderr).toBe(true);
        const gets = blobGets(lastId);
        trials.push({
          partBefore,
          ranges: gets.map((record) => rangeStart(record.range)),
          sent: gets.reduce((sum, record) => sum + record.bytesSent, 0),
          killedAt,
        });
        // Never re-downloads what the part already holds.
        for (const record of gets) expect(rangeStart(record.range)).toBe(partBefore);
        // The cache stays consistent: the blob is either absent or complete and verified.
        if (await cache.has(layer)) {
          expect((await digestOfFile(cache.blobPath(layer.digest))).digest).toBe(layer.digest);
        }
      }
      const partBefore = (await stat(partPath).catch(() => undefined))?.size ?? 0;
      const lastId = registry.requests.at(-1)?.id ?? 0;
      const final = await spawnIngestChild({
        root,
        registryUrl: registry.url,
        name,
        descriptor: layer,
        lockStaleMs: 2000,
      }).done;
      expect(final.code, final.stderr).toBe(0);
      expect(final.lines.at(-1)).toMatchObject({ ok: true });
      const gets = blobGets(lastId);
      if (!(await cache.has(layer))) expect.unreachable('the final run did not commit the blob');
      if (final.lines.at(-1)!.cached === false) {
        expect(final.lines.at(-1)!.resumedFrom).toBe(partBefore);
        expect(gets.map((record) => rangeStart(record.range))).toEqual([partBefore]);
        expect(gets[0]!.bytesSent).toBe(layer.size - partBefore);
      } else expect(gets).toEqual([]);
      expect(trials.filter((t) => t.partBefore > 0).length).toBeGreaterThan(3);
    } finally {
      throttle.remove();
    }
    expect(await digestOfFile(cache.blobPath(layer.digest))).toEqual({
      digest: layer.digest,
      size: layer.size,
    });
    // Figures for the report: bytes sent per run vs bytes the part gained.
    console.log(JSON.stringify({ size: layer.size, trials }));
    // The killed children's leases protect the blob until their locks go stale; then gc reclaims them.
    const collector = await openCache({ root, lockStaleMs: 2000 });
    await sleep(2500);
    const gc = await collector.gc();
    expect(gc.removedBlobs).toEqual([layer.digest]);
    expect(await readdir(collector.layout.leases)).toEqual([]);
    expect(await readdir(collector.layout.ingest)).toEqual([]);
  }, 200_000);
});
