import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createHasher } from '@ocipull/digest';

/**
 * Writes a one-layer OCI image layout into `dir` (which may exist), tagged `tag`, around a gzip
 * layer blob whose uncompressed digest is `diffId` — what `umoci unpack --image dir:tag` reads.
 */
export function writeOneLayerLayout(dir: string, blob: Buffer, diffId: string, tag: string): void {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (bytes: Buffer) => {
    const digest = createHasher().update(bytes).digest();
    writeFileSync(join(blobs, digest.slice('sha256:'.length)), bytes);
    return { digest, size: bytes.length };
  };
  const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...put(blob) };
  const config = put(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [diffId] },
        config: {},
      }),
    ),
  );
  const manifest = put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [layer],
      }),
    ),
  );
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}

/**
 * `umoci unpack` of a one-layer image around the uncompressed layer `tar` (gzipped here): the
 * rootfs it wrote. `layout` and `bundle` are paths to create (they must not exist).
 */
export function umociUnpackTar(tar: Buffer, layout: string, bundle: string): string {
  const diffId = createHasher().update(tar).digest();
  writeOneLayerLayout(layout, gzipSync(tar), diffId, 'unpack');
  execFileSync('umoci', ['unpack', '--image', `${layout}:unpack`, bundle], { stdio: 'pipe' });
  return join(bundle, 'rootfs');
}
