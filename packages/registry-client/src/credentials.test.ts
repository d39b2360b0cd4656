import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@ocipull/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authFilePaths, lookupConfigCredentials, normalizeAuthKey, runCredentialHelper } from './index.ts';

const basic = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString('base64');

describe('auth files and credential helpers', () => {
  let root: string;
  let bin: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'registry-client-creds-'));
    bin = join(root, 'bin');
    await mkdir(bin);
    // A credential helper speaking the docker-credential-helpers protocol; it logs what it was asked.
    await writeFile(
      join(bin, 'docker-credential-fake'),
      `#!/bin/sh
[ "$1" = get ] || exit 3
read -r server
echo "$server" >> "${root}/asked"
case "$server" in
  helper.example) printf '{"ServerURL":"%s","Username":"helper-user","Secret":"helper-secret"}' "$server" ;;
  token.example) printf '{"ServerURL":"%s","Username":"<token>","Secret":"refresh-me"}' "$server" ;;
  https://index.docker.io/v1/) printf '{"ServerURL":"%s","Username":"hub","Secret":"hub-secret"}' "$server" ;;
  broken.example) echo "keychain locked" >&2; exit 1 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`,
    );
    await chmod(join(bin, 'docker-credential-fake'), 0o755);
    env = { PATH: `${bin}:${process.env.PATH ?? ''}`, HOME: join(root, 'home') };
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('normalises config keys like Docker', () => {
    expect(normalizeAuthKey('https://index.docker.io/v1/')).toBe('docker.io');
    expect(normalizeAuthKey('registry-1.docker.io')).toBe('docker.io');
    expect(normalizeAuthKey('https://Registry.Example:5000/v2/')).toBe('registry.example:5000');
    expect(normalizeAuthKey('http://127.0.0.1:5000')).toBe('127.0.0.1:5000');
    expect(normalizeAuthKey('quay.io/org/repo')).toBe('quay.io/org/repo');
  });

  it('looks in podman then docker locations', () => {
    expect(
      authFilePaths(undefined, {
        REGISTRY_AUTH_FILE: '/a.json',
        XDG_RUNTIME_DIR: '/run/user/1',
        HOME: '/h',
        DOCKER_CONFIG: '/d',
      }),
    ).toEqual([
      '/a.json',
      '/run/user/1/containers/auth.json',
      '/h/.config/containers/auth.json',
      '/d/config.json',
    ]);
    expect(authFilePaths('/explicit/config.json', { HOME: '/h' })).toEqual([
      '/h/.config/containers/auth.json',
      '/explicit/config.json',
    ]);
  });

  it('reads auths entries (auth, identitytoken), credHelpers and credsStore', async () => {
    const dockerConfig = join(root, 'docker', 'config.json');
    await mkdir(join(root, 'docker'), { recursive: true });
    await writeFile(
      dockerConfig,
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: basic('ignored', 'because-helper') },
          'plain.example': { auth: basic('alice', 'pa:ss') },
          'https://oauth.example/v1/': { identitytoken: 'id-token' },
        },
        credHelpers: { 'helper.example': 'fake', 'broken.example': 'fake', 'docker.io': 'fake' },
        credsStore: 'fake',
      }),
    );
    const lookup = (registry: string, repository?: string) =>
      lookupConfigCredentials(registry, repository, { dockerConfig, env });
    expect(await lookup('plain.example')).toEqual({ username: 'alice', password: 'pa:ss' });
    expect(await lookup('oauth.example')).toEqual({ identityToken: 'id-token' });
    expect(await lookup('helper.example')).toEqual({ username: 'helper-user', password: 'helper-secret' });
    expect(await lookup('docker.io')).toEqual({ username: 'hub', password: 'hub-secret' });
    expect(await lookup('token.example')).toEqual({ identityToken: 'refresh-me' });
    expect(await lookup('unknown.example')).toBeUndefined();
    const failure = await lookup('broken.example').catch(
      (error: unknown) => error as Error & { code: string },
    );
    expect(failure).toMatchObject({ code: ErrorCode.Unauthorized });
    expect((failure as Error).message).toContain(
      'docker-credential-fake failed with exit code 1: keychain locked',
    );
    const asked = (await readFile(join(root, 'asked'), 'utf8')).trim().split('\n');
    expect(asked).toEqual([
      'helper.example',
      'https://index.docker.io/v1/',
      'token.example',
      'unknown.example',
      'broken.example',
    ]);
  });

  it('prefers REGISTRY_AUTH_FILE and podman per-repository entries', async () => {
    const authFile = join(root, 'auth.json');
    await writeFile(
      authFile,
      JSON.stringify({
        auths: {
          'quay.example/team/app': { auth: basic('app-bot', 'x') },
          'quay.example/team': { auth: basic('team-bot', 'y') },
          'quay.example': { auth: basic('org-bot', 'z') },
        },
      }),
    );
    const withFile = { ...env, REGISTRY_AUTH_FILE: authFile };
    const lookup = (repository: string) =>
      lookupConfigCredentials('quay.example', repository, {
        env: withFile,
        dockerConfig: join(root, 'none.json'),
      });
    expect((await lookup('team/app'))?.username).toBe('app-bot');
    expect((await lookup('team/other'))?.username).toBe('team-bot');
    expect((await lookup('solo'))?.username).toBe('org-bot');
  });

  it('an auth file that is not JSON is a local file to fix (ERR_IO), not a usage error', async () => {
    const broken = join(root, 'broken.json');
    await writeFile(broken, '{"auths": {');
    await expect(
      lookupConfigCredentials('r.example', 'app', { env, dockerConfig: broken }),
    ).rejects.toMatchObject({ code: ErrorCode.Io, message: expect.stringContaining('is not valid JSON') });
  });

  it('a helper that does not answer in time fails, and what it started is stopped with it', async () => {
    // A shell-script helper whose child keeps the pipes open after the shell is killed (as wrappers
    // around gcloud or aws do): waiting for the pipes to close waited forever.
    const pidFile = join(root, 'slow.pid');
    await writeFile(
      join(bin, 'docker-credential-slow'),
      `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\nwait\n`,
    );
    await chmod(join(bin, 'docker-credential-slow'), 0o755);
    const started = performance.now();
    const error = (await runCredentialHelper('slow', 'x.example', { env, timeoutMs: 500 }).catch(
      (caught: unknown) => caught,
    )) as Error & { code: string };
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(error.code).toBe(ErrorCode.Unauthorized);
    expect(error.message).toContain('docker-credential-slow did not answer within');
    const sleeper = Number((await readFile(pidFile, 'utf8')).trim());
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Killed: gone, or a zombie where nothing reaps orphans (a container's init).
    const state = await readFile(`/proc/${sleeper}/stat`, 'utf8').catch(() => '');
    expect(state === '' || /^\d+ \(.*\) Z /.test(state), state).toBe(true);

    // An abort stops it the same way.
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('enough')), 200);
    await expect(
      runCredentialHelper('slow', 'x.example', { env, signal: controller.signal }),
    ).rejects.toMatchObject({ code: ErrorCode.Aborted });
  });

  it('reports a missing helper by name and a helper printing garbage without echoing it', async () => {
    await expect(runCredentialHelper('absent', 'x.example', { env })).rejects.toMatchObject({
      code: ErrorCode.Unauthorized,
      message: expect.stringContaining('docker-credential-absent could not run'),
    });
    expect(await runCredentialHelper('absent', 'x.example', { env, missingIsEmpty: true })).toBeUndefined();
    await writeFile(join(bin, 'docker-credential-garbage'), '#!/bin/sh\necho "s3cr3t not json"\n');
    await chmod(join(bin, 'docker-credential-garbage'), 0o755);
    const error = (await runCredentialHelper('garbage', 'x.example', { env }).catch(
      (caught: unknown) => caught,
    )) as Error;
    expect(error.message).toContain('printed something other than JSON');
    expect(error.message).not.toContain('s3cr3t');
    await expect(runCredentialHelper('../evil', 'x', { env })).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
  });
});
