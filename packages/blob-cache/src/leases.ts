import { close as closeFd, open as openFd, write as writeFd } from 'node:fs';
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { uniqueSuffix } from './atomic-file.ts';
import { fsError, isErrno } from './fs-errors.ts';
import { lockTarget, type Release } from './lock-files.ts';

/** File name suffix of a lease. */
const LEASE_SUFFIX = '.lease';
/** Lock name of a lease (`<id>.holder.lock`); the lease file only appears once this lock is held. */
const HOLDER_SUFFIX = '.holder';

/** What a lease protects: a blob digest or an extracted layer's diff id. */
export type LeaseKey = `blob:${string}` | `layer:${string}`;

/** Lock timing of a lease; a dead holder's lease is reclaimable after `staleMs`. */
export interface LeaseLockOptions {
  staleMs?: number | undefined;
  updateMs?: number | undefined;
}

/**
 * The lease of one open cache: a file `locks/leases/<id>.lease` listing (one per line) every blob and
 * layer this process has started to write or read through the cache, held alive by a cross-process
 * lock on that file. `gc` treats the entries of live leases as roots, so a pull that has committed
 * blobs but not yet recorded its image in `index.json` never loses them; a lease whose lock went stale
 * (its process died) is deleted by the next `gc`.
 */
export class Lease {
  readonly id: string;
  readonly path: string;
  readonly #leasesDirectory: string;
  readonly options: LeaseLockOptions;
  readonly #keys = new Set<string>();
  #opening: Promise<{ release: () => Promise<void>; fd: number }> | undefined;
  #closed = false;

  constructor(leasesDirectory: string, options: LeaseLockOptions = {}) {
    this.id = uniqueSuffix();
    this.path = join(leasesDirectory, `${this.id}${LEASE_SUFFIX}`);
    this.#leasesDirectory = leasesDirectory;
    this.options = options;
  }

  /** Records `key` before the caller touches it; the file exists and is locked when this resolves. */
  async add(key: LeaseKey): Promise<void> {
    if (this.#closed) return;
    if (this.#keys.has(key)) return;
    this.#keys.add(key);
    const { fd } = await this.#open();
    try {
      // One O_APPEND descriptor for the lease's lifetime: a key is one write, not open+write+close
      // (a plain fd, not a FileHandle: a cache dropped without close() must not warn when collected).
      await writeLine(fd, `${key}\n`);
    } catch (error) {
      if (this.#closed) return;
      throw fsError(error, 'recording a cache lease');
    }
  }

  /** True once the lease file exists (something was leased). */
  get active(): boolean {
    return this.#opening !== undefined && !this.#closed;
  }

  #open(): Promise<{ release: () => Promise<void>; fd: number }> {
    this.#opening ??= (async () => {
      // Lock first, then create the lease file: gc only looks at lease files, so it can never
      // mistake a lease that is being set up for a dead one.
      const release = await lockTarget(this.#leasesDirectory, `${this.id}${HOLDER_SUFFIX}`, {
        timeoutMs: 0,
        ...this.options,
      });
      try {
        return { release, fd: await openAppend(this.path) };
      } catch (error) {
        await release().catch(() => {});
        throw fsError(error, 'creating a cache lease');
      }
    })();
    return this.#opening;
  }

  /** Ends the lease: what it protected becomes collectable unless `index.json` reaches it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#opening === undefined) return;
    const opened = await this.#opening.catch(() => undefined);
    await unlink(this.path).catch(() => {});
    if (opened) await closeDescriptor(opened.fd).catch(() => {});
    await opened?.release().catch(() => {});
  }
}

const openAppend = (path: string) => promisify(openFd)(path, 'a');
const writeLine = (fd: number, line: string) => promisify(writeFd)(fd, line);
const closeDescriptor = promisify(closeFd);

/** What `readLeases` found. */
export interface LeaseScan {
  /** Keys of live leases. */
  keys: Set<string>;
  /** Ids of live leases (layer temp directories carry their lease id). */
  liveIds: Set<string>;
  /** Lease files of dead processes that were removed. */
  removed: number;
}

/**
 * Reads every lease; a lease whose lock can be taken at once belongs to a dead process (its holder
 * stopped refreshing it) and is deleted, the others' keys are returned as live. A holder lock without
 * a lease file is what a process killed between taking the lock and creating the file leaves: taken
 * and released (removed) once it is stale; while its process lives it cannot be taken.
 */
export async function readLeases(
  leasesDirectory: string,
  options: LeaseLockOptions = {},
): Promise<LeaseScan> {
  const scan: LeaseScan = { keys: new Set(), liveIds: new Set(), removed: 0 };
  let names: string[];
  try {
    names = await readdir(leasesDirectory);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return scan;
    throw fsError(error, 'reading cache leases');
  }
  const holderLock = `${HOLDER_SUFFIX}.lock`;
  const present = new Set(names);
  for (const name of names) {
    if (name.endsWith(holderLock)) {
      const id = name.slice(0, -holderLock.length);
      if (present.has(`${id}${LEASE_SUFFIX}`)) continue;
      const release = await takeHolder(leasesDirectory, id, options);
      await release?.().catch(() => {});
      continue;
    }
    if (!name.endsWith(LEASE_SUFFIX)) continue;
    const path = join(leasesDirectory, name);
    const id = name.slice(0, -LEASE_SUFFIX.length);
    const release = await takeHolder(leasesDirectory, id, options);
    if (release === undefined) {
      // Held by a live process (or vanished while we looked): its keys are roots.
      scan.liveIds.add(id);
      const text = await readFile(path, 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (line !== '') scan.keys.add(line);
      continue;
    }
    await unlink(path).catch(() => {});
    await release().catch(() => {});
    scan.removed += 1;
  }
  return scan;
}

/**
 * Whether lease `id` belongs to a live process right now: its holder lock cannot be taken at once. A
 * lease takes that lock before it exists, so anything carrying its id was made under it.
 */
export async function leaseIsLive(
  leasesDirectory: string,
  id: string,
  options: LeaseLockOptions = {},
): Promise<boolean> {
  const release = await takeHolder(leasesDirectory, id, options);
  await release?.().catch(() => {});
  return release === undefined;
}

/** Lease `id`'s holder lock taken without waiting: its release, or undefined while a live process holds it. */
async function takeHolder(
  leasesDirectory: string,
  id: string,
  options: LeaseLockOptions,
): Promise<Release | undefined> {
  try {
    return await lockTarget(leasesDirectory, `${id}${HOLDER_SUFFIX}`, { timeoutMs: 0, ...options });
  } catch {
    return undefined;
  }
}
