import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@ocipull/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeCredentials, saveCredentials } from './docker-config.ts';

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ocipull-docker-config-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const credentials = { username: 'alice', password: 's3cret' };
const auth = Buffer.from('alice:s3cret').toString('base64');

describe('docker config', () => {
  it('writes through a symlinked config.json to its target and keeps the link, as docker login does', async () => {
    // A config kept in a dotfiles repository and linked into place, by a relative link.
    const config = join(work, 'linked', 'config.json');
    const target = join(work, 'dotfiles', 'docker.json');
    await mkdir(join(work, 'dotfiles'), { recursive: true });
    await mkdir(join(work, 'linked'), { recursive: true });
    await writeFile(target, `${JSON.stringify({ auths: {}, detachKeys: 'ctrl-x' })}\n`, { mode: 0o600 });
    await symlink('../dotfiles/docker.json', config);
    const env = { DOCKER_CONFIG: join(work, 'linked') };

    expect(await saveCredentials('registry.example:5000', credentials, env)).toBe(config);
    expect((await lstat(config)).isSymbolicLink()).toBe(true);
    expect(await readlink(config)).toBe('../dotfiles/docker.json');
    const written = JSON.parse(await readFile(target, 'utf8'));
    expect(written).toEqual({ auths: { 'registry.example:5000': { auth } }, detachKeys: 'ctrl-x' });
    expect((await stat(target)).mode & 0o777).toBe(0o600);

    expect(await removeCredentials('registry.example:5000', env)).toBe(true);
    expect((await lstat(config)).isSymbolicLink()).toBe(true);
    expect(JSON.parse(await readFile(target, 'utf8')).auths).toEqual({});
    // No temporary file is left in either directory.
    expect(await readdir(join(work, 'linked'))).toEqual(['config.json']);
    expect(await readdir(join(work, 'dotfiles'))).toEqual(['docker.json']);
  });

  it('says where the secret went: a credential helper, else the file', async () => {
    const home = join(work, 'helper-home');
    const bin = join(work, 'helper-bin');
    await mkdir(home, { recursive: true });
    await mkdir(bin, { recursive: true });
    // A helper that keeps what `store` hands it.
    await writeFile(join(bin, 'docker-credential-keep'), `#!/bin/sh\ncat > ${join(work, 'kept.json')}\n`, {
      mode: 0o755,
    });
    await writeFile(join(home, 'config.json'), JSON.stringify({ credsStore: 'keep' }));
    const env = { DOCKER_CONFIG: home, PATH: `${bin}:${process.env.PATH}` };
    expect(await saveCredentials('registry.example:5000', credentials, env)).toBe(
      'credential helper docker-credential-keep',
    );
    expect(JSON.parse(await readFile(join(work, 'kept.json'), 'utf8'))).toMatchObject({ Secret: 's3cret' });
    expect(await readFile(join(home, 'config.json'), 'utf8')).not.toContain('s3cret');
  });

  it('a config.json that is not JSON is a local file to fix (ERR_IO), not a usage error', async () => {
    const home = join(work, 'broken-home');
    await mkdir(home, { recursive: true });
    await writeFile(join(home, 'config.json'), '{"auths": {');
    await expect(
      saveCredentials('registry.example', credentials, { DOCKER_CONFIG: home }),
    ).rejects.toMatchObject({
      code: ErrorCode.Io,
      message: expect.stringContaining('is not valid JSON'),
    });
  });

  it('creates the file a dangling config.json link names', async () => {
    const home = join(work, 'dangling');
    await mkdir(home, { recursive: true });
    const target = join(work, 'dangling-target', 'config.json');
    await symlink(target, join(home, 'config.json'));

    await saveCredentials('registry.example:5000', credentials, { DOCKER_CONFIG: home });
    expect((await lstat(join(home, 'config.json'))).isSymbolicLink()).toBe(true);
    expect(JSON.parse(await readFile(target, 'utf8')).auths['registry.example:5000'].auth).toBe(auth);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
  });

  it('writes a config.json that is not a link in place', async () => {
    const home = join(work, 'plain');
    await saveCredentials('registry.example:5000', credentials, { DOCKER_CONFIG: home });
    expect((await lstat(join(home, 'config.json'))).isFile()).toBe(true);
    expect(await readdir(home)).toEqual(['config.json']);
  });
});
