import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { type Descriptor, ErrorCode, MediaType, type OciError } from '@ocipull/core';
import {
  type BuiltImage,
  buildImage,
  file,
  type HarnessRegistry,
  startRegistry,
} from '@ocipull/test-harness';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type BlobInterruptedError, MAX_MANIFEST_BYTES, type RegistryError } from './index.ts';
import { drain, rejection as rejectionOf, testClients } from './testing/clients.ts';

const rejection = (promise: Promise<unknown>) => rejectionOf<RegistryError>(promise);

const LAYER_SIZE = 3 * 1024 * 1024;

describe('registry client against the harness registry', () => {
  let root: string;
  let single: BuiltImage;
  let multi: BuiltImage;
  let layer: Descriptor;
  let layerBytes: Buffer;
  let registry: HarnessRegistry;
  const { client, events, close } = testClients();

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'registry-client-'));
    single = await buildImage(
      {
        layers: [
          { entries: [file('big.bin', { size: LAYER_SIZE, seed: 7 })], compression: 'none' },
          { entries: [file('small.txt', 'hello')] },
        ],
      },
      { dir: join(root, 'single') },
    );
    multi = await buildImage(
      {
        format: 'docker',
        attestations: true,
        images: [
          { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ entries: [file('a', 'amd64')] }] },
          {
            platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
            layers: [{ entries: [file('a', 'arm64')] }],
          },
          {
            platform: { os: 'linux', architecture: 'arm', variant: 'v6' },
            layers: [{ entries: [file('a', 'armv6')] }],
          },
        ],
      },
      { dir: join(root, 'multi') },
    );
    layer = single.manifests[0]!.layers[0]!.descriptor;
    layerBytes = await readFile(single.manifests[0]!.layers[0]!.path);
    registry = await startRegistry({ repositories: { 'library/app': single.dir, 'team/multi': multi.dir } });
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

  const ref = (path: string) => `${registry.host}/${path}`;

  describe('manifests and platforms', () => {
    it('resolves a single-platform image by tag over plain HTTP (loopback default)', async () => {
      const resolved = await client().resolve(ref('library/app:latest'));
      expect(resolved.manifestDigest).toBe(single.digest);
      expect(resolved.mediaType).toBe(MediaType.OciManifest);
      expect(resolved.manifest.layers.map((entry) => entry.digest)).toEqual(
        single.manifests[0]!.layers.map((entry) => entry.descriptor.digest),
      );
      expect(Buffer.from(resolved.manifestBytes)).toEqual(await readFile(single.path));
      expect(resolved.index).toBeUndefined();
      expect(resolved.reference.toString()).toBe(`${registry.host}/library/app:latest`);
    });

    it('picks a platform from a manifest list, by tag and by digest, skipping attestations', async () => {
      const registryClient = client();
      const arm64 = await registryClient.resolve(ref('team/multi'), { platform: 'linux/arm64' });
      expect(arm64.manifestDigest).toBe(multi.manifests[1]!.descriptor.digest);
      expect(arm64.mediaType).toBe(MediaType.DockerManifest);
      expect(arm64.index?.digest).toBe(multi.digest);
      expect(arm64.index?.mediaType).toBe(MediaType.DockerManifestList);
      expect(arm64.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
      const byDigest = await registryClient.resolve(ref(`team/multi@${multi.digest}`), {
        platform: 'linux/amd64',
      });
      expect(byDigest.manifestDigest).toBe(multi.manifests[0]!.descriptor.digest);
      const host = await registryClient.resolve(ref('team/multi'));
      expect(host.platform?.architecture).toBe('amd64');
      await expect(
        registryClient.resolve(ref('team/multi'), { platform: 'linux/arm/v7' }),
      ).rejects.toMatchObject({
        code: ErrorCode.PlatformNotFound,
        available: ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v6'],
      });
      const fallback = await registryClient.resolve(ref('team/multi'), {
        platform: 'linux/arm/v7',
        variantFallback: true,
      });
      expect(fallback.manifestDigest).toBe(multi.manifests[2]!.descriptor.digest);
    });

    it('HEADs manifests: digest, media type and size; undefined when missing', async () => {
      const registryClient = client();
      expect(await registryClient.headManifest(ref('library/app:latest'))).toEqual({
        digest: single.digest,
        mediaType: MediaType.OciManifest,
        size: single.descriptor.size,
      });
      expect(await registryClient.headManifest(ref('library/app:nope'))).toBeUndefined();
    });

    it('HEAD answered 405 or 501 falls back to GET, as a HEAD without Docker-Content-Digest does', async () => {
      const registryClient = client();
      for (const status of [405, 501]) {
        registry.clearRequests();
        registry.faults.add({
          match: { kind: 'manifest', method: 'HEAD' },
          action: { type: 'status', status },
          times: 2,
        });
        expect(await registryClient.headManifest(ref('library/app:latest'))).toEqual({
          digest: single.digest,
          mediaType: MediaType.OciManifest,
          size: single.descriptor.size,
        });
        // A miss there is a miss like a HEAD 404.
        expect(await registryClient.headManifest(ref('library/app:nope'))).toBeUndefined();
        expect(
          registry.requests
            .filter((request) => request.kind === 'manifest')
            .map((request) => [request.method, request.status]),
        ).toEqual([
          ['HEAD', status],
          ['GET', 200],
          ['HEAD', status],
          ['GET', 404],
        ]);
      }
    });

    it('refuses a schema 1 manifest with a clear error', async () => {
      const dir = join(root, 'schema1');
      const bytes = Buffer.from(
        JSON.stringify({ schemaVersion: 1, name: 'old/image', tag: 'v1', fsLayers: [], history: [] }),
      );
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
      await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
      await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      await writeFile(
        join(dir, 'index.json'),
        JSON.stringify({
          schemaVersion: 2,
          manifests: [
            {
              mediaType: MediaType.DockerSchema1Signed,
              digest,
              size: bytes.length,
              annotations: { 'org.opencontainers.image.ref.name': 'v1' },
            },
          ],
        }),
      );
      registry.addRepository('old/image', dir);
      try {
        const error = await rejection(client().resolve(ref('old/image:v1')));
        expect(error.code).toBe(ErrorCode.InvalidManifest);
        expect(error.message).toContain('schema 1 is not supported');
      } finally {
        registry.removeRepository('old/image');
      }
    });

    it('maps missing manifests and repositories to codes with the registry’s errors[]', async () => {
      const registryClient = client();
      const missing = await rejection(registryClient.fetchManifest(ref('library/app:nope')));
      expect(missing.code).toBe(ErrorCode.ManifestUnknown);
      expect(missing.status).toBe(404);
      expect(missing.retryable).toBe(false);
      expect(missing.errors[0]?.code).toBe('MANIFEST_UNKNOWN');
      const noRepository = await rejection(registryClient.fetchManifest(ref('nobody/here:latest')));
      expect(noRepository.code).toBe(ErrorCode.NameUnknown);
    });

    it('verifies manifest bytes against the digest asked for and Docker-Content-Digest', async () => {
      registry.faults.add({
        match: { kind: 'manifest', digest: single.digest },
        action: { type: 'corrupt', offset: 20 },
        times: 10,
      });
      const registryClient = client();
      const byTag = await rejection(registryClient.fetchManifest(ref('library/app:latest')));
      expect(byTag.code).toBe(ErrorCode.DigestMismatch);
      const byDigest = await rejection(registryClient.fetchManifest(ref(`library/app@${single.digest}`)));
      expect(byDigest.code).toBe(ErrorCode.DigestMismatch);
      expect(byDigest.message).toContain(single.digest);
    });
  });

  describe('blobs and faults', () => {
    it('descriptor urls (foreign layers): tried first without credentials, resumed with Range, then the registry', async () => {
      const foreign = Buffer.from(Array.from({ length: 300_000 }, (_, index) => (index * 31 + 7) % 251));
      const foreignDigest =
        `sha256:${createHash('sha256').update(foreign).digest('hex')}` as Descriptor['digest'];
      const seen: { url: string; authorization?: string; range?: string }[] = [];
      const server: Server = createServer((request, response) => {
        seen.push({
          url: request.url ?? '',
          ...(request.headers.authorization ? { authorization: request.headers.authorization } : {}),
          ...(request.headers.range ? { range: request.headers.range } : {}),
        });
        if (request.url !== '/layer.tar.gz?sig=s3cret-signature') {
          response.writeHead(404).end();
          return;
        }
        const start = Number(/^bytes=(\d+)-$/.exec(request.headers.range ?? '')?.[1] ?? 0);
        response.writeHead(start > 0 ? 206 : 200, {
          'content-length': String(foreign.length - start),
          ...(start > 0 ? { 'content-range': `bytes ${start}-${foreign.length - 1}/${foreign.length}` } : {}),
        });
        response.end(foreign.subarray(start));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const closedPort = await new Promise<number>((resolve) => {
        const probe = createServer().listen(0, '127.0.0.1', () => {
          const { port } = probe.address() as { port: number };
          probe.close(() => resolve(port));
        });
      });
      try {
        const { port } = server.address() as { port: number };
        const good = `http://127.0.0.1:${port}/layer.tar.gz?sig=s3cret-signature`;
        const descriptor: Descriptor = {
          mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
          digest: foreignDigest,
          size: foreign.length,
          urls: [`http://127.0.0.1:${closedPort}/gone`, 'ftp://127.0.0.1/layer', good],
        };
        const registryClient = client({
          retries: 0,
          credentials: { [registry.host]: { username: 'u', password: 'registry-password' } },
        });
        const whole = await drain(await registryClient.fetchBlob(ref('library/app'), descriptor));
        expect(whole.error).toBeUndefined();
        expect(whole.bytes.equals(foreign)).toBe(true);
        const fallbacks = events.filter((event) => event.type === 'blob-url-fallback');
        expect(fallbacks.map((event) => [event.host, event.code])).toEqual([
          [`127.0.0.1:${closedPort}`, ErrorCode.Network],
          ['127.0.0.1', undefined],
        ]);
        expect(JSON.stringify(events)).not.toContain('s3cret-signature');
        const rest = await drain(
          await registryClient.fetchBlob(ref('library/app'), descriptor, { offset: 1000 }),
        );
        expect(rest.bytes.equals(foreign.subarray(1000))).toBe(true);
        expect(seen.at(-1)?.range).toBe('bytes=1000-');
        expect(seen.every((request) => request.authorization === undefined)).toBe(true);
        // Neither URL has it: the registry serves the layer.
        const registryOnly = { ...layer, urls: [`http://127.0.0.1:${port}/missing`] };
        const fromRegistry = await drain(await registryClient.fetchBlob(ref('library/app'), registryOnly));
        expect(fromRegistry.bytes.equals(layerBytes)).toBe(true);
        expect(events.at(-1)).toMatchObject({ type: 'blob-url-fallback', status: 404 });
        // blobUrls: false never asks the URL.
        const before = seen.length;
        const refused = await rejection(
          client({ blobUrls: false }).fetchBlob(ref('library/app'), descriptor),
        );
        expect(refused.status).toBe(404);
        expect(seen.length).toBe(before);
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    });

    it('streams a blob whole', async () => {
      const { bytes, error } = await drain(await client().fetchBlob(ref('library/app'), layer));
      expect(error).toBeUndefined();
      expect(bytes.equals(layerBytes)).toBe(true);
    });

    it('cut: surfaces ERR_BLOB_INTERRUPTED with the offset reached, and a fetch from there gets the rest', async () => {
      registry.faults.add({
        match: { kind: 'blob', digest: layer.digest },
        action: { type: 'cut', afterBytes: 1_000_000 },
      });
      const registryClient = client();
      const first = await drain(await registryClient.fetchBlob(ref('library/app'), layer));
      const interrupted = first.error as BlobInterruptedError;
      expect(interrupted.code).toBe(ErrorCode.BlobInterrupted);
      expect(interrupted.retryable).toBe(true);
      expect(interrupted.offset).toBe(first.bytes.byteLength);
      expect(interrupted.offset).toBeGreaterThan(0);
      expect(interrupted.offset).toBeLessThanOrEqual(1_000_000);
      const rest = await drain(
        await registryClient.fetchBlob(ref('library/app'), layer, { offset: interrupted.offset }),
      );
      expect(rest.error).toBeUndefined();
      expect(Buffer.concat([first.bytes, rest.bytes]).equals(layerBytes)).toBe(true);
      const ranged = registry.requests.filter((request) => request.kind === 'blob');
      expect(ranged.map((request) => request.range)).toEqual([undefined, `bytes=${interrupted.offset}-`]);
    });

    it('429 with Retry-After: waits at least as long as asked, then succeeds', async () => {
      registry.faults.add({
        match: { kind: 'blob' },
        action: { type: 'status', status: 429, retryAfter: 1 },
      });
      const started = performance.now();
      const { bytes } = await drain(await client().fetchBlob(ref('library/app'), layer));
      const elapsed = performance.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(1000);
      expect(bytes.equals(layerBytes)).toBe(true);
      expect(events).toContainEqual(
        expect.objectContaining({
          type: 'request-retry',
          delayMs: 1000,
          status: 429,
          code: ErrorCode.TooManyRequests,
        }),
      );
    });

    it('429 asking for longer than the ceiling fails at once with ERR_TOO_MANY_REQUESTS', async () => {
      registry.faults.add({
        match: { kind: 'blob' },
        action: { type: 'status', status: 429, retryAfter: 3600 },
      });
      const started = performance.now();
      const error = await rejection(client().fetchBlob(ref('library/app'), layer));
      expect(performance.now() - started).toBeLessThan(1000);
      expect([error.code, error.status, error.retryAfterMs, error.retryable]).toEqual([
        ErrorCode.TooManyRequests,
        429,
        3_600_000,
        // Given up on, so nobody retries it sooner (the blob cache retries what is retryable).
        false,
      ]);
      expect(error.message).toContain('it asks to wait 3600 s, longer than the 60 s this client waits');
      expect(registry.requests.filter((request) => request.kind === 'blob')).toHaveLength(1);
    });

    it('a status from the redirect target names that host and is no verdict on credentials (ERR_REGISTRY)', async () => {
      registry.faults.add({ match: { kind: 'blob' }, action: { type: 'redirect' } });
      registry.faults.add({ match: { kind: 'origin' }, action: { type: 'status', status: 403 }, times: 2 });
      const registryClient = client({
        retries: 0,
        credentials: { [registry.host]: { username: 'u', password: 'registry-password' } },
      });
      const streamed = await rejection(registryClient.fetchBlob(ref('library/app'), layer));
      const sunk = await rejection(registryClient.fetchBlobInto(ref('library/app'), layer, () => undefined));
      for (const error of [streamed, sunk]) {
        expect([error.code, error.status, error.registry, error.retryable]).toEqual([
          ErrorCode.Registry,
          403,
          registry.origin.host,
          false,
        ]);
        expect(error.message).toMatch(
          new RegExp(
            `^${registry.origin.host} answered 403 for blob ${layer.digest}, where ${registry.host} redirected it`,
          ),
        );
        expect(error.message).not.toContain('credentials');
      }
    });

    it('500 and 503 are retried with backoff; a persistent 500 gives up after the retries', async () => {
      registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 500 } });
      registry.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 503 } });
      const { bytes } = await drain(await client().fetchBlob(ref('library/app'), layer));
      expect(bytes.equals(layerBytes)).toBe(true);
      expect(
        events
          .filter((event) => event.type === 'request-retry')
          .map((event) => 'status' in event && event.status),
      ).toEqual([500, 503]);
      registry.faults.add({
        match: { kind: 'manifest' },
        action: { type: 'status', status: 500 },
        times: 100,
      });
      const error = await rejection(client({ retries: 2 }).fetchManifest(ref('library/app:latest')));
      // Given up after its retries: not retryable for a caller's own loop (the blob cache's) either.
      expect([error.code, error.status, error.retryable]).toEqual([ErrorCode.Registry, 500, false]);
      expect(error.message).toMatch(/answered 500 .*\(3 attempts\)$/);
      expect(registry.requests.filter((request) => request.kind === 'manifest').length).toBe(3);
    });

    it('Range ignored (200 to a ranged request): drops the prefix and delivers the right bytes', async () => {
      registry.faults.add({ match: { kind: 'blob' }, action: { type: 'ignore-range' } });
      const offset = 1_234_567;
      const { bytes, error } = await drain(await client().fetchBlob(ref('library/app'), layer, { offset }));
      expect(error).toBeUndefined();
      expect(bytes.equals(layerBytes.subarray(offset))).toBe(true);
      expect(events).toContainEqual({
        type: 'blob-range-ignored',
        registry: registry.host,
        digest: layer.digest,
        offset,
      });
    });

    it('stall: the body-idle timeout fires and surfaces as a resumable interruption', async () => {
      registry.faults.add({ match: { kind: 'blob' }, action: { type: 'stall', afterBytes: 500_000 } });
      const registryClient = client({ timeouts: { bodyIdle: 400 } });
      const started = performance.now();
      const { bytes, error } = await drain(await registryClient.fetchBlob(ref('library/app'), layer));
      expect(performance.now() - started).toBeGreaterThanOrEqual(350);
      const interrupted = error as BlobInterruptedError;
      expect(interrupted.code).toBe(ErrorCode.BlobInterrupted);
      expect(interrupted.offset).toBe(bytes.byteLength);
      expect((interrupted.cause as OciError).code).toBe(ErrorCode.Timeout);
      const rest = await drain(
        await registryClient.fetchBlob(ref('library/app'), layer, { offset: interrupted.offset }),
      );
      expect(Buffer.concat([bytes, rest.bytes]).equals(layerBytes)).toBe(true);
    });

    it('a blob the registry says is longer or shorter than the descriptor: ERR_SIZE_MISMATCH at once, not retried', async () => {
      const registryClient = client();
      for (const [size, offset] of [
        [layer.size - 10, 0],
        [layer.size + 10, 0],
        [layer.size + 10, 1000],
      ] as const) {
        const error = await rejection(
          registryClient.fetchBlob(ref('library/app'), { ...layer, size }, { offset }),
        );
        expect(error.code).toBe(ErrorCode.SizeMismatch);
        expect(error.retryable).toBe(false);
        expect(error.message).toMatch(new RegExp(`expected ${size} bytes, got (at least )?${layer.size} `));
      }
      // One request each: a blob of another size is no transfer fault to retry.
      expect(registry.requests.filter((request) => request.digest === layer.digest)).toHaveLength(3);
    });

    it('offset equal to the size gives an empty stream; outside the blob is refused', async () => {
      const registryClient = client();
      const empty = await registryClient.fetchBlob(ref('library/app'), layer, { offset: layer.size });
      expect(empty.readableObjectMode).toBe(false);
      expect((await drain(empty)).bytes.length).toBe(0);
      expect(registry.requests.length).toBe(0);
      await expect(
        registryClient.fetchBlob(ref('library/app'), layer, { offset: layer.size + 1 }),
      ).rejects.toMatchObject({
        code: ErrorCode.InvalidArgument,
      });
      const missing = await rejection(
        registryClient.fetchBlob(ref('library/app'), {
          ...layer,
          digest: `sha256:${'0'.repeat(64)}` as Descriptor['digest'],
        }),
      );
      expect(missing.code).toBe(ErrorCode.BlobUnknown);
    });

    it('aborting mid-body ends the stream with ERR_ABORTED', async () => {
      registry.faults.add({
        match: { kind: 'blob' },
        action: { type: 'throttle', bytesPerSecond: 2_000_000 },
      });
      const controller = new AbortController();
      const stream = await client()
        .blobSource(ref('library/app'))
        .fetch(layer, { signal: controller.signal });
      setTimeout(() => controller.abort(new Error('stop')), 100);
      const { error } = await drain(stream);
      expect(error?.code).toBe(ErrorCode.Aborted);
      await expect(
        client().fetchBlob(ref('library/app'), layer, { signal: controller.signal }),
      ).rejects.toMatchObject({
        code: ErrorCode.Aborted,
      });
    });
  });

  describe('more resilience', () => {
    it('a manifest body cut mid-way is fetched again: the direct way falls back, the general way retries', async () => {
      const cutOnce = () =>
        registry.faults.add({
          match: { kind: 'manifest', method: 'GET' },
          action: { type: 'cut', afterBytes: 50 },
        });
      const manifestRequests = () =>
        registry.requests
          .filter((request) => request.kind === 'manifest')
          .map((request) => [request.connection ?? 'direct', request.outcome]);
      cutOnce();
      expect((await client().resolve(ref('library/app:latest'))).manifestDigest).toBe(single.digest);
      // The direct request (no Connection header) was cut; undici's fetched it whole, no retry needed.
      await vi.waitFor(() =>
        expect(manifestRequests()).toEqual([
          ['direct', 'cut'],
          ['keep-alive', 'complete'],
        ]),
      );
      expect(events.filter((event) => event.type === 'request-retry')).toEqual([]);

      registry.clearRequests();
      cutOnce();
      const general = client({ directBlobReads: false });
      expect((await general.resolve(ref('library/app:latest'))).manifestDigest).toBe(single.digest);
      await vi.waitFor(() =>
        expect(manifestRequests()).toEqual([
          ['keep-alive', 'cut'],
          ['keep-alive', 'complete'],
        ]),
      );
      expect(events).toContainEqual(
        expect.objectContaining({ type: 'request-retry', code: ErrorCode.Network }),
      );
    });

    it('an abort during a Retry-After wait rejects at once with ERR_ABORTED', async () => {
      registry.faults.add({
        match: { kind: 'manifest' },
        action: { type: 'status', status: 503, retryAfter: 30 },
      });
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 100);
      const started = performance.now();
      const error = await rejection(
        client().fetchManifest(ref('library/app:latest'), { signal: controller.signal }),
      );
      expect(error.code).toBe(ErrorCode.Aborted);
      expect(performance.now() - started).toBeLessThan(5000);
    });
  });

  describe('auth', () => {
    let basic: HarnessRegistry;
    let bearer: HarnessRegistry;
    let closed: HarnessRegistry;
    let helperDir: string;

    beforeAll(async () => {
      basic = await startRegistry({
        repositories: { 'library/app': single.dir },
        auth: { type: 'basic', users: { alice: 'wonderland' } },
      });
      bearer = await startRegistry({
        repositories: { 'library/app': single.dir, 'team/other': single.dir },
        auth: { type: 'bearer', users: { bob: 'builder' }, expiresIn: 1 },
      });
      closed = await startRegistry({
        repositories: { 'library/app': single.dir },
        auth: { type: 'bearer', users: { bob: 'builder' }, anonymous: false },
      });
      helperDir = join(root, 'helper');
      await mkdir(join(helperDir, 'bin'), { recursive: true });
      await writeFile(
        join(helperDir, 'bin', 'docker-credential-harness'),
        `#!/bin/sh\nread -r server\necho "$server" >> "${helperDir}/asked"\nprintf '{"ServerURL":"%s","Username":"bob","Secret":"builder"}' "$server"\n`,
      );
      await chmod(join(helperDir, 'bin', 'docker-credential-harness'), 0o755);
      await writeFile(
        join(helperDir, 'config.json'),
        JSON.stringify({ credHelpers: { [closed.host]: 'harness' } }),
      );
    });

    afterAll(async () => {
      await Promise.all([basic?.close(), bearer?.close(), closed?.close()]);
    });

    it('basic: right password pulls, wrong or missing one is ERR_UNAUTHORIZED without the secret in the message', async () => {
      const good = client({ credentials: { [basic.host]: { username: 'alice', password: 'wonderland' } } });
      expect((await good.resolve(`${basic.host}/library/app`)).manifestDigest).toBe(single.digest);
      const wrong = await rejection(
        client({ credentials: () => ({ username: 'alice', password: 'hunter2-wrong' }) }).resolve(
          `${basic.host}/library/app`,
        ),
      );
      expect([wrong.code, wrong.status]).toEqual([ErrorCode.Unauthorized, 401]);
      expect(JSON.stringify({ message: wrong.message, errors: wrong.errors })).not.toContain('hunter2');
      expect(wrong.message).toContain('the configured credentials were refused');
      const none = await rejection(client().resolve(`${basic.host}/library/app`));
      expect(none.code).toBe(ErrorCode.Unauthorized);
      expect(none.message).toContain(`no credentials found for ${basic.host}`);
      expect(JSON.stringify(events)).not.toMatch(/wonderland|hunter2/);
    });

    it('bearer: anonymous token, cached per scope until it expires, renewed after', async () => {
      const registryClient = client();
      await registryClient.resolve(`${bearer.host}/library/app`);
      await drain(await registryClient.fetchBlob(`${bearer.host}/library/app`, layer));
      const tokens = () => bearer.requests.filter((request) => request.kind === 'token').length;
      expect(tokens()).toBe(1);
      expect(bearer.requests.filter((request) => request.kind === 'blob')[0]?.authScheme).toBe('bearer');
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await registryClient.headManifest(`${bearer.host}/library/app`);
      expect(tokens()).toBe(2);
    });

    it('bearer: each repository gets a token for its own scope', async () => {
      bearer.clearRequests();
      const registryClient = client();
      await registryClient.headManifest(`${bearer.host}/library/app`);
      await registryClient.headManifest(`${bearer.host}/team/other`);
      const scopes = bearer.requests
        .filter((request) => request.kind === 'token')
        .map((request) => new URLSearchParams(request.query).get('scope'));
      expect(scopes).toEqual(['repository:library/app:pull', 'repository:team/other:pull']);
    });

    it('bearer: one caller aborting does not cancel the token fetch others share', async () => {
      bearer.faults.add({ match: { kind: 'token' }, action: { type: 'status', status: 503, retryAfter: 1 } });
      const registryClient = client();
      const controller = new AbortController();
      const first = registryClient.headManifest(`${bearer.host}/library/app`, { signal: controller.signal });
      const second = registryClient.headManifest(`${bearer.host}/library/app`);
      setTimeout(() => controller.abort(), 100);
      expect((await rejection(first)).code).toBe(ErrorCode.Aborted);
      expect((await second)?.digest).toBe(single.digest);
      bearer.faults.clear();
    });

    it('bearer: a revoked token is replaced transparently on 401', async () => {
      const registryClient = client();
      await registryClient.headManifest(`${bearer.host}/library/app`);
      bearer.revokeTokens();
      expect((await registryClient.headManifest(`${bearer.host}/library/app`))?.digest).toBe(single.digest);
    });

    it('bearer without anonymous access: denied anonymously, allowed with a credential helper on PATH', async () => {
      const anonymous = await rejection(client().resolve(`${closed.host}/library/app`));
      expect(anonymous.code).toBe(ErrorCode.Unauthorized);
      expect(anonymous.message).toContain('anonymous');
      const withHelper = client({
        dockerConfig: join(helperDir, 'config.json'),
        env: { PATH: `${join(helperDir, 'bin')}:${process.env.PATH ?? ''}`, HOME: helperDir },
      });
      expect((await withHelper.resolve(`${closed.host}/library/app`)).manifestDigest).toBe(single.digest);
      expect((await readFile(join(helperDir, 'asked'), 'utf8')).trim()).toBe(closed.host);
      const tokenUsers = closed.requests
        .filter((request) => request.kind === 'token')
        .map((request) => request.user);
      expect(tokenUsers).toEqual([undefined, 'bob']);
      const wrong = await rejection(
        client({ credentials: { [closed.host]: { username: 'bob', password: 'not-it' } } }).resolve(
          `${closed.host}/library/app`,
        ),
      );
      expect(wrong.code).toBe(ErrorCode.Unauthorized);
      expect(wrong.message).not.toContain('not-it');
    });

    it('bearer: an identity token is exchanged with the refresh_token grant', async () => {
      const answer = await fetch(
        `${closed.tokenUrl}?service=ocipull-harness&offline_token=true&scope=repository:library/app:pull`,
        {
          headers: { authorization: `Basic ${Buffer.from('bob:builder').toString('base64')}` },
        },
      );
      const { refresh_token: refreshToken } = (await answer.json()) as { refresh_token: string };
      expect(refreshToken).toBeTruthy();
      closed.clearRequests();
      const registryClient = client({ credentials: { [closed.host]: { identityToken: refreshToken } } });
      expect((await registryClient.resolve(`${closed.host}/library/app`)).manifestDigest).toBe(single.digest);
      expect(closed.requests.find((request) => request.kind === 'token')?.method).toBe('POST');
    });

    it('redirects to another origin never carry Authorization', async () => {
      basic.faults.add({ match: { kind: 'blob' }, action: { type: 'redirect' } });
      const registryClient = client({
        credentials: { [basic.host]: { username: 'alice', password: 'wonderland' } },
      });
      await registryClient.resolve(`${basic.host}/library/app`);
      const { bytes } = await drain(await registryClient.fetchBlob(`${basic.host}/library/app`, layer));
      expect(bytes.equals(layerBytes)).toBe(true);
      const blob = basic.requests.filter((request) => request.kind === 'blob');
      const origin = basic.requests.filter((request) => request.kind === 'origin');
      expect(blob.at(-1)?.status).toBe(307);
      expect(blob.at(-1)?.authorization).toBe(true);
      expect(origin.length).toBeGreaterThan(0);
      expect(origin.every((request) => request.authorization === false)).toBe(true);
    });
  });

  describe('mirrors', () => {
    let mirror: HarnessRegistry;
    let empty: HarnessRegistry;

    beforeAll(async () => {
      mirror = await startRegistry({ repositories: { 'library/app': single.dir } });
      empty = await startRegistry({});
    });

    afterAll(async () => {
      await Promise.all([mirror?.close(), empty?.close()]);
    });

    it('tries the mirror first and does not touch the upstream when it has everything', async () => {
      const registryClient = client({ registries: { [registry.host]: { mirrors: [mirror.host] } } });
      await registryClient.resolve(ref('library/app'));
      await drain(await registryClient.fetchBlob(ref('library/app'), layer));
      expect(registry.requests.length).toBe(0);
      expect(
        mirror.requests.filter((request) => request.kind === 'manifest' || request.kind === 'blob').length,
      ).toBe(2);
      expect(events.filter((event) => event.type === 'mirror-fallback')).toEqual([]);
    });

    it('falls back to the upstream on a miss, a failure and a mirror that is down, reporting each', async () => {
      mirror.clearRequests();
      const downPort = empty.port;
      const down = `127.0.0.1:${downPort}`;
      await empty.close();
      mirror.faults.add({ match: { kind: 'blob' }, action: { type: 'status', status: 500 }, times: 100 });
      const misses = await startRegistry({});
      try {
        const registryClient = client({
          retries: 1,
          registries: { [registry.host]: { mirrors: [down, misses.host, `http://${mirror.host}`] } },
        });
        const resolved = await registryClient.resolve(ref('library/app'));
        expect(resolved.manifestDigest).toBe(single.digest);
        const { bytes } = await drain(await registryClient.fetchBlob(ref('library/app'), layer));
        expect(bytes.equals(layerBytes)).toBe(true);
        const fallbacks = events.filter((event) => event.type === 'mirror-fallback');
        expect(fallbacks).toContainEqual(
          expect.objectContaining({ mirror: down, operation: 'manifest', code: ErrorCode.Network }),
        );
        expect(fallbacks).toContainEqual(
          expect.objectContaining({
            mirror: misses.host,
            operation: 'manifest',
            code: ErrorCode.NameUnknown,
            status: 404,
          }),
        );
        expect(fallbacks).toContainEqual(
          expect.objectContaining({ mirror: mirror.host, operation: 'blob', status: 500 }),
        );
        expect(registry.requests.filter((request) => request.kind === 'blob').length).toBe(1);
        // Mirrors get no retries of their own: the upstream is the fallback.
        expect(mirror.requests.filter((request) => request.kind === 'blob').length).toBe(1);
        // The unreachable mirror was tried once, then skipped for the cool-down.
        expect(fallbacks.filter((event) => event.mirror === down).length).toBe(1);
      } finally {
        await misses.close();
      }
    });
  });
  describe('proxies', () => {
    let proxy: Server;
    let proxyPort: number;
    const tunnels: string[] = [];

    beforeAll(async () => {
      // A CONNECT proxy that sends every tunnel to 127.0.0.1 at the asked port: names never resolve.
      proxy = createServer();
      proxy.on('connect', (request, socket, head) => {
        tunnels.push(request.url ?? '');
        const port = Number((request.url ?? '').split(':').pop());
        const upstream = netConnect(port, '127.0.0.1', () => {
          socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          upstream.write(head);
          upstream.pipe(socket);
          socket.pipe(upstream);
        });
        upstream.on('error', () => socket.destroy());
        socket.on('error', () => upstream.destroy());
      });
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
      proxyPort = (proxy.address() as { port: number }).port;
    });

    afterAll(async () => {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    });

    it('goes through HTTP_PROXY for remote registries and stays direct for loopback', async () => {
      const remote = `registry.test:${registry.port}`;
      const registryClient = client({
        env: { HTTP_PROXY: `http://127.0.0.1:${proxyPort}` },
        registries: { [remote]: { insecure: true } },
      });
      const resolved = await registryClient.resolve(`${remote}/library/app`);
      expect(resolved.manifestDigest).toBe(single.digest);
      expect(tunnels).toEqual([remote]);
      await registryClient.resolve(ref('library/app'));
      expect(tunnels).toEqual([remote]);
      expect(registry.requests.filter((request) => request.kind === 'manifest').length).toBe(2);
    });
  });
});

/**
 * A plain HTTP server on 127.0.0.1 whose answers a test scripts: `handle` gets every request, and
 * `seen` lists each one's method and path (query included).
 */
async function scriptedServer() {
  const state = {
    host: '',
    seen: [] as string[],
    handle: (_request: IncomingMessage, response: ServerResponse): void => {
      response.writeHead(404).end();
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = createServer((request, response) => {
    state.seen.push(`${request.method} ${request.url}`);
    state.handle(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return state;
}

describe('registry client against scripted servers', () => {
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: `sha256:${'c'.repeat(64)}`, size: 2 },
      layers: [],
    }),
  );
  const manifestDigest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  let registry: Awaited<ReturnType<typeof scriptedServer>>;
  let storage: Awaited<ReturnType<typeof scriptedServer>>;
  const { client, close } = testClients({ retries: 0 });

  beforeAll(async () => {
    registry = await scriptedServer();
    storage = await scriptedServer();
  });

  afterEach(() => {
    registry.seen.length = 0;
    storage.seen.length = 0;
  });

  afterAll(async () => {
    await close();
    await Promise.all([registry?.close(), storage?.close()]);
  });

  const json = (
    response: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ) =>
    response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

  describe('what a refusal says about the credentials', () => {
    const users = new Map<string, string | undefined>();
    const alice = `Basic ${Buffer.from('alice:s3cret-password').toString('base64')}`;

    beforeAll(() => {
      // Docker Hub's ways: the token server grants a token for any scope it knows the user for, and
      // the registry answers a repository that does not exist with 401 insufficient_scope.
      registry.handle = (request, response) => {
        const url = new URL(request.url ?? '/', 'http://registry');
        const realm = `http://${registry.host}/token`;
        if (url.pathname === '/token') {
          const authorization = request.headers.authorization;
          if (authorization !== undefined && authorization !== alice) {
            json(response, 401, {
              errors: [{ code: 'UNAUTHORIZED', message: 'incorrect username or password' }],
            });
            return;
          }
          const token = `token-${users.size}`;
          users.set(token, authorization === undefined ? undefined : 'alice');
          json(response, 200, { token, expires_in: 300 });
          return;
        }
        const token = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
        const repository = /^\/v2\/(.+)\/manifests\//.exec(url.pathname)?.[1] ?? '';
        const scope = `scope="repository:${repository}:pull"`;
        if (token === undefined || !users.has(token)) {
          json(
            response,
            401,
            { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] },
            {
              'www-authenticate': `Bearer realm="${realm}",service="test",${scope}`,
            },
          );
        } else if (repository === 'nosuch') {
          json(
            response,
            401,
            { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] },
            {
              'www-authenticate': `Bearer realm="${realm}",service="test",${scope},error="insufficient_scope"`,
            },
          );
        } else if (users.get(token) === undefined) {
          json(response, 403, {
            errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }],
          });
        } else {
          response.writeHead(200, { 'content-type': MediaType.OciManifest }).end(manifest);
        }
      };
    });

    const withCredentials = () =>
      client({ credentials: { [registry.host]: { username: 'alice', password: 's3cret-password' } } });

    it('a 401 insufficient_scope after the token server took the credentials: the repository may not exist', async () => {
      const error = await rejection(withCredentials().fetchManifest(`${registry.host}/nosuch:v1`));
      expect([error.code, error.status]).toEqual([ErrorCode.Unauthorized, 401]);
      expect(error.message).toContain(
        'the token server accepted the configured credentials, but the token gives no access to nosuch: the repository may not exist, or these credentials may not pull from it',
      );
      expect(error.message).not.toContain('refused');
      expect(error.message).not.toContain('s3cret');
      // Anonymous, the same answer still says that no credentials were found.
      const anonymous = await rejection(client().fetchManifest(`${registry.host}/nosuch:v1`));
      expect(anonymous.message).toContain(`no credentials found for ${registry.host}`);
      // Credentials the token server refuses are still called refused.
      const wrong = await rejection(
        client({
          credentials: { [registry.host]: { username: 'alice', password: 'wrong-one' } },
        }).fetchManifest(`${registry.host}/nosuch:v1`),
      );
      expect([wrong.code, wrong.message]).toEqual([
        ErrorCode.Unauthorized,
        `${registry.host}: the token server refused the configured credentials for repository:nosuch:pull (401)`,
      ]);
    });

    it('a 403 after an anonymous token says the request carried no credentials', async () => {
      const error = await rejection(client().fetchManifest(`${registry.host}/private:v1`));
      expect([error.code, error.status]).toEqual([ErrorCode.Denied, 403]);
      expect(error.message).toBe(
        `${registry.host} answered 403 for manifest private:v1 (DENIED: requested access to the resource is denied): the request carried no credentials: no credentials found for ${registry.host} (options.credentials, auth files, credential helpers)`,
      );
      expect((await withCredentials().fetchManifest(`${registry.host}/private:v1`)).digest).toBe(
        manifestDigest,
      );
    });
  });

  it("a redirect target's 401 challenge is not learned: no token is asked for at its realm", async () => {
    registry.handle = (_request, response) => {
      response.writeHead(307, { location: `http://${storage.host}/bucket/blob?signature=abc` }).end();
    };
    storage.handle = (request, response) => {
      if (request.url?.startsWith('/token')) {
        json(response, 200, { token: 'stolen', expires_in: 300 });
        return;
      }
      json(
        response,
        401,
        {},
        { 'www-authenticate': `Bearer realm="http://${storage.host}/token",service="s"` },
      );
    };
    const blob = {
      mediaType: 'application/octet-stream',
      digest: `sha256:${'e'.repeat(64)}`,
      size: 10,
    } as Descriptor;
    const error = await rejection(
      client({
        credentials: { [registry.host]: { username: 'alice', password: 's3cret-password' } },
      }).fetchBlob(`${registry.host}/team/app`, blob),
    );
    expect([error.code, error.status, error.registry]).toEqual([ErrorCode.Registry, 401, storage.host]);
    expect(error.message).not.toContain('credentials');
    expect(storage.seen).toEqual(['GET /bucket/blob?signature=abc']);
  });

  describe('content codings nobody asked for', () => {
    /** The body and Content-Encoding the next answer carries. */
    let coded: { body: Buffer; coding: string } = { body: manifest, coding: 'identity' };

    beforeAll(() => {
      registry.handle = (request, response) => {
        const blob = request.url?.includes('/blobs/');
        response.writeHead(200, {
          'content-type': blob ? 'application/octet-stream' : MediaType.OciManifest,
          'content-encoding': coded.coding,
          'content-length': String(coded.body.length),
          ...(blob ? {} : { 'docker-content-digest': manifestDigest }),
        });
        response.end(coded.body);
      };
    });

    it('a gzip, deflate or br manifest is decoded before its digest is checked, the direct way and undici’s', async () => {
      const cases: [string, Buffer][] = [
        ['gzip', gzipSync(manifest)],
        ['x-gzip', gzipSync(manifest)],
        ['deflate', deflateSync(manifest)],
        ['deflate', deflateRawSync(manifest)],
        ['br', brotliCompressSync(manifest)],
        ['deflate, gzip', gzipSync(deflateSync(manifest))],
      ];
      for (const directBlobReads of [true, false]) {
        const registryClient = client({ directBlobReads });
        for (const [coding, body] of cases) {
          coded = { body, coding };
          const fetched = await registryClient.fetchManifest(`${registry.host}/team/app:v1`);
          expect([coding, fetched.digest]).toEqual([coding, manifestDigest]);
          expect(Buffer.from(fetched.bytes).equals(manifest)).toBe(true);
        }
      }
    });

    it('a decoded manifest is held to the cap; a coding it cannot decode is named', async () => {
      coded = { body: gzipSync(Buffer.alloc(MAX_MANIFEST_BYTES + 1, 32)), coding: 'gzip' };
      const bomb = await rejection(client().fetchManifest(`${registry.host}/team/app:v1`));
      expect([bomb.code, bomb.message]).toEqual([
        ErrorCode.InvalidManifest,
        `manifest from ${registry.host} exceeds the ${MAX_MANIFEST_BYTES} byte cap once decoded (Content-Encoding gzip)`,
      ]);
      coded = { body: manifest, coding: 'compress' };
      const unknown = await rejection(client().fetchManifest(`${registry.host}/team/app:v1`));
      expect([unknown.code, unknown.message]).toEqual([
        ErrorCode.InvalidManifest,
        `${registry.host} sent the manifest with Content-Encoding "compress", which this client cannot decode (it asks for none)`,
      ]);
    });

    it('a content-coded blob is refused, naming the coding, both ways', async () => {
      const bytes = Buffer.alloc(50_000, 1);
      const blob = {
        mediaType: 'application/octet-stream',
        digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
        size: bytes.length,
      } as Descriptor;
      coded = { body: gzipSync(bytes), coding: 'gzip' };
      const registryClient = client();
      const streamed = await rejection(registryClient.fetchBlob(`${registry.host}/team/app`, blob));
      const sunk = await rejection(
        registryClient.fetchBlobInto(`${registry.host}/team/app`, blob, () => undefined),
      );
      for (const error of [streamed, sunk]) {
        expect([error.code, error.retryable, error.message]).toEqual([
          ErrorCode.Registry,
          false,
          `${registry.host} sent blob ${blob.digest} with Content-Encoding "gzip", which was not asked for; a blob is taken only as stored`,
        ]);
      }
    });
  });
});

describe('client options', () => {
  it.each([
    [{ maxConnectionsPerHost: Number.NaN }],
    [{ maxConnectionsPerHost: 0 }],
    [{ maxConnectionsPerHost: 1.5 }],
    [{ timeouts: { headers: -1 } }],
    [{ timeouts: { bodyIdle: Number.NaN } }],
    [{ retryPolicy: { baseMs: -5 } }],
    [{ retryPolicy: { maxRetryAfterMs: Number.NaN } }],
  ])('refuses %j with ERR_INVALID_ARGUMENT instead of hanging or misbehaving later', async (options) => {
    const { createRegistryClient } = await import('./index.ts');
    expect(() => createRegistryClient(options)).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument }),
    );
  });
});

describe('client.close()', () => {
  it('resolves while a blob stream is still unread, and that stream fails', async () => {
    const { createRegistryClient } = await import('./index.ts');
    const bytes = Buffer.alloc(4 * 1024 * 1024, 7);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Descriptor['digest'];
    const server = createServer((_request, response) => {
      response.writeHead(200, { 'content-length': bytes.length, 'content-type': 'application/octet-stream' });
      response.end(bytes);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const closing = createRegistryClient({ directBlobReads: false });
      const stream = await closing.fetchBlob(`127.0.0.1:${port}/x/y`, {
        mediaType: MediaType.OciLayerGzip,
        digest,
        size: bytes.length,
      });
      const failed = new Promise((resolve) => stream.once('error', resolve));
      const closed = await Promise.race([
        closing.close().then(() => 'closed'),
        new Promise((resolve) => setTimeout(() => resolve('still waiting'), 3000)),
      ]);
      expect(closed).toBe('closed');
      stream.resume();
      expect(await failed).toBeInstanceOf(Error);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('client.close() and a token fetch that waits', () => {
  it('ends a shared token fetch waiting out a Retry-After: the process exits at once', async () => {
    const layout = await mkdtemp(join(tmpdir(), 'token-wait-'));
    const { buildImage: build, file: entry } = await import('@ocipull/test-harness');
    await build({ layers: [{ entries: [entry('a', 'a')] }] }, { dir: layout, tag: 'v1' });
    const waiting = await startRegistry({ repositories: { 'lib/app': layout }, auth: { type: 'bearer' } });
    waiting.faults.add({
      match: { kind: 'token' },
      action: { type: 'status', status: 503, retryAfter: 30 },
      times: 100,
    });
    // In a process of its own: what is measured is whether anything keeps that process alive.
    const script = [
      `const { createRegistryClient } = await import(${JSON.stringify(join(import.meta.dirname, 'index.ts'))});`,
      'const client = createRegistryClient({ env: {} });',
      `await client.resolve(${JSON.stringify(`${waiting.host}/lib/app:v1`)}, { signal: AbortSignal.timeout(200) }).catch(() => {});`,
      'await client.close();',
    ].join('\n');
    try {
      const started = performance.now();
      const child = await new Promise<number>((resolve) => {
        const { spawn } = process.getBuiltinModule(
          'node:child_process',
        ) as typeof import('node:child_process');
        spawn(process.execPath, ['--conditions=@ocipull/source', '--input-type=module', '-e', script], {
          stdio: 'ignore',
        }).on('exit', (code) => resolve(code ?? -1));
      });
      expect(child).toBe(0);
      expect(performance.now() - started).toBeLessThan(10_000);
    } finally {
      await waiting.close();
      await rm(layout, { recursive: true, force: true });
    }
  }, 40_000);
});
