import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { buildImage, dir, file, type HarnessRegistry, startRegistry } from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from './main.ts';

let work: string;
let registry: HarnessRegistry;

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void) {
    this.text += chunk.toString('utf8');
    callback();
  }
}

/** An output whose every write fails as a write to a closed pipe (EPIPE) or a full disk (ENOSPC) does. */
class FailingOutput extends Writable {
  writes = 0;
  readonly errorCode: 'EPIPE' | 'ENOSPC';
  constructor(errorCode: 'EPIPE' | 'ENOSPC') {
    super();
    this.errorCode = errorCode;
  }
  override _write(_chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error) => void) {
    this.writes++;
    callback(Object.assign(new Error(`write ${this.errorCode}`), { code: this.errorCode, syscall: 'write' }));
  }
}

async function run(
  args: string[],
  options: { stdin?: string; env?: NodeJS.ProcessEnv; stdout?: Writable } = {},
) {
  const stdout = options.stdout ?? new Capture();
  const stderr = new Capture();
  const stdin = new PassThrough();
  stdin.end(options.stdin ?? '');
  const code = await main(args, { stdout, stderr, stdin, env: { ...process.env, ...options.env } });
  return { code, stdout: stdout instanceof Capture ? stdout.text : '', stderr: stderr.text };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ocipull-cli-'));
  await buildImage(
    {
      layers: [
        { entries: [dir('etc'), file('etc/hostname', 'fixture\n')] },
        { entries: [file('app', 'x')], compression: 'zstd' },
      ],
      config: { Cmd: ['/app'], Env: ['A=1'] },
    },
    { dir: join(work, 'layout'), tag: 'v1' },
  );
  registry = await startRegistry({ repositories: { 'cli/app': join(work, 'layout') } });
});

afterAll(async () => {
  await registry?.close();
  await rm(work, { recursive: true, force: true });
});

describe('ocipull', () => {
  it('prints usage with exit code 0 for --help and 1 without a command', async () => {
    expect((await run(['--help'])).code).toBe(0);
    const bare = await run([]);
    expect(bare.code).toBe(1);
    expect(bare.stdout).toContain('Usage: ocipull');
    const unknown = await run(['frobnicate']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");
  });

  it("prints each command's usage for CMD --help, CMD -h and help CMD", async () => {
    for (const name of [
      'pull',
      'images',
      'inspect',
      'config',
      'rm',
      'prune',
      'verify',
      'unpack',
      'login',
      'logout',
      'demo',
    ]) {
      for (const argv of [
        [name, '--help'],
        [name, 'x', '-h'],
        ['help', name],
      ]) {
        const result = await run(argv);
        expect({ argv, code: result.code }).toEqual({ argv, code: 0 });
        expect(result.stdout.startsWith(`Usage: ocipull ${name}`), result.stdout).toBe(true);
      }
    }
    // After `--` a "--help" is an argument, not a flag.
    const literal = await run(['rm', '--cache', join(work, 'cache-help'), '--', '--help']);
    expect(literal.stdout).not.toContain('Usage:');
    expect(literal.code).toBe(1);
  });

  it('pulls, lists, inspects, prints the config, unpacks, removes and prunes', async () => {
    const cache = join(work, 'cache-a');
    const ref = `${registry.host}/cli/app:v1`;
    // Parent directories of --rootfs and of unpack's DIR are made, as umoci does for its bundle.
    const rootfs = join(work, 'out-a', 'nested', 'rootfs');
    const pulled = await run([
      'pull',
      ref,
      '--cache',
      cache,
      '--rootfs',
      rootfs,
      '--progress',
      'none',
      '--json',
    ]);
    expect(pulled.code, pulled.stderr).toBe(0);
    const result = JSON.parse(pulled.stdout);
    expect(result.reference).toBe(ref);
    expect(result.config.cmd).toEqual(['/app']);
    expect(await readFile(join(rootfs, 'etc/hostname'), 'utf8')).toBe('fixture\n');

    // The plain output pins the reference to the digest, once, whether it named a tag or the digest.
    const other = join(work, 'cache-a-pinned');
    const byTag = await run(['pull', ref, '--cache', other, '--progress', 'none']);
    expect(byTag.stdout).toBe(`${ref}@${result.manifestDigest}\n`);
    const pinned = `${registry.host}/cli/app@${result.manifestDigest}`;
    const byDigest = await run(['pull', pinned, '--cache', other, '--progress', 'none']);
    expect(byDigest.stdout).toBe(`${pinned}\n`);

    const images = await run(['images', '--cache', cache, '--json']);
    expect(JSON.parse(images.stdout)).toMatchObject([{ reference: ref, digest: result.manifestDigest }]);
    const table = await run(['images', '--cache', cache]);
    expect(table.stdout.split('\n')[0]).toMatch(/^REFERENCE\s+DIGEST\s+SIZE$/);
    expect(table.stdout).toContain(ref);

    const inspect = await run(['inspect', ref, '--cache', cache]);
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toContain(`Digest:     ${result.manifestDigest}`);
    expect(inspect.stdout).toContain('Cmd:        ["/app"]');

    const config = await run(['config', ref, '--cache', cache]);
    expect(JSON.parse(config.stdout).config.Env).toEqual(['A=1']);

    const target = join(work, 'unpacked-a', 'deeper', 'rootfs');
    expect((await run(['unpack', ref, target, '--cache', cache])).code).toBe(0);
    // The directory itself must still be new.
    const again = await run(['unpack', ref, target, '--cache', cache]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('already exists');
    expect(await readFile(join(target, 'app'), 'utf8')).toBe('x');

    expect((await run(['verify', '--cache', cache])).code).toBe(0);
    // --quiet prints nothing but what is wrong.
    expect((await run(['verify', '--cache', cache, '--quiet'])).stdout).toBe('');
    expect((await run(['prune', '--dry-run', '--cache', cache, '--quiet'])).stdout).toBe('');
    // A DIGEST that is not a digest is a usage error, not an integrity failure.
    const badDigest = await run(['verify', 'sha256:zz', '--cache', cache]);
    expect(badDigest.code).toBe(1);
    expect(badDigest.stderr).toContain('ERR_INVALID_ARGUMENT');
    const removed = await run(['rm', ref, `${registry.host}/cli/app:nope`, '--cache', cache, '--json']);
    expect(removed.code).toBe(2);
    expect(JSON.parse(removed.stdout)).toEqual({
      removed: [ref],
      missing: [`${registry.host}/cli/app:nope`],
    });
    expect((await run(['rm', ref, '--cache', cache])).code).toBe(2);
    const pruned = await run(['prune', '--cache', cache, '--json']);
    expect(JSON.parse(pruned.stdout).removedBlobs.length).toBeGreaterThanOrEqual(4);
    const gone = await run(['inspect', ref, '--cache', cache]);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toContain(
      `ocipull: ${ref} is not in the cache (ERR_NOT_CACHED)\nhint: pull it first: \`ocipull pull REF\``,
    );
  });

  it('maps failures to the documented exit codes with a hint', async () => {
    const cache = join(work, 'cache-b');
    const missing = await run([
      'pull',
      `${registry.host}/cli/app:nope`,
      '--cache',
      cache,
      '--progress',
      'none',
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/ERR_MANIFEST_UNKNOWN/);
    const never = await run(['pull', `${registry.host}/cli/app:v1`, '--cache', cache, '--pull', 'never']);
    expect(never.code).toBe(2);
    expect(never.stderr).toContain('hint:');
    const invalid = await run(['pull', 'UPPER/Case', '--cache', cache]);
    expect(invalid.code).toBe(1);
    const badFlag = await run(['pull', `${registry.host}/cli/app:v1`, '--pull', 'sometimes']);
    expect(badFlag.code).toBe(1);
    const badAhead = await run(['pull', `${registry.host}/cli/app:v1`, '--extract-ahead', 'maybe']);
    expect(badAhead.code).toBe(1);
    expect(badAhead.stderr).toContain('--extract-ahead takes auto, always or never');
    // A port nobody listens on: the connection is refused.
    const down = await run(['pull', '127.0.0.1:1/cli/app:v1', '--cache', cache, '--progress', 'none']);
    expect(down.code).toBe(3);
  });

  it('demo --json prints the JSON document alone on stdout', async () => {
    const demo = await run(['demo', '--json', '--progress', 'none', '--cache', join(work, 'cache-demo')]);
    expect(demo.code).toBe(0);
    expect(JSON.parse(demo.stdout)).toMatchObject({ layers: expect.any(Number) });
    expect(demo.stderr).toContain('harness registry at');
  });

  it('flags a corrupted blob in the cache with exit code 4 on verify', async () => {
    const cache = join(work, 'cache-c');
    const ref = `${registry.host}/cli/app:v1`;
    const pulled = JSON.parse((await run(['pull', ref, '--cache', cache, '--json', '--quiet'])).stdout);
    const layer = pulled.layers[0].blobPath as string;
    const mode = (await stat(layer)).mode;
    await writeFile(layer, 'not the layer', { mode });
    const verify = await run(['verify', '--cache', cache, '--json']);
    expect(verify.code).toBe(4);
    expect(JSON.parse(verify.stdout).corrupt).toHaveLength(1);
    // The rotten layer went to quarantine: the image it belongs to is incomplete, on every verify after.
    const again = await run(['verify', '--cache', cache]);
    expect(again.code).toBe(4);
    expect(again.stdout).toContain(
      `incomplete ${ref} (${pulled.manifestDigest}): missing ${pulled.layers[0].digest}`,
    );
    expect(again.stderr).toContain('hint: pull the incomplete images again');
  });

  it('keeps a podman/skopeo auth file that a pull reads first in step with login and logout', async () => {
    const home = join(work, 'docker-config-shadowed');
    const authFile = join(work, 'containers-auth.json');
    const old = Buffer.from('alice:old').toString('base64');
    await writeFile(
      authFile,
      JSON.stringify({ auths: { 'registry.example:5000': { auth: old }, 'other.example': { auth: old } } }),
    );
    const env = { DOCKER_CONFIG: home, REGISTRY_AUTH_FILE: authFile };
    const login = await run(
      ['login', 'registry.example:5000', '-u', 'alice', '--password-stdin', '--no-verify'],
      {
        stdin: 'new\n',
        env,
      },
    );
    expect(login.code, login.stderr).toBe(0);
    const fresh = Buffer.from('alice:new').toString('base64');
    const auths = () => readFile(authFile, 'utf8').then((text) => JSON.parse(text).auths);
    expect(await auths()).toEqual({
      'registry.example:5000': { auth: fresh },
      'other.example': { auth: old },
    });
    expect((await stat(authFile)).mode & 0o777).toBe(0o600);
    const logout = await run(['logout', 'registry.example:5000'], { env });
    expect(logout.stdout).toBe('removed credentials for registry.example:5000\n');
    expect(await auths()).toEqual({ 'other.example': { auth: old } });
    expect(JSON.parse(await readFile(join(home, 'config.json'), 'utf8')).auths).toEqual({});
  });

  it('logs in and out in the docker config format without printing the password', async () => {
    const home = join(work, 'docker-config');
    const env = { DOCKER_CONFIG: home };
    const login = await run(
      ['login', 'registry.example:5000', '-u', 'alice', '--password-stdin', '--no-verify'],
      {
        stdin: 's3cret\n',
        env,
      },
    );
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout + login.stderr).not.toContain('s3cret');
    const config = JSON.parse(await readFile(join(home, 'config.json'), 'utf8'));
    expect(config.auths['registry.example:5000'].auth).toBe(Buffer.from('alice:s3cret').toString('base64'));
    expect((await stat(join(home, 'config.json'))).mode & 0o777).toBe(0o600);
    const hub = await run(['login', 'docker.io', '-u', 'bob', '--password-stdin', '--no-verify'], {
      stdin: 'pw',
      env,
    });
    expect(hub.code).toBe(0);
    expect(Object.keys(JSON.parse(await readFile(join(home, 'config.json'), 'utf8')).auths)).toContain(
      'https://index.docker.io/v1/',
    );
    // Verified against a registry that asks for no credentials: stored, with a note.
    const open = await run(['login', registry.host, '-u', 'carol', '--password-stdin'], {
      stdin: 'pw3',
      env,
    });
    expect(open.code, open.stderr).toBe(0);
    expect(open.stderr).toContain('did not ask for credentials');
    expect(JSON.parse(await readFile(join(home, 'config.json'), 'utf8')).auths[registry.host].auth).toBe(
      Buffer.from('carol:pw3').toString('base64'),
    );
    expect((await run(['logout', 'registry.example:5000'], { env })).code).toBe(0);
    const after = JSON.parse(await readFile(join(home, 'config.json'), 'utf8'));
    expect(after.auths['registry.example:5000']).toBeUndefined();
    expect(existsSync(join(home, 'config.json'))).toBe(true);
  });

  it("ends quietly with the command's exit code when the reader of stdout has gone (EPIPE)", async () => {
    const cache = join(work, 'cache-pipe');
    const ref = `${registry.host}/cli/app:v1`;
    expect((await run(['pull', ref, '--cache', cache, '--quiet'])).code).toBe(0);
    // A failed write is reported as an 'error' event; unheard, it crashed the process (here: an
    // unhandled error, which fails the test run).
    for (const argv of [
      ['inspect', ref],
      ['inspect', ref, '--json'],
      ['config', ref],
      ['images'],
      ['verify'],
      ['--help'],
    ]) {
      const stdout = new FailingOutput('EPIPE');
      const result = await run([...argv, '--cache', cache], { stdout });
      expect({ argv, code: result.code, stderr: result.stderr }).toEqual({ argv, code: 0, stderr: '' });
      expect(stdout.writes).toBeGreaterThan(0);
    }
    // The command carries on after the failed write and keeps its own exit code: the line for the
    // first reference failed, the second is not in the cache.
    const partly = await run(['rm', ref, `${registry.host}/cli/app:nope`, '--cache', cache], {
      stdout: new FailingOutput('EPIPE'),
    });
    expect(partly.code).toBe(2);
    expect(partly.stderr).toBe(
      `ocipull: ${registry.host}/cli/app:nope is not in the cache (ERR_NOT_CACHED)\n`,
    );
    expect((await run(['images', '--cache', cache, '--json'])).stdout).toBe('[]\n');
  });

  it('fails with exit code 5 when stdout cannot be written for another reason (a full disk)', async () => {
    const result = await run(['--help'], { stdout: new FailingOutput('ENOSPC') });
    expect(result.code).toBe(5);
    expect(result.stderr).toBe('ocipull: cannot write to stdout: write ENOSPC\n');
  });

  it('refuses an empty or missing option value instead of quietly using the default', async () => {
    const cache = join(work, 'cache-empty');
    const ref = `${registry.host}/cli/app:v1`;
    // Where the cache would go without --cache: it must not appear.
    const fallback = join(work, 'default-cache');
    const env = { OCIPULL_CACHE: fallback, DOCKER_CONFIG: join(work, 'docker-empty') };
    const notPem = join(work, 'not-a-ca.txt');
    await writeFile(notPem, 'just text\n');
    const cases: Array<[string[], string]> = [
      [['pull', ref, '--cache', '', '--progress', 'none'], '--cache needs a directory, not an empty string'],
      [['pull', ref, '--cache=', '--progress', 'none'], '--cache needs a directory, not an empty string'],
      [['images', '--cache'], '--cache needs a directory'],
      // The next flag is not taken for the directory.
      [['images', '--cache', '--json'], '--cache needs a directory'],
      [['pull', ref, '--cache', cache, '--rootfs', '', '--progress', 'none'], '--rootfs needs a value'],
      [['pull', ref, '--cache', cache, '--ca-file=', '--progress', 'none'], '--ca-file needs a value'],
      [['pull', ref, '--cache', cache, '--mirror', '', '--progress', 'none'], '--mirror needs a value'],
      [['pull', ref, '--cache', cache, '--insecure-registry', ''], '--insecure-registry needs a value'],
      [['pull', ref, '--cache', cache, '--platform', ''], '--platform needs a value'],
      [['inspect', ref, '--cache', cache, '--platform='], '--platform needs a value'],
      [['unpack', ref, '', '--cache', cache], 'an argument is an empty string'],
      [['login', '', '-u', 'alice', '-p', 'pw', '--no-verify'], 'an argument is an empty string'],
      [['login', 'registry.example', '-u', 'alice', '-p', 'pw', '--ca-file', ''], '--ca-file needs a value'],
      // A CA file that is missing, a directory, or no PEM: named as the flag's problem, before any request.
      [
        ['pull', ref, '--cache', cache, '--ca-file', join(work, 'no-such.pem')],
        `--ca-file ${join(work, 'no-such.pem')}: ENOENT`,
      ],
      [['pull', ref, '--cache', cache, '--ca-file', work], `--ca-file ${work}: EISDIR`],
      [['pull', ref, '--cache', cache, '--ca-file', notPem], `--ca-file ${notPem} holds no PEM certificate`],
    ];
    for (const [argv, message] of cases) {
      const result = await run(argv, { env });
      expect({ argv, code: result.code }).toEqual({ argv, code: 1 });
      expect(result.stderr, argv.join(' ')).toContain(message);
    }
    expect(existsSync(fallback)).toBe(false);
    expect(existsSync(join(work, 'docker-empty'))).toBe(false);
    expect(existsSync(cache)).toBe(false);
  });

  it('refuses an invalid --platform before any request, also for a single-platform image', async () => {
    const cache = join(work, 'cache-platform');
    const ref = `${registry.host}/cli/app:v1`;
    const before = registry.requests.length;
    for (const platform of ['a/b/c/d', '/', 'linux/', 'linux//amd64']) {
      for (const argv of [
        ['pull', ref, '--platform', platform, '--progress', 'none'],
        ['inspect', ref, '--platform', platform],
        ['config', ref, '--platform', platform],
        ['unpack', ref, join(work, 'unpacked-platform'), '--platform', platform],
      ]) {
        const result = await run([...argv, '--cache', cache]);
        expect({ argv, code: result.code }).toEqual({ argv, code: 1 });
        expect(result.stderr).toContain(`invalid platform ${JSON.stringify(platform)}`);
      }
    }
    expect(registry.requests.length).toBe(before);
    // A valid one is still taken.
    const pulled = await run(['pull', ref, '--platform', 'amd64', '--cache', cache, '--progress', 'none']);
    expect(pulled.code, pulled.stderr).toBe(0);
  });
});
