import {
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  isIndexMediaType,
  isManifestMediaType,
  MediaType,
} from '@ocipull/core';
import { isDigest } from '@ocipull/digest';
import { InvalidManifestError } from './errors.ts';

/** Largest manifest read before parsing: 4 MiB, the limit distribution and containerd enforce. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * The `Accept` list for manifests: OCI index and manifest, Docker manifest list and v2 schema 2.
 * Schema 1 is left out on purpose; a registry that sends it anyway is refused after the fact.
 */
export const MANIFEST_ACCEPT: readonly string[] = [
  MediaType.OciIndex,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.DockerManifest,
];

/** A parsed manifest or index with the media type it was served as. */
export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; manifest: ImageIndex };

/** Strips parameters (`; charset=utf-8`) and case from a `Content-Type`. */
export function baseMediaType(contentType: string | undefined): string | undefined {
  if (!contentType) return undefined;
  const base = contentType.split(';', 1)[0]!.trim().toLowerCase();
  return base.length === 0 ? undefined : base;
}

/**
 * Parses manifest bytes and checks their shape: schema 2, descriptors with valid digests and sizes.
 * The media type comes from the document, else the `Content-Type`, else the shape. Schema 1 is refused
 * with `ERR_INVALID_MANIFEST` naming it.
 */
export function parseManifest(bytes: Uint8Array, contentType?: string): ParsedManifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    throw new InvalidManifestError(
      `manifest of ${bytes.byteLength} bytes exceeds the ${MAX_MANIFEST_BYTES} byte cap`,
    );
  }
  const header = baseMediaType(contentType);
  if (header === MediaType.DockerSchema1 || header === MediaType.DockerSchema1Signed) {
    throw schema1();
  }
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new InvalidManifestError('manifest is not valid UTF-8 JSON', error);
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new InvalidManifestError('manifest is not a JSON object');
  }
  const record = document as Record<string, unknown>;
  if (record.schemaVersion === 1) throw schema1();
  if (record.schemaVersion !== 2) {
    throw new InvalidManifestError(
      `unsupported manifest schemaVersion ${JSON.stringify(record.schemaVersion)}`,
    );
  }
  const declared = typeof record.mediaType === 'string' ? record.mediaType : undefined;
  let mediaType = declared ?? header;
  if (!isIndexMediaType(mediaType) && !isManifestMediaType(mediaType)) {
    // Some registries answer `application/json`; the OCI spec lets mediaType be omitted.
    if (Array.isArray(record.manifests)) mediaType = MediaType.OciIndex;
    else if (record.config !== undefined) mediaType = MediaType.OciManifest;
    else
      throw new InvalidManifestError(`unsupported manifest media type ${JSON.stringify(mediaType ?? null)}`);
  }
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(record.manifests)) throw new InvalidManifestError('index has no manifests array');
    record.manifests.forEach((entry, position) => {
      checkDescriptor(entry, `manifests[${position}]`);
    });
    return { kind: 'index', mediaType: mediaType!, manifest: document as ImageIndex };
  }
  checkDescriptor(record.config, 'config');
  if (!Array.isArray(record.layers)) throw new InvalidManifestError('manifest has no layers array');
  record.layers.forEach((entry, position) => {
    checkDescriptor(entry, `layers[${position}]`);
  });
  return { kind: 'manifest', mediaType: mediaType!, manifest: document as ImageManifest };
}

function checkDescriptor(value: unknown, where: string): asserts value is Descriptor {
  if (typeof value !== 'object' || value === null)
    throw new InvalidManifestError(`${where} is not a descriptor`);
  const descriptor = value as Record<string, unknown>;
  if (!isDigest(descriptor.digest)) {
    throw new InvalidManifestError(`${where} has an invalid or unsupported digest`);
  }
  if (!Number.isSafeInteger(descriptor.size) || (descriptor.size as number) < 0) {
    throw new InvalidManifestError(`${where} has an invalid size`);
  }
  if (descriptor.mediaType !== undefined && typeof descriptor.mediaType !== 'string') {
    throw new InvalidManifestError(`${where} has an invalid mediaType`);
  }
  if (
    descriptor.urls !== undefined &&
    (!Array.isArray(descriptor.urls) || !descriptor.urls.every((url) => typeof url === 'string'))
  ) {
    throw new InvalidManifestError(`${where} has invalid urls (an array of strings is required)`);
  }
}

function schema1(): InvalidManifestError {
  return new InvalidManifestError(
    'Docker image manifest schema 1 is not supported (deprecated since 2017); push the image again with a current tool',
  );
}
