import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type BuiltImage, buildImage, DEFAULT_PLATFORMS, file } from '../fixtures/index.ts';
import { startRegistry } from '../registry/start-registry.ts';
import { basicAuth, fetchRaw } from '../registry/testing/http-client.ts';
import { type DistributionRegistry, startDistribution } from './start-distribution.ts';
import { skopeo } from './tools.ts';

let workDir: string;
let multi: BuiltImage;
let single: BuiltImage;
let dockerList: BuiltImage;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ocipull-distribution-test-'));
  const layoutDir = join(workDir, 'layout');
  multi = await buildImage(
    {
      images: DEFAULT_PLATFORMS.map((platform, index) => ({
        platform,
        layers: [
          {
            entries: [
              file('etc/platform', `${platform.architecture}\n`),
              file('blob', { size: 64 * 1024, seed: index }),
            ],
          },
        ],
      })),
      attestations: true,
    },
    { dir: layoutDir, tag: 'multi' },
  );
  // skopeo 1.9 reads only OCI manifests out of an OCI layout, so the pushed fixtures are OCI ones.
  single = await buildImage(
    {
      layers: [
        { entries: [file('hello', 'world\n')] },
        { entries: [file('zstd', { size: 4096, seed: 9 })], compression: 'zstd' },
      ],
    },
    { dir: layoutDir, tag: 'v1' },
  );
  dockerList = await buildImage(
    {
      format: 'docker',
      images: DEFAULT_PLATFORMS.map((platform) => ({
        platform,
        layers: [{ entries: [file('arch', platform.architecture)] }],
      })),
    },
    { dir: join(workDir, 'docker-layout'), tag: 'list' },
  );
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Copies an image (all platforms, as-is) into a `dir:` directory and returns its top manifest's digest. */
async function copyOut(reference: string, args: string[]): Promise<string> {
  const target = await mkdtemp(join(workDir, 'out-'));
  await skopeo(['copy', '--all', ...args, `docker://${reference}`, `dir:${target}`]);
  const manifest = await readFile(join(target, 'manifest.json'));
  return `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
}

function httpsStatus(url: string, ca: Buffer | undefined, authorization?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(
      url,
      { ca, agent: false, headers: authorization ? { Authorization: authorization } : {} },
      (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      },
    );
    request.on('error', reject);
    request.end();
  });
}

describe('plain http', () => {
  let registry: DistributionRegistry;
  beforeAll(async () => {
    registry = await startDistribution({ mode: 'http' });
  });
  afterAll(() => registry.close());

  it('accepts pushes and serves every fixture back byte-identical to skopeo', async () => {
    expect(registry.url).toBe(`http://127.0.0.1:${registry.port}`);
    await registry.push(multi.dir, 'multi', 'fixtures/multi');
    await registry.push(single.dir, 'v1', 'fixtures/single');
    expect(await copyOut(`${registry.host}/fixtures/multi:multi`, ['--src-tls-verify=false'])).toBe(
      multi.digest,
    );
    expect(await copyOut(`${registry.host}/fixtures/single:v1`, ['--src-tls-verify=false'])).toBe(
      single.digest,
    );
    const manifest = await fetchRaw(`${registry.url}/v2/fixtures/single/manifests/v1`, {
      headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(manifest.headers['docker-content-digest']).toBe(single.digest);
  });

  it('pushes Docker manifest lists with its own push (skopeo 1.9 cannot read them from a layout)', async () => {
    expect(await registry.push(dockerList.dir, 'list', 'fixtures/list')).toBe(
      `${registry.host}/fixtures/list:list`,
    );
    expect(await copyOut(`${registry.host}/fixtures/list:list`, ['--src-tls-verify=false'])).toBe(
      dockerList.digest,
    );
    await registry.push(single.dir, 'v1', 'fixtures/native', { method: 'native', destinationTag: 'n1' });
    expect(await copyOut(`${registry.host}/fixtures/native:n1`, ['--src-tls-verify=false'])).toBe(
      single.digest,
    );
  });

  it('exposes its log and the requests it served', async () => {
    const before = (await registry.settled()).length;
    await fetchRaw(`${registry.url}/v2/fixtures/single/manifests/nope`);
    const requests = (await registry.settled()).slice(before);
    expect(requests).toContainEqual(
      expect.objectContaining({ method: 'GET', path: '/v2/fixtures/single/manifests/nope', status: 404 }),
    );
    expect(registry.logLines.some((line) => line.includes('listening on'))).toBe(true);
  });
});

describe('tls with basic auth', () => {
  let registry: DistributionRegistry;
  let ca: Buffer;
  beforeAll(async () => {
    registry = await startDistribution({ mode: 'tls-basic', users: { alice: 'wonderland' } });
    ca = await readFile(registry.caFile!);
  });
  afterAll(() => registry.close());

  it('serves https with its own CA and checks the password', async () => {
    expect(registry.url).toBe(`https://127.0.0.1:${registry.port}`);
    expect(await httpsStatus(`${registry.url}/v2/`, ca)).toBe(401);
    expect(await httpsStatus(`${registry.url}/v2/`, ca, basicAuth('alice', 'wrong'))).toBe(401);
    expect(await httpsStatus(`${registry.url}/v2/`, ca, basicAuth('alice', 'wonderland'))).toBe(200);
    await expect(httpsStatus(`${registry.url}/v2/`, undefined)).rejects.toThrow(
      /self[- ]signed|certificate/i,
    );
  });

  it('skopeo pushes with the credentials and pulls only with them', async () => {
    await registry.push(single.dir, 'v1', 'private/app');
    const reference = `${registry.host}/private/app:v1`;
    const certs = ['--src-cert-dir', registry.certDir!];
    expect(await copyOut(reference, [...certs, '--src-creds', 'alice:wonderland'])).toBe(single.digest);
    await expect(copyOut(reference, [...certs, '--src-creds', 'alice:nope'])).rejects.toThrow(
      /unauthorized|authentication/i,
    );
    await expect(copyOut(reference, certs)).rejects.toThrow(/unauthorized|authentication/i);
    await registry.push(dockerList.dir, 'list', 'private/list');
    expect(
      await copyOut(`${registry.host}/private/list:list`, [...certs, '--src-creds', 'alice:wonderland']),
    ).toBe(dockerList.digest);
  });
});

describe('token auth', () => {
  it('with anonymous pull: anonymous callers pull, only users push', async () => {
    const registry = await startDistribution({ mode: 'token', users: { alice: 'wonderland' } });
    try {
      const challenge = await fetchRaw(`${registry.url}/v2/`);
      expect(challenge.status).toBe(401);
      expect(challenge.headers['www-authenticate']).toContain(`realm="${registry.tokenUrl}"`);
      await registry.push(single.dir, 'v1', 'team/app');
      expect(await copyOut(`${registry.host}/team/app:v1`, ['--src-tls-verify=false'])).toBe(single.digest);
      await expect(
        skopeo([
          'copy',
          '--dest-tls-verify=false',
          `oci:${single.dir}:v1`,
          `docker://${registry.host}/team/anonymous:v1`,
        ]),
      ).rejects.toThrow(/unauthorized|authentication|denied/i);
      await expect(
        copyOut(`${registry.host}/team/app:v1`, ['--src-tls-verify=false', '--src-creds', 'alice:nope']),
      ).rejects.toThrow();
      expect(registry.tokenRequests!.some((record) => record.user === 'alice' && record.status === 200)).toBe(
        true,
      );
      expect(
        registry.tokenRequests!.some((record) => record.user === undefined && record.status === 200),
      ).toBe(true);
    } finally {
      await registry.close();
    }
  });

  it('without anonymous pull: only credentialed pulls work', async () => {
    const registry = await startDistribution({
      mode: 'token',
      users: { alice: 'wonderland' },
      anonymousPull: false,
    });
    try {
      await registry.push(single.dir, 'v1', 'team/app');
      const reference = `${registry.host}/team/app:v1`;
      await expect(copyOut(reference, ['--src-tls-verify=false'])).rejects.toThrow(
        /unauthorized|authentication/i,
      );
      expect(await copyOut(reference, ['--src-tls-verify=false', '--src-creds', 'alice:wonderland'])).toBe(
        single.digest,
      );
      const anonymous = await fetchRaw(`${registry.tokenUrl}?service=x&scope=repository:team/app:pull`);
      expect(anonymous.status).toBe(401);
    } finally {
      await registry.close();
    }
  });
});

describe('pull-through cache', () => {
  it('proxies an upstream and serves a second pull from its cache', async () => {
    const upstream = await startRegistry({ repositories: { 'library/app': single.dir } });
    const mirror = await startDistribution({ mode: 'http', proxy: { remoteurl: upstream.url } });
    try {
      const reference = `${mirror.host}/library/app:v1`;
      const layer = single.manifests[0]!.layers[0]!.descriptor.digest;
      const upstreamLayerGets = () =>
        upstream.requests.filter(
          (record) => record.kind === 'blob' && record.method === 'GET' && record.digest === layer,
        ).length;
      expect(await copyOut(reference, ['--src-tls-verify=false'])).toBe(single.digest);
      // distribution 2.8 streams the first pull to the client and fetches once more to store it.
      const afterFirst = upstreamLayerGets();
      expect(afterFirst).toBeGreaterThanOrEqual(1);
      expect(await copyOut(reference, ['--src-tls-verify=false'])).toBe(single.digest);
      expect(upstreamLayerGets()).toBe(afterFirst);
      expect(
        (await mirror.settled()).filter(
          (request) => request.path.includes(layer) && request.method === 'GET',
        ),
      ).toHaveLength(2);
    } finally {
      await mirror.close();
      await upstream.close();
    }
  });
});

describe('missing tools', () => {
  it('fails naming the package when docker-registry is missing', async () => {
    await expect(startDistribution({ binary: '/nonexistent/docker-registry' })).rejects.toThrow(
      /apt-get install/,
    );
  });
});

describe('clean-up', () => {
  it('a test process killed with SIGKILL leaves no registry behind', async () => {
    const module = new URL('./start-distribution.ts', import.meta.url).href;
    const script = `const { startDistribution } = await import(${JSON.stringify(module)});
      const registry = await startDistribution({ mode: 'http' });
      console.log(registry.url);
      process.kill(process.pid, 'SIGKILL');`;
    const { stdout } = await new Promise<{ stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--conditions=@ocipull/source', '--input-type=module', '--eval', script],
        (_error, out) => resolve({ stdout: out }),
      );
    });
    const url = stdout.trim();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await vi.waitFor(async () => expect(fetchRaw(`${url}/v2/`)).rejects.toThrow(/ECONNREFUSED/), {
      timeout: 10_000,
      interval: 100,
    });
  });
});
