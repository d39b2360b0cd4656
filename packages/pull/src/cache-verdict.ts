import type { BlobCache } from '@ocipull/blob-cache';
import { type Descriptor, ErrorCode, isOciError, OciError } from '@ocipull/core';
import { digestOfFile } from '@ocipull/digest';

/**
 * A layer read from the cache that could not be extracted (undecompressable, or the wrong diff_id) may
 * have rotted on disk since it was committed and verified: then the user hears that
 * (`ERR_CACHE_CORRUPT`, whose hint is `ocipull verify`), not what the rot did to the tar. Otherwise,
 * and for every other error, `error` as it is.
 */
export async function corruptCacheOr(
  cache: Pick<BlobCache, 'blobPath'>,
  layer: Descriptor,
  error: unknown,
): Promise<unknown> {
  if (!isOciError(error, ErrorCode.InvalidLayer) && !isOciError(error, ErrorCode.DiffIdMismatch))
    return error;
  let digest: string;
  try {
    ({ digest } = await digestOfFile(cache.blobPath(layer.digest)));
  } catch {
    return error;
  }
  if (digest === layer.digest) return error;
  return new OciError(ErrorCode.CacheCorrupt, `cached blob ${layer.digest} no longer matches its digest`, {
    cause: error,
  });
}
