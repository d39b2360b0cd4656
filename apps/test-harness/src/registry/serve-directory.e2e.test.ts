import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { skopeo } from '../distribution/tools.ts';
import { fetchRaw } from './testing/http-client.ts';
import { writeMinimalLayout } from './testing/minimal-layout.ts';

const binScript = fileURLToPath(new URL('../../bin/ocipull-harness.js', import.meta.url));
const builtBin = fileURLToPath(new URL('../../dist/bin.js', import.meta.url));
let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ocipull-serve-e2e-'));
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

it('the installed bin serves a layout from a shell; skopeo copies out of it', async () => {
  await access(builtBin).catch(() => {
    throw new Error(`${builtBin} is missing: run 'pnpm run build' before the e2e suite`);
  });
  const image = await writeMinimalLayout(join(workDir, 'myimage'), { tag: 'v1' });
  // Its own process group: `node` on PATH may be a shell shim that runs the real node as a child.
  const child = spawn('sh', ['-c', `exec "${binScript}" serve "${image.dir}" --port 0`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const group = child.pid!;
  const groupAlive = () => {
    try {
      process.kill(-group, 0);
      return true;
    } catch {
      return false;
    }
  };
  let host = '';
  try {
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) =>
        reject(new Error(`ocipull-harness exited ${code} before printing its address`)),
      );
    });
    const match = /^listening on http:\/\/(127\.0\.0\.1:\d+)$/.exec(line);
    expect(match, line).not.toBeNull();
    host = match![1]!;
    expect((await fetchRaw(`http://${host}/v2/`)).status).toBe(200);
    const target = join(workDir, 'copied');
    await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/myimage:v1`, `dir:${target}`]);
    await access(join(target, 'manifest.json'));
  } finally {
    if (groupAlive()) process.kill(-group, 'SIGTERM');
  }
  // SIGTERM closes the registry and exits: nothing of the group is left and the port refuses.
  await vi.waitFor(() => expect(groupAlive()).toBe(false), { timeout: 5000, interval: 50 });
  await expect(fetchRaw(`http://${host}/v2/`)).rejects.toThrow(/ECONNREFUSED/);
});
