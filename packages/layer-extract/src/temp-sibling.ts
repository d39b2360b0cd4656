import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The working directories an extraction makes next to its destination: `.<name>.tmp-…` (the tree
 * being built, renamed into place at the end) and `.<name>.stage-…` (an upper layer extracted ahead).
 */
export type TempSiblingKind = 'tmp' | 'stage';

const KINDS: readonly TempSiblingKind[] = ['tmp', 'stage'];

/** `<pid>.<scope>.` then the six characters `mkdtemp` adds. */
const OWNED_SUFFIX = /^([1-9]\d*)\.([0-9a-z]+)\.[A-Za-z0-9]{6}$/;

/**
 * A new hidden directory next to `destination`. On Linux its name carries the creating process: its
 * pid and the kernel boot and pid namespace that pid belongs to, so a later extraction can tell that
 * a sibling left by a killed process is abandoned (see `removeAbandonedSiblings`).
 */
export function tempSibling(destination: string, kind: TempSiblingKind): string {
  const scope = pidScope();
  const owner = scope === undefined ? '' : `${process.pid}.${scope}.`;
  return fs.mkdtempSync(
    path.join(path.dirname(destination), `.${path.basename(destination)}.${kind}-${owner}`),
  );
}

/**
 * Removes the working directories that extractions into `destination` left behind when they were
 * killed (SIGKILL, power loss of the process, OOM): those whose creator's pid is gone from this same
 * kernel boot and pid namespace. A sibling of a live process, of another pid namespace or machine
 * (a shared volume), of this process, or without an owner in its name is kept: its owner may still be
 * writing it. Best effort: a sibling that cannot be removed stays. Returns the paths removed.
 */
export function removeAbandonedSiblings(destination: string): string[] {
  const scope = pidScope();
  if (scope === undefined) return [];
  const parent = path.dirname(destination);
  const base = path.basename(destination);
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const owner = ownerOf(name, base);
    if (owner === undefined || owner.scope !== scope || isAlive(owner.pid)) continue;
    const sibling = path.join(parent, name);
    try {
      // Never follows a symlink: a link by that name is removed itself, its target untouched.
      fs.rmSync(sibling, { recursive: true, force: true });
      removed.push(sibling);
    } catch {
      // Another extraction may be removing it at the same time, or it is not ours to remove.
    }
  }
  return removed;
}

/** The pid and scope in a working directory's name, when `name` is one of `base`'s. */
function ownerOf(name: string, base: string): { pid: number; scope: string } | undefined {
  for (const kind of KINDS) {
    const prefix = `.${base}.${kind}-`;
    if (!name.startsWith(prefix)) continue;
    const match = OWNED_SUFFIX.exec(name.slice(prefix.length));
    if (match === null) return undefined;
    const pid = Number(match[1]);
    return Number.isSafeInteger(pid) ? { pid, scope: match[2]! } : undefined;
  }
  return undefined;
}

/** Whether a process with this pid exists (EPERM: it does, owned by another user). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code !== 'ESRCH';
  }
}

let scopeMemo: { value: string | undefined } | undefined;

/**
 * What makes a pid meaningful: this kernel's boot id and the pid namespace's inode (a container has
 * its own). Two processes agree on it exactly when one can see the other's pid. Undefined where the
 * system does not say (not Linux, no /proc): no owner goes into names and nothing is ever removed.
 */
function pidScope(): string | undefined {
  if (scopeMemo === undefined) {
    let value: string | undefined;
    try {
      const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').replaceAll('-', '').trim();
      const namespace = /^pid:\[(\d+)\]$/.exec(fs.readlinkSync('/proc/self/ns/pid'));
      if (/^[0-9a-f]{32}$/.test(boot) && namespace !== null) {
        value = `${boot.slice(0, 12)}${Number(namespace[1]).toString(36)}`;
      }
    } catch {
      value = undefined;
    }
    scopeMemo = { value };
  }
  return scopeMemo.value;
}
