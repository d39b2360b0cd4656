import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Descriptor, Digest, ImageIndex } from '@ocipull/core';
import { MediaType } from '@ocipull/core';
import { digestAlgorithm, digestEncoded, digestOfFile, isDigest } from '@ocipull/digest';

/** The annotation an OCI layout's index.json uses to name a tag (image-layout.md, annotations.md). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

/** Manifests larger than this are not parsed to learn their media type (distribution caps manifests at 4 MiB). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** A manifest found in a layout: its bytes, digest and the media type to serve it with. */
export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

/**
 * One repository of the harness registry, backed by an OCI image layout directory: blobs live in
 * `blobs/<algorithm>/<encoded>` and tags are the `org.opencontainers.image.ref.name` annotations of
 * `index.json`. Reads index.json on every lookup, so a test may rewrite the layout while serving.
 */
export class LayoutRepository {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Creates an empty layout (oci-layout + index.json) when the directory holds none yet. */
  async ensureLayout(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    const layoutFile = join(this.dir, 'oci-layout');
    if (!(await exists(layoutFile))) {
      await writeFile(layoutFile, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    }
    const indexFile = join(this.dir, 'index.json');
    if (!(await exists(indexFile))) {
      await writeIndex(indexFile, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] });
    }
  }

  /** The path of a blob in the layout (whether or not it exists). */
  blobPath(digest: Digest): string {
    return join(this.dir, 'blobs', digestAlgorithm(digest), digestEncoded(digest));
  }

  /** The size of a blob, or undefined when the layout lacks it. */
  async blobSize(digest: Digest): Promise<number | undefined> {
    try {
      const info = await stat(this.blobPath(digest));
      return info.isFile() ? info.size : undefined;
    } catch {
      return undefined;
    }
  }

  /** The index.json of the layout (an empty index when missing). */
  async index(): Promise<ImageIndex> {
    try {
      return JSON.parse(await readFile(join(this.dir, 'index.json'), 'utf8')) as ImageIndex;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, manifests: [] };
      throw error;
    }
  }

  /** Tag names, sorted, as `/tags/list` reports them. */
  async tags(): Promise<string[]> {
    const index = await this.index();
    const names = new Set<string>();
    for (const descriptor of index.manifests ?? []) {
      const name = descriptor.annotations?.[REF_NAME_ANNOTATION];
      if (name !== undefined) names.add(name);
    }
    return [...names].sort();
  }

  /** Resolves a tag or digest reference to a manifest, or undefined when unknown. */
  async manifest(reference: string): Promise<StoredManifest | undefined> {
    let descriptor: Descriptor | undefined;
    if (isDigest(reference)) {
      const index = await this.index();
      descriptor = index.manifests?.find((entry: Descriptor) => entry.digest === reference);
      return this.readManifest(reference, descriptor?.mediaType);
    }
    const index = await this.index();
    // The last entry wins when a tag appears twice, as a re-push appends.
    descriptor = index.manifests?.findLast(
      (entry: Descriptor) => entry.annotations?.[REF_NAME_ANNOTATION] === reference,
    );
    if (descriptor === undefined) return undefined;
    return this.readManifest(descriptor.digest, descriptor.mediaType);
  }

  private async readManifest(
    digest: Digest,
    hintedType: string | undefined,
  ): Promise<StoredManifest | undefined> {
    const size = await this.blobSize(digest);
    if (size === undefined || size > MAX_MANIFEST_BYTES) return undefined;
    const bytes = await readFile(this.blobPath(digest));
    let parsed: { mediaType?: unknown; config?: unknown; manifests?: unknown; schemaVersion?: unknown };
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch {
      return undefined;
    }
    if (typeof parsed !== 'object' || parsed === null || parsed.schemaVersion === undefined) return undefined;
    const mediaType =
      typeof parsed.mediaType === 'string'
        ? parsed.mediaType
        : (hintedType ?? (Array.isArray(parsed.manifests) ? MediaType.OciIndex : MediaType.OciManifest));
    return { digest, mediaType, bytes };
  }

  /** Stores manifest bytes as a blob and, for a tag reference, points the tag at it. */
  async putManifest(reference: string, digest: Digest, mediaType: string, bytes: Buffer): Promise<void> {
    await this.ensureLayout();
    await writeAtomically(this.blobPath(digest), bytes);
    if (isDigest(reference)) return;
    const indexFile = join(this.dir, 'index.json');
    const index = await this.index();
    const manifests = (index.manifests ?? []).filter(
      (entry: Descriptor) => entry.annotations?.[REF_NAME_ANNOTATION] !== reference,
    );
    manifests.push({
      mediaType,
      digest,
      size: bytes.length,
      annotations: { [REF_NAME_ANNOTATION]: reference },
    });
    await writeIndex(indexFile, { ...index, manifests });
  }

  /** Moves a finished upload file into place as the blob `digest`, after checking its digest. */
  async commitUpload(file: string, digest: Digest): Promise<boolean> {
    const actual = await digestOfFile(file, { algorithm: digestAlgorithm(digest) });
    if (actual.digest !== digest) return false;
    await this.ensureLayout();
    const target = this.blobPath(digest);
    await mkdir(join(target, '..'), { recursive: true });
    await rename(file, target);
    return true;
  }

  /** Copies a blob from another repository (a cross-repository mount). */
  async mountFrom(source: LayoutRepository, digest: Digest): Promise<boolean> {
    if ((await source.blobSize(digest)) === undefined) return false;
    if ((await this.blobSize(digest)) !== undefined) return true;
    await this.ensureLayout();
    const target = this.blobPath(digest);
    await mkdir(join(target, '..'), { recursive: true });
    const temporary = `${target}.${randomUUID()}.tmp`;
    await pipeline(createReadStream(source.blobPath(digest)), createWriteStream(temporary));
    await rename(temporary, target);
    return true;
  }
}

/** True when `name` is a directory holding an OCI layout (an `oci-layout` file). */
export async function isLayoutDirectory(dir: string): Promise<boolean> {
  return exists(join(dir, 'oci-layout'));
}

/** Lists the entries of a directory, empty when it is missing. */
export async function listDirectories(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  } catch {
    return [];
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeIndex(file: string, index: ImageIndex): Promise<void> {
  await writeAtomically(file, Buffer.from(JSON.stringify(index)));
}

async function writeAtomically(file: string, bytes: Buffer): Promise<void> {
  await mkdir(join(file, '..'), { recursive: true });
  const temporary = `${file}.${randomUUID()}.tmp`;
  try {
    await writeFile(temporary, bytes);
    await rename(temporary, file);
  } finally {
    await rm(temporary, { force: true });
  }
}
