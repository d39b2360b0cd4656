import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type DistributionRegistry, startDistribution } from '../distribution/start-distribution.ts';
import { skopeo } from '../distribution/tools.ts';
import { type BuiltImage, buildCorpus, fixtureNames, fixtures } from '../fixtures/index.ts';
import { type HarnessRegistry, startRegistry } from './start-registry.ts';
import { fetchRaw } from './testing/http-client.ts';

// Fixtures whose stored blobs deliberately do not match their descriptors cannot be copied by any
// verifying client; every other corpus fixture must round-trip through both registries unchanged.
const names = fixtureNames.filter((name) => !fixtures[name].tags.includes('damaged-layout'));

let workDir: string;
let corpus: Record<string, BuiltImage>;
let harness: HarnessRegistry;
let distribution: DistributionRegistry;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ocipull-corpus-roundtrip-'));
  corpus = await buildCorpus({ dir: join(workDir, 'corpus'), names });
  harness = await startRegistry({ repositories: { corpus: join(workDir, 'corpus') } });
  distribution = await startDistribution({ mode: 'http' });
}, 120_000);

afterAll(async () => {
  await harness?.close();
  await distribution?.close();
  await rm(workDir, { recursive: true, force: true });
});

/** Copies an image (all platforms, as-is) into a `dir:` directory and returns its top manifest's digest. */
async function copyOut(reference: string): Promise<string> {
  const target = await mkdtemp(join(workDir, 'out-'));
  try {
    await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${reference}`, `dir:${target}`]);
    const manifest = await readFile(join(target, 'manifest.json'));
    return `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  } finally {
    await rm(target, { recursive: true, force: true });
  }
}

it('the corpus has fixtures to copy', () => {
  expect(names.length).toBeGreaterThan(10);
});

/** skopeo refuses zstd layers in Docker schema 2 manifests (Docker defines no zstd media type). */
function skopeoReads(image: BuiltImage): boolean {
  return !image.manifests.some(
    (manifest) =>
      manifest.descriptor.mediaType.startsWith('application/vnd.docker.') &&
      manifest.layers.some((layer) => layer.descriptor.mediaType.endsWith('+zstd')),
  );
}

/** The digest of the manifest a registry serves for a tag, fetched with a plain client. */
async function servedDigest(url: string, mediaType: string): Promise<string> {
  const response = await fetchRaw(url, { headers: { Accept: mediaType } });
  expect(response.status).toBe(200);
  expect(response.headers['content-type']).toBe(mediaType);
  return `sha256:${createHash('sha256').update(response.body).digest('hex')}`;
}

it.each(names)('%s round-trips through the harness registry and docker-registry', async (name) => {
  const image = corpus[name]!;
  await distribution.push(image.dir, name, 'corpus');
  if (skopeoReads(image)) {
    expect(await copyOut(`${harness.host}/corpus:${name}`)).toBe(image.digest);
    expect(await copyOut(`${distribution.host}/corpus:${name}`)).toBe(image.digest);
  } else {
    const mediaType = image.descriptor.mediaType;
    expect(await servedDigest(`${harness.url}/v2/corpus/manifests/${name}`, mediaType)).toBe(image.digest);
    expect(await servedDigest(`${distribution.url}/v2/corpus/manifests/${name}`, mediaType)).toBe(
      image.digest,
    );
  }
});
