import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, type OciError } from '@ocipull/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLock } from './index.ts';

const fixtures = join(import.meta.dirname, 'testing', 'fixtures');
const directory = mkdtempSync(join(tmpdir(), 'ocipull-lock-e2e-'));
const children = new Set<ChildProcess>();

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(directory, { recursive: true, force: true });
});

beforeAll(() => {
  // The workers are TypeScript run by Node's type stripping (22.18+; the repo runs tests on Node 24).
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 18)) {
    throw new Error(
      `lock e2e tests need Node >= 22.18 to run .ts workers; ${process.execPath} is ${process.version}`,
    );
  }
});

/** Starts a fixture worker under the same Node, resolving workspace packages to their sources. */
function worker(
  name: string,
  ...args: (string | number)[]
): { child: ChildProcess; output: Promise<string> } {
  const child = spawn(
    process.execPath,
    ['--conditions=@ocipull/source', join(fixtures, name), ...args.map(String)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
  });
  const output = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${name} exited with ${code ?? signal}: ${stderr}`));
    });
  });
  return { child, output };
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk) => {
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline >= 0) resolve(buffered.slice(0, newline));
    });
    child.on('close', () => reject(new Error(`worker exited before a line: ${buffered}`)));
  });
}

async function rejected(promise: Promise<unknown>): Promise<OciError> {
  try {
    await promise;
  } catch (error) {
    return error as OciError;
  }
  throw new Error('expected a rejection');
}

describe('lock across processes', () => {
  it('8 processes x 200 read-increment-write cycles under the lock count exactly 1600', async () => {
    const counter = join(directory, 'counter');
    const workers = Array.from({ length: 8 }, () => worker('counter-worker.ts', counter, 200));
    await Promise.all(workers.map((each) => each.output));
    expect(readFileSync(counter, 'utf8')).toBe('1600');
  }, 180_000);

  it('a holder killed with SIGKILL blocks the others no longer than the stale timeout', async () => {
    const staleMs = 3000;
    const target = join(directory, 'killed', 'blob');
    const holder = worker('holder-worker.ts', target, staleMs);
    expect(await firstLine(holder.child)).toBe('locked');
    holder.child.kill('SIGKILL');
    const killedAt = Date.now();
    await rejected(holder.output);

    // The dead holder's lock is still there: a short wait times out.
    expect((await rejected(acquireLock(target, { staleMs, timeoutMs: 400 }))).code).toBe(
      ErrorCode.LockTimeout,
    );

    // Three waiters race for the abandoned lock; each gets it, one at a time, soon after it goes stale.
    const waiters = Array.from({ length: 3 }, () => worker('waiter-worker.ts', target, staleMs, 20_000));
    const reports = (await Promise.all(waiters.map((each) => each.output))).map(
      (line) => JSON.parse(line) as { acquiredAt: number; releasedAt: number; error?: string },
    );
    for (const report of reports) expect(report.error).toBeUndefined();
    const sorted = reports.sort((a, b) => a.acquiredAt - b.acquiredAt);
    // Stale at most staleMs after the last refresh before the kill, plus up to 1 s because proper-lockfile
    // stamps a process's first lock up to 1 s ahead while probing mtime precision, plus one backoff (500 ms)
    // and scheduling slack.
    expect(sorted[0]!.acquiredAt - killedAt).toBeLessThan(staleMs + 2500);
    for (let index = 1; index < sorted.length; index++) {
      expect(sorted[index]!.acquiredAt).toBeGreaterThanOrEqual(sorted[index - 1]!.releasedAt);
    }
  }, 60_000);

  it('a live holder doing long work keeps the lock fresh past staleMs', async () => {
    const staleMs = 2000;
    const target = join(directory, 'long', 'blob');
    const release = await acquireLock(target, { staleMs });
    try {
      // The waiter gives up after 2.5 x staleMs: it would have taken over a lock that was not refreshed.
      const waiter = worker('waiter-worker.ts', target, staleMs, staleMs * 2.5);
      const report = JSON.parse(await waiter.output) as { error?: string };
      expect(report.error).toBe(ErrorCode.LockTimeout);
      expect(release.signal.aborted).toBe(false);
    } finally {
      await release();
    }
  }, 60_000);
});
