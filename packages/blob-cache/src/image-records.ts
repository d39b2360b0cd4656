import { readFile } from 'node:fs/promises';
import { type Descriptor, ErrorCode, type ImageIndex, MediaType, OciError } from '@ocipull/core';
import { isDigest } from '@ocipull/digest';
import { writeFileAtomic } from './atomic-file.ts';
import { fsError } from './fs-errors.ts';
import { isLost } from './layout.ts';

/** The annotation that names an image in an OCI layout's `index.json` (annotations.md). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

/** When an image was last recorded or used (RFC 3339); the LRU order of `gc({ maxBlobBytes })`. */
export const LAST_USED_ANNOTATION = 'io.ocipull.last-used';

/** One image recorded in the cache. */
export interface ImageRecord {
  /** The full reference as given to `putImage`, e.g. `docker.io/library/alpine:3.20`. */
  ref: string;
  /** The manifest or index the reference resolved to. */
  descriptor: Descriptor;
}

/** Reads and checks `index.json`; a missing file, or one a power loss emptied, reads as an empty index. */
export async function readIndex(path: string): Promise<ImageIndex> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return emptyIndex();
    throw fsError(error, `reading ${path}`);
  }
  // Emptied by a power loss before the layout's first (unsynced) index.json reached the disk.
  if (isLost(text)) return emptyIndex();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new OciError(ErrorCode.CacheCorrupt, `${path} is not valid JSON`, { cause: error });
  }
  const index = parsed as Partial<ImageIndex> | null;
  if (index === null || typeof index !== 'object' || !Array.isArray(index.manifests)) {
    throw new OciError(ErrorCode.CacheCorrupt, `${path} is not an OCI image index`);
  }
  return index as ImageIndex;
}

/** Writes `index.json` atomically (temp file, fsync, rename, fsync directory). */
export async function writeIndex(path: string, index: ImageIndex): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(index, null, 2)}\n`);
}

function emptyIndex(): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
}

/** The named records of an index (entries without a ref name are not images of ours). */
export function recordsOf(index: ImageIndex): ImageRecord[] {
  const records: ImageRecord[] = [];
  for (const descriptor of index.manifests) {
    const ref = descriptor.annotations?.[REF_NAME_ANNOTATION];
    if (ref === undefined) continue;
    records.push({ ref, descriptor });
  }
  return records;
}

/** Returns `index` with `ref` pointing at `descriptor` (replacing an earlier record of `ref`). */
export function withImage(
  index: ImageIndex,
  ref: string,
  descriptor: Descriptor,
  now: Date = new Date(),
): ImageIndex {
  const manifests = index.manifests.filter((entry) => entry.annotations?.[REF_NAME_ANNOTATION] !== ref);
  manifests.push({
    ...descriptor,
    annotations: {
      ...descriptor.annotations,
      [REF_NAME_ANNOTATION]: ref,
      [LAST_USED_ANNOTATION]: now.toISOString(),
    },
  });
  return { ...index, manifests };
}

/** Returns `index` with `ref`'s last-used time set to `now` (unchanged when `ref` is not recorded). */
export function withImageUsed(index: ImageIndex, ref: string, now: Date = new Date()): ImageIndex {
  const manifests = index.manifests.map((entry) =>
    entry.annotations?.[REF_NAME_ANNOTATION] === ref
      ? { ...entry, annotations: { ...entry.annotations, [LAST_USED_ANNOTATION]: now.toISOString() } }
      : entry,
  );
  return { ...index, manifests };
}

/** Returns `index` without `ref`; `removed` says whether it was there. */
export function withoutImage(index: ImageIndex, ref: string): { index: ImageIndex; removed: boolean } {
  const manifests = index.manifests.filter((entry) => entry.annotations?.[REF_NAME_ANNOTATION] !== ref);
  return { index: { ...index, manifests }, removed: manifests.length !== index.manifests.length };
}

/** Checks a reference string given to the image-record methods. */
export function checkRef(ref: unknown): string {
  if (typeof ref !== 'string' || ref === '' || ref.length > 4096 || /[\s\0]/.test(ref) || isDigest(ref)) {
    throw new OciError(
      ErrorCode.InvalidReference,
      `invalid image reference for the cache: ${JSON.stringify(String(ref).slice(0, 200))}`,
    );
  }
  return ref;
}
