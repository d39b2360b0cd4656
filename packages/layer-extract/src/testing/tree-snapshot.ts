import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { createHasher } from '@ocipull/digest';
import { layerTarBytes, type TreeEntry } from '@ocipull/test-harness';

/** What a test compares about one path of an extracted tree. */
export interface NodeSnapshot {
  type: 'file' | 'directory' | 'symlink' | 'fifo' | 'char-device' | 'block-device' | 'socket';
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: number;
  mtimeMs?: number;
  nlink?: number;
  ino?: number;
  xattrs?: Record<string, string>;
}

/** Walks `root` without following links: relative path → snapshot (the root itself is `.`). */
export function snapshotTree(root: string): Map<string, NodeSnapshot> {
  const result = new Map<string, NodeSnapshot>();
  const walk = (relative: string) => {
    const full = relative === '.' ? root : `${root}/${relative}`;
    const stat = fs.lstatSync(full);
    const node: NodeSnapshot = { type: typeOf(stat), mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid };
    node.mtimeMs = stat.mtimeMs;
    if (stat.isFile()) {
      node.size = stat.size;
      node.sha256 = sha256Hex(fs.readFileSync(full));
      node.nlink = stat.nlink;
      node.ino = stat.ino;
    } else if (stat.isSymbolicLink()) {
      node.target = fs.readlinkSync(full);
    } else if (stat.isCharacterDevice() || stat.isBlockDevice()) {
      node.rdev = stat.rdev;
    }
    if (stat.isFile() || stat.isDirectory()) {
      const names = listAttributesSync(full).sort();
      if (names.length > 0) {
        node.xattrs = {};
        for (const name of names)
          node.xattrs[name] = (getAttributeSync(full, name) ?? Buffer.alloc(0)).toString('base64');
      }
    }
    result.set(relative, node);
    if (stat.isDirectory()) {
      for (const name of fs.readdirSync(full).sort()) walk(relative === '.' ? name : `${relative}/${name}`);
    }
  };
  walk('.');
  return result;
}

/** A snapshot path without its inode number; hardlinked files name the first path of their group. */
export type ComparableNode = Omit<NodeSnapshot, 'ino'> & { linkGroup?: string };

/**
 * `snapshotTree` in a form two extractions of the same layers must share exactly: inode numbers become
 * hardlink groups, and mtimes at or after `since` (set by the extraction itself, e.g. by writing into a
 * directory, not taken from the tar) are left out.
 */
export function comparableTree(root: string, since: number): Record<string, ComparableNode> {
  const groups = new Map<number, string>();
  const result: Record<string, ComparableNode> = {};
  for (const [path, node] of snapshotTree(root)) {
    const { ino, ...rest } = node;
    const entry: ComparableNode = rest;
    if ((node.mtimeMs ?? 0) >= since) delete entry.mtimeMs;
    if (ino !== undefined && (node.nlink ?? 1) > 1) {
      if (!groups.has(ino)) groups.set(ino, path);
      entry.linkGroup = groups.get(ino) as string;
    }
    result[path] = entry;
  }
  return result;
}

function typeOf(stat: fs.Stats): NodeSnapshot['type'] {
  if (stat.isFile()) return 'file';
  if (stat.isDirectory()) return 'directory';
  if (stat.isSymbolicLink()) return 'symlink';
  if (stat.isFIFO()) return 'fifo';
  if (stat.isCharacterDevice()) return 'char-device';
  if (stat.isBlockDevice()) return 'block-device';
  return 'socket';
}

/** Every path below `dir` (recursive, no links followed): to prove nothing appeared outside a root. */
export function listAll(dir: string): string[] {
  const found: string[] = [];
  const walk = (relative: string) => {
    for (const entry of fs.readdirSync(relative === '' ? dir : `${dir}/${relative}`, {
      withFileTypes: true,
    })) {
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      found.push(path);
      // Dirent types come from lstat semantics: a symlink to a directory is not descended into.
      if (entry.isDirectory()) walk(path);
    }
  };
  walk('');
  return found.sort();
}

/** A layer stream from tree-spec entries: plain tar, or gzip. */
export async function layerStream(
  entries: TreeEntry[],
  compression: 'none' | 'gzip' = 'none',
): Promise<Readable> {
  const tar = await layerTarBytes(entries);
  return Readable.from([compression === 'gzip' ? gzipSync(tar) : tar]);
}

/** A Readable over one buffer. */
export function bufferStream(bytes: Uint8Array): Readable {
  return Readable.from([Buffer.from(bytes)]);
}

/** The hex SHA-256 of some bytes. */
export function sha256Hex(bytes: string | Uint8Array): string {
  return createHasher()
    .update(typeof bytes === 'string' ? Buffer.from(bytes) : bytes)
    .digest()
    .slice('sha256:'.length);
}
