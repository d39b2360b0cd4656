import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  copyFile,
  symlink as link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  buildImage,
  type DistributionRegistry,
  dir,
  file,
  formatTree,
  type HarnessRegistry,
  hardlink,
  listTree,
  opaque,
  randomImage,
  requireTool,
  startDistribution,
  startRegistry,
  symlink,
  whiteout,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
let work: string;

/**
 * What users run: the launcher, which starts Node from the startup snapshot of the build (or, without
 * one, runs `bin/ocipull.js`, which loads the bundle). `pnpm run build` makes them.
 */
const launcher = join(import.meta.dirname, '..', 'bin', 'ocipull');

/** Runs the real CLI as a child process, the way users run it. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string) {
  return run(launcher, args, {
    ...(cwd ? { cwd } : {}),
    env: { ...process.env, ...env },
    maxBuffer: 16 * 1024 * 1024,
  }).then(
    (result) => ({ code: 0, stdout: result.stdout, stderr: result.stderr }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof error.code === 'number' ? error.code : -1,
      stdout: error.stdout ?? '',
      stderr: error.stderr ?? '',
    }),
  );
}

const overlayLayers = [
  {
    entries: [
      dir('etc'),
      file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n'),
      file('etc/motd', 'bye\n'),
      dir('opt'),
      file('opt/old', 'old'),
      file('usr-bin-tool', 'tool', { mode: 0o4755 }),
      file('owned', 'data', { uid: 1000, gid: 1000, mode: 0o640 }),
    ],
  },
  {
    entries: [
      whiteout('etc/motd'),
      opaque('opt'),
      file('opt/new', 'new'),
      hardlink('owned-link', 'owned'),
      symlink('etc/link', '/etc/passwd'),
    ],
  },
];

let http: DistributionRegistry;

const settledRequests = (registry: DistributionRegistry) => registry.settled();

beforeAll(async () => {
  await requireTool('skopeo');
  await requireTool('umoci');
  work = await mkdtemp(join(tmpdir(), 'ocipull-cli-e2e-'));
  const layout = join(work, 'layout');
  await buildImage({ layers: overlayLayers, config: { Cmd: ['/bin/sh'] } }, { dir: layout, tag: 'overlay' });
  await buildImage(
    { layers: overlayLayers.map((layer) => ({ ...layer, compression: 'zstd' as const })) },
    { dir: layout, tag: 'zstd' },
  );
  await buildImage(
    {
      images: [
        { layers: overlayLayers, platform: { os: 'linux', architecture: 'amd64' } },
        {
          layers: [{ entries: [file('arm', 'yes')] }],
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        },
      ],
      attestations: true,
    },
    { dir: layout, tag: 'multi' },
  );
  await buildImage({ format: 'docker', layers: overlayLayers }, { dir: layout, tag: 'docker' });
  await buildImage(randomImage({ seed: 7, layers: 3, bytesPerLayer: 3 * 1024 * 1024 }), {
    dir: layout,
    tag: 'big',
  });
  http = await startDistribution({ mode: 'http' });
  for (const tag of ['overlay', 'zstd', 'docker', 'multi', 'big']) await http.push(layout, tag, 'e2e/image');
}, 240_000);

afterAll(async () => {
  await http?.close();
  await rm(work, { recursive: true, force: true });
});

async function umociRootfs(reference: string, name: string): Promise<string> {
  const layout = join(work, `umoci-${name}`);
  await run('skopeo', ['copy', '--src-tls-verify=false', `docker://${reference}`, `oci:${layout}:img`]);
  const bundle = join(work, `bundle-${name}`);
  await run('umoci', ['unpack', '--image', `${layout}:img`, bundle]);
  return join(bundle, 'rootfs');
}

describe('ocipull CLI against the CNCF distribution registry', () => {
  it('pulls an OCI image whose rootfs equals umoci unpack of the same image', async () => {
    const cache = join(work, 'cache-oci');
    const rootfs = join(work, 'rootfs-oci');
    const reference = `${http.host}/e2e/image:overlay`;
    const result = await cli([
      'pull',
      reference,
      '--cache',
      cache,
      '--rootfs',
      rootfs,
      '--progress',
      'plain',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('layer 2/2');
    const theirs = await umociRootfs(reference, 'oci');
    const options = { owners: true, modes: true };
    expect(formatTree(await listTree(rootfs), options)).toEqual(formatTree(await listTree(theirs), options));
    expect(existsSync(join(rootfs, 'etc/motd'))).toBe(false);
    expect(existsSync(join(rootfs, 'opt/old'))).toBe(false);
  });

  it('starts from the startup snapshot, or from the modules without it, and pulls the same tree both ways', async () => {
    expect(existsSync(launcher), 'build the CLI first: pnpm run build').toBe(true);
    const snapshot = await cli(['--version', '--debug']);
    expect(snapshot.code, snapshot.stderr).toBe(0);
    expect(snapshot.stdout).toMatch(
      /^ocipull \d+\.\d+\.\d+\nnode v[\d.]+, started from the startup snapshot\n$/,
    );
    const modules = await cli(['--version', '--debug'], { OCIPULL_NO_SNAPSHOT: '1' });
    expect(modules.stdout).toMatch(/, started from modules\n$/);
    const reference = `${http.host}/e2e/image:zstd`;
    const theirs = await umociRootfs(`${http.host}/e2e/image:overlay`, 'shipped');
    const options = { owners: true, modes: true };
    for (const [way, env] of [
      ['snapshot', {}],
      ['modules', { OCIPULL_NO_SNAPSHOT: '1' }],
    ] as const) {
      // Relative paths resolve against the directory the command runs in (a snapshot must not keep
      // the build's: graceful-fs caches process.cwd, so it is not evaluated ahead of time).
      const result = await cli(
        ['pull', reference, '--cache', `cache-${way}`, '--rootfs', `rootfs-${way}`, '--quiet'],
        env,
        work,
      );
      expect(result.code, result.stderr).toBe(0);
      expect(existsSync(join(work, `cache-${way}`, 'index.json'))).toBe(true);
      expect(formatTree(await listTree(join(work, `rootfs-${way}`)), options)).toEqual(
        formatTree(await listTree(theirs), options),
      );
    }
  });

  it('the launcher does not start from a snapshot another Node binary made, nor one whose binary changed', async () => {
    // A copy of the install (linked to the real build) whose record names the right binary and
    // identity, then a changed identity, then a binary that is not there.
    const copy = await mkdtemp(join(work, 'install-'));
    const cliRoot = join(import.meta.dirname, '..');
    await mkdir(join(copy, 'bin'));
    await mkdir(join(copy, 'dist', 'snapshot'), { recursive: true });
    await copyFile(launcher, join(copy, 'bin', 'ocipull'));
    await copyFile(join(cliRoot, 'bin', 'ocipull.js'), join(copy, 'bin', 'ocipull.js'));
    await link(join(cliRoot, 'dist', 'bundle'), join(copy, 'dist', 'bundle'));
    await link(
      join(cliRoot, 'dist', 'snapshot', 'ocipull.blob'),
      join(copy, 'dist', 'snapshot', 'ocipull.blob'),
    );
    const recorded = (await readFile(join(cliRoot, 'dist', 'snapshot', 'node'), 'utf8')).split('\n');
    const startedFrom = async (nodeFile: string) => {
      await writeFile(join(copy, 'dist', 'snapshot', 'node'), nodeFile);
      const result = await run(join(copy, 'bin', 'ocipull'), ['--version', '--debug']);
      return /started from (.*)\n$/.exec(result.stdout)?.[1];
    };
    expect(await startedFrom(`${recorded[0]}\n${recorded[1]}\n`)).toBe('the startup snapshot');
    expect(await startedFrom(`${recorded[0]}\n1:2:3\n`)).toBe('modules');
    expect(await startedFrom(`/nonexistent/node\n${recorded[1]}\n`)).toBe('modules');
  });

  it('pulls zstd layers and a Docker v2 schema 2 image to the same tree as the gzip OCI twin, and picks a platform from an index', async () => {
    const cache = join(work, 'cache-zstd');
    const gzip = join(work, 'rootfs-gzip');
    const zstd = join(work, 'rootfs-zstd');
    expect(
      (await cli(['pull', `${http.host}/e2e/image:overlay`, '--cache', cache, '--rootfs', gzip])).code,
    ).toBe(0);
    expect(
      (await cli(['pull', `${http.host}/e2e/image:zstd`, '--cache', cache, '--rootfs', zstd])).code,
    ).toBe(0);
    const options = { owners: true, modes: true };
    expect(formatTree(await listTree(zstd), options)).toEqual(formatTree(await listTree(gzip), options));
    const docker = join(work, 'rootfs-docker');
    const pulledDocker = await cli([
      'pull',
      `${http.host}/e2e/image:docker`,
      '--cache',
      cache,
      '--rootfs',
      docker,
      '--json',
    ]);
    expect(pulledDocker.code, pulledDocker.stderr).toBe(0);
    expect(formatTree(await listTree(docker), options)).toEqual(formatTree(await listTree(gzip), options));
    const arm = join(work, 'rootfs-arm');
    const pulled = await cli([
      'pull',
      `${http.host}/e2e/image:multi`,
      '--cache',
      cache,
      '--rootfs',
      arm,
      '--platform',
      'linux/arm64',
      '--json',
    ]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(pulled.stdout).platform).toMatchObject({ architecture: 'arm64' });
    expect(await readdir(arm)).toEqual(['arm']);
  });

  it('re-pulls warm with zero requests under --pull missing and only manifest requests under always', async () => {
    const cache = join(work, 'cache-warm');
    const reference = `${http.host}/e2e/image:overlay`;
    expect((await cli(['pull', reference, '--cache', cache])).code).toBe(0);
    const before = (await settledRequests(http)).length;
    expect((await cli(['pull', reference, '--cache', cache, '--pull', 'missing'])).code).toBe(0);
    expect((await settledRequests(http)).length).toBe(before);
    expect((await cli(['pull', reference, '--cache', cache, '--pull', 'always'])).code).toBe(0);
    const paths = (await settledRequests(http)).slice(before).map((request) => request.path);
    expect(paths.length).toBeGreaterThan(0);
    expect(paths.filter((path) => path !== '/v2/' && !path.includes('/manifests/'))).toEqual([]);
  });

  it('8 concurrent pulls of one image download each blob once and build identical trees', async () => {
    const cache = join(work, 'cache-storm');
    const before = (await settledRequests(http)).length;
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, index) =>
        cli([
          'pull',
          `${http.host}/e2e/image:big`,
          '--cache',
          cache,
          '--rootfs',
          join(work, `storm-${index}`),
          '--quiet',
        ]),
      ),
    );
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    const blobGets = (await settledRequests(http))
      .slice(before)
      .filter((request) => request.method === 'GET' && request.path.includes('/blobs/'));
    const perDigest = new Map<string, number>();
    for (const request of blobGets) perDigest.set(request.path, (perDigest.get(request.path) ?? 0) + 1);
    expect(perDigest.size).toBe(4); // config + 3 layers
    expect([...perDigest.values()]).toEqual([1, 1, 1, 1]);
    const first = formatTree(await listTree(join(work, 'storm-0')));
    for (let index = 1; index < 8; index++)
      expect(formatTree(await listTree(join(work, `storm-${index}`)))).toEqual(first);
  }, 120_000);
});

/** Runs the CLI with its stdout a pipe whose reader has gone, as in `ocipull … | head -c 10`. */
function cliIntoClosedPipe(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(launcher, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // Closed long before the process has started Node, so its first write already fails with EPIPE.
  child.stdout.destroy();
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('ocipull CLI writing into a closed pipe', () => {
  it('ends quietly with exit code 0 when the reader of stdout has gone', async () => {
    const cache = join(work, 'cache-pipe');
    const reference = `${http.host}/e2e/image:overlay`;
    const pulled = await cli(['pull', reference, '--cache', cache, '--progress', 'none']);
    expect(pulled.code, pulled.stderr).toBe(0);
    for (const args of [
      ['inspect', reference],
      ['inspect', reference, '--json'],
      ['config', reference],
      ['images'],
      ['--help'],
    ]) {
      const result = await cliIntoClosedPipe([...args, '--cache', cache]);
      expect({ args, ...result }).toEqual({ args, code: 0, stderr: '' });
    }
  });
});

describe('ocipull CLI with a pull-through mirror', () => {
  it('pulls through --mirror and falls back to the upstream when the mirror is down', async () => {
    const mirror = await startDistribution({ mode: 'http', proxy: { remoteurl: http.url } });
    const reference = `${http.host}/e2e/image:overlay`;
    try {
      const through = await cli([
        'pull',
        reference,
        '--cache',
        join(work, 'cache-mirror'),
        '--mirror',
        mirror.url,
        '--progress',
        'plain',
      ]);
      expect(through.code, through.stderr).toBe(0);
      const served = (await mirror.settled()).filter((request) => request.path.startsWith('/v2/e2e/image/'));
      expect(served.some((request) => request.path.includes('/manifests/'))).toBe(true);
      expect(served.some((request) => request.path.includes('/blobs/'))).toBe(true);
    } finally {
      await mirror.close();
    }
    const fallback = await cli([
      'pull',
      reference,
      '--cache',
      join(work, 'cache-mirror-down'),
      '--mirror',
      mirror.url,
      '--progress',
      'plain',
    ]);
    expect(fallback.code, fallback.stderr).toBe(0);
    expect(fallback.stderr).toMatch(/mirror/i);
  }, 120_000);
});

describe('ocipull CLI killed mid-pull', () => {
  it('resumes after SIGKILL and transfers only the missing bytes', async () => {
    const { registry, layer, reference } = await slowBottomLayer('kill', 'kill/me', {
      seed: 11,
      layers: 1,
      compression: 'none',
    });
    try {
      const cache = join(work, 'cache-kill');
      const child: ChildProcess = spawn(launcher, ['pull', reference, '--cache', cache, '--quiet'], {
        stdio: 'ignore',
      });
      const part = join(cache, 'ingest', `${layer.digest.slice('sha256:'.length)}.part`);
      await untilPartHolds(part, 1024 * 1024);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      const kept = (await stat(part)).size;
      expect(kept).toBeGreaterThan(1024 * 1024);
      expect(kept).toBeLessThan(layer.size);
      registry.faults.clear();
      const sentBefore = sentFor(registry, layer.digest);
      const rerun = await cli(['pull', reference, '--cache', cache, '--quiet']);
      expect(rerun.code, rerun.stderr).toBe(0);
      const resumed = registry.requests.filter(
        (request) => request.digest === layer.digest && request.method === 'GET',
      );
      const sentAfter = sentFor(registry, layer.digest) - sentBefore;
      // The rerun asks only for what the .part lacks (the kill may land after more bytes reached the disk
      // than we measured, never fewer).
      expect(resumed.at(-1)!.range).toMatch(/^bytes=\d+-$/);
      expect(sentAfter).toBeLessThanOrEqual(layer.size - kept);
      expect(existsSync(part)).toBe(false);
    } finally {
      await registry.close();
    }
  }, 90_000);

  it('a --rootfs pull killed mid-layer resumes on the rerun and leaves only the rootfs beside it', async () => {
    const {
      registry,
      layer: bottom,
      reference,
    } = await slowBottomLayer('kill-rootfs', 'kill/rootfs', { seed: 12, layers: 2, compression: 'gzip' });
    try {
      const cache = join(work, 'cache-kill-rootfs');
      const parent = join(work, 'kill-rootfs-out');
      await mkdir(parent);
      const rootfs = join(parent, 'rootfs');
      const args = ['pull', reference, '--cache', cache, '--rootfs', rootfs, '--quiet'];
      const child: ChildProcess = spawn(launcher, args, { stdio: 'ignore' });
      const part = join(cache, 'ingest', `${bottom.digest.slice('sha256:'.length)}.part`);
      await untilPartHolds(part, 1024 * 1024);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      const kept = (await stat(part)).size;
      // The killed pull's half-built tree is there, hidden, next to where the rootfs goes.
      expect((await readdir(parent)).filter((name) => name.startsWith('.rootfs.tmp-'))).toHaveLength(1);
      registry.faults.clear();
      const sentBefore = sentFor(registry, bottom.digest);
      const rerun = await cli(args);
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(sentFor(registry, bottom.digest) - sentBefore).toBeLessThanOrEqual(bottom.size - kept);
      expect(await readdir(parent)).toEqual(['rootfs']);
      const theirs = await umociRootfs(reference, 'killed');
      const options = { owners: true, modes: true };
      expect(formatTree(await listTree(rootfs), options)).toEqual(
        formatTree(await listTree(theirs), options),
      );
    } finally {
      await registry.close();
    }
  }, 90_000);

  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s cancels a --rootfs pull cleanly: exit 130, nothing beside the rootfs, the rerun resumes',
    async (signal) => {
      const {
        registry,
        layer: bottom,
        reference,
      } = await slowBottomLayer(`signal-${signal}`, 'signal/me', {
        seed: 13,
        layers: 2,
        compression: 'gzip',
      });
      try {
        const cache = join(work, `cache-${signal}`);
        const parent = join(work, `signal-${signal}-out`);
        await mkdir(parent);
        const rootfs = join(parent, 'rootfs');
        const args = ['pull', reference, '--cache', cache, '--rootfs', rootfs, '--quiet'];
        const child = spawn(launcher, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr!.on('data', (chunk) => {
          stderr += String(chunk);
        });
        const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        const part = join(cache, 'ingest', `${bottom.digest.slice('sha256:'.length)}.part`);
        await untilPartHolds(part, 1024 * 1024);
        child.kill(signal);
        expect(await exited, stderr).toBe(130);
        expect(stderr).toMatch(/ERR_ABORTED/);
        expect(await readdir(parent)).toEqual([]);
        registry.faults.clear();
        const rerun = await cli(args);
        expect(rerun.code, rerun.stderr).toBe(0);
        expect(registry.requests.filter((request) => request.digest === bottom.digest).at(-1)!.range).toMatch(
          /^bytes=[1-9]\d*-$/,
        );
        expect(await readdir(parent)).toEqual(['rootfs']);
      } finally {
        await registry.close();
      }
    },
    90_000,
  );
});

/**
 * A harness registry serving a random image (4 MiB layers) under `repository:v1` whose bottom layer
 * trickles at 2 MiB/s: time to stop a pull in the middle of it.
 */
async function slowBottomLayer(
  name: string,
  repository: string,
  image: { seed: number; layers: number; compression: 'none' | 'gzip' },
) {
  const layout = join(work, `${name}-layout`);
  const built = await buildImage(randomImage({ ...image, bytesPerLayer: 4 * 1024 * 1024 }), {
    dir: layout,
    tag: 'v1',
  });
  const layer = built.manifests[0]!.layers[0]!.descriptor;
  const registry = await startRegistry({ repositories: { [repository]: layout } });
  registry.faults.add({
    match: { kind: 'blob', digest: layer.digest },
    action: { type: 'throttle', bytesPerSecond: 2 * 1024 * 1024 },
  });
  return { registry, layer, reference: `${registry.host}/${repository}:v1` };
}

/** Waits (up to 30 s) until a download's `.part` holds more than `bytes`. */
async function untilPartHolds(part: string, bytes: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!existsSync(part) || (await stat(part)).size <= bytes) {
    if (Date.now() > deadline) throw new Error('the download never got going');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The bytes the harness registry sent in GET responses for a blob. */
function sentFor(registry: HarnessRegistry, digest: string): number {
  return registry.requests
    .filter((request) => request.digest === digest && request.method === 'GET')
    .reduce((sum, request) => sum + request.bytesSent, 0);
}

describe('ocipull CLI against authenticated registries', () => {
  it('logs in and pulls over TLS with basic auth; a wrong password is refused with exit code 2', async () => {
    const tls = await startDistribution({ mode: 'tls-basic' });
    try {
      const layout = join(work, 'layout');
      await tls.push(layout, 'overlay', 'secure/image');
      const [user, password] = Object.entries(tls.users)[0]!;
      const dockerConfig = join(work, 'docker-tls');
      const wrongConfig = join(work, 'docker-tls-wrong');
      const reference = `${tls.host}/secure/image:overlay`;
      const ca = ['--ca-file', tls.caFile!];
      // login checks with the registry first (as docker login does): a wrong password is refused, nothing stored.
      const badLogin = await cli(['login', tls.host, '-u', user, '-p', 'wrong-password', ...ca], {
        DOCKER_CONFIG: wrongConfig,
      });
      expect(badLogin.code, badLogin.stderr).toBe(2);
      expect(badLogin.stderr).toContain('ERR_UNAUTHORIZED');
      expect(badLogin.stderr).toContain('hint: check the username and password');
      expect(badLogin.stderr).not.toContain('wrong-password');
      expect(existsSync(join(wrongConfig, 'config.json'))).toBe(false);
      expect(
        (
          await cli(['login', tls.host, '-u', user, '-p', 'wrong-password', '--no-verify'], {
            DOCKER_CONFIG: wrongConfig,
          })
        ).code,
      ).toBe(0);
      const refused = await cli(['pull', reference, '--cache', join(work, 'cache-tls-wrong'), ...ca], {
        DOCKER_CONFIG: wrongConfig,
      });
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain('ERR_UNAUTHORIZED');
      expect(refused.stderr).toContain(`hint: run \`ocipull login ${tls.host}\``);
      expect(refused.stderr).not.toContain('wrong-password');
      const anonymous = await cli(['pull', reference, '--cache', join(work, 'cache-tls-anon'), ...ca], {
        DOCKER_CONFIG: join(work, 'none'),
      });
      expect(anonymous.code, anonymous.stderr).toBe(2);
      const untrusted = await cli(['pull', reference, '--cache', join(work, 'cache-tls-ca'), '--tls'], {
        DOCKER_CONFIG: wrongConfig,
      });
      expect(untrusted.code, untrusted.stderr).toBe(3);
      expect(untrusted.stderr).toMatch(/certificate|TLS/i);
      expect(
        (await cli(['login', tls.host, '-u', user, '-p', password, ...ca], { DOCKER_CONFIG: dockerConfig }))
          .code,
      ).toBe(0);
      const pulled = await cli(
        ['pull', reference, '--cache', join(work, 'cache-tls'), '--rootfs', join(work, 'rootfs-tls'), ...ca],
        {
          DOCKER_CONFIG: dockerConfig,
        },
      );
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(existsSync(join(work, 'rootfs-tls/opt/new'))).toBe(true);
    } finally {
      await tls.close();
    }
  }, 120_000);

  it('pulls anonymously through the token flow and refuses when anonymous pulls are denied', async () => {
    for (const anonymousPull of [true, false]) {
      const token = await startDistribution({ mode: 'token', anonymousPull });
      try {
        await token.push(join(work, 'layout'), 'overlay', 'tokened/image');
        const result = await cli(
          [
            'pull',
            `${token.host}/tokened/image:overlay`,
            '--cache',
            join(work, `cache-token-${anonymousPull}`),
          ],
          {
            DOCKER_CONFIG: join(work, 'none'),
          },
        );
        expect(result.code, result.stderr).toBe(anonymousPull ? 0 : 2);
        if (anonymousPull) {
          const [user, password] = Object.entries(token.users)[0]!;
          const config = join(work, 'docker-token');
          expect(
            (await cli(['login', token.host, '-u', user, '-p', password], { DOCKER_CONFIG: config })).code,
          ).toBe(0);
          const refused = await cli(['login', token.host, '-u', user, '-p', 'not-it'], {
            DOCKER_CONFIG: join(work, 'docker-token-wrong'),
          });
          expect(refused.code, refused.stderr).toBe(2);
          expect(refused.stderr).not.toContain('not-it');
          expect(
            (
              await cli(
                ['pull', `${token.host}/tokened/image:overlay`, '--cache', join(work, 'cache-token-cred')],
                { DOCKER_CONFIG: config },
              )
            ).code,
          ).toBe(0);
        }
      } finally {
        await token.close();
      }
    }
  }, 120_000);
});
