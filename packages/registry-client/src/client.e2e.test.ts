import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type Descriptor, ErrorCode, type OciError } from '@ocipull/core';
import {
  type BuiltImage,
  buildImage,
  type DistributionRegistry,
  file,
  startDistribution,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DIRECT_BLOB_MIN_BYTES,
  type RegistryClient,
  type RegistryClientOptions,
  type RegistryEvent,
} from './index.ts';
import { rejection as rejectionOf, testClients } from './testing/clients.ts';

async function sha256(stream: Readable): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).byteLength;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

const rejection = (promise: Promise<unknown>) => rejectionOf<OciError & { status?: number }>(promise);

describe('registry client against the real distribution registry', () => {
  let root: string;
  let image: BuiltImage;
  let multi: BuiltImage;
  const registries: DistributionRegistry[] = [];
  const { client, close } = testClients({ retryPolicy: { baseMs: 20, maxMs: 200 } });

  async function start(...args: Parameters<typeof startDistribution>): Promise<DistributionRegistry> {
    const started = await startDistribution(...args);
    registries.push(started);
    return started;
  }

  /** Pulls every blob of the resolved image and checks each digest and size. */
  async function pullAll(registryClient: RegistryClient, reference: string, platform?: string) {
    const resolved = await registryClient.resolve(reference, platform ? { platform } : {});
    const blobs: Descriptor[] = [resolved.manifest.config, ...resolved.manifest.layers];
    for (const descriptor of blobs) {
      const got = await sha256(await registryClient.fetchBlob(resolved.reference, descriptor));
      expect(got).toEqual({ digest: descriptor.digest, size: descriptor.size });
    }
    return resolved;
  }

  /**
   * Reads every blob of the resolved image with `fetchBlobInto` (hashing each chunk as it comes) and
   * checks each digest and size; with `events`, also that no read had to leave the direct path.
   */
  async function pullAllInto(registryClient: RegistryClient, reference: string, events?: RegistryEvent[]) {
    const resolved = await registryClient.resolve(reference);
    for (const descriptor of [resolved.manifest.config, ...resolved.manifest.layers]) {
      const hash = createHash('sha256');
      let size = 0;
      const backings = new Set<ArrayBufferLike>();
      await registryClient.fetchBlobInto(resolved.reference, descriptor, (chunk) => {
        hash.update(chunk);
        size += chunk.byteLength;
        backings.add(chunk.buffer);
      });
      expect({ digest: `sha256:${hash.digest('hex')}`, size }).toEqual({
        digest: descriptor.digest,
        size: descriptor.size,
      });
      // Read directly: a few reused buffers (the general path hands out fresh memory per read).
      if (descriptor.size >= DIRECT_BLOB_MIN_BYTES) expect(backings.size).toBeLessThanOrEqual(4);
    }
    if (events) expect(events.filter((event) => event.type === 'direct-read-declined')).toEqual([]);
    return resolved;
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'registry-client-e2e-'));
    image = await buildImage(
      {
        layers: [
          { entries: [file('big.bin', { size: 4 * 1024 * 1024, seed: 3 })], compression: 'none' },
          { entries: [file('etc/hostname', 'e2e\n')] },
        ],
      },
      { dir: join(root, 'single'), tag: 'v1' },
    );
    multi = await buildImage(
      {
        images: [
          { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ entries: [file('a', 'amd64')] }] },
          {
            platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
            layers: [{ entries: [file('a', 'arm64')] }],
          },
        ],
      },
      { dir: join(root, 'multi'), tag: 'v1' },
    );
  });

  afterAll(async () => {
    await close();
    await Promise.all(registries.map((started) => started.close()));
    await rm(root, { recursive: true, force: true });
  });

  it('plain HTTP: resolves an image and an index, streams blobs, resumes with Range (206)', async () => {
    const registry = await start({ mode: 'http' });
    await registry.push(image.dir, 'v1', 'team/app');
    await registry.push(multi.dir, 'v1', 'team/multi');
    const registryClient = client();
    const resolved = await pullAll(registryClient, `${registry.host}/team/app:v1`);
    expect(resolved.manifestDigest).toBe(image.digest);
    const direct: RegistryEvent[] = [];
    await pullAllInto(
      client({ onEvent: (event) => direct.push(event) }),
      `${registry.host}/team/app:v1`,
      direct,
    );
    const arm = await pullAll(registryClient, `${registry.host}/team/multi:v1`, 'linux/arm64');
    expect(arm.manifestDigest).toBe(multi.manifests[1]!.descriptor.digest);
    expect(arm.index?.digest).toBe(multi.digest);
    const head = await registryClient.headManifest(`${registry.host}/team/app:v1`);
    expect(head).toEqual({
      digest: image.digest,
      mediaType: image.descriptor.mediaType,
      size: image.descriptor.size,
    });
    expect(await registryClient.headManifest(`${registry.host}/team/app:nope`)).toBeUndefined();

    const layer = resolved.manifest.layers[0]!;
    const whole = await readFile(image.manifests[0]!.layers[0]!.path);
    const offset = 1_500_000;
    const chunks: Buffer[] = [];
    for await (const chunk of await registryClient.fetchBlob(resolved.reference, layer, { offset }))
      chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(whole.subarray(offset))).toBe(true);
    expect((await registry.settled()).some((request) => request.status === 206)).toBe(true);

    const missing = await rejection(registryClient.fetchManifest(`${registry.host}/team/app:nope`));
    expect([missing.code, missing.status]).toEqual([ErrorCode.ManifestUnknown, 404]);
    const unknownRepository = await rejection(registryClient.fetchManifest(`${registry.host}/team/none:v1`));
    // distribution 2.8 answers MANIFEST_UNKNOWN (not NAME_UNKNOWN) for a tag of an unknown repository.
    expect(unknownRepository.code).toBe(ErrorCode.ManifestUnknown);
    expect((unknownRepository as OciError & { errors: unknown[] }).errors).toEqual([
      { code: 'MANIFEST_UNKNOWN', message: 'manifest unknown', detail: { Tag: 'v1' } },
    ]);
  });

  it('TLS with its CA and basic auth: right password pulls, wrong one and unknown CA fail clearly', async () => {
    const registry = await start({ mode: 'tls-basic' });
    await registry.push(image.dir, 'v1', 'team/app');
    const ca = await readFile(registry.caFile!, 'utf8');
    const [user, password] = Object.entries(registry.users)[0]!;
    const good = client({
      registries: { [registry.host]: { ca, insecure: false } },
      credentials: { [registry.host]: { username: user, password } },
    });
    expect((await pullAll(good, `${registry.host}/team/app:v1`)).manifestDigest).toBe(image.digest);
    // fetchBlobInto's direct reads speak TLS with the same CA and send the same credentials.
    const direct: RegistryEvent[] = [];
    const goodDirect = client({
      registries: { [registry.host]: { ca, insecure: false } },
      credentials: { [registry.host]: { username: user, password } },
      onEvent: (event) => direct.push(event),
    });
    expect((await pullAllInto(goodDirect, `${registry.host}/team/app:v1`, direct)).manifestDigest).toBe(
      image.digest,
    );

    const wrong = await rejection(
      client({
        registries: { [registry.host]: { ca, insecure: false } },
        credentials: { [registry.host]: { username: user, password: 'definitely-wrong' } },
      }).resolve(`${registry.host}/team/app:v1`),
    );
    expect([wrong.code, wrong.status]).toEqual([ErrorCode.Unauthorized, 401]);
    expect(wrong.message).not.toContain('definitely-wrong');

    const untrusted = await rejection(
      client({
        registries: { [registry.host]: { insecure: false } },
        credentials: { [registry.host]: { username: user, password } },
      }).resolve(`${registry.host}/team/app:v1`),
    );
    expect([untrusted.code, untrusted.retryable]).toEqual([ErrorCode.Network, false]);
    expect(untrusted.message).toContain('TLS');

    const skipping = client({
      registries: { [registry.host]: { insecure: false, skipVerify: true } },
      credentials: { [registry.host]: { username: user, password } },
    });
    expect((await skipping.resolve(`${registry.host}/team/app:v1`)).manifestDigest).toBe(image.digest);
  });

  it('token auth: anonymous pull allowed, anonymous pull denied, credentialed pull', async () => {
    const open = await start({ mode: 'token', anonymousPull: true });
    await open.push(image.dir, 'v1', 'team/app');
    expect((await pullAll(client(), `${open.host}/team/app:v1`)).manifestDigest).toBe(image.digest);

    const closed = await start({ mode: 'token', anonymousPull: false });
    await closed.push(image.dir, 'v1', 'team/app');
    const denied = await rejection(client().resolve(`${closed.host}/team/app:v1`));
    expect([ErrorCode.Unauthorized, ErrorCode.Denied]).toContain(denied.code);
    const [user, password] = Object.entries(closed.users)[0]!;
    const credentialed = client({ credentials: { [closed.host]: { username: user, password } } });
    expect((await pullAll(credentialed, `${closed.host}/team/app:v1`)).manifestDigest).toBe(image.digest);
    const direct: RegistryEvent[] = [];
    const credentialedDirect = client({
      credentials: { [closed.host]: { username: user, password } },
      onEvent: (event) => direct.push(event),
    });
    expect((await pullAllInto(credentialedDirect, `${closed.host}/team/app:v1`, direct)).manifestDigest).toBe(
      image.digest,
    );
    expect(closed.tokenRequests?.length).toBeGreaterThan(0);
  });

  it('checkCredentials: what docker login checks, over plain HTTP, TLS+basic and token auth', async () => {
    const plain = await start();
    expect(await client().checkCredentials(plain.host)).toEqual({
      registry: plain.host,
      authenticated: false,
    });

    const tls = await start({ mode: 'tls-basic' });
    const ca = await readFile(tls.caFile!, 'utf8');
    const [tlsUser, tlsPassword] = Object.entries(tls.users)[0]!;
    const tlsClient = (password: string) =>
      client({
        registries: { [tls.host]: { ca, insecure: false } },
        credentials: { [tls.host]: { username: tlsUser, password } },
      });
    expect(await tlsClient(tlsPassword).checkCredentials(tls.host)).toEqual({
      registry: tls.host,
      authenticated: true,
    });
    const refused = await rejection(tlsClient('definitely-wrong').checkCredentials(tls.host));
    expect([refused.code, refused.status]).toEqual([ErrorCode.Unauthorized, 401]);
    expect(refused.message).not.toContain('definitely-wrong');
    const missing = await rejection(
      client({ registries: { [tls.host]: { ca, insecure: false } } }).checkCredentials(tls.host),
    );
    expect(missing.code).toBe(ErrorCode.Unauthorized);
    expect(missing.message).toContain('none were found');

    const token = await start({ mode: 'token', anonymousPull: false });
    const [user, password] = Object.entries(token.users)[0]!;
    const before = token.tokenRequests?.length ?? 0;
    expect(
      await client({ credentials: { [token.host]: { username: user, password } } }).checkCredentials(
        `http://${token.host}/v2/`,
      ),
    ).toEqual({ registry: token.host, authenticated: true });
    const wrongToken = await rejection(
      client({ credentials: { [token.host]: { username: user, password: 'nope-nope' } } }).checkCredentials(
        token.host,
      ),
    );
    expect(wrongToken.code).toBe(ErrorCode.Unauthorized);
    expect(wrongToken.message).not.toContain('nope-nope');
    // The login check asks for a token without any repository scope.
    const asked = token.tokenRequests!.slice(before);
    expect(asked.map((request) => [request.user, request.scopes, request.status])).toEqual([
      [user, [], 200],
      [undefined, [], 401],
    ]);
  });

  it('pull-through mirror: served through the mirror, falls back to the upstream when it is down', async () => {
    const upstream = await start({ mode: 'http' });
    await upstream.push(image.dir, 'v1', 'team/app');
    const mirror = await start({ mode: 'http', proxy: { remoteurl: upstream.url } });
    const events: RegistryEvent[] = [];
    const options: RegistryClientOptions = {
      registries: { [upstream.host]: { mirrors: [mirror.host] } },
      onEvent: (event) => events.push(event),
      retries: 1,
    };
    const before = (await upstream.settled()).length;
    expect((await pullAll(client(options), `${upstream.host}/team/app:v1`)).manifestDigest).toBe(
      image.digest,
    );
    expect(events.filter((event) => event.type === 'mirror-fallback')).toEqual([]);
    const mirrored = (await mirror.settled()).filter((request) => request.path.startsWith('/v2/team/app/'));
    expect(mirrored.length).toBeGreaterThanOrEqual(4);
    // The mirror fetched from the upstream on our behalf.
    expect((await upstream.settled()).length).toBeGreaterThan(before);

    await mirror.close();
    const afterMirror = client(options);
    expect((await pullAll(afterMirror, `${upstream.host}/team/app:v1`)).manifestDigest).toBe(image.digest);
    const fallbacks = events.filter((event) => event.type === 'mirror-fallback');
    // Once unreachable, the mirror is skipped for MIRROR_COOLDOWN_MS: one fallback, not one per blob.
    expect(fallbacks.length).toBe(1);
    expect(events.filter((event) => event.type === 'request-retry')).toEqual([]);
    expect(fallbacks[0]).toMatchObject({
      registry: upstream.host,
      mirror: mirror.host,
      operation: 'manifest',
      code: ErrorCode.Network,
    });
  });
});
