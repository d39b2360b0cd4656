import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLayouts, repositoryNameOf, serveDirectory } from './serve-directory.ts';
import { basicAuth, fetchRaw } from './testing/http-client.ts';
import { writeMinimalLayout } from './testing/minimal-layout.ts';

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ocipull-serve-test-'));
  await writeMinimalLayout(join(workDir, 'images', 'library', 'alpine'), { tag: '3.20' });
  await writeMinimalLayout(join(workDir, 'images', 'Hello World'), { tag: 'v1' });
  await mkdir(join(workDir, 'images', 'empty'));
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Spawns the CLI from source with the Node running these tests and resolves to its address line. */
function spawnServe(script: string, args: string[]) {
  const child = spawn(process.execPath, ['--conditions=@ocipull/source', script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const firstLine = new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`exited ${code} before printing an address: ${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, firstLine, exited, stderr: () => stderr };
}

describe('serveDirectory', () => {
  it('finds layouts by path, and a single layout by its base name', async () => {
    expect(await findLayouts(join(workDir, 'images'))).toEqual({
      'library/alpine': join(workDir, 'images', 'library', 'alpine'),
      'hello-world': join(workDir, 'images', 'Hello World'),
    });
    expect(Object.keys(await findLayouts(join(workDir, 'images', 'library', 'alpine')))).toEqual(['alpine']);
    expect(repositoryNameOf('..Weird Name!')).toBe('weird-name');
  });

  it('serves with basic auth when asked and refuses to start basic auth without users', async () => {
    const registry = await serveDirectory(join(workDir, 'images'), { auth: 'basic', users: { u: 'p' } });
    try {
      expect((await fetchRaw(`${registry.url}/v2/library/alpine/manifests/3.20`)).status).toBe(401);
      const ok = await fetchRaw(`${registry.url}/v2/library/alpine/manifests/3.20`, {
        headers: { Authorization: basicAuth('u', 'p') },
      });
      expect(ok.status).toBe(200);
    } finally {
      await registry.close();
    }
    await expect(serveDirectory(workDir, { auth: 'basic' })).rejects.toThrow(/--user/);
  });
});

describe('ocipull-harness serve (from source)', () => {
  const script = fileURLToPath(new URL('../bin.ts', import.meta.url));

  it('prints its address, serves /v2/ and the layouts, and stops on SIGTERM', async () => {
    const serve = spawnServe(script, ['serve', join(workDir, 'images'), '--port', '0']);
    try {
      const line = await serve.firstLine;
      const match = /^listening on (http:\/\/127\.0\.0\.1:(\d+))$/.exec(line);
      expect(match, line).not.toBeNull();
      const url = match![1]!;
      expect((await fetchRaw(`${url}/v2/`)).status).toBe(200);
      const tags = await fetchRaw(`${url}/v2/library/alpine/tags/list`);
      expect(JSON.parse(tags.body.toString())).toEqual({ name: 'library/alpine', tags: ['3.20'] });
      expect(serve.stderr()).toContain('hello-world');
    } finally {
      serve.child.kill('SIGTERM');
    }
    expect(await serve.exited).toBe(0);
  });

  it('fails with usage on bad arguments', async () => {
    const serve = spawnServe(script, ['serve']);
    await expect(serve.firstLine).rejects.toThrow(/expected: serve DIR/);
    expect(await serve.exited).toBe(2);
  });
});
