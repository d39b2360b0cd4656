import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

/** What `writeMinimalLayout` wrote: enough for tests to ask for every blob by digest. */
export interface MinimalLayout {
  dir: string;
  tag: string;
  manifestDigest: string;
  manifest: Buffer;
  configDigest: string;
  layerDigest: string;
  layer: Buffer;
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function tarOf(files: Record<string, Buffer>): Promise<Buffer> {
  const archive = pack();
  const chunks: Buffer[] = [];
  archive.on('data', (chunk: unknown) => {
    chunks.push(chunk as Buffer);
  });
  const ended = new Promise<void>((resolve, reject) => {
    archive.on('end', () => resolve());
    archive.on('error', reject);
  });
  for (const [name, content] of Object.entries(files)) {
    archive.entry({ name, size: content.length, mode: 0o644, mtime: new Date(0) }, content);
  }
  archive.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/**
 * Writes a one-layer OCI image layout (gzip layer holding `payload` as `/data.bin`) into `dir`, tagged
 * `tag`. A stand-in used by the registry's own tests; fixtures for other packages come from `buildImage`.
 */
export async function writeMinimalLayout(
  dir: string,
  options: { tag?: string; payload?: Buffer } = {},
): Promise<MinimalLayout> {
  const tag = options.tag ?? 'latest';
  const payload = options.payload ?? Buffer.from('hello from the harness registry\n');
  const tar = await tarOf({ 'data.bin': payload });
  const layer = gzipSync(tar, { level: 1 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
      config: {},
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: sha256(layer),
          size: layer.length,
        },
      ],
    }),
  );
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const blob of [layer, config, manifest]) {
    await writeFile(join(dir, 'blobs', 'sha256', sha256(blob).slice('sha256:'.length)), blob);
  }
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha256(manifest),
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return {
    dir,
    tag,
    manifestDigest: sha256(manifest),
    manifest,
    configDigest: sha256(config),
    layerDigest: sha256(layer),
    layer,
  };
}
