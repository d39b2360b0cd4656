import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Descriptor } from '@ocipull/core';
import { blobPath, buildImage, type ImageSpec, randomImage, systemTreeImage } from '@ocipull/test-harness';

/** The benchmark images, by name. */
export type ImageName = 'debian' | 'five' | 'forty' | 'big' | 'huge';

/** The tag every benchmark layout uses. */
export const BENCH_TAG = 'bench';

/** Bumped when the image specs change meaning, so stale cached layouts are not reused. */
const SPEC_VERSION = 1;

interface ImagePlan {
  description: string;
  /** What the cache key is made of (everything that decides the bytes). */
  params: Record<string, unknown>;
  spec: () => ImageSpec;
}

const MiB = 1024 * 1024;

function plan(name: ImageName, quick: boolean): ImagePlan {
  switch (name) {
    case 'debian': {
      const maxEntries = quick ? 2000 : 6600;
      const maxBytes = quick ? 30_000_000 : 120_000_000;
      return {
        description: `Debian-sized single gzip layer (copy of /usr, ≤${maxEntries} entries, ≤${maxBytes / 1e6} MB)`,
        params: { root: '/usr', maxEntries, maxBytes },
        spec: () => systemTreeImage({ root: '/usr', maxEntries, maxBytes, compression: 'gzip' }),
      };
    }
    case 'five': {
      const bytesPerLayer = quick ? 2 * MiB : Math.round((57 * 1e6) / 5);
      return {
        description: `5 gzip layers of ${(bytesPerLayer / 1e6).toFixed(1)} MB random files`,
        params: { seed: 5, layers: 5, bytesPerLayer, filesPerLayer: 20 },
        spec: () => randomImage({ seed: 5, layers: 5, bytesPerLayer, filesPerLayer: 20 }),
      };
    }
    case 'forty': {
      const bytesPerLayer = quick ? 64 * 1024 : 256 * 1024;
      return {
        description: `40 small gzip layers of ${bytesPerLayer / 1024} KiB`,
        params: { seed: 40, layers: 40, bytesPerLayer, filesPerLayer: 4 },
        spec: () => randomImage({ seed: 40, layers: 40, bytesPerLayer, filesPerLayer: 4 }),
      };
    }
    case 'big': {
      const bytesPerLayer = quick ? 64 * MiB : 400 * MiB;
      return {
        description: `one ${bytesPerLayer / MiB} MiB gzip layer of random files`,
        params: { seed: 400, layers: 1, bytesPerLayer, filesPerLayer: 8 },
        spec: () => randomImage({ seed: 400, layers: 1, bytesPerLayer, filesPerLayer: 8 }),
      };
    }
    case 'huge': {
      const bytesPerLayer = 1024 * MiB;
      return {
        description: 'one 1 GiB gzip layer of random files (extraction RSS)',
        params: { seed: 1024, layers: 1, bytesPerLayer, filesPerLayer: 16 },
        spec: () => randomImage({ seed: 1024, layers: 1, bytesPerLayer, filesPerLayer: 16 }),
      };
    }
  }
}

/** One layer of a benchmark image. */
export interface BenchLayer {
  descriptor: Descriptor;
  diffId: string;
  uncompressedSize: number;
  /** The blob file in the layout. */
  path: string;
}

/** A built benchmark image (an OCI layout on disk, cached between runs). */
export interface BenchImage {
  name: ImageName;
  description: string;
  /** The layout directory. */
  dir: string;
  tag: string;
  /** `<dir>:<tag>`, for skopeo's `oci:` transport and `umoci --image`. */
  layoutRef: string;
  manifestDigest: string;
  layers: BenchLayer[];
  /** Sum of the compressed layer sizes. */
  compressedBytes: number;
  /** Sum of the uncompressed layer sizes. */
  uncompressedBytes: number;
  /** Seconds the build took (0 when it came from the cache). */
  buildSeconds: number;
}

interface StoredMeta {
  manifestDigest: string;
  layers: Array<{ descriptor: Descriptor; diffId: string; uncompressedSize: number }>;
}

/** The cache key of an image spec. */
export function imageKey(name: ImageName, quick: boolean): string {
  const { params } = plan(name, quick);
  const hash = createHash('sha256')
    .update(JSON.stringify({ name, params, v: SPEC_VERSION }))
    .digest('hex');
  return `${name}-${hash.slice(0, 16)}`;
}

/**
 * Returns the image, building it into `<cacheRoot>/<key>` first unless an earlier run did. A build
 * goes to a temporary sibling and is renamed into place, so an interrupted build is never reused.
 */
export async function ensureImage(name: ImageName, quick: boolean, cacheRoot: string): Promise<BenchImage> {
  const imagePlan = plan(name, quick);
  const key = imageKey(name, quick);
  const dir = join(cacheRoot, key);
  const metaFile = join(dir, 'bench-image.json');
  let buildSeconds = 0;
  if (!existsSync(metaFile)) {
    await mkdir(cacheRoot, { recursive: true });
    const temp = `${dir}.tmp-${process.pid}`;
    await rm(temp, { recursive: true, force: true });
    const start = performance.now();
    const built = await buildImage(imagePlan.spec(), { dir: temp, tag: BENCH_TAG });
    const manifest = built.manifests[0];
    if (!manifest) throw new Error(`buildImage gave no manifest for ${name}`);
    const meta: StoredMeta = {
      manifestDigest: built.digest,
      layers: manifest.layers.map((layer) => ({
        descriptor: layer.descriptor,
        diffId: layer.diffId,
        uncompressedSize: layer.uncompressedSize,
      })),
    };
    await writeFile(join(temp, 'bench-image.json'), `${JSON.stringify(meta, null, 2)}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(temp, dir);
    buildSeconds = (performance.now() - start) / 1000;
  }
  const meta = JSON.parse(await readFile(metaFile, 'utf8')) as StoredMeta;
  const layers = meta.layers.map((layer) => ({ ...layer, path: blobPath(dir, layer.descriptor.digest) }));
  return {
    name,
    description: imagePlan.description,
    dir,
    tag: BENCH_TAG,
    layoutRef: `${dir}:${BENCH_TAG}`,
    manifestDigest: meta.manifestDigest,
    layers,
    compressedBytes: layers.reduce((sum, layer) => sum + layer.descriptor.size, 0),
    uncompressedBytes: layers.reduce((sum, layer) => sum + layer.uncompressedSize, 0),
    buildSeconds,
  };
}
