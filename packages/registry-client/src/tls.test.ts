import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { type Descriptor, ErrorCode, type OciError } from '@ocipull/core';
import {
  type BuiltImage,
  buildImage,
  file,
  type HarnessRegistry,
  startRegistry,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRegistryClient,
  type RegistryClient,
  type RegistryClientOptions,
  type RegistryEvent,
} from './index.ts';
import { handMadeManifest } from './testing/fixtures/manifests.ts';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: 'pipe' });
  } catch (error) {
    throw new Error(`openssl ${args[0]} failed (is openssl installed?): ${String(error)}`);
  }
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
async function certificates(dir: string) {
  openssl([
    'req',
    '-x509',
    ...EC,
    '-keyout',
    join(dir, 'ca.key'),
    '-out',
    join(dir, 'ca.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=registry-client test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  ]);
  for (const [name, usage, san] of [
    ['server', 'serverAuth', 'subjectAltName=IP:127.0.0.1\n'],
    ['client', 'clientAuth', ''],
  ] as const) {
    openssl([
      'req',
      ...EC,
      '-keyout',
      join(dir, `${name}.key`),
      '-out',
      join(dir, `${name}.csr`),
      '-subj',
      `/CN=${name}`,
    ]);
    await writeFile(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\nextendedKeyUsage=${usage}\n${san}`);
    openssl([
      'x509',
      '-req',
      '-in',
      join(dir, `${name}.csr`),
      '-CA',
      join(dir, 'ca.crt'),
      '-CAkey',
      join(dir, 'ca.key'),
      '-CAcreateserial',
      '-out',
      join(dir, `${name}.crt`),
      '-days',
      '2',
      '-extfile',
      join(dir, `${name}.ext`),
    ]);
  }
  const read = (name: string) => readFile(join(dir, name), 'utf8');
  return {
    ca: await read('ca.crt'),
    serverCert: await read('server.crt'),
    serverKey: await read('server.key'),
    clientCert: await read('client.crt'),
    clientKey: await read('client.key'),
  };
}

describe('TLS transport options', () => {
  let root: string;
  let image: BuiltImage;
  let registry: HarnessRegistry;
  let front: Server;
  let host: string;
  let pem: Awaited<ReturnType<typeof certificates>>;
  const peers: string[] = [];
  const clients: RegistryClient[] = [];

  function client(options: RegistryClientOptions): RegistryClient {
    const made = createRegistryClient({ dockerConfig: false, retries: 0, ...options });
    clients.push(made);
    return made;
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'registry-client-tls-'));
    pem = await certificates(root);
    image = await buildImage(
      {
        layers: [
          { entries: [file('a', 'tls')] },
          { entries: [file('big.bin', { size: 3 * 1024 * 1024, seed: 5 })], compression: 'none' },
        ],
      },
      { dir: join(root, 'layout') },
    );
    registry = await startRegistry({ repositories: { 'team/app': image.dir } });
    // A TLS front that demands a client certificate from our CA and forwards to the harness registry.
    front = createServer(
      { cert: pem.serverCert, key: pem.serverKey, ca: pem.ca, requestCert: true, rejectUnauthorized: true },
      (request, response) => {
        const subject = (request.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '';
        peers.push(Array.isArray(subject) ? subject.join(',') : subject);
        const upstream = httpRequest(
          {
            host: '127.0.0.1',
            port: registry.port,
            method: request.method,
            path: request.url,
            headers: request.headers,
          },
          (answer) => {
            response.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(response);
          },
        );
        upstream.on('error', () => response.destroy());
        request.pipe(upstream);
      },
    );
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(front.address() as { port: number }).port}`;
  });

  afterAll(async () => {
    await Promise.all(clients.map((made) => made.close()));
    front?.closeAllConnections();
    await new Promise((resolve) => front?.close(resolve));
    await registry?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('presents the client certificate (mTLS) and trusts the registry CA', async () => {
    const registryClient = client({
      registries: { [host]: { insecure: false, ca: pem.ca, cert: pem.clientCert, key: pem.clientKey } },
    });
    expect((await registryClient.resolve(`${host}/team/app`)).manifestDigest).toBe(image.digest);
    expect(peers).toContain('client');
  });

  it('fetchBlobInto reads directly over the same mTLS settings; without the CA it fails like the general path', async () => {
    const events: RegistryEvent[] = [];
    const registryClient = client({
      registries: { [host]: { insecure: false, ca: pem.ca, cert: pem.clientCert, key: pem.clientKey } },
      onEvent: (event) => events.push(event),
    });
    const resolved = await registryClient.resolve(`${host}/team/app`);
    const big = resolved.manifest.layers[1]!;
    const expected = await readFile(image.manifests[0]!.layers[1]!.path);
    const chunks: Buffer[] = [];
    const backings = new Set<ArrayBufferLike>();
    await registryClient.fetchBlobInto(resolved.reference, big, (chunk) => {
      chunks.push(Buffer.from(chunk));
      backings.add(chunk.buffer);
    });
    expect(Buffer.concat(chunks).equals(expected)).toBe(true);
    // Read directly (a few reused buffers), not declined.
    expect(backings.size).toBeLessThanOrEqual(4);
    expect(events.filter((event) => event.type === 'direct-read-declined')).toEqual([]);

    const untrusting: RegistryEvent[] = [];
    const noCa = await client({
      registries: { [host]: { insecure: false, cert: pem.clientCert, key: pem.clientKey } },
      onEvent: (event) => untrusting.push(event),
    })
      .fetchBlobInto(resolved.reference, big, () => undefined)
      .catch((error: unknown) => error as OciError);
    expect([(noCa as OciError).code, (noCa as OciError).retryable]).toEqual([ErrorCode.Network, false]);
    expect(untrusting).toContainEqual(
      expect.objectContaining({ type: 'direct-read-declined', digest: big.digest }),
    );
  });

  it('fails without a client certificate or without the CA, not retryable, naming the fix', async () => {
    const noCert = await client({ registries: { [host]: { insecure: false, ca: pem.ca } } })
      .resolve(`${host}/team/app`)
      .catch((error: unknown) => error as OciError);

    expect((noCert as OciError).code).toBe(ErrorCode.Network);
    const noCa = await client({
      registries: { [host]: { insecure: false, cert: pem.clientCert, key: pem.clientKey } },
    })
      .resolve(`${host}/team/app`)
      .catch((error: unknown) => error as OciError);
    expect([(noCa as OciError).code, (noCa as OciError).retryable]).toEqual([ErrorCode.Network, false]);
    expect((noCa as OciError).message).toContain('TLS');
  });

  it('refuses plain HTTP answers when HTTPS is configured and vice versa', async () => {
    const httpsToPlain = await client({ registries: { [registry.host]: { insecure: false } } })
      .resolve(`${registry.host}/team/app`)
      .catch((error: unknown) => error as OciError);
    expect((httpsToPlain as OciError).code).toBe(ErrorCode.Network);
    const plainToTls = await client({})
      .resolve(`${host}/team/app`)
      .catch((error: unknown) => error as OciError);
    expect([ErrorCode.Network, ErrorCode.Registry]).toContain((plainToTls as OciError).code);
  });
});

describe('TLS settings of a registry reach the hosts it redirects to', () => {
  let root: string;
  let pem: Awaited<ReturnType<typeof certificates>>;
  let registry: Server;
  let storage: Server;
  let registryHost: string;
  let storageHost: string;
  /** Whether each request the storage host got carried an `Authorization` header. */
  const storageAuthorization: boolean[] = [];
  const manifest = handMadeManifest().bytes;
  const blob = Buffer.alloc(300_000, 9);
  const blobDescriptor = {
    mediaType: 'application/octet-stream',
    digest: `sha256:${createHash('sha256').update(blob).digest('hex')}`,
    size: blob.length,
  } as Descriptor;
  const clients: RegistryClient[] = [];
  const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;

  function client(options: RegistryClientOptions): RegistryClient {
    const made = createRegistryClient({
      dockerConfig: false,
      retries: 0,
      credentials: { [registryHost]: { username: 'alice', password: 's3cret' } },
      ...options,
    });
    clients.push(made);
    return made;
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'registry-client-tls-redirect-'));
    pem = await certificates(root);
    // Two HTTPS hosts whose certificates one private CA signed, like a registry and its MinIO.
    storage = createServer({ cert: pem.serverCert, key: pem.serverKey }, (request, response) => {
      storageAuthorization.push(request.headers.authorization !== undefined);
      const body = request.url?.startsWith('/manifest') ? manifest : blob;
      response.writeHead(200, { 'content-length': String(body.length) }).end(body);
    });
    registry = createServer({ cert: pem.serverCert, key: pem.serverKey }, (request, response) => {
      if (request.headers.authorization !== basic) {
        response
          .writeHead(401, { 'www-authenticate': 'Basic realm="registry"', 'content-length': '0' })
          .end();
        return;
      }
      const target = request.url?.includes('/manifests/') ? 'manifest' : 'blob';
      response
        .writeHead(307, { location: `https://${storageHost}/${target}?signature=abc`, 'content-length': '0' })
        .end();
    });
    for (const server of [registry, storage]) {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    }
    registryHost = `127.0.0.1:${(registry.address() as { port: number }).port}`;
    storageHost = `127.0.0.1:${(storage.address() as { port: number }).port}`;
  });

  afterAll(async () => {
    await Promise.all(clients.map((made) => made.close()));
    for (const server of [registry, storage]) {
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
    }
    await rm(root, { recursive: true, force: true });
  });

  it.each([
    ['the registry CA', () => ({ insecure: false, ca: pem.ca })],
    ['skipVerify', () => ({ insecure: false, skipVerify: true })],
  ])(
    'with %s: manifests and blobs come from the storage host, both ways, without Authorization',
    async (_name, settings) => {
      for (const directBlobReads of [true, false]) {
        const registryClient = client({ registries: { [registryHost]: settings() }, directBlobReads });
        const fetched = await registryClient.fetchManifest(`${registryHost}/team/app:v1`);
        expect(Buffer.from(fetched.bytes).equals(manifest)).toBe(true);
        const chunks: Buffer[] = [];
        for await (const chunk of await registryClient.fetchBlob(
          `${registryHost}/team/app`,
          blobDescriptor,
        )) {
          chunks.push(chunk as Buffer);
        }
        await registryClient.fetchBlobInto(`${registryHost}/team/app`, blobDescriptor, (chunk) => {
          chunks.push(Buffer.from(chunk));
        });
        expect(Buffer.concat(chunks).equals(Buffer.concat([blob, blob]))).toBe(true);
      }
      expect(storageAuthorization.length).toBeGreaterThan(0);
      expect(storageAuthorization.every((sent) => !sent)).toBe(true);
    },
  );

  it('a storage host with settings of its own keeps them: without a CA there, TLS fails naming that host', async () => {
    const own = client({
      registries: {
        [storageHost]: { insecure: false, ca: pem.ca },
        [registryHost]: { insecure: false, skipVerify: true },
      },
    });
    const chunks: Buffer[] = [];
    for await (const chunk of await own.fetchBlob(`${registryHost}/team/app`, blobDescriptor))
      chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(blob)).toBe(true);
    const error = await client({
      registries: { [storageHost]: { insecure: false }, [registryHost]: { insecure: false, ca: pem.ca } },
    })
      .fetchBlob(`${registryHost}/team/app`, blobDescriptor)
      .catch((caught: unknown) => caught as OciError);
    expect([(error as OciError).code, (error as OciError).retryable]).toEqual([ErrorCode.Network, false]);
    expect((error as OciError).message).toContain(`${storageHost}: TLS failed`);
  });
});
