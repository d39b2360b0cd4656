import { constants } from 'node:fs';
import { access, link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Digest } from '@ocipull/core';
import { MediaType } from '@ocipull/core';
import { digestAlgorithm, digestEncoded } from '@ocipull/digest';
import { uniqueSuffix, writeFileAtomic } from './atomic-file.ts';
import { fsError, isErrno } from './fs-errors.ts';

/** The `oci-layout` file content (image-layout.md). */
export const OCI_LAYOUT_CONTENT = '{"imageLayoutVersion":"1.0.0"}';

/** Where everything lives under a cache root. */
export class CacheLayout {
  readonly root: string;
  readonly blobs: string;
  readonly ingest: string;
  readonly layers: string;
  /** Layer trees being built: same filesystem as `layers/`, so commit is a rename. */
  readonly layerTemps: string;
  readonly locks: string;
  readonly leases: string;
  readonly quarantine: string;
  readonly indexJson: string;
  readonly ociLayout: string;

  constructor(root: string) {
    this.root = root;
    this.blobs = join(root, 'blobs');
    this.ingest = join(root, 'ingest');
    this.layers = join(root, 'layers');
    this.layerTemps = join(root, 'layers', '.tmp');
    this.locks = join(root, 'locks');
    this.leases = join(root, 'locks', 'leases');
    this.quarantine = join(root, 'quarantine');
    this.indexJson = join(root, 'index.json');
    this.ociLayout = join(root, 'oci-layout');
  }

  /** `blobs/<algorithm>/<encoded>` (image-layout.md "Blobs"). */
  blobPath(digest: Digest): string {
    return join(this.blobs, digestAlgorithm(digest), digestEncoded(digest));
  }

  blobDirectory(digest: Digest): string {
    return join(this.blobs, digestAlgorithm(digest));
  }

  /** The partial download of a blob. */
  partPath(digest: Digest): string {
    return join(this.ingest, `${digestEncoded(digest)}.part`);
  }

  /** The sidecar that says what a `.part` is (digest, declared size, media type). */
  sidecarPath(digest: Digest): string {
    return join(this.ingest, `${digestEncoded(digest)}.json`);
  }

  /** `layers/<algorithm>/<encoded>`: the extracted tree of the layer whose uncompressed digest it is. */
  layerPath(diffId: Digest): string {
    return join(this.layers, digestAlgorithm(diffId), digestEncoded(diffId));
  }

  layerDirectory(diffId: Digest): string {
    return join(this.layers, digestAlgorithm(diffId));
  }

  blobLockName(digest: Digest): string {
    return `blob-${digestAlgorithm(digest)}-${digestEncoded(digest)}`;
  }

  layerLockName(diffId: Digest): string {
    return `layer-${digestAlgorithm(diffId)}-${digestEncoded(diffId)}`;
  }
}

/**
 * Creates `path` with `content` unless it exists, without ever exposing a partial file and without a
 * window where two processes overwrite each other: write a temp file, then `link()` it into place
 * (fails with EEXIST when another process won), then drop the temp name. A file that already exists
 * is left alone without any temp file, so a process killed while opening an initialised cache leaves
 * nothing behind. Not fsynced (two fsyncs and a directory fsync less on every new cache): after a power
 * loss such a file may be there but empty or zero-filled, which `isLost` recognises.
 */
async function createFileOnce(path: string, content: string, tempDirectory: string): Promise<void> {
  if (await exists(path)) return;
  const temp = join(tempDirectory, `.init.${uniqueSuffix()}.tmp`);
  try {
    await writeFile(temp, content, { flag: 'wx' });
    try {
      await link(temp, path);
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
    }
  } finally {
    await unlink(temp).catch(() => {});
  }
}

/** Content of an init file whose data a power loss took: nothing, or only zero bytes. */
export function isLost(content: string | Uint8Array): boolean {
  // A string is the file read as UTF-8, where a zero byte is U+0000: no copy back to bytes needed.
  if (typeof content === 'string') return /^\0*$/.test(content);
  return content.every((byte) => byte === 0);
}

/**
 * Creates `oci-layout` once, or rewrites it if a power loss emptied it (its content is fixed, so a
 * concurrent rewrite by another process writes the same bytes): one read on an existing cache. A lost
 * `index.json` is not rewritten here: `readIndex` reads it as empty and the next `putImage` replaces
 * it under the index lock.
 */
async function ensureOciLayout(layout: CacheLayout): Promise<void> {
  let content: Buffer | undefined;
  try {
    content = await readFile(layout.ociLayout);
  } catch (error) {
    if (!isErrno(error, 'ENOENT')) throw error;
  }
  if (content === undefined) await createFileOnce(layout.ociLayout, OCI_LAYOUT_CONTENT, layout.ingest);
  else if (isLost(content)) await writeFileAtomic(layout.ociLayout, OCI_LAYOUT_CONTENT);
}

/**
 * Creates the layout idempotently and race-free across processes: `mkdir -p` for the directories and
 * create-once for `oci-layout` and an empty `index.json`; an existing `index.json` is never touched.
 * Resolves to whether this process can write the cache. A layout it cannot write (a read-only mount,
 * another user's cache, one written by skopeo without our directories) is opened for reading: false.
 * A directory that is no layout yet and cannot be made one is an error.
 */
export async function initLayout(layout: CacheLayout): Promise<{ writable: boolean }> {
  try {
    for (const directory of [
      join(layout.blobs, 'sha256'),
      layout.ingest,
      layout.layerTemps,
      join(layout.layers, 'sha256'),
      layout.leases,
    ]) {
      await makeDirectories(directory);
    }
    await ensureOciLayout(layout);
    await createFileOnce(
      layout.indexJson,
      `${JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }, null, 2)}\n`,
      layout.ingest,
    );
  } catch (error) {
    if (isReadOnlyError(error) && (await exists(layout.ociLayout).catch(() => false))) {
      return { writable: false };
    }
    throw fsError(error, `creating the cache layout in ${layout.root}`);
  }
  // Everything exists already (mkdir of an existing directory fails with EEXIST even on a read-only
  // mount): whether a lease can be made there says whether this process may write.
  try {
    await access(layout.leases, constants.W_OK);
  } catch (error) {
    if (isReadOnlyError(error)) return { writable: false };
    throw fsError(error, `checking the cache layout in ${layout.root}`);
  }
  return { writable: true };
}

/**
 * Whether `error` (or the filesystem error it wraps) is what writing where this process may only read
 * fails with: a read-only mount, permissions, an immutable file.
 */
function isReadOnlyError(error: unknown): boolean {
  const codes = ['EROFS', 'EACCES', 'EPERM'];
  return isErrno(error, ...codes) || isErrno((error as { cause?: unknown } | null)?.cause, ...codes);
}

/**
 * `mkdir -p`, one component at a time. Node's `mkdir(path, { recursive: true })` spins forever (100 %
 * CPU, deaf to SIGTERM) where mkdir fails with ENOENT under a parent that exists, as anywhere under
 * /proc does; here that ENOENT is the error.
 */
async function makeDirectories(path: string): Promise<void> {
  try {
    await mkdir(path);
    return;
  } catch (error) {
    if (isErrno(error, 'EEXIST')) return;
    if (!isErrno(error, 'ENOENT') || dirname(path) === path) throw error;
  }
  await makeDirectories(dirname(path));
  try {
    await mkdir(path);
  } catch (error) {
    if (!isErrno(error, 'EEXIST')) throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
}
