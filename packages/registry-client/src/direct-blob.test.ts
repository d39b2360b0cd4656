import { mkdtemp, readFile, rm } from 'node:fs/promises';
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
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type BlobInterruptedError,
  type BlobSink,
  createRegistryClient,
  DIRECT_BLOB_MIN_BYTES,
  type RegistryClient,
  type RegistryClientOptions,
  type RegistryEvent,
} from './index.ts';

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

async function failure(promise: Promise<unknown>): Promise<OciError> {
  try {
    await promise;
  } catch (error) {
    return error as OciError;
  }
  throw new Error('expected a rejection');
}

describe('fetchBlobInto', () => {
  let root: string;
  let image: BuiltImage;
  let layer: Descriptor;
  let small: Descriptor;
  let layerBytes: Buffer;
  let registry: HarnessRegistry;
  const clients: RegistryClient[] = [];
  const events: RegistryEvent[] = [];

  function client(options: RegistryClientOptions = {}): RegistryClient {
    const made = createRegistryClient({
      dockerConfig: false,
      retryPolicy: { baseMs: 20, maxMs: 100 },
      onEvent: (event) => events.push(event),
      ...options,
    });
    clients.push(made);
    return made;
  }
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
    await Promise.all(clients.map((made) => made.close()));
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
    const requests = blobRequests();
    expect(requests.map((request) => [request.connection, request.status, request.outcome])).toEqual([
      ['close', 200, 'complete'],
      ['close', 200, 'complete'],
    ]);
  });

  it('from an offset: one ranged request answered 206', async () => {
    const offset = 1_234_567;
    const sink = collector();
    await client().fetchBlobInto(ref(), layer, sink.sink, { offset });
    expect(sink.bytes().equals(layerBytes.subarray(offset))).toBe(true);
    expect(blobRequests().map((request) => [request.connection, request.range, request.status])).toEqual([
      ['close', `bytes=${offset}-`, 206],
    ]);
  });

  it('small blobs, directBlobReads: false and an offset at the end go the general way', async () => {
    const tiny = collector();
    await client().fetchBlobInto(ref(), small, tiny.sink);
    expect(tiny.bytes().equals(await readFile(image.manifests[0]!.layers[1]!.path))).toBe(true);
    const off = collector();
    await client({ directBlobReads: false }).fetchBlobInto(ref(), layer, off.sink);
    expect(off.bytes().equals(layerBytes)).toBe(true);
    expect(blobRequests().map((request) => request.connection)).toEqual(['keep-alive', 'keep-alive']);
    const none = collector();
    await client().fetchBlobInto(ref(), layer, none.sink, { offset: layer.size });
    expect(none.calls).toBe(0);
    expect(blobRequests()).toHaveLength(2);
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
      if (++calls === 2) await delay(400);
    };
    await client({ timeouts: { bodyIdle: 200 } }).fetchBlobInto(ref(), layer, sink);
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
    expect(blobRequests().map((request) => [request.kind, request.connection, request.status])).toEqual([
      ['blob', 'close', 307],
      ['blob', 'keep-alive', 307],
      ['origin', 'keep-alive', 200],
      ['blob', 'keep-alive', 307],
      ['origin', 'keep-alive', 200],
    ]);
  });

  it('429, 500, Range ignored and a wrong length are left to the general path and its retries and checks', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 500 } });
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 429, retryAfter: 0 } });
    const retried = collector();
    await client().fetchBlobInto(ref(), layer, retried.sink);
    expect(retried.bytes().equals(layerBytes)).toBe(true);
    // The direct GET took the 500 (declined unread); the general path met the 429 and retried.
    expect(blobRequests().map((request) => [request.connection, request.status])).toEqual([
      ['close', 500],
      ['keep-alive', 429],
      ['keep-alive', 200],
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
        blobRequests(bearer).map((request) => [request.connection, request.status, request.authScheme]),
      ).toEqual([
        ['close', 401, undefined],
        ['keep-alive', 401, undefined],
        ['keep-alive', 200, 'bearer'],
        ['close', 200, 'bearer'],
      ]);
    });
  });
});
