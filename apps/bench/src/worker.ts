/**
 * One component measurement in its own process, so GNU time sees its peak RSS alone. Invoked by
 * `bench.ts` as `node worker.js <mode> <json>`; prints one JSON line `{ ms, ... }` on stdout.
 */
import { createReadStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { Descriptor } from '@ocipull/core';

/** The modes and their arguments. */
export type WorkerJob =
  | { mode: 'stream'; reference: string; descriptor: Descriptor }
  | { mode: 'sink'; reference: string; descriptor: Descriptor }
  | { mode: 'http'; url: string; size: number; sha256: boolean }
  | { mode: 'socket'; url: string; size: number }
  | { mode: 'write'; source: string; destination: string; size: number }
  | { mode: 'ingest'; reference: string; descriptor: Descriptor; cacheRoot: string }
  | { mode: 'prime'; reference: string; descriptors: Descriptor[]; cacheRoot: string }
  | { mode: 'open'; descriptors: Descriptor[]; cacheRoot: string }
  | { mode: 'flatten'; blob: string; mediaType: string; diffId: string; destination: string };

/** What a worker prints. */
export interface WorkerResult {
  ms: number;
  bytes?: number;
  entries?: number;
}

async function drain(stream: Readable): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) bytes += (chunk as Buffer).length;
  return bytes;
}

// Packages are imported per mode, so a worker's peak RSS holds only the package it measures.
async function client() {
  const { createRegistryClient } = await import('@ocipull/registry-client');
  return createRegistryClient({ dockerConfig: false, retries: 0 });
}

async function cacheAt(root: string) {
  const { openCache } = await import('@ocipull/blob-cache');
  return openCache({ root });
}

async function main(job: WorkerJob): Promise<WorkerResult> {
  switch (job.mode) {
    case 'stream': {
      const registry = await client();
      try {
        const start = performance.now();
        const bytes = await drain(await registry.fetchBlob(job.reference, job.descriptor));
        const ms = performance.now() - start;
        if (bytes !== job.descriptor.size)
          throw new Error(`streamed ${bytes} bytes, expected ${job.descriptor.size}`);
        return { ms, bytes };
      } finally {
        await registry.close();
      }
    }
    case 'sink': {
      // The client's sink API, each chunk written to /dev/null: views into a few reused buffers.
      const registry = await client();
      const { openSync, writeSync, closeSync } = await import('node:fs');
      const devNull = openSync('/dev/null', 'w');
      try {
        let bytes = 0;
        const start = performance.now();
        await registry.fetchBlobInto(job.reference, job.descriptor, (chunk) => {
          bytes += writeSync(devNull, chunk);
        });
        const ms = performance.now() - start;
        if (bytes !== job.descriptor.size)
          throw new Error(`received ${bytes} bytes, expected ${job.descriptor.size}`);
        return { ms, bytes };
      } finally {
        closeSync(devNull);
        await registry.close();
      }
    }
    case 'http': {
      // The ceiling: Node's own HTTP client (no undici, no verification), optionally hashing.
      const { get } = await import('node:http');
      const { createHash } = await import('node:crypto');
      const start = performance.now();
      const response = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
        get(job.url, resolve).once('error', reject);
      });
      if (response.statusCode !== 200) throw new Error(`GET ${job.url}: HTTP ${response.statusCode}`);
      const hash = job.sha256 ? createHash('sha256') : undefined;
      let bytes = 0;
      for await (const chunk of response) {
        bytes += (chunk as Buffer).length;
        hash?.update(chunk as Buffer);
      }
      hash?.digest('hex');
      const ms = performance.now() - start;
      if (bytes !== job.size) throw new Error(`read ${bytes} bytes, expected ${job.size}`);
      return { ms, bytes };
    }
    case 'socket': {
      // The floor under any Node client: one plain socket reading into one reused 1 MiB buffer
      // (`onread`), no HTTP parser, no stream, no allocation per read. Only the framing is checked.
      const { connect } = await import('node:net');
      const url = new URL(job.url);
      const buffer = Buffer.allocUnsafe(1024 * 1024);
      const start = performance.now();
      const bytes = await new Promise<number>((resolve, reject) => {
        let head = '';
        let body = -1;
        const socket = connect({
          host: url.hostname,
          port: Number(url.port),
          onread: {
            buffer,
            callback: (length: number, chunk: Uint8Array) => {
              let offset = 0;
              if (body < 0) {
                head += Buffer.from(chunk.buffer, chunk.byteOffset, length).toString('latin1');
                const end = head.indexOf('\r\n\r\n');
                if (end < 0) return true;
                if (!head.startsWith('HTTP/1.1 200')) reject(new Error(head.split('\r\n')[0]));
                offset = length - (head.length - end - 4);
                body = 0;
              }
              body += length - offset;
              if (body >= job.size) {
                socket.destroy();
                resolve(body);
              }
              return true;
            },
          },
        });
        socket.on('error', reject);
        socket.on('connect', () => {
          socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`);
        });
      });
      const ms = performance.now() - start;
      if (bytes !== job.size) throw new Error(`read ${bytes} bytes, expected ${job.size}`);
      return { ms, bytes };
    }
    case 'write': {
      // The disk's share of an ingest: copy a (page-cached) file the way an ingest writes its `.part`
      // — an fdatasync started in the background every WRITEBACK_INTERVAL_BYTES, one at a time, and
      // an fsync at the end — and nothing else (no network, no hashing).
      const { open } = await import('node:fs/promises');
      const { WRITEBACK_INTERVAL_BYTES } = await import('@ocipull/blob-cache');
      const start = performance.now();
      const input = await open(job.source, 'r');
      const output = await open(job.destination, 'wx');
      const buffer = Buffer.allocUnsafe(1024 * 1024);
      let bytes = 0;
      let syncedAt = 0;
      let syncing: Promise<void> | undefined;
      try {
        for (;;) {
          const { bytesRead } = await input.read(buffer, 0, buffer.length, bytes);
          if (bytesRead === 0) break;
          await output.write(buffer, 0, bytesRead);
          bytes += bytesRead;
          if (!syncing && bytes - syncedAt >= WRITEBACK_INTERVAL_BYTES) {
            syncedAt = bytes;
            syncing = output.datasync().then(() => {
              syncing = undefined;
            });
          }
        }
        await syncing;
        await output.sync();
      } finally {
        await input.close();
        await output.close();
      }
      if (bytes !== job.size) throw new Error(`copied ${bytes} bytes, expected ${job.size}`);
      return { ms: performance.now() - start, bytes };
    }
    case 'ingest': {
      const registry = await client();
      const cache = await cacheAt(job.cacheRoot);
      try {
        const start = performance.now();
        const result = await cache.ingest(job.descriptor, registry.blobSource(job.reference));
        const ms = performance.now() - start;
        if (result.cached) throw new Error('ingest found the blob already cached: the cache was not fresh');
        return { ms, bytes: job.descriptor.size };
      } finally {
        await cache.close();
        await registry.close();
      }
    }
    case 'prime': {
      const registry = await client();
      const cache = await cacheAt(job.cacheRoot);
      try {
        const start = performance.now();
        const source = registry.blobSource(job.reference);
        for (const descriptor of job.descriptors) await cache.ingest(descriptor, source);
        return { ms: performance.now() - start };
      } finally {
        await cache.close();
        await registry.close();
      }
    }
    case 'open': {
      const cache = await cacheAt(job.cacheRoot);
      try {
        const start = performance.now();
        for (const descriptor of job.descriptors) {
          if (!(await cache.has(descriptor))) throw new Error(`${descriptor.digest} is not cached`);
          const stream = await cache.open(descriptor);
          stream.destroy();
        }
        return { ms: performance.now() - start, entries: job.descriptors.length };
      } finally {
        await cache.close();
      }
    }
    case 'flatten': {
      const { flattenLayers } = await import('@ocipull/layer-extract');
      const start = performance.now();
      // Read as the blob cache reads a layer for `ocipull unpack` and pulls (`BlobCache.open`: 1 MiB
      // reads). fs.createReadStream's default 64 KiB reads cost 0.07–0.29 s more on this layer:
      // every read and every zlib call then waits for a turn of the busy extracting thread.
      const open = () => createReadStream(job.blob, { highWaterMark: 1024 * 1024 });
      const result = await flattenLayers([{ open, mediaType: job.mediaType, diffId: job.diffId }], {
        destination: job.destination,
      });
      return { ms: performance.now() - start, bytes: result.bytes, entries: result.entries };
    }
  }
}

const [mode, argument] = process.argv.slice(2);
if (!mode || !argument) {
  process.stderr.write('usage: worker <mode> <json>\n');
  process.exit(2);
}
const job = { ...(JSON.parse(argument) as object), mode } as WorkerJob;
main(job).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  },
  (error: unknown) => {
    const err = error as { code?: string; message?: string; stack?: string };
    process.stderr.write(
      `worker ${mode} failed: ${err.code ?? ''} ${err.stack ?? err.message ?? String(error)}\n`,
    );
    process.exit(1);
  },
);
