import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type HarnessRegistry, startRegistry } from './start-registry.ts';
import { basicAuth, fetchRaw } from './testing/http-client.ts';
import { type MinimalLayout, writeMinimalLayout } from './testing/minimal-layout.ts';

const sha256 = (bytes: Buffer | string) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

let workDir: string;
let image: MinimalLayout;
/** 200 KiB of random (incompressible) bytes so ranges, cuts and throttling have room in the gzip layer. */
const payload = randomBytes(200 * 1024);

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ocipull-registry-test-'));
  image = await writeMinimalLayout(join(workDir, 'image'), { tag: 'v1', payload });
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe('read side', () => {
  let registry: HarnessRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ repositories: { 'library/sample': image.dir } });
  });
  afterAll(() => registry.close());
  afterEach(() => {
    registry.faults.clear();
    registry.clearRequests();
  });

  it('listens on 127.0.0.1 and answers /v2/', async () => {
    expect(registry.host).toBe(`127.0.0.1:${registry.port}`);
    expect(registry.url).toBe(`http://127.0.0.1:${registry.port}`);
    const response = await fetchRaw(`${registry.url}/v2/`);
    expect(response.status).toBe(200);
    expect(response.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('serves a manifest by tag and by digest with its media type, digest and length', async () => {
    for (const reference of ['v1', image.manifestDigest]) {
      const response = await fetchRaw(`${registry.url}/v2/library/sample/manifests/${reference}`);
      expect(response.status).toBe(200);
      expect(response.headers['content-type']).toBe('application/vnd.oci.image.manifest.v1+json');
      expect(response.headers['docker-content-digest']).toBe(image.manifestDigest);
      expect(response.headers['content-length']).toBe(String(image.manifest.length));
      expect(response.body.equals(image.manifest)).toBe(true);
    }
    const head = await fetchRaw(`${registry.url}/v2/library/sample/manifests/v1`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(image.manifest.length));
    expect(head.body.length).toBe(0);
  });

  it('serves blobs whole, by range, open-ended and by suffix, and refuses unsatisfiable ranges', async () => {
    const blobUrl = `${registry.url}/v2/library/sample/blobs/${image.layerDigest}`;
    const whole = await fetchRaw(blobUrl);
    expect(whole.status).toBe(200);
    expect(sha256(whole.body)).toBe(image.layerDigest);
    expect(whole.headers['docker-content-digest']).toBe(image.layerDigest);
    const size = image.layer.length;

    const middle = await fetchRaw(blobUrl, { headers: { Range: 'bytes=10-19' } });
    expect(middle.status).toBe(206);
    expect(middle.headers['content-range']).toBe(`bytes 10-19/${size}`);
    expect(middle.body.equals(image.layer.subarray(10, 20))).toBe(true);

    const tail = await fetchRaw(blobUrl, { headers: { Range: `bytes=${size - 5}-` } });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(image.layer.subarray(size - 5))).toBe(true);

    const suffix = await fetchRaw(blobUrl, { headers: { Range: 'bytes=-7' } });
    expect(suffix.headers['content-range']).toBe(`bytes ${size - 7}-${size - 1}/${size}`);

    const beyond = await fetchRaw(blobUrl, { headers: { Range: `bytes=${size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${size}`);

    const head = await fetchRaw(blobUrl, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(size));
    expect(head.headers['accept-ranges']).toBe('bytes');

    // Ranges it does not support (reversed, several) are ignored, as RFC 9110 allows: 200, whole body.
    for (const range of ['bytes=9-2', 'bytes=0-1,5-6', 'items=0-1']) {
      const ignored = await fetchRaw(blobUrl, { headers: { Range: range } });
      expect(ignored.status, range).toBe(200);
      expect(ignored.body.length, range).toBe(size);
    }
    const clamped = await fetchRaw(blobUrl, { headers: { Range: `bytes=${size - 2}-${size + 100}` } });
    expect(clamped.status).toBe(206);
    expect(clamped.headers['content-range']).toBe(`bytes ${size - 2}-${size - 1}/${size}`);
    expect(registry.requests.map((record) => record.range)).toContain('bytes=10-19');
  });

  it('lists tags and answers spec errors for unknown names, manifests and blobs', async () => {
    const tags = await fetchRaw(`${registry.url}/v2/library/sample/tags/list`);
    expect(JSON.parse(tags.body.toString())).toEqual({ name: 'library/sample', tags: ['v1'] });
    const page = await fetchRaw(`${registry.url}/v2/library/sample/tags/list?n=0`);
    expect(JSON.parse(page.body.toString()).tags).toEqual([]);
    expect(page.headers.link).toContain('rel="next"');

    const cases: Array<[string, number, string]> = [
      ['/v2/nope/manifests/v1', 404, 'NAME_UNKNOWN'],
      ['/v2/library/sample/manifests/v2', 404, 'MANIFEST_UNKNOWN'],
      [`/v2/library/sample/blobs/${sha256('missing')}`, 404, 'BLOB_UNKNOWN'],
      ['/v2/library/sample/blobs/sha256:short', 400, 'DIGEST_INVALID'],
    ];
    for (const [path, status, code] of cases) {
      const response = await fetchRaw(`${registry.url}${path}`);
      expect(response.status, path).toBe(status);
      const body = JSON.parse(response.body.toString());
      expect(body.errors[0].code, path).toBe(code);
      expect(body.errors[0]).toHaveProperty('message');
      expect(body.errors[0]).toHaveProperty('detail');
    }
  });

  it('logs method, path, status, bytes and timestamps of every request', async () => {
    await fetchRaw(`${registry.url}/v2/library/sample/blobs/${image.configDigest}`);
    await vi.waitFor(() => expect(registry.requests[0]?.finishedAt).toBeDefined());
    const [record] = registry.requests;
    expect(record).toMatchObject({
      method: 'GET',
      kind: 'blob',
      name: 'library/sample',
      digest: image.configDigest,
      status: 200,
      authorization: false,
      outcome: 'complete',
    });
    expect(record!.bytesSent).toBeGreaterThan(0);
    expect(record!.finishedAt).toBeGreaterThanOrEqual(record!.startedAt);
  });
});

describe('strict Accept', () => {
  it('refuses a manifest whose media type the Accept header does not list', async () => {
    const registry = await startRegistry({ repositories: { sample: image.dir }, manifestAccept: 'strict' });
    try {
      const url = `${registry.url}/v2/sample/manifests/v1`;
      const missing = await fetchRaw(url);
      expect(missing.status).toBe(404);
      expect(JSON.parse(missing.body.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
      const docker = await fetchRaw(url, {
        headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' },
      });
      expect(docker.status).toBe(404);
      const accept =
        'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json;q=0.9';
      const ok = await fetchRaw(url, { headers: { Accept: accept } });
      expect(ok.status).toBe(200);
      expect(registry.requests.at(-1)!.accept).toBe(accept);
    } finally {
      await registry.close();
    }
  });
});

describe('faults', () => {
  let registry: HarnessRegistry;
  let blobUrl: string;
  beforeAll(async () => {
    registry = await startRegistry({ repositories: { sample: image.dir } });
    blobUrl = `${registry.url}/v2/sample/blobs/${image.layerDigest}`;
  });
  afterAll(() => registry.close());
  afterEach(() => {
    registry.faults.clear();
    registry.clearRequests();
  });

  it('cuts the connection after N bytes on the first attempt only', async () => {
    const fault = registry.faults.add({ match: { kind: 'blob' }, action: { type: 'cut', afterBytes: 1000 } });
    const first = await fetchRaw(blobUrl);
    expect(first.status).toBe(200);
    expect(first.ending).toBe('closed');
    expect(first.body.length).toBe(1000);
    expect(first.body.equals(image.layer.subarray(0, 1000))).toBe(true);
    const second = await fetchRaw(blobUrl);
    expect(second.ending).toBe('complete');
    expect(second.body.equals(image.layer)).toBe(true);
    expect(fault.hits).toBe(1);
    // The client may see the last byte before the server's write finishes: wait for the log to settle.
    await vi.waitFor(() =>
      expect(registry.requests.map((record) => record.outcome)).toEqual(['cut', 'complete']),
    );
  });

  it('cuts the first K attempts when asked, and a resumed range request completes', async () => {
    registry.faults.add({
      match: { kind: 'blob', digest: image.layerDigest },
      action: { type: 'cut', afterBytes: 0 },
      times: 2,
    });
    expect((await fetchRaw(blobUrl)).body.length).toBe(0);
    expect((await fetchRaw(blobUrl)).ending).toBe('closed');
    const resumed = await fetchRaw(blobUrl, { headers: { Range: 'bytes=100-' } });
    expect(resumed.status).toBe(206);
    expect(resumed.body.equals(image.layer.subarray(100))).toBe(true);
  });

  it('corrupts one byte at an absolute offset, also inside a range', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'corrupt', offset: 50 }, times: 2 });
    const whole = await fetchRaw(blobUrl);
    expect(whole.body.length).toBe(image.layer.length);
    expect(whole.body[50]).toBe(image.layer[50]! ^ 0xff);
    expect(sha256(whole.body)).not.toBe(image.layerDigest);
    const ranged = await fetchRaw(blobUrl, { headers: { Range: 'bytes=40-59' } });
    expect(ranged.body[10]).toBe(image.layer[50]! ^ 0xff);
    expect(ranged.body[9]).toBe(image.layer[49]);
    expect(sha256((await fetchRaw(blobUrl)).body)).toBe(image.layerDigest);
  });

  it('throttles a body to about N bytes per second', async () => {
    registry.faults.add({
      match: { kind: 'blob' },
      action: { type: 'throttle', bytesPerSecond: 100 * 1024 },
    });
    const response = await fetchRaw(blobUrl, { headers: { Range: 'bytes=0-51199' } });
    expect(response.body.length).toBe(51200);
    // 50 KiB at 100 KiB/s: about half a second.
    expect(response.elapsedMs).toBeGreaterThanOrEqual(400);
    expect(response.elapsedMs).toBeLessThan(10_000);
  });

  it('answers 429 with Retry-After in seconds or as an HTTP date, K times', async () => {
    registry.faults.add({
      match: { kind: 'manifest' },
      action: { type: 'status', status: 429, retryAfter: 2 },
      times: 2,
    });
    const manifestUrl = `${registry.url}/v2/sample/manifests/v1`;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const limited = await fetchRaw(manifestUrl);
      expect(limited.status).toBe(429);
      expect(limited.headers['retry-after']).toBe('2');
      expect(JSON.parse(limited.body.toString()).errors[0].code).toBe('TOOMANYREQUESTS');
    }
    expect((await fetchRaw(manifestUrl)).status).toBe(200);

    const when = new Date(Date.now() + 5000);
    registry.faults.add({
      match: { kind: 'blob' },
      action: { type: 'status', status: 429, retryAfter: when },
    });
    const dated = await fetchRaw(blobUrl);
    expect(dated.headers['retry-after']).toBe(when.toUTCString());
  });

  it('answers 500 and 503 on the first K attempts, then serves', async () => {
    registry.faults.add({
      match: { kind: 'blob', method: 'GET' },
      action: { type: 'status', status: 503 },
      times: 1,
    });
    registry.faults.add({
      match: { kind: 'blob', method: 'GET' },
      action: { type: 'status', status: 500 },
      times: 2,
    });
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 4; attempt += 1) statuses.push((await fetchRaw(blobUrl)).status);
    expect(statuses).toEqual([503, 500, 500, 200]);
    expect(JSON.parse((await fetchRaw(`${registry.url}/v2/`)).body.toString())).toEqual({});
  });

  it('redirects blob GETs to a second origin that records Authorization and honours Range', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'redirect' } });
    const redirect = await fetchRaw(blobUrl, { headers: { Authorization: 'Bearer not-for-the-origin' } });
    expect(redirect.status).toBe(307);
    const location = redirect.headers.location as string;
    expect(location.startsWith(registry.origin.url)).toBe(true);
    expect(registry.origin.port).not.toBe(registry.port);

    const clean = await fetchRaw(location, { headers: { Range: 'bytes=5-9' } });
    expect(clean.status).toBe(206);
    expect(clean.body.equals(image.layer.subarray(5, 10))).toBe(true);
    const leaky = await fetchRaw(location, { headers: { Authorization: 'Bearer leaked' } });
    expect(leaky.status).toBe(200);
    expect(sha256(leaky.body)).toBe(image.layerDigest);

    const origin = registry.requests.filter((record) => record.kind === 'origin');
    expect(origin.map((record) => record.authorization)).toEqual([false, true]);
    expect(JSON.stringify(registry.requests)).not.toContain('leaked');
    expect((await fetchRaw(`${registry.origin.url}/blobs/sample/${image.layerDigest}`)).status).toBe(403);
  });

  it('an origin that rejects Authorization answers 400 like S3', async () => {
    const strict = await startRegistry({
      repositories: { sample: image.dir },
      origin: { rejectAuthorization: true },
    });
    try {
      strict.faults.add({ match: { kind: 'blob' }, action: { type: 'redirect', status: 302 } });
      const redirect = await fetchRaw(`${strict.url}/v2/sample/blobs/${image.layerDigest}`);
      expect(redirect.status).toBe(302);
      const location = redirect.headers.location as string;
      expect((await fetchRaw(location, { headers: { Authorization: 'Bearer x' } })).status).toBe(400);
      expect((await fetchRaw(location)).status).toBe(200);
    } finally {
      await strict.close();
    }
  });

  it('ignores Range and answers 200 with the whole body', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'ignore-range' } });
    const response = await fetchRaw(blobUrl, { headers: { Range: 'bytes=100-' } });
    expect(response.status).toBe(200);
    expect(response.headers['content-range']).toBeUndefined();
    expect(response.body.equals(image.layer)).toBe(true);
  });

  it('stalls mid-body with the socket open, and close() frees it', async () => {
    const stalling = await startRegistry({ repositories: { sample: image.dir } });
    stalling.faults.add({ match: { kind: 'blob' }, action: { type: 'stall', afterBytes: 4096 } });
    const response = await fetchRaw(`${stalling.url}/v2/sample/blobs/${image.layerDigest}`, { idleMs: 500 });
    expect(response.ending).toBe('idle');
    expect(response.body.length).toBe(4096);
    expect(stalling.requests[0]).toMatchObject({ outcome: 'stalled', bytesSent: 4096, status: 200 });
    const started = Date.now();
    await stalling.close();
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(fetchRaw(`${stalling.url}/v2/`)).rejects.toThrow();
  });

  it('matches faults by name, digest and kind, and HEAD never consumes a body fault', async () => {
    const other = registry.faults.add({
      match: { kind: 'blob', name: 'elsewhere' },
      action: { type: 'cut', afterBytes: 1 },
    });
    const byDigest = registry.faults.add({
      match: { digest: image.configDigest },
      action: { type: 'cut', afterBytes: 1 },
    });
    expect((await fetchRaw(blobUrl)).ending).toBe('complete');
    await fetchRaw(`${registry.url}/v2/sample/blobs/${image.configDigest}`, { method: 'HEAD' });
    expect(byDigest.remaining).toBe(1);
    expect((await fetchRaw(`${registry.url}/v2/sample/blobs/${image.configDigest}`)).ending).toBe('closed');
    expect(other.hits).toBe(0);
    expect(byDigest.hits).toBe(1);
    expect(() => registry.faults.add({ action: { type: 'throttle', bytesPerSecond: 0 } })).toThrow(
      RangeError,
    );
    // Misspelt from JavaScript: refused, not installed as a fault that never fires.
    const untyped = (rule: unknown) => registry.faults.add(rule as Parameters<typeof registry.faults.add>[0]);
    expect(() => untyped({ action: { type: 'truncate', at: 10 } })).toThrow(/"truncate" is not one of cut/);
    expect(() => untyped({ match: { kind: 'blobs' }, action: { type: 'cut', afterBytes: 1 } })).toThrow(
      /kind "blobs"/,
    );
    expect(() =>
      untyped({ match: { kind: ['blob', 'manifests'] }, action: { type: 'ignore-range' } }),
    ).toThrow(RangeError);
    expect(() => untyped({ match: { digests: 'sha256:x' }, action: { type: 'cut', afterBytes: 1 } })).toThrow(
      /match key "digests"/,
    );
    expect(() => untyped({ action: { type: 'corrupt', offset: 1, mask: 0 } })).toThrow(/mask/);
    expect(() => untyped({ action: { type: 'corrupt', offset: 1, mask: 256 } })).toThrow(/mask/);
    expect(() => untyped({ action: { type: 'redirect', status: 200 } })).toThrow(/redirect: status/);
    expect(() => untyped({ action: { type: 'ignore-range' }, times: 1.5 })).toThrow(/times/);
    expect(registry.faults.list().map((handle) => handle.rule.action.type)).not.toContain('truncate');
  });
});

describe('push side', () => {
  it('accepts monolithic and chunked blob uploads and manifests, and serves them back', async () => {
    const registry = await startRegistry();
    try {
      const config = Buffer.from(
        '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
      );
      const monolithic = await fetchRaw(
        `${registry.url}/v2/pushed/app/blobs/uploads/?digest=${sha256(config)}`,
        {
          method: 'POST',
          body: config,
          headers: { 'Content-Type': 'application/octet-stream' },
        },
      );
      expect(monolithic.status).toBe(201);
      expect(monolithic.headers['docker-content-digest']).toBe(sha256(config));

      const layer = Buffer.alloc(3000, 7);
      const start = await fetchRaw(`${registry.url}/v2/pushed/app/blobs/uploads/`, { method: 'POST' });
      expect(start.status).toBe(202);
      let location = start.headers.location as string;
      const first = await fetchRaw(`${registry.url}${location}`, {
        method: 'PATCH',
        body: layer.subarray(0, 1000),
        headers: { 'Content-Range': '0-999', 'Content-Type': 'application/octet-stream' },
      });
      expect(first.status).toBe(202);
      expect(first.headers.range).toBe('0-999');
      location = first.headers.location as string;
      const outOfOrder = await fetchRaw(`${registry.url}${location}`, {
        method: 'PATCH',
        body: layer.subarray(0, 10),
        headers: { 'Content-Range': '5-14' },
      });
      expect(outOfOrder.status).toBe(416);
      await fetchRaw(`${registry.url}${location}`, { method: 'PATCH', body: layer.subarray(1000, 2000) });
      const wrong = await fetchRaw(`${registry.url}${location}?digest=${sha256('nope')}`, {
        method: 'PUT',
        body: layer.subarray(2000),
      });
      expect(wrong.status).toBe(400);
      const again = await fetchRaw(`${registry.url}/v2/pushed/app/blobs/uploads/`, {
        method: 'POST',
        body: layer,
      });
      const done = await fetchRaw(`${registry.url}${again.headers.location}?digest=${sha256(layer)}`, {
        method: 'PUT',
      });
      expect(done.status).toBe(201);

      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: {
            mediaType: 'application/vnd.oci.image.config.v1+json',
            digest: sha256(config),
            size: config.length,
          },
          layers: [
            {
              mediaType: 'application/vnd.oci.image.layer.v1.tar',
              digest: sha256(layer),
              size: layer.length,
            },
          ],
        }),
      );
      const put = await fetchRaw(`${registry.url}/v2/pushed/app/manifests/1.0`, {
        method: 'PUT',
        body: manifest,
        headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      });
      expect(put.status).toBe(201);
      expect(put.headers['docker-content-digest']).toBe(sha256(manifest));

      const fetched = await fetchRaw(`${registry.url}/v2/pushed/app/manifests/1.0`);
      expect(fetched.body.equals(manifest)).toBe(true);
      expect(
        (await fetchRaw(`${registry.url}/v2/pushed/app/blobs/${sha256(layer)}`)).body.equals(layer),
      ).toBe(true);
      const index = JSON.parse(
        await readFile(join(registry.repositoryDir('pushed/app')!, 'index.json'), 'utf8'),
      );
      expect(index.manifests[0].annotations['org.opencontainers.image.ref.name']).toBe('1.0');

      const mount = await fetchRaw(
        `${registry.url}/v2/other/blobs/uploads/?mount=${sha256(layer)}&from=pushed/app`,
        { method: 'POST' },
      );
      expect(mount.status).toBe(201);
      const catalog = await fetchRaw(`${registry.url}/v2/_catalog`);
      expect(JSON.parse(catalog.body.toString()).repositories).toEqual(['other', 'pushed/app']);
    } finally {
      await registry.close();
    }
  });
});

describe('auth', () => {
  it('basic: accepts the right password, refuses others with a Basic challenge', async () => {
    const registry = await startRegistry({
      repositories: { sample: image.dir },
      auth: { type: 'basic', users: { alice: 'wonderland' } },
    });
    try {
      const manifestUrl = `${registry.url}/v2/sample/manifests/v1`;
      const anonymous = await fetchRaw(manifestUrl);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers['www-authenticate']).toMatch(/^Basic realm=/);
      expect(JSON.parse(anonymous.body.toString()).errors[0].code).toBe('UNAUTHORIZED');
      expect(
        (await fetchRaw(manifestUrl, { headers: { Authorization: basicAuth('alice', 'nope') } })).status,
      ).toBe(401);
      const good = await fetchRaw(manifestUrl, {
        headers: { Authorization: basicAuth('alice', 'wonderland') },
      });
      expect(good.status).toBe(200);
      expect(registry.requests.at(-1)).toMatchObject({
        authorization: true,
        authScheme: 'basic',
        user: 'alice',
      });
      expect(JSON.stringify(registry.requests)).not.toContain('wonderland');
      expect(JSON.stringify(registry.requests)).not.toContain(
        Buffer.from('alice:wonderland').toString('base64'),
      );
    } finally {
      await registry.close();
    }
  });

  it('basic with an access policy: a known user without access gets 403 DENIED', async () => {
    const registry = await startRegistry({
      repositories: { sample: image.dir },
      auth: { type: 'basic', users: { bob: 'builder' }, access: () => [] },
    });
    try {
      const response = await fetchRaw(`${registry.url}/v2/sample/manifests/v1`, {
        headers: { Authorization: basicAuth('bob', 'builder') },
      });
      expect(response.status).toBe(403);
      expect(JSON.parse(response.body.toString()).errors[0].code).toBe('DENIED');
    } finally {
      await registry.close();
    }
  });

  it('bearer: challenge, anonymous pull token, credentialed token, expiry and revocation', async () => {
    const registry = await startRegistry({
      repositories: { sample: image.dir },
      auth: { type: 'bearer', users: { alice: 'wonderland' }, expiresIn: 0.4, service: 'test-service' },
    });
    try {
      const manifestUrl = `${registry.url}/v2/sample/manifests/v1`;
      const challenged = await fetchRaw(manifestUrl);
      expect(challenged.status).toBe(401);
      expect(challenged.headers['www-authenticate']).toBe(
        `Bearer realm="${registry.url}/token",service="test-service",scope="repository:sample:pull"`,
      );
      const anonymous = await fetchRaw(
        `${registry.tokenUrl}?service=test-service&scope=repository:sample:pull`,
      );
      expect(anonymous.status).toBe(200);
      const anonymousBody = JSON.parse(anonymous.body.toString());
      expect(anonymousBody.expires_in).toBe(1);
      expect(anonymousBody.token).toBe(anonymousBody.access_token);
      const bearer = { Authorization: `Bearer ${anonymousBody.token}` };
      expect((await fetchRaw(manifestUrl, { headers: bearer })).status).toBe(200);

      // Anonymous tokens never carry push: an upload is challenged again.
      const push = await fetchRaw(`${registry.url}/v2/sample/blobs/uploads/`, {
        method: 'POST',
        headers: bearer,
      });
      expect(push.status).toBe(401);
      expect(push.headers['www-authenticate']).toContain('scope="repository:sample:pull,push"');

      const wrongPassword = await fetchRaw(`${registry.tokenUrl}?scope=repository:sample:pull`, {
        headers: { Authorization: basicAuth('alice', 'nope') },
      });
      expect(wrongPassword.status).toBe(401);
      const credentialed = await fetchRaw(
        `${registry.tokenUrl}?scope=repository:sample:pull,push&offline_token=true`,
        {
          headers: { Authorization: basicAuth('alice', 'wonderland') },
        },
      );
      const credentialedBody = JSON.parse(credentialed.body.toString());
      expect(credentialedBody.refresh_token).toEqual(expect.any(String));
      const aliceBearer = { Authorization: `Bearer ${credentialedBody.token}` };
      const upload = await fetchRaw(`${registry.url}/v2/sample/blobs/uploads/`, {
        method: 'POST',
        headers: aliceBearer,
      });
      expect(upload.status).toBe(202);

      // The token expires after 0.4 s: the registry then answers 401 and the client must re-authenticate.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const expired = await fetchRaw(manifestUrl, { headers: bearer });
      expect(expired.status).toBe(401);
      expect(expired.headers['www-authenticate']).toContain('error="invalid_token"');

      const refreshed = await fetchRaw(registry.tokenUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: `grant_type=refresh_token&refresh_token=${credentialedBody.refresh_token}&service=test-service&scope=repository:sample:pull&client_id=test`,
      });
      expect(refreshed.status).toBe(200);
      const refreshedBody = JSON.parse(refreshed.body.toString());
      expect(refreshedBody.scope).toBe('repository:sample:pull');
      const fresh = { Authorization: `Bearer ${refreshedBody.access_token}` };
      expect((await fetchRaw(manifestUrl, { headers: fresh })).status).toBe(200);
      registry.revokeTokens();
      expect((await fetchRaw(manifestUrl, { headers: fresh })).status).toBe(401);

      const password = await fetchRaw(registry.tokenUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=password&username=alice&password=wonderland&scope=repository:sample:pull&access_type=offline&client_id=test',
      });
      expect(JSON.parse(password.body.toString())).toMatchObject({
        access_token: expect.any(String),
        refresh_token: expect.any(String),
      });
      const badGrant = await fetchRaw(registry.tokenUrl, {
        method: 'POST',
        body: 'grant_type=password&username=alice&password=nope',
      });
      expect(badGrant.status).toBe(401);

      const log = JSON.stringify(registry.requests);
      expect(log).not.toContain('wonderland');
      expect(log).not.toContain(credentialedBody.token);
      expect(registry.requests.filter((record) => record.kind === 'token').length).toBeGreaterThanOrEqual(4);
    } finally {
      await registry.close();
    }
  });

  it('bearer without anonymous access: the token endpoint refuses anonymous callers', async () => {
    const registry = await startRegistry({
      repositories: { sample: image.dir },
      auth: { type: 'bearer', users: { alice: 'wonderland' }, anonymous: false },
    });
    try {
      expect((await fetchRaw(`${registry.tokenUrl}?scope=repository:sample:pull`)).status).toBe(401);
      const token = await fetchRaw(`${registry.tokenUrl}?scope=repository:sample:pull`, {
        headers: { Authorization: basicAuth('alice', 'wonderland') },
      });
      const body = JSON.parse(token.body.toString());
      const ok = await fetchRaw(`${registry.url}/v2/sample/manifests/v1`, {
        headers: { Authorization: `Bearer ${body.token}` },
      });
      expect(ok.status).toBe(200);
      registry.faults.add({ match: { kind: 'token' }, action: { type: 'status', status: 503 } });
      expect((await fetchRaw(`${registry.tokenUrl}?scope=repository:sample:pull`)).status).toBe(503);
    } finally {
      await registry.close();
    }
  });
});
