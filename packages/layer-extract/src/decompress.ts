import { PassThrough, pipeline, Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { ErrorCode, OciError } from '@ocipull/core';
import { ZstdFrames, zstdFrameKind } from './zstd-frames.ts';

/** The compression of a layer stream. */
export type LayerCompression = 'gzip' | 'zstd' | 'none';

/** Output chunk size of the decompressors: big chunks mean fewer callbacks per megabyte. */
const DECOMPRESS_CHUNK = 256 * 1024;

/** The compression a media type declares, or undefined when it is not a layer media type we read. */
export function compressionOfMediaType(mediaType: string): LayerCompression | undefined {
  // OCI layer types (image-spec media-types.md), their non-distributable twins, Docker's rootfs.diff.
  if (/\.tar\+gzip$|\.tar\.gzip$/.test(mediaType)) return 'gzip';
  if (/\.tar\+zstd$|\.tar\.zstd$/.test(mediaType)) return 'zstd';
  if (/\.tar$/.test(mediaType)) return 'none';
  return undefined;
}

/** The compression the first bytes of a stream show (RFC 1952 gzip magic, RFC 8878 zstd frame magics). */
export function detectCompression(head: Uint8Array): LayerCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  // A zstd data frame, or a skippable frame (metadata ahead of the data frames).
  if (
    head.length >= 4 &&
    zstdFrameKind(Buffer.from(head.buffer, head.byteOffset, 4).readUInt32LE(0)) !== undefined
  )
    return 'zstd';
  return 'none';
}

/** The decompressed stream of a layer plus what was detected. */
export interface DecompressedLayer {
  stream: Readable;
  compression: LayerCompression;
  /** Set when the media type declares another compression than the bytes show. */
  warning?: string;
}

/**
 * Opens the uncompressed tar stream of a layer. The media type is checked but the magic bytes decide:
 * registries and tools mislabel layers (a `+gzip` type on a plain tar is common), and the diff_id is
 * defined over the uncompressed bytes either way.
 */
export async function decompressLayer(
  input: Readable,
  mediaType: string | undefined,
): Promise<DecompressedLayer> {
  let declared: LayerCompression | undefined;
  if (mediaType !== undefined) {
    declared = compressionOfMediaType(mediaType);
    if (declared === undefined) {
      input.destroy();
      throw new OciError(ErrorCode.UnsupportedMediaType, `not a tar layer media type: ${mediaType}`);
    }
  }
  const { head, ended } = await readHead(input, 4);
  const compression = detectCompression(head);
  const warning =
    declared !== undefined && declared !== compression
      ? `media type ${mediaType} declares ${declared} but the bytes are ${compression === 'none' ? 'an uncompressed tar' : compression}`
      : undefined;
  // A stream that already ended cannot take its bytes back: replay them from a fresh one.
  if (ended) input = Readable.from(head.length > 0 ? [head] : []);
  else if (head.length > 0) input.unshift(head);

  let decompressor: zlib.Gunzip | ZstdFrames | undefined;
  if (compression === 'gzip') decompressor = zlib.createGunzip({ chunkSize: DECOMPRESS_CHUNK });
  else if (compression === 'zstd') {
    if (typeof zlib.createZstdDecompress !== 'function') {
      input.destroy();
      throw new OciError(
        ErrorCode.UnsupportedMediaType,
        'zstd layers need Node.js 22.15 or newer (zlib.createZstdDecompress)',
      );
    }
    // Every frame, not just the first (zstd:chunked layers are many frames): see ZstdFrames.
    decompressor = new ZstdFrames({ chunkSize: DECOMPRESS_CHUNK });
  }
  if (decompressor === undefined) {
    const result: DecompressedLayer = { stream: input, compression };
    if (warning !== undefined) result.warning = warning;
    return result;
  }
  const output = new PassThrough({ highWaterMark: DECOMPRESS_CHUNK });
  pipeline(input, decompressor, output, (error) => {
    if (error)
      output.destroy(
        new OciError(ErrorCode.InvalidLayer, `cannot decompress ${compression} layer: ${error.message}`, {
          cause: error,
        }),
      );
  });
  const result: DecompressedLayer = { stream: output, compression };
  if (warning !== undefined) result.warning = warning;
  return result;
}

/** Reads at least `count` bytes (fewer at end of stream) without losing them: the caller unshifts them. */
async function readHead(input: Readable, count: number): Promise<{ head: Buffer; ended: boolean }> {
  const chunks: Buffer[] = [];
  // `read()` hands over everything buffered (a whole 1 MiB read, or a small layer entirely): one
  // chunk is given back as it is, not copied.
  const joined = () => (chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
  let length = 0;
  while (length < count) {
    const chunk = input.read() as Buffer | null;
    if (chunk !== null) {
      const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      chunks.push(buffer);
      length += buffer.length;
      continue;
    }
    // A stream that failed is no empty layer: its error is the answer.
    if (input.errored) throw input.errored;
    if (input.readableEnded || input.destroyed) return { head: joined(), ended: true };
    const ended = await new Promise<boolean>((resolve, reject) => {
      const cleanup = () => {
        input.off('readable', onReadable);
        input.off('end', onEnd);
        input.off('error', onError);
        input.off('close', onEnd);
      };
      const onReadable = () => {
        cleanup();
        resolve(false);
      };
      const onEnd = () => {
        cleanup();
        resolve(true);
      };
      const onError = (error: Error) => {
        cleanup();
        reject(error);
      };
      input.once('readable', onReadable);
      input.once('end', onEnd);
      input.once('error', onError);
      input.once('close', onEnd);
    });
    if (ended && input.readableLength === 0) return { head: joined(), ended: true };
  }
  return { head: joined(), ended: false };
}
