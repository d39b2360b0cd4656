import { createReadStream } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { drained } from '@ocipull/core';
import type { AppliedFaults } from './faults.ts';

/** Read size for blob files; small enough that cut/stall offsets and throttling stay precise. */
const CHUNK_BYTES = 64 * 1024;

/** Throttled bodies are sent in slices of this many milliseconds' worth of bytes. */
const THROTTLE_SLICE_MS = 50;

/** Where a body's bytes come from: a file (blobs) or a buffer (manifests). */
export type BodySource = { file: string } | { bytes: Buffer };

/** How sending a body ended. */
export type BodyOutcome = 'complete' | 'cut' | 'stalled' | 'aborted';

/** Parses one `Range: bytes=…` against a size: a range, `'unsatisfiable'`, or undefined to send it all. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  // One range only; multipart/byteranges answers are never needed by registry clients (RFC 9110 §14.2
  // lets a server ignore a Range it does not support and send 200).
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== '' && Number(last) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function writeFlushed(response: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve) => {
    response.write(chunk, () => resolve());
    response.once('close', () => resolve());
  });
}

async function* chunksOf(source: BodySource, start: number, end: number): AsyncGenerator<Buffer> {
  if (end < start) return;
  if ('bytes' in source) {
    for (let offset = start; offset <= end; offset += CHUNK_BYTES) {
      yield source.bytes.subarray(offset, Math.min(offset + CHUNK_BYTES, end + 1));
    }
    return;
  }
  const stream = createReadStream(source.file, { start, end, highWaterMark: CHUNK_BYTES });
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } finally {
    stream.destroy();
  }
}

/**
 * Sends bytes `start..end` (inclusive) of a source as the body of `response`, whose headers are set,
 * applying the body faults: corrupt a byte, throttle, cut the connection or stall after N bytes.
 * `onBytes` is told the running count so the request log stays current even while stalled.
 */
export async function sendBody(
  response: ServerResponse,
  source: BodySource,
  start: number,
  end: number,
  faults: AppliedFaults,
  onBytes: (sent: number) => void,
): Promise<BodyOutcome> {
  const stopAfter = faults.cut?.afterBytes ?? faults.stall?.afterBytes;
  let sent = 0;
  let offset = start;
  const began = Date.now();
  if (stopAfter !== undefined) response.flushHeaders();

  const stop = async (): Promise<BodyOutcome> => {
    if (faults.cut) {
      // end() flushes what was written, then closes: the client sees fewer bytes than Content-Length.
      const socket = response.socket;
      socket?.end();
      setTimeout(() => socket?.destroy(), 1000).unref();
      return 'cut';
    }
    return 'stalled';
  };

  if (stopAfter === 0) return stop();
  for await (const original of chunksOf(source, start, end)) {
    if (response.destroyed) return 'aborted';
    let chunk = original;
    const corrupt = faults.corrupt;
    if (corrupt && corrupt.offset >= offset && corrupt.offset < offset + chunk.length) {
      chunk = Buffer.from(chunk);
      const index = corrupt.offset - offset;
      chunk[index] = chunk[index]! ^ (corrupt.mask ?? 0xff);
    }
    offset += original.length;
    let limitReached = false;
    if (stopAfter !== undefined && sent + chunk.length >= stopAfter) {
      chunk = chunk.subarray(0, stopAfter - sent);
      limitReached = true;
    }
    const slice = faults.throttle
      ? Math.max(1, Math.floor((faults.throttle.bytesPerSecond * THROTTLE_SLICE_MS) / 1000))
      : chunk.length;
    for (let position = 0; position < chunk.length; position += slice) {
      const piece = chunk.subarray(position, position + slice);
      if (faults.throttle) {
        const due = began + (sent / faults.throttle.bytesPerSecond) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await sleep(wait);
        if (response.destroyed) return 'aborted';
      }
      if (limitReached && position + slice >= chunk.length) {
        await writeFlushed(response, piece);
      } else if (!response.write(piece)) {
        await drained(response);
      }
      sent += piece.length;
      onBytes(sent);
      if (response.destroyed) return 'aborted';
    }
    if (limitReached) return stop();
  }
  response.end();
  return 'complete';
}
