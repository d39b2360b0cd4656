import { readFile } from 'node:fs/promises';
import { buildImage } from '../../fixtures/layout.ts';
import { file } from '../../fixtures/tree.ts';

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

/**
 * Builds a one-layer OCI image (a gzip layer holding `payload` as `/data.bin`) into the layout `dir`,
 * tagged `tag`, with the fixture builder, and returns the bytes the registry tests compare against.
 */
export async function writeMinimalLayout(
  dir: string,
  options: { tag?: string; payload?: Buffer } = {},
): Promise<MinimalLayout> {
  const tag = options.tag ?? 'latest';
  const payload = options.payload ?? Buffer.from('hello from the harness registry\n');
  const image = await buildImage({ layers: [{ entries: [file('data.bin', payload)] }] }, { dir, tag });
  const built = image.manifests[0]!;
  const layer = built.layers[0]!;
  return {
    dir: image.dir,
    tag,
    manifestDigest: image.digest,
    manifest: await readFile(image.path),
    configDigest: built.config.descriptor.digest,
    layerDigest: layer.descriptor.digest,
    layer: await readFile(layer.path),
  };
}
