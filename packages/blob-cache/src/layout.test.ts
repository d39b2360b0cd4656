import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@ocipull/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCache } from './index.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ocipull-layout-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('creating the cache layout', () => {
  it('makes every missing parent of the root', async () => {
    const cache = await openCache({ root: join(work, 'a', 'b', 'c') });
    await cache.close();
    expect((await readdir(join(work, 'a', 'b', 'c'))).sort()).toEqual(
      ['blobs', 'index.json', 'ingest', 'layers', 'locks', 'oci-layout'].sort(),
    );
  });

  it('a root where no directory can be made fails with ERR_IO (Node’s recursive mkdir spins there)', async () => {
    await expect(openCache({ root: '/proc/ocipull-layout-test/cache' })).rejects.toMatchObject({
      code: ErrorCode.Io,
    });
    await writeFile(join(work, 'file'), 'x');
    await expect(openCache({ root: join(work, 'file', 'cache') })).rejects.toMatchObject({
      code: ErrorCode.Io,
    });
  }, 10_000);
});
