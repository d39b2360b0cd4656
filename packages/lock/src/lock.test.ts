import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, type OciError } from '@ocipull/core';
import { afterAll, describe, expect, it } from 'vitest';
import {
  acquireLock,
  DEFAULT_LOCK_STALE_MS,
  DEFAULT_LOCK_TIMEOUT_MS,
  LockCompromisedError,
  LockTimeoutError,
  withLock,
} from './index.ts';

const directory = mkdtempSync(join(tmpdir(), 'ocipull-lock-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));
let counter = 0;
const fresh = (name = 'target') => join(directory, `${name}-${++counter}`);

async function rejected(promise: Promise<unknown>): Promise<OciError> {
  try {
    await promise;
  } catch (error) {
    return error as OciError;
  }
  throw new Error('expected a rejection');
}

describe('acquireLock', () => {
  it('locks a path that does not exist, creating parent directories, and releases it', async () => {
    const target = join(directory, 'deep', 'er', 'blob');
    const release = await acquireLock(target);
    expect(statSync(`${target}.lock`).isDirectory()).toBe(true);
    expect(existsSync(target)).toBe(false);
    expect(release.signal.aborted).toBe(false);
    await release();
    expect(existsSync(`${target}.lock`)).toBe(false);
    await release(); // idempotent
  });

  it('uses a given lockfilePath', async () => {
    const lockfilePath = join(directory, 'locks', 'custom', 'x.lock');
    const release = await acquireLock(fresh(), { lockfilePath });
    expect(existsSync(lockfilePath)).toBe(true);
    await release();
    expect(existsSync(lockfilePath)).toBe(false);
  });

  it('has named defaults: wait 10 minutes, stale after 10 seconds', () => {
    expect(DEFAULT_LOCK_TIMEOUT_MS).toBe(600_000);
    expect(DEFAULT_LOCK_STALE_MS).toBe(10_000);
  });

  it('times out with ERR_LOCK_TIMEOUT while another holder keeps it', async () => {
    const target = fresh();
    const release = await acquireLock(target);
    const started = Date.now();
    const error = await rejected(acquireLock(target, { timeoutMs: 300 }));
    expect(error).toBeInstanceOf(LockTimeoutError);
    expect(error).toMatchObject({ code: ErrorCode.LockTimeout, path: target, timeoutMs: 300 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(Date.now() - started).toBeLessThan(3000);
    expect((await rejected(acquireLock(target, { timeoutMs: 0 }))).code).toBe(ErrorCode.LockTimeout);
    await release();
  });

  it('waits for a release and then takes the lock', async () => {
    const target = fresh();
    const release = await acquireLock(target);
    const waiting = acquireLock(target, { timeoutMs: 5000 });
    await sleep(100);
    await release();
    const second = await waiting;
    expect(existsSync(`${target}.lock`)).toBe(true);
    await second();
  });

  it('rejects with ERR_ABORTED when the signal fires while waiting', async () => {
    const target = fresh();
    const release = await acquireLock(target);
    const controller = new AbortController();
    const waiting = rejected(acquireLock(target, { signal: controller.signal }));
    await sleep(50);
    controller.abort(new Error('user cancelled'));
    const error = await waiting;
    expect(error.code).toBe(ErrorCode.Aborted);
    expect((error.cause as Error).message).toBe('user cancelled');
    await release();
  });

  it('rejects an already aborted signal without touching the lock', async () => {
    const target = fresh();
    expect((await rejected(acquireLock(target, { signal: AbortSignal.abort() }))).code).toBe(
      ErrorCode.Aborted,
    );
    expect(existsSync(`${target}.lock`)).toBe(false);
  });

  it('takes over a lock whose holder stopped refreshing it for staleMs', async () => {
    const target = fresh();
    mkdirSync(`${target}.lock`);
    const past = new Date(Date.now() - 5000);
    utimesSync(`${target}.lock`, past, past);
    const started = Date.now();
    const release = await acquireLock(target, { staleMs: 2000, timeoutMs: 1000 });
    expect(Date.now() - started).toBeLessThan(1000);
    await release();
  });

  it('takes over a stale lock even with timeoutMs 0 (one attempt, after the takeover)', async () => {
    const target = fresh();
    mkdirSync(`${target}.lock`);
    const past = new Date(Date.now() - 5000);
    utimesSync(`${target}.lock`, past, past);
    const release = await acquireLock(target, { staleMs: 2000, timeoutMs: 0 });
    expect(statSync(`${target}.lock`).mtimeMs).toBeGreaterThan(past.getTime() + 4000);
    await release();
  });

  it('times out instead of spinning on a lock path that mkdir finds and stat does not', async () => {
    const target = fresh();
    symlinkSync(join(directory, 'nowhere'), `${target}.lock`);
    const started = Date.now();
    const error = await rejected(acquireLock(target, { staleMs: 2000, timeoutMs: 300 }));
    expect(error.code).toBe(ErrorCode.LockTimeout);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('keeps mutual exclusion when many waiters find a stale lock at once', async () => {
    const target = fresh();
    mkdirSync(`${target}.lock`);
    const past = new Date(Date.now() - 60_000);
    utimesSync(`${target}.lock`, past, past);
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 6 }, () =>
        withLock(
          target,
          async () => {
            inside += 1;
            maxInside = Math.max(maxInside, inside);
            await sleep(20);
            inside -= 1;
          },
          { staleMs: 2000, timeoutMs: 10_000 },
        ),
      ),
    );
    expect(maxInside).toBe(1);
    expect(existsSync(`${target}.lock`)).toBe(false);
    expect(existsSync(`${target}.lock.takeover`)).toBe(false);
  });

  it('leaves a stale lock alone while another process is taking it over (fresh guard)', async () => {
    const target = fresh();
    mkdirSync(`${target}.lock`);
    const past = new Date(Date.now() - 60_000);
    utimesSync(`${target}.lock`, past, past);
    mkdirSync(`${target}.lock.takeover`);
    expect((await rejected(acquireLock(target, { staleMs: 2000, timeoutMs: 300 }))).code).toBe(
      ErrorCode.LockTimeout,
    );
    expect(existsSync(`${target}.lock`)).toBe(true);
    // Once the guard is older than staleMs its owner is presumed dead too, and the takeover proceeds.
    utimesSync(`${target}.lock.takeover`, past, past);
    const release = await acquireLock(target, { staleMs: 2000, timeoutMs: 2000 });
    expect(existsSync(`${target}.lock.takeover`)).toBe(false);
    await release();
  });

  it('does not take over a lock that is fresher than staleMs', async () => {
    const target = fresh();
    mkdirSync(`${target}.lock`);
    const error = await rejected(acquireLock(target, { staleMs: 5000, timeoutMs: 200 }));
    expect(error.code).toBe(ErrorCode.LockTimeout);
    rmdirSync(`${target}.lock`);
  });

  it('reports a compromised lock through release.signal and onCompromised', async () => {
    const target = fresh();
    const seen: LockCompromisedError[] = [];
    const release = await acquireLock(target, { staleMs: 2000, onCompromised: (error) => seen.push(error) });
    rmdirSync(`${target}.lock`); // someone else removed our lock
    await new Promise((resolve) => release.signal.addEventListener('abort', resolve, { once: true }));
    expect(release.signal.reason).toBeInstanceOf(LockCompromisedError);
    expect(release.signal.reason).toMatchObject({ code: ErrorCode.LockCompromised, path: target });
    expect(seen).toEqual([release.signal.reason]);
    await release(); // nothing left to release: resolves quietly
  });

  it.each([
    [{ timeoutMs: -1 }],
    [{ staleMs: 1000 }],
    [{ staleMs: 4000, updateMs: 3000 }],
    [{ updateMs: 10 }],
    [{ lockfilePath: '' }],
  ])('rejects bad options %j with ERR_INVALID_ARGUMENT', async (options) => {
    expect((await rejected(acquireLock(fresh(), options))).code).toBe(ErrorCode.InvalidArgument);
  });

  it('fails with ERR_IO when the lock directory cannot be created', async () => {
    const file = fresh('file');
    writeFileSync(file, 'a file, not a directory');
    const error = await rejected(acquireLock(join(file, 'below')));
    expect(error.code).toBe(ErrorCode.Io);
  });
});

describe('withLock', () => {
  it('serialises concurrent critical sections in one process', async () => {
    const target = fresh();
    let inside = 0;
    let maxInside = 0;
    let count = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        withLock(target, async () => {
          inside += 1;
          maxInside = Math.max(maxInside, inside);
          const seen = count;
          await sleep(5);
          count = seen + 1;
          inside -= 1;
        }),
      ),
    );
    expect(count).toBe(10);
    expect(maxInside).toBe(1);
  });

  it('returns the result and releases the lock', async () => {
    const target = fresh();
    expect(await withLock(target, () => 42)).toBe(42);
    expect(existsSync(`${target}.lock`)).toBe(false);
  });

  it('releases the lock when fn throws, and rethrows', async () => {
    const target = fresh();
    await expect(
      withLock(target, () => {
        throw new Error('work failed');
      }),
    ).rejects.toThrow('work failed');
    expect(existsSync(`${target}.lock`)).toBe(false);
  });

  it('aborts fn through its signal and rejects with ERR_LOCK_COMPROMISED when the lock is lost', async () => {
    const target = fresh();
    let signalFired = false;
    const error = await rejected(
      withLock(
        target,
        async (signal) => {
          rmdirSync(`${target}.lock`);
          await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
          signalFired = true;
          return 'finished anyway';
        },
        { staleMs: 2000 },
      ),
    );
    expect(signalFired).toBe(true);
    expect(error.code).toBe(ErrorCode.LockCompromised);
  });

  it('passes the caller signal on to fn', async () => {
    const controller = new AbortController();
    const error = await rejected(
      withLock(
        fresh(),
        async (signal) => {
          controller.abort(new Error('stop'));
          expect(signal.aborted).toBe(true);
          throw signal.reason;
        },
        { signal: controller.signal },
      ),
    );
    expect(error.message).toBe('stop');
  });
});
