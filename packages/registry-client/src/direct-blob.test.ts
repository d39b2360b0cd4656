import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { type Descriptor, ErrorCode, type OciError } from '@ocipull/core';
import {
  type BuiltImage,
  buildImage,
  file,
  type HarnessRegistry,
  startRegistry,
} from '@ocipull/test-harness';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type DirectBlobRequest,
  DirectConnections,
  DirectReadSlots,
  type DirectRequest,
  directBlobGet,
  directRequest,
} from './direct-blob.ts';
import {
  type BlobInterruptedError,
  type BlobSink,
  DIRECT_BLOB_MIN_BYTES,
  type RegistryError,
} from './index.ts';
import { rejection, testClients } from './testing/clients.ts';
import { handMadeManifest } from './testing/fixtures/manifests.ts';

const LAYER_SIZE = 5 * 1024 * 1024 + 12_345;

/** A sink that copies what it is handed (chunks are views into reused buffers), optionally slowly. */
function collector(options: { slow?: boolean } = {}) {
  const chunks: Buffer[] = [];
  let calls = 0;
  const sink: BlobSink = (chunk) => {
    calls++;
    chunks.push(Buffer.from(chunk));
    // Every fourth chunk takes a timer turn: reads go on into the ring meanwhile, then pause.
    if (options.slow && calls % 4 === 0) return delay(5);
    return undefined;
  };
  return {
    sink,
    bytes: () => Buffer.concat(chunks),
    get calls() {
      return calls;
    },
  };
}

const failure = (promise: Promise<unknown>) => rejection<OciError>(promise);

/**
 * Which way a request came: a direct read sends no `Connection` header (HTTP/1.1 keeps the connection
 * by default), undici's pool sends `keep-alive`.
 */
const way = (request: { connection?: string }) =>
  request.connection === undefined
    ? 'direct'
    : request.connection === 'keep-alive'
      ? 'pool'
      : request.connection;

describe('fetchBlobInto', () => {
  let root: string;
  let image: BuiltImage;
  let layer: Descriptor;
  let small: Descriptor;
  let layerBytes: Buffer;
  let registry: HarnessRegistry;
  const { client, events, close } = testClients();
  const ref = (target: HarnessRegistry = registry) => `${target.host}/library/app`;
  const blobRequests = (target: HarnessRegistry = registry) =>
    target.requests.filter((request) => request.kind === 'blob' || request.kind === 'origin');

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'direct-blob-'));
    image = await buildImage(
      {
        layers: [
          { entries: [file('big.bin', { size: LAYER_SIZE, seed: 11 })], compression: 'none' },
          { entries: [file('small.txt', 'hello')] },
        ],
      },
      { dir: join(root, 'image') },
    );
    layer = image.manifests[0]!.layers[0]!.descriptor;
    small = image.manifests[0]!.layers[1]!.descriptor;
    layerBytes = await readFile(image.manifests[0]!.layers[0]!.path);
    registry = await startRegistry({ repositories: { 'library/app': image.dir } });
  });

  afterEach(() => {
    registry.faults.clear();
    registry.clearRequests();
    events.length = 0;
  });

  afterAll(async () => {
    await close();
    await registry?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('reads a large blob on a connection of its own, with a fast or a slow sink', async () => {
    expect(layer.size).toBeGreaterThan(DIRECT_BLOB_MIN_BYTES);
    for (const slow of [false, true]) {
      const sink = collector({ slow });
      await client().fetchBlobInto(ref(), layer, sink.sink);
      expect(sink.bytes().equals(layerBytes)).toBe(true);
    }
    // The read ends with its last byte; on a kept connection the server may note its end a moment later.
    await vi.waitFor(() =>
      expect(blobRequests().map((request) => [way(request), request.status, request.outcome])).toEqual([
        ['direct', 200, 'complete'],
        ['direct', 200, 'complete'],
      ]),
    );
  });

  it('manifest requests go the direct way too, on the connection the blob reads keep; a HEAD 404 is a miss', async () => {
    const registryClient = client();
    const resolved = await registryClient.resolve(ref());
    expect(resolved.manifest.layers[0]?.digest).toBe(layer.digest);
    await registryClient.fetchBlobInto(ref(), layer, collector().sink);
    expect(await registryClient.headManifest(`${ref()}:absent`)).toBeUndefined();
    const seen = registry.requests.filter(
      (request) => request.kind === 'manifest' || request.kind === 'blob',
    );
    expect(seen.map((request) => [request.kind, request.method, way(request), request.status])).toEqual([
      ['manifest', 'GET', 'direct', 200],
      ['blob', 'GET', 'direct', 200],
      ['manifest', 'HEAD', 'direct', 404],
    ]);
    expect(new Set(seen.map((request) => request.clientPort)).size).toBe(1);
  });

  it('from an offset: one ranged request answered 206', async () => {
    const offset = 1_234_567;
    const sink = collector();
    await client().fetchBlobInto(ref(), layer, sink.sink, { offset });
    expect(sink.bytes().equals(layerBytes.subarray(offset))).toBe(true);
    expect(blobRequests().map((request) => [way(request), request.range, request.status])).toEqual([
      ['direct', `bytes=${offset}-`, 206],
    ]);
  });

  it("blobSource(reference).fetchInto is fetchBlobInto: the cache's fast way in", async () => {
    const source = client().blobSource(ref());
    expect(source.fetchInto).toBeTypeOf('function');
    const sink = collector();
    await source.fetchInto!(layer, sink.sink, { offset: 1000 });
    expect(sink.bytes().equals(layerBytes.subarray(1000))).toBe(true);
    expect(blobRequests().map((request) => [way(request), request.range, request.status])).toEqual([
      ['direct', 'bytes=1000-', 206],
    ]);
  });

  it('a small blob goes direct too, on the connection the last read left open; directBlobReads: false and an offset at the end do not', async () => {
    const registryClient = client();
    const tiny = collector();
    await registryClient.fetchBlobInto(ref(), layer, collector().sink);
    await registryClient.fetchBlobInto(ref(), small, tiny.sink);
    expect(tiny.bytes().equals(await readFile(image.manifests[0]!.layers[1]!.path))).toBe(true);
    const [big, second] = blobRequests();
    expect([way(big!), way(second!)]).toEqual(['direct', 'direct']);
    // One connection carried both (the harness sees one client port).
    expect(second!.clientPort).toBe(big!.clientPort);
    const off = collector();
    await client({ directBlobReads: false }).fetchBlobInto(ref(), layer, off.sink);
    expect(off.bytes().equals(layerBytes)).toBe(true);
    expect(blobRequests().map(way)).toEqual(['direct', 'direct', 'pool']);
    const none = collector();
    await client().fetchBlobInto(ref(), layer, none.sink, { offset: layer.size });
    expect(none.calls).toBe(0);
    expect(blobRequests()).toHaveLength(3);
  });

  it('cut mid-body: ERR_BLOB_INTERRUPTED at the bytes the sink finished; resuming from there completes it', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'cut', afterBytes: 2_000_000 } });
    const registryClient = client();
    for (const slow of [false, true]) {
      const first = collector({ slow });
      const error = (await failure(
        registryClient.fetchBlobInto(ref(), layer, first.sink),
      )) as BlobInterruptedError;
      expect(error.code).toBe(ErrorCode.BlobInterrupted);
      expect(error.retryable).toBe(true);
      expect(error.offset).toBe(first.bytes().byteLength);
      expect(error.offset).toBeGreaterThan(0);
      expect(error.offset).toBeLessThanOrEqual(2_000_000);
      const rest = collector();
      await registryClient.fetchBlobInto(ref(), layer, rest.sink, { offset: error.offset });
      expect(Buffer.concat([first.bytes(), rest.bytes()]).equals(layerBytes)).toBe(true);
      registry.faults.add({ match: { kind: 'blob' }, action: { type: 'cut', afterBytes: 2_000_000 } });
    }
  });

  it('stall: the body-idle timeout surfaces as a resumable interruption caused by ERR_TIMEOUT', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'stall', afterBytes: 1_500_000 } });
    const sink = collector();
    const started = performance.now();
    const error = (await failure(
      client({ timeouts: { bodyIdle: 300 } }).fetchBlobInto(ref(), layer, sink.sink),
    )) as BlobInterruptedError;
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect(error.code).toBe(ErrorCode.BlobInterrupted);
    expect(error.offset).toBe(sink.bytes().byteLength);
    expect((error.cause as OciError).code).toBe(ErrorCode.Timeout);
  });

  it('a paused read (slow sink) is not a silent server: no timeout while the sink works', async () => {
    let calls = 0;
    const chunks: Buffer[] = [];
    const sink: BlobSink = async (chunk) => {
      chunks.push(Buffer.from(chunk));
      if (++calls === 2) await delay(700);
    };
    await client({ timeouts: { bodyIdle: 350 } }).fetchBlobInto(ref(), layer, sink);
    expect(Buffer.concat(chunks).equals(layerBytes)).toBe(true);
  });

  it('a redirect falls back to the general path (no credentials to the other host) and is remembered', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'redirect' } });
    const registryClient = client();
    for (let round = 0; round < 2; round++) {
      const sink = collector();
      await registryClient.fetchBlobInto(ref(), layer, sink.sink);
      expect(sink.bytes().equals(layerBytes)).toBe(true);
    }
    expect(blobRequests().map((request) => [request.kind, way(request), request.status])).toEqual([
      ['blob', 'direct', 307],
      ['blob', 'pool', 307],
      ['origin', 'pool', 200],
      ['blob', 'pool', 307],
      ['origin', 'pool', 200],
    ]);
  });

  it('429, 500, Range ignored and a wrong length are left to the general path and its retries and checks', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 500 } });
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 429, retryAfter: 0 } });
    const retried = collector();
    await client().fetchBlobInto(ref(), layer, retried.sink);
    expect(retried.bytes().equals(layerBytes)).toBe(true);
    // The direct GET took the 500 (declined unread); the general path met the 429 and retried.
    expect(blobRequests().map((request) => [way(request), request.status])).toEqual([
      ['direct', 500],
      ['pool', 429],
      ['pool', 200],
    ]);
    expect(events.filter((event) => event.type === 'request-retry')).toHaveLength(1);

    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'ignore-range' } });
    const offset = 2_000_001;
    const ignored = collector();
    await client().fetchBlobInto(ref(), layer, ignored.sink, { offset });
    expect(ignored.bytes().equals(layerBytes.subarray(offset))).toBe(true);
    expect(events).toContainEqual(expect.objectContaining({ type: 'blob-range-ignored', offset }));

    const short = { ...layer, size: layer.size - 10 };
    const mismatch = await failure(client().fetchBlobInto(ref(), short, collector().sink));
    expect(mismatch.code).toBe(ErrorCode.SizeMismatch);
  });

  it('a 429 to a direct read is the first attempt: the general path waits its Retry-After, one over the ceiling fails at once, not retryable', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 429, retryAfter: 1 } });
    const sink = collector();
    await client().fetchBlobInto(ref(), layer, sink.sink);
    expect(sink.bytes().equals(layerBytes)).toBe(true);
    const [asked, again] = blobRequests();
    expect([way(asked!), asked!.status, way(again!), again!.status]).toEqual(['direct', 429, 'pool', 200]);
    // Not sent again at once: the general path waited as asked.
    expect(again!.startedAt - asked!.startedAt).toBeGreaterThanOrEqual(950);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'request-retry', delayMs: 1000, status: 429 }),
    );

    registry.clearRequests();
    registry.faults.clear();
    registry.faults.add({
      match: { kind: 'blob' },
      action: { type: 'status', status: 429, retryAfter: 3600 },
      times: 100,
    });
    const error = (await failure(client().fetchBlobInto(ref(), layer, collector().sink))) as RegistryError;
    expect([error.code, error.status, error.retryAfterMs, error.retryable]).toEqual([
      ErrorCode.TooManyRequests,
      429,
      3_600_000,
      // The blob cache retries what is retryable; an hour's quiet asked for is not.
      false,
    ]);
    expect(error.message).toContain('longer than the 60 s this client waits');
    expect(blobRequests().map(way)).toEqual(['direct']);
  });

  it('a 503 to a direct read waits like a retry of the general path, without Retry-After by the backoff', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 503 } });
    const sink = collector();
    await client({ retries: 1 }).fetchBlobInto(ref(), layer, sink.sink);
    expect(sink.bytes().equals(layerBytes)).toBe(true);
    expect(blobRequests().map((request) => [way(request), request.status])).toEqual([
      ['direct', 503],
      ['pool', 200],
    ]);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'request-retry', attempt: 1, status: 503, code: ErrorCode.Registry }),
    );
  });

  it('a blob the registry does not have fails like fetchBlob', async () => {
    const missing = { ...layer, digest: `sha256:${'0'.repeat(64)}` as Descriptor['digest'] };
    expect((await failure(client().fetchBlobInto(ref(), missing, collector().sink))).code).toBe(
      ErrorCode.BlobUnknown,
    );
  });

  it('abort mid-body ends with ERR_ABORTED; an aborted signal sends nothing', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'throttle', bytesPerSecond: 4_000_000 } });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stop')), 150);
    const sink = collector();
    const error = await failure(
      client().fetchBlobInto(ref(), layer, sink.sink, { signal: controller.signal }),
    );
    expect(error.code).toBe(ErrorCode.Aborted);
    expect(sink.bytes().byteLength).toBeGreaterThan(0);
    expect(sink.bytes().byteLength).toBeLessThan(layer.size);
    registry.clearRequests();
    const again = await failure(
      client().fetchBlobInto(ref(), layer, sink.sink, { signal: controller.signal }),
    );
    expect(again.code).toBe(ErrorCode.Aborted);
    expect(blobRequests()).toHaveLength(0);
  });

  it('direct reads keep to maxConnectionsPerHost per registry; the rest wait their turn', async () => {
    registry.faults.add({
      match: { kind: 'blob' },
      action: { type: 'throttle', bytesPerSecond: 40_000_000 },
    });
    const registryClient = client({ maxConnectionsPerHost: 2 });
    // Each read's span as its sink sees it: from the first chunk to the last, both inside its slot.
    const spans = Array.from({ length: 5 }, () => ({ first: Infinity, last: 0 }));
    const sinks = spans.map((span) => {
      const inner = collector();
      const sink: BlobSink = (chunk) => {
        span.first = Math.min(span.first, performance.now());
        inner.sink(chunk);
        span.last = performance.now();
      };
      return { sink, bytes: inner.bytes };
    });
    await Promise.all(sinks.map((sink) => registryClient.fetchBlobInto(ref(), layer, sink.sink)));
    for (const sink of sinks) expect(sink.bytes().equals(layerBytes)).toBe(true);
    const direct = blobRequests().filter((request) => way(request) === 'direct');
    expect(direct).toHaveLength(5);
    // Never more than two connections (kept ones carried the rest), and never more than two reads at once.
    expect(new Set(direct.map((request) => request.clientPort)).size).toBe(2);
    const overlapping = spans.map(
      (span) => spans.filter((other) => other.first <= span.first && other.last >= span.first).length,
    );
    expect(Math.max(...overlapping)).toBe(2);

    // A read waiting for a slot stops waiting when its signal fires.
    const controller = new AbortController();
    const busy = [collector(), collector()].map((sink) =>
      registryClient.fetchBlobInto(ref(), layer, sink.sink),
    );
    const waiting = registryClient.fetchBlobInto(ref(), layer, collector().sink, {
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(new Error('enough')), 30);
    expect((await failure(waiting)).code).toBe(ErrorCode.Aborted);
    await Promise.all(busy);
  });

  it('reads waiting for a slot go lowest priority first, ties in order of arrival', async () => {
    registry.faults.add({
      match: { kind: 'blob' },
      action: { type: 'throttle', bytesPerSecond: 40_000_000 },
    });
    const registryClient = client({ maxConnectionsPerHost: 1 });
    const order: string[] = [];
    const read = (name: string, priority?: number) =>
      registryClient
        .fetchBlobInto(ref(), layer, collector().sink, priority === undefined ? {} : { priority })
        .then(() => order.push(name));
    // The first takes the only slot; the others queue while it reads.
    const first = read('first', 9);
    await delay(20);
    await Promise.all([read('late', 5), read('default'), read('early', -1), read('tie', 5), first]);
    expect(order).toEqual(['first', 'early', 'default', 'late', 'tie']);
  });

  it('close() ends direct reads in flight with ERR_ABORTED', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'throttle', bytesPerSecond: 4_000_000 } });
    const registryClient = client();
    const sink = collector();
    const reading = registryClient.fetchBlobInto(ref(), layer, sink.sink);
    const closing = new Promise<void>((resolve, reject) =>
      setTimeout(() => registryClient.close().then(resolve, reject), 150),
    );
    expect((await failure(reading)).code).toBe(ErrorCode.Aborted);
    await closing;
    // A second close() (the pool's, in afterAll) is a no-op, not undici's ClientDestroyedError.
    await registryClient.close();
    expect(sink.bytes().byteLength).toBeGreaterThan(0);
    expect(sink.bytes().byteLength).toBeLessThan(layer.size);
  });

  it("a sink's error, thrown or rejected, ends the transfer with that error", async () => {
    for (const mode of ['throw', 'reject'] as const) {
      let calls = 0;
      const boom = new Error(`sink ${mode}`);
      const sink: BlobSink = (): undefined | Promise<void> => {
        if (++calls < 3) return undefined;
        if (mode === 'throw') throw boom;
        return Promise.reject(boom);
      };
      expect(await failure(client().fetchBlobInto(ref(), layer, sink))).toBe(boom);
      expect(calls).toBe(3);
    }
  });

  describe('behind bearer auth', () => {
    let bearer: HarnessRegistry;

    beforeAll(async () => {
      bearer = await startRegistry({
        repositories: { 'library/app': image.dir },
        auth: { type: 'bearer', anonymous: true },
      });
    });

    afterAll(async () => {
      await bearer?.close();
    });

    it('the first read learns the challenge through the general path; the next goes direct with the token', async () => {
      const registryClient = client();
      for (let round = 0; round < 2; round++) {
        const sink = collector();
        await registryClient.fetchBlobInto(ref(bearer), layer, sink.sink);
        expect(sink.bytes().equals(layerBytes)).toBe(true);
      }
      expect(
        blobRequests(bearer).map((request) => [way(request), request.status, request.authScheme]),
      ).toEqual([
        ['direct', 401, undefined],
        ['pool', 401, undefined],
        ['pool', 200, 'bearer'],
        ['direct', 200, 'bearer'],
      ]);
    });
  });
});

describe('directBlobGet against a scripted HTTP server', () => {
  const body = Buffer.alloc(3 * 1024 * 1024 + 7);
  for (let index = 0; index < body.length; index++) body[index] = (index * 31 + (index >> 11)) & 0xff;
  let server: Server;
  let port = 0;
  /** What the next connection is answered with: written in pieces, then closed or kept open. */
  let script: { pieces: (Buffer | string)[]; end?: boolean } = { pieces: [] };
  const heads: string[] = [];
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      let head = '';
      socket.on('data', (data) => {
        head += data.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        heads.push(head);
        const { pieces, end } = script;
        void (async () => {
          for (const piece of pieces) {
            if (socket.destroyed) return;
            socket.write(piece);
            await delay(1);
          }
          if (end !== false) socket.end();
        })();
      });
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  function request(start = 0, signal?: AbortSignal): DirectBlobRequest {
    return {
      url: new URL(`http://127.0.0.1:${port}/v2/x/blobs/sha256:${'a'.repeat(64)}`),
      headers: { 'user-agent': 'test', ...(start > 0 ? { range: `bytes=${start}-` } : {}) },
      tls: {},
      timeouts: { connect: 2000, headers: 2000, bodyIdle: 300 },
      signal,
      digest: `sha256:${'a'.repeat(64)}`,
      registry: `127.0.0.1:${port}`,
      start,
      expected: body.length - start,
    };
  }
  const ok = (length: number, extra = '') =>
    `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${length}\r\n${extra}\r\n`;

  it('a head split byte by byte, the body after it in the same read and in odd pieces', async () => {
    const head = ok(body.length);
    script = {
      pieces: [
        ...head.slice(0, -1).split(''),
        Buffer.concat([Buffer.from('\n'), body.subarray(0, 5)]),
        body.subarray(5, 70_001),
        body.subarray(70_001),
      ],
    };
    const sink = collector();
    expect(await directBlobGet(request(), sink.sink)).toEqual({ delivered: true });
    expect(sink.bytes().equals(body)).toBe(true);
    expect(heads.at(-1)).toMatch(
      /^GET \/v2\/x\/blobs\/sha256:a{64} HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\n/,
    );
    expect(heads.at(-1)).toContain('\r\nconnection: close\r\n\r\n');
  });

  it('a 206 must start where asked; bytes past Content-Length are not handed over', async () => {
    const start = 1_000_000;
    script = {
      pieces: [
        `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${start}-${body.length - 1}/${body.length}\r\nContent-Length: ${body.length - start}\r\n\r\n`,
        Buffer.concat([body.subarray(start), Buffer.from('trailing garbage')]),
      ],
    };
    const sink = collector();
    expect(await directBlobGet(request(start), sink.sink)).toEqual({ delivered: true });
    expect(sink.bytes().equals(body.subarray(start))).toBe(true);
    expect(heads.at(-1)).toContain(`\r\nrange: bytes=${start}-\r\n`);

    script = {
      pieces: [
        `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-${body.length - 1}/${body.length}\r\nContent-Length: ${body.length - start}\r\n\r\n`,
        body,
      ],
    };
    const wrong = collector();
    expect(await directBlobGet(request(start), wrong.sink)).toEqual({
      delivered: false,
      reason: 'unexpected Content-Range',
      status: 206,
    });
    expect(wrong.calls).toBe(0);
  });

  it('declines, unread, what it does not take', async () => {
    const cases: [string, string][] = [
      [
        `HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n`,
        'status 307',
      ],
      [`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n`, 'transfer coding'],
      [
        `HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: ${body.length}\r\n\r\n`,
        'content coding',
      ],
      [`HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n`, 'Content-Length is not the size asked for'],
      [`HTTP/1.1 200 OK\r\nServer: x\r\n\r\n`, 'no Content-Length'],
      [`SSH-2.0-OpenSSH\r\n\r\n`, 'not an HTTP/1.1 response'],
      [`HTTP/1.1 200 OK\r\nbroken header\r\n\r\n`, 'malformed header line'],
    ];
    for (const [head, reason] of cases) {
      script = { pieces: [head, body.subarray(0, 1000)] };
      const sink = collector();
      const outcome = await directBlobGet(request(), sink.sink);
      expect(outcome).toMatchObject({ delivered: false, reason });
      expect(sink.calls).toBe(0);
    }
    script = { pieces: [`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70_000)}`], end: false };
    expect(await directBlobGet(request(), collector().sink)).toEqual({
      delivered: false,
      reason: 'response head too large',
    });
  });

  it('two identical Content-Length fields are one (RFC 9112 §6.3); two different ones are declined', async () => {
    script = { pieces: [ok(body.length, `Content-Length: ${body.length}\r\n`), body] };
    const sink = collector();
    expect(await directBlobGet(request(), sink.sink)).toEqual({ delivered: true });
    expect(sink.bytes().equals(body)).toBe(true);
    script = { pieces: [ok(body.length, `Content-Length: ${body.length + 1}\r\n`), body] };
    const other = collector();
    expect(await directBlobGet(request(), other.sink)).toMatchObject({
      delivered: false,
      reason: 'Content-Length is not the size asked for',
    });
    expect(other.calls).toBe(0);
  });

  it('a connection closed before any body byte, or refused, is declined; one closed mid-body is an interruption', async () => {
    script = { pieces: [ok(body.length)] };
    expect(await directBlobGet(request(), collector().sink)).toMatchObject({ delivered: false });
    script = { pieces: [] };
    expect(await directBlobGet(request(), collector().sink)).toMatchObject({ delivered: false });
    const refused = { ...request(), url: new URL('http://127.0.0.1:1/v2/x/blobs/y') };
    expect(await directBlobGet(refused, collector().sink)).toMatchObject({ delivered: false });

    script = { pieces: [ok(body.length), body.subarray(0, 777_777)] };
    const sink = collector({ slow: true });
    const error = (await failure(directBlobGet(request(), sink.sink))) as BlobInterruptedError;
    expect(error.code).toBe(ErrorCode.BlobInterrupted);
    expect(error.offset).toBe(777_777);
    expect(sink.bytes().equals(body.subarray(0, 777_777))).toBe(true);
  });

  it('a silent server: the headers timeout declines with an ERR_TIMEOUT failure, the body-idle timeout interrupts', async () => {
    script = { pieces: [], end: false };
    const quiet = { ...request(), timeouts: { connect: 2000, headers: 200, bodyIdle: 300 } };
    const outcome = await directBlobGet(quiet, collector().sink);
    expect(outcome).toMatchObject({ delivered: false, reason: 'no response head after 200 ms' });
    // The general path counts it as its first failed attempt instead of waiting as long again at once.
    const timedOut = 'failure' in outcome ? outcome.failure : undefined;
    expect([timedOut?.code, timedOut?.retryable, timedOut?.message]).toEqual([
      ErrorCode.Timeout,
      true,
      `127.0.0.1:${port}: headers timeout`,
    ]);
    script = { pieces: [ok(body.length), body.subarray(0, 10_000)], end: false };
    const started = performance.now();
    const error = (await failure(directBlobGet(request(), collector().sink))) as BlobInterruptedError;
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect([error.code, error.offset, (error.cause as OciError).code]).toEqual([
      ErrorCode.BlobInterrupted,
      10_000,
      ErrorCode.Timeout,
    ]);
  });
});

/**
 * A raw HTTP/1.1 server on 127.0.0.1 that keeps connections and hands every request head to `respond`
 * with its socket and how many requests that connection has carried (this one included).
 */
async function keepAliveServer() {
  const sockets = new Set<Socket>();
  const state = {
    port: 0,
    /** Connections accepted since the last `reset`. */
    accepted: 0,
    sockets,
    respond: (_head: string, _socket: Socket, _served: number): void => {},
    /** Drops every connection and the count. */
    reset() {
      state.accepted = 0;
      for (const socket of sockets) socket.destroy();
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = createServer((socket) => {
    state.accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffered = '';
    let served = 0;
    socket.on('data', (data) => {
      buffered += data.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
        const head = buffered.slice(0, end);
        buffered = buffered.slice(end + 4);
        served++;
        state.respond(head, socket, served);
        if (socket.destroyed) return;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  return state;
}

describe('kept direct connections (keep-alive)', () => {
  const body = Buffer.alloc(300_000);
  for (let index = 0; index < body.length; index++) body[index] = (index * 7) & 0xff;
  let http: Awaited<ReturnType<typeof keepAliveServer>>;
  const heads: string[] = [];
  /** How the server answers: keep the connection, say `Connection: close`, send a byte too many, hang up
   * after the answer, or drop the connection at its second request without answering. */
  let mode: 'keep' | 'close-header' | 'extra-byte' | 'hang-up' | 'drop-second' = 'keep';

  beforeAll(async () => {
    http = await keepAliveServer();
    http.respond = (head, socket, served) => {
      heads.push(head);
      if (mode === 'drop-second' && served === 2) {
        socket.destroy();
        return;
      }
      const close = mode === 'close-header' ? 'Connection: close\r\n' : '';
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${close}\r\n`);
      socket.write(mode === 'extra-byte' ? Buffer.concat([body, Buffer.from('!')]) : body);
      if (mode === 'hang-up') socket.end();
    };
  });

  afterEach(() => {
    mode = 'keep';
    heads.length = 0;
    http.reset();
  });

  afterAll(() => http.close());

  const request = (): DirectBlobRequest => ({
    url: new URL(`http://127.0.0.1:${http.port}/v2/x/blobs/sha256:${'b'.repeat(64)}`),
    headers: { 'user-agent': 'test' },
    tls: {},
    timeouts: { connect: 2000, headers: 2000, bodyIdle: 2000 },
    digest: `sha256:${'b'.repeat(64)}`,
    registry: `127.0.0.1:${http.port}`,
    start: 0,
    expected: body.length,
  });

  async function read(pool: DirectConnections) {
    const sink = collector();
    const outcome = await directBlobGet(request(), sink.sink, pool);
    if (outcome.delivered) expect(sink.bytes().equals(body)).toBe(true);
    return outcome;
  }

  it('carries the next read of the same origin on the same connection, with HTTP/1.1 keep-alive', async () => {
    const pool = new DirectConnections();
    for (let round = 0; round < 3; round++) expect(await read(pool)).toEqual({ delivered: true });
    expect(http.accepted).toBe(1);
    expect(heads).toHaveLength(3);
    for (const head of heads) expect(head.toLowerCase()).not.toContain('connection:');
    pool.close();
    await delay(50);
    expect(http.sockets.size).toBe(0);
  });

  it('an answer with Connection: close, or with bytes past its body, ends its connection', async () => {
    for (const answer of ['close-header', 'extra-byte'] as const) {
      mode = answer;
      http.accepted = 0;
      const pool = new DirectConnections();
      expect(await read(pool)).toEqual({ delivered: true });
      expect(await read(pool)).toEqual({ delivered: true });
      expect(http.accepted).toBe(2);
      pool.close();
    }
  });

  it('a kept connection the server closes leaves the pool at once; the next read connects anew', async () => {
    mode = 'hang-up';
    const pool = new DirectConnections();
    expect(await read(pool)).toEqual({ delivered: true });
    await delay(50);
    expect(await read(pool)).toEqual({ delivered: true });
    expect(http.accepted).toBe(2);
    pool.close();
  });

  it('a kept connection dropped at the next request without an answer is declined as stale', async () => {
    mode = 'drop-second';
    const pool = new DirectConnections();
    expect(await read(pool)).toEqual({ delivered: true });
    expect(await read(pool)).toMatchObject({ delivered: false, stale: true });
    // A fresh connection (what the client then tries) reads it.
    expect(await read(pool)).toEqual({ delivered: true });
    expect(http.accepted).toBe(2);
    pool.close();
  });
});

describe('directRequest (whole small answers, any status)', () => {
  let http: Awaited<ReturnType<typeof keepAliveServer>>;
  /** Writes the answer to one request head. */
  let respond: (head: string, socket: Socket) => void = () => {};

  beforeAll(async () => {
    http = await keepAliveServer();
    http.respond = (head, socket) => respond(head, socket);
  });

  afterEach(() => http.reset());

  afterAll(() => http.close());

  const request = (method: 'GET' | 'HEAD' = 'GET', maxBodyBytes = 1024): DirectRequest => ({
    url: new URL(`http://127.0.0.1:${http.port}/v2/x/manifests/latest`),
    method,
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    tls: {},
    timeouts: { connect: 2000, headers: 2000, bodyIdle: 2000 },
    maxBodyBytes,
    registry: 'registry.test',
  });

  it('reads a whole answer of any status, a HEAD without body, on one kept connection', async () => {
    const heads: string[] = [];
    respond = (head, socket) => {
      heads.push(head);
      if (head.startsWith('HEAD')) {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 17\r\nDocker-Content-Digest: sha256:x\r\n\r\n');
      } else if (heads.length === 1) {
        socket.write(
          'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{"schemaVersion":2}'.slice(
            0,
            -2,
          ),
        );
      } else {
        socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\n{"errors":[]');
      }
    };
    const pool = new DirectConnections();
    const first = await directRequest(request(), pool);
    expect(first).toEqual({
      response: {
        status: 200,
        headers: { 'content-type': 'application/json', 'content-length': '17' },
        body: Buffer.from('{"schemaVersion":'),
      },
    });
    const head = await directRequest(request('HEAD'), pool);
    expect(head).toMatchObject({ response: { status: 200, body: Buffer.alloc(0) } });
    expect(head).toMatchObject({ response: { headers: { 'docker-content-digest': 'sha256:x' } } });
    const missing = await directRequest(request(), pool);
    expect(missing).toMatchObject({ response: { status: 404, body: Buffer.from('{"errors":[]') } });
    expect(http.accepted).toBe(1);
    expect(heads.map((text) => text.split('\r\n')[0])).toEqual([
      'GET /v2/x/manifests/latest HTTP/1.1',
      'HEAD /v2/x/manifests/latest HTTP/1.1',
      'GET /v2/x/manifests/latest HTTP/1.1',
    ]);
    expect(heads[0]).toContain('\r\naccept: application/vnd.oci.image.manifest.v1+json');
    pool.close();
  });

  it('keeps a repeated header field apart, as undici does (two challenges stay two)', async () => {
    respond = (_head, socket) =>
      socket.write(
        'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="https://auth/token"\r\nWWW-Authenticate: Basic realm="r"\r\nContent-Length: 0\r\n\r\n',
      );
    const pool = new DirectConnections();
    expect(await directRequest(request(), pool)).toMatchObject({
      response: {
        status: 401,
        headers: { 'www-authenticate': ['Bearer realm="https://auth/token"', 'Basic realm="r"'] },
      },
    });
    pool.close();
  });

  it('declines a chunked body, one over the cap, a closed connection and a silent one', async () => {
    const pool = new DirectConnections();
    respond = (_head, socket) =>
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    expect(await directRequest(request(), pool)).toEqual({ declined: 'transfer coding', lasting: true });
    respond = (_head, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n');
    expect(await directRequest(request('GET', 1024), pool)).toEqual({
      declined: 'body over the cap',
      lasting: true,
    });
    respond = (_head, socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort');
    expect(await directRequest(request(), pool)).toEqual({
      declined: 'connection closed before the whole answer',
    });
    pool.close();
  });

  it('a silent server is ERR_TIMEOUT, headers or body, not a decline that sends the request again', async () => {
    const pool = new DirectConnections();
    const quiet = { ...request(), timeouts: { connect: 2000, headers: 150, bodyIdle: 150 } };
    respond = () => {};
    const headers = await failure(directRequest(quiet, pool));
    expect([headers.code, headers.retryable, headers.message]).toEqual([
      ErrorCode.Timeout,
      true,
      'registry.test: headers timeout',
    ]);
    respond = (_head, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort');
    const body = await failure(directRequest(quiet, pool));
    expect([body.code, body.message]).toEqual([ErrorCode.Timeout, 'registry.test: body timeout']);
    pool.close();
  });

  it('a registry whose manifests the direct way declines for their form is asked through undici from then on', async () => {
    const manifest = handMadeManifest().bytes.toString();
    const seen: string[] = [];
    respond = (head, socket) => {
      seen.push(/\r\nconnection: keep-alive/i.test(head) ? 'pool' : 'direct');
      const chunk = Buffer.from(manifest);
      socket.write(
        `HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${manifest}\r\n0\r\n\r\n`,
      );
    };
    const { client, close } = testClients();
    try {
      const registryClient = client();
      for (let round = 0; round < 2; round++) {
        const fetched = await registryClient.fetchManifest(`127.0.0.1:${http.port}/x:latest`);
        expect(fetched.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
      }
      expect(seen).toEqual(['direct', 'pool', 'pool']);
    } finally {
      await close();
    }
  });

  it('two identical Content-Length fields are one (RFC 9112 §6.3); two different ones are declined', async () => {
    const pool = new DirectConnections();
    respond = (_head, socket) =>
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello');
    expect(await directRequest(request(), pool)).toMatchObject({
      response: { status: 200, body: Buffer.from('hello') },
    });
    respond = (_head, socket) =>
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!');
    expect(await directRequest(request(), pool)).toEqual({
      declined: 'invalid Content-Length',
      lasting: true,
    });
    pool.close();
  });

  it('an abort rejects with ERR_ABORTED', async () => {
    respond = () => {};
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stop')), 50);
    const error = await failure(
      directRequest({ ...request(), signal: controller.signal }, new DirectConnections()),
    );
    expect(error.code).toBe(ErrorCode.Aborted);
  });
});

describe('interim (1xx) answers before the final one', () => {
  const manifest = handMadeManifest();
  const blob = Buffer.alloc(200_000, 7);
  const blobDigest = `sha256:${createHash('sha256').update(blob).digest('hex')}` as Descriptor['digest'];
  let http: Awaited<ReturnType<typeof keepAliveServer>>;
  /** What goes before each final answer. */
  let interim = '';
  const seen: string[] = [];
  const { client, close } = testClients();

  beforeAll(async () => {
    http = await keepAliveServer();
    http.respond = (head, socket) => {
      const [method, path] = head.split(' ');
      seen.push(
        `${method} ${path?.split('/').at(-2)} ${/\r\nconnection: keep-alive/i.test(head) ? 'pool' : 'direct'}`,
      );
      socket.write(interim);
      if (path?.includes('/manifests/')) {
        socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: ${manifest.digest}\r\nContent-Length: ${manifest.bytes.length}\r\n\r\n`,
        );
        if (method === 'GET') socket.write(manifest.bytes);
      } else {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
        socket.write(blob);
      }
    };
  });

  afterEach(() => {
    seen.length = 0;
    http.reset();
  });

  afterAll(async () => {
    await close();
    await http.close();
  });

  const EARLY_HINTS = 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n';
  const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

  it('a manifest answered 103 Early Hints (or an unasked 100 Continue) first resolves on the direct way, in one request', async () => {
    for (const before of [EARLY_HINTS, CONTINUE, EARLY_HINTS + CONTINUE]) {
      interim = before;
      seen.length = 0;
      const fetched = await client().fetchManifest(`127.0.0.1:${http.port}/x:latest`);
      expect(fetched.digest).toBe(manifest.digest);
      expect(seen).toEqual(['GET manifests direct']);
    }
    // undici's way takes 103 too (it refuses an unasked 100 Continue: "bad response").
    interim = EARLY_HINTS;
    seen.length = 0;
    const general = await client({ directBlobReads: false }).fetchManifest(`127.0.0.1:${http.port}/x:latest`);
    expect(general.digest).toBe(manifest.digest);
    expect(seen).toEqual(['GET manifests pool']);
  });

  it('a blob answered 103 Early Hints (or 100 Continue) first is read directly, without a second request', async () => {
    for (const before of [EARLY_HINTS, CONTINUE]) {
      interim = before;
      seen.length = 0;
      const sink = collector();
      await client().fetchBlobInto(
        `127.0.0.1:${http.port}/x`,
        { mediaType: 'application/octet-stream', digest: blobDigest, size: blob.length },
        sink.sink,
      );
      expect(sink.bytes().equals(blob)).toBe(true);
      expect(seen).toEqual(['GET blobs direct']);
    }
  });
});

describe('a timeout of the direct way is ERR_TIMEOUT for the attempt, not a decline sent again', () => {
  const manifest = handMadeManifest();
  const blob = {
    mediaType: 'application/octet-stream',
    digest: `sha256:${'d'.repeat(64)}`,
    size: 100_000,
  } as Descriptor;
  let silent: Awaited<ReturnType<typeof keepAliveServer>>;
  let good: Awaited<ReturnType<typeof keepAliveServer>>;
  /** How the silent server answers a blob GET: not at all, or a head and then nothing. */
  let blobAnswer: 'nothing' | 'head' = 'nothing';
  const seen: string[] = [];
  const { client, events, close } = testClients();

  beforeAll(async () => {
    silent = await keepAliveServer();
    silent.respond = (head, socket) => {
      seen.push(/\r\nconnection: keep-alive/i.test(head) ? 'pool' : 'direct');
      if (head.includes('/blobs/') && blobAnswer === 'head')
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.size}\r\n\r\n`);
    };
    good = await keepAliveServer();
    good.respond = (_head, socket) => {
      socket.write(
        `HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: ${manifest.bytes.length}\r\n\r\n`,
      );
      socket.write(manifest.bytes);
    };
  });

  afterEach(() => {
    seen.length = 0;
    events.length = 0;
    blobAnswer = 'nothing';
    silent.reset();
  });

  afterAll(async () => {
    await close();
    await Promise.all([silent.close(), good.close()]);
  });

  const timeouts = { connect: 2000, headers: 300, bodyIdle: 300 };

  it('a manifest never answered fails after one headers timeout, in one request', async () => {
    const started = performance.now();
    const error = await failure(
      client({ retries: 0, timeouts }).fetchManifest(`127.0.0.1:${silent.port}/x:latest`),
    );
    expect([error.code, error.message]).toEqual([
      ErrorCode.Timeout,
      `127.0.0.1:${silent.port}: headers timeout`,
    ]);
    expect(seen).toEqual(['direct']);
    expect(performance.now() - started).toBeLessThan(2 * timeouts.headers);
  });

  it('a silent mirror costs one headers timeout before the upstream answers', async () => {
    const mirror = `127.0.0.1:${silent.port}`;
    const registryClient = client({
      timeouts,
      registries: { [`127.0.0.1:${good.port}`]: { mirrors: [mirror] } },
    });
    const fetched = await registryClient.fetchManifest(`127.0.0.1:${good.port}/x:latest`);
    expect(fetched.digest).toBe(manifest.digest);
    expect(seen).toEqual(['direct']);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'mirror-fallback',
        mirror,
        operation: 'manifest',
        code: ErrorCode.Timeout,
      }),
    );
  });

  it('a blob never answered: the direct timeout is the first attempt, the retries go on from it', async () => {
    const error = await failure(
      client({ retries: 1, timeouts }).fetchBlobInto(`127.0.0.1:${silent.port}/x`, blob, collector().sink),
    );
    expect(error.code).toBe(ErrorCode.Timeout);
    // One direct attempt, one retry the general way: not the same request again at once.
    expect(seen).toEqual(['direct', 'pool']);
    expect(events.filter((event) => event.type === 'request-retry')).toHaveLength(1);
  });

  it('a blob head and then silence is an interruption at the start, caused by ERR_TIMEOUT, in one request', async () => {
    blobAnswer = 'head';
    const error = (await failure(
      client({ retries: 0, timeouts }).fetchBlobInto(`127.0.0.1:${silent.port}/x`, blob, collector().sink),
    )) as BlobInterruptedError;
    expect([error.code, error.offset, (error.cause as OciError).code]).toEqual([
      ErrorCode.BlobInterrupted,
      0,
      ErrorCode.Timeout,
    ]);
    expect(seen).toEqual(['direct']);
  });
});

describe('DirectReadSlots', () => {
  it('hands a released slot to the best waiter, not to a later arrival', async () => {
    const slots = new DirectReadSlots(1);
    const order: number[] = [];
    const first = await slots.acquire('http://a');
    const waiters = [3, 1, 2].map((priority) =>
      slots.acquire('http://a', undefined, priority).then((release) => {
        order.push(priority);
        return release;
      }),
    );
    first();
    // A newcomer arriving just as the slot is handed over cannot take it: it waits, ahead of the
    // worse priorities still waiting.
    const newcomer = slots.acquire('http://a', undefined, -1).then((release) => {
      order.push(-1);
      return release;
    });
    (await waiters[1]!)();
    (await newcomer)();
    (await waiters[2]!)();
    (await waiters[0]!)();
    expect(order).toEqual([1, -1, 2, 3]);
    // Another origin has slots of its own.
    const other = await slots.acquire('http://b');
    other();
  });

  it('an aborted waiter leaves the queue; a release with nobody waiting frees the slot', async () => {
    const slots = new DirectReadSlots(1);
    const held = await slots.acquire('http://a');
    const controller = new AbortController();
    const aborted = slots.acquire('http://a', controller.signal, 0);
    const next = slots.acquire('http://a', undefined, 1);
    controller.abort(new Error('enough'));
    await expect(aborted).rejects.toMatchObject({ code: ErrorCode.Aborted });
    held();
    held();
    const release = await next;
    release();
    // Free again: taken at once.
    (await slots.acquire('http://a'))();
  });
});
