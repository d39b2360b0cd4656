import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skopeo } from '../distribution/tools.ts';
import { type BuiltImage, buildImage, DEFAULT_PLATFORMS, file, symlink } from '../fixtures/index.ts';
import { startRegistry } from './start-registry.ts';

let workDir: string;
let fixtures: Record<string, BuiltImage>;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ocipull-registry-e2e-'));
  const layers = [
    { entries: [file('etc/hostname', 'harness\n'), symlink('etc/alias', 'hostname')] },
    { entries: [file('data.bin', { size: 256 * 1024, seed: 3 })], compression: 'zstd' as const },
    { entries: [file('plain', 'uncompressed\n')], compression: 'none' as const },
  ];
  fixtures = {
    oci: await buildImage({ layers }, { dir: join(workDir, 'oci'), tag: 'v1' }),
    docker: await buildImage(
      { format: 'docker', layers: [{ entries: [file('hello', 'docker\n')] }] },
      { dir: join(workDir, 'docker'), tag: 'v1' },
    ),
    index: await buildImage(
      {
        images: DEFAULT_PLATFORMS.map((platform) => ({
          platform,
          layers: [{ entries: [file('arch', platform.architecture)] }],
        })),
        attestations: true,
      },
      { dir: join(workDir, 'index'), tag: 'v1' },
    ),
    list: await buildImage(
      {
        format: 'docker',
        images: DEFAULT_PLATFORMS.map((platform) => ({
          platform,
          layers: [{ entries: [file('arch', platform.architecture)] }],
        })),
      },
      { dir: join(workDir, 'list'), tag: 'v1' },
    ),
  };
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Copies an image (all platforms, as-is) into a `dir:` directory and returns its top manifest's digest. */
async function copyOut(reference: string, args: string[] = []): Promise<string> {
  const target = await mkdtemp(join(workDir, 'out-'));
  await skopeo([
    'copy',
    '--all',
    '--src-tls-verify=false',
    ...args,
    `docker://${reference}`,
    `dir:${target}`,
  ]);
  const manifest = await readFile(join(target, 'manifest.json'));
  return `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
}

describe('skopeo against the harness registry', () => {
  it('copies every fixture out with the same digests', async () => {
    const registry = await startRegistry({
      repositories: Object.fromEntries(
        Object.entries(fixtures).map(([name, image]) => [`fixtures/${name}`, image.dir]),
      ),
    });
    try {
      for (const [name, image] of Object.entries(fixtures)) {
        expect(await copyOut(`${registry.host}/fixtures/${name}:v1`), name).toBe(image.digest);
      }
    } finally {
      await registry.close();
    }
  });

  it('pushes into it (uploads, manifest PUT) and copies the pushed image back', async () => {
    const registry = await startRegistry();
    try {
      for (const name of ['oci', 'index']) {
        const image = fixtures[name]!;
        await skopeo([
          'copy',
          '--all',
          '--preserve-digests',
          '--dest-tls-verify=false',
          `oci:${image.dir}:v1`,
          `docker://${registry.host}/pushed/${name}:v1`,
        ]);
        expect(await copyOut(`${registry.host}/pushed/${name}:v1`)).toBe(image.digest);
      }
      const methods = new Set(
        registry.requests.filter((record) => record.kind === 'upload').map((record) => record.method),
      );
      expect(methods.has('POST')).toBe(true);
      expect(methods.has('PUT')).toBe(true);
      expect(registry.repositories()).toEqual(['pushed/index', 'pushed/oci']);
    } finally {
      await registry.close();
    }
  });

  it('bearer auth: skopeo pulls with --src-creds and is refused without when anonymous is off', async () => {
    const registry = await startRegistry({
      repositories: { private: fixtures.oci!.dir },
      auth: { type: 'bearer', users: { alice: 'wonderland' }, anonymous: false, expiresIn: 60 },
    });
    try {
      expect(await copyOut(`${registry.host}/private:v1`, ['--src-creds', 'alice:wonderland'])).toBe(
        fixtures.oci!.digest,
      );
      await expect(copyOut(`${registry.host}/private:v1`)).rejects.toThrow(/unauthorized|authentication/i);
      await expect(copyOut(`${registry.host}/private:v1`, ['--src-creds', 'alice:nope'])).rejects.toThrow();
      expect(registry.requests.some((record) => record.kind === 'token' && record.user === 'alice')).toBe(
        true,
      );
    } finally {
      await registry.close();
    }
  });

  it('bearer auth: skopeo pushes with --dest-creds, and an anonymous push is refused', async () => {
    const registry = await startRegistry({ auth: { type: 'bearer', users: { alice: 'wonderland' } } });
    try {
      const push = (extra: string[]) =>
        skopeo([
          'copy',
          '--preserve-digests',
          '--dest-tls-verify=false',
          ...extra,
          `oci:${fixtures.oci!.dir}:v1`,
          `docker://${registry.host}/team/app:v1`,
        ]);
      await expect(push([])).rejects.toThrow(/unauthorized|authentication|denied/i);
      await push(['--dest-creds', 'alice:wonderland']);
      expect(await copyOut(`${registry.host}/team/app:v1`)).toBe(fixtures.oci!.digest);
    } finally {
      await registry.close();
    }
  });

  it('basic auth: skopeo pulls with --src-creds only', async () => {
    const registry = await startRegistry({
      repositories: { private: fixtures.docker!.dir },
      auth: { type: 'basic', users: { bob: 'builder' } },
    });
    try {
      expect(await copyOut(`${registry.host}/private:v1`, ['--src-creds', 'bob:builder'])).toBe(
        fixtures.docker!.digest,
      );
      await expect(copyOut(`${registry.host}/private:v1`)).rejects.toThrow(/unauthorized|authentication/i);
    } finally {
      await registry.close();
    }
  });

  it('skopeo follows blob redirects to the second origin and never sends it Authorization', async () => {
    const registry = await startRegistry({
      repositories: { app: fixtures.oci!.dir },
      auth: { type: 'bearer', users: { alice: 'wonderland' } },
    });
    try {
      registry.faults.add({ match: { kind: 'blob', method: 'GET' }, action: { type: 'redirect' } });
      expect(await copyOut(`${registry.host}/app:v1`, ['--src-creds', 'alice:wonderland'])).toBe(
        fixtures.oci!.digest,
      );
      const origin = registry.requests.filter((record) => record.kind === 'origin');
      expect(origin.length).toBeGreaterThanOrEqual(3);
      expect(origin.every((record) => record.status === 200)).toBe(true);
      // Go's client drops Authorization when a redirect leaves the original host.
      expect(origin.some((record) => record.authorization)).toBe(false);
    } finally {
      await registry.close();
    }
  });
});
