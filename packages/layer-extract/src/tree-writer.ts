import * as fs from 'node:fs';
import { getAttributeSync, listAttributesSync, removeAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { ErrorCode, OciError } from '@ocipull/core';
import { resolveLinkInside, splitEntryPath } from './entry-path.ts';
import { LimitExceededError, UnsafePathError } from './errors.ts';
import type { EntryInfo, ExtractLimits, IdMapping, SkippedEntry, WhiteoutFormat } from './options.ts';
import { decodeRawName, encodeRawName, hasRawBytes, nameFromLatin1 } from './raw-name.ts';
import { paxXattrs, type TarHeader } from './tar-parse.ts';

/** A path for `node:fs`: a Buffer when a name in it is not UTF-8 (see raw-name.ts). */
type FsPath = string | Buffer;

/**
 * `layer`: one layer's own tree, whiteouts kept; `apply`: overlay semantics onto an existing rootfs;
 * `stage`: one layer's own tree for `TreeWriter.mergeStage`, whiteouts recorded (not written) and
 * directory metadata left for the merge.
 */
export type TreeMode = 'layer' | 'apply' | 'stage';

/** The settings a `TreeWriter` runs with, every default already resolved. */
export interface TreeSettings {
  rootless: boolean;
  uidMap: IdMapping[] | undefined;
  gidMap: IdMapping[] | undefined;
  filter: ((entry: EntryInfo) => boolean) | undefined;
  preserveMtimes: boolean;
  lenient: boolean;
  limits: ExtractLimits;
  xattrErrors: 'report' | 'fail';
  whiteoutFormat: WhiteoutFormat;
  /** Layer mode: the per-layer trees below this one, nearest first, for hardlinks into lower layers. */
  lowerLayers: readonly string[];
}

/** A device node that was recorded instead of created (rootless). */
export interface RecordedDevice {
  path: string;
  type: 'char-device' | 'block-device';
  major: number;
  minor: number;
  mode: number;
  uid: number;
  gid: number;
}

/** Receives a regular file's bytes, synchronously. */
export interface BodySink {
  write(chunk: Buffer): void;
  end(): void;
  /** Closes the file after a failure mid-body (the tree is discarded or reported as failed). */
  abort(): void;
}

interface DirMeta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number | undefined;
  /** Stage mode: the entries whose PAX xattrs the merge sets on the directory, in tar order. */
  xattrs?: Array<{ name: string; header: TarHeader }>;
}

/** A whiteout a stage-mode writer recorded, as apply mode would have acted on it at that point of the tar. */
interface StageOp {
  /**
   * `remove`: the rootfs's entry at `path` goes (a whiteout, or the layer replaced its own entry there,
   * which in place replaced the lower one with it); `opaque`: the lower content below `path` goes (an
   * opaque marker); `hide`: the same for a whiteout of a directory the layer also writes below, which
   * in place is skipped instead when the rootfs had nothing there (the layer made the directory: it is
   * its own).
   */
  kind: 'remove' | 'opaque' | 'hide';
  /** The path in the layer (and, when the merge goes ahead, in the rootfs). */
  path: string;
}

/**
 * Thrown by a stage-mode writer for an entry whose result depends on the lower layers in a way a merge
 * cannot reproduce (a hardlink to a file the layer does not have, …): apply the layer in place instead.
 */
export class InPlaceOnlyError extends Error {
  constructor(name: string, why: string) {
    super(`${name}: ${why}`);
    this.name = 'InPlaceOnlyError';
  }
}

/** The xattr overlayfs reads to mark a directory opaque (Documentation/filesystems/overlayfs.rst). */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** The xattr containers-storage and fuse-overlayfs read for rootless ownership: `uid:gid:0mode`. */
export const OVERRIDE_STAT_XATTR = 'user.containers.override_stat';

/** S_ISGID: a directory whose new entries take its group (and, for directories, the bit). */
const SETGID = 0o2000;
/** A directory's default ACL (acl(5)): what is made inside inherits it. */
const DEFAULT_ACL_XATTR = 'system.posix_acl_default';
const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
/** AUFS's own metadata names start so (`.wh..wh.plnk`, `.wh..wh.orph`, `.wh..wh.aufs`). */
const AUFS_META_PREFIX = '.wh..wh.';
const OPEN_NEW_FILE =
  fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
/** Linux follows at most 40 symlinks in one lookup (path_resolution(7)); securejoin uses the same bound. */
const MAX_SYMLINK_HOPS = 40;
/** mtimes beyond ±10^15 s (31.7 million years) are not applied (near 2^63 s, time_t overflows and utimes fails). */
const MAX_MTIME_SECONDS = 1e15;

/**
 * Writes tar entries into a directory tree, synchronously. Every entry is resolved inside `root`
 * component by component with lstat (never following a symlink out of the root), files are written
 * with O_NOFOLLOW|O_EXCL (an existing entry is removed and the create retried), and directory metadata
 * is deferred until `finish` (deepest first) so read-only directories and mtimes survive their children
 * being written.
 *
 * Synchronous fs calls are deliberate: a layer is thousands of small files, and one promise per
 * syscall costs more than the syscall (measured: see README). Big files still stream chunk by chunk.
 */
export class TreeWriter {
  readonly root: string;
  readonly mode: TreeMode;
  readonly settings: TreeSettings;
  readonly skipped: SkippedEntry[] = [];
  readonly warnings: string[] = [];
  readonly devices: RecordedDevice[] = [];
  entries = 0;

  /** Lexical directory path → the real path it resolved to; cleared whenever a directory or symlink is removed. */
  #dirs = new Map<string, string>();
  /** Real paths this layer wrote (or created as implicit parents). Overlay rules only hide lower entries. */
  #added = new Set<string>();
  /** Every directory above an added path: kept by opaque directories, so whiteouts check it in O(1). */
  #addedParents = new Set<string>();
  /** Opaque directories, emptied of lower content at `finish` so tar order does not matter. */
  #opaques = new Set<string>();
  /** Layer mode: where this layer made a whiteout device (a directory it makes there later is opaque). */
  #whiteouts = new Set<string>();
  #deferred = new Map<string, DirMeta>();
  /** Root-level AUFS metadata names seen (`.wh..wh.plnk`, …), removed at `finish`. */
  #aufsMeta = new Set<string>();
  #isRoot: boolean;
  /** Set once a name that is not UTF-8 was seen: only then do paths need the Buffer check. */
  #rawNames = false;
  /** Counter for `#temporaryPath`. */
  #temporaries = 0;
  /** Stage mode: whiteouts to act on at the merge, in tar order. */
  #stageOps: StageOp[] = [];
  /**
   * Stage mode: every directory made as a parent the layer does not name, even if removed later. Apply
   * mode would have looked at the rootfs there (following a lower symlink, refusing a file).
   */
  #implicitDirs = new Set<string>();
  /**
   * Apply mode: the times of each directory that was there before this layer, as they were before the
   * layer first changed its content (a child made or removed there). Set back at the end unless the
   * layer declares the directory: adding a file to /etc in layer 2 leaves /etc's mtime as layer 1 set
   * it, as umoci leaves it (overlayfs would show the copy-up's time; images describe no such time).
   */
  #keptTimes = new Map<string, { atime: number; mtime: number }>();

  constructor(root: string, mode: TreeMode, settings: TreeSettings) {
    this.root = root;
    this.mode = mode;
    this.settings = settings;
    this.#isRoot = !settings.rootless;
  }

  /**
   * Handles one entry's header. Returns a sink for a regular file's body, or undefined when the body
   * is to be drained (everything else, and skipped entries). Throws on fatal problems.
   */
  begin(header: TarHeader): BodySink | undefined {
    this.entries++;
    if (this.entries > this.settings.limits.maxEntries) {
      throw new LimitExceededError('maxEntries', this.settings.limits.maxEntries, `entry ${this.entries}`);
    }
    let name = this.#name(header.name);
    const pax = header.pax ?? undefined;
    let size = header.size ?? 0;
    let sparse: boolean | Array<[number, number]> = false;
    // GNU sparse 1.0 in PAX (GNU tar --sparse --format=posix): the real name and size live in the records.
    if (pax?.['GNU.sparse.major'] === '1' && pax['GNU.sparse.name'] !== undefined) {
      name = this.#name(pax['GNU.sparse.name']);
      size = Number(pax['GNU.sparse.realsize'] ?? size);
      sparse = true;
    } else if (header.gnuSparse !== undefined) {
      // Old GNU sparse (type S, GNU tar --sparse --format=gnu): the map came with the header.
      size = header.gnuSparse.realSize;
      sparse = header.gnuSparse.segments;
    }
    if (sparse !== false) {
      // The apparent size costs no bytes in the stream: bound it like real content.
      if (!(Number.isSafeInteger(size) && size >= 0) || size > this.settings.limits.maxBytes) {
        throw new LimitExceededError(
          'maxBytes',
          this.settings.limits.maxBytes,
          `sparse file ${name} claims ${String(size)} bytes`,
        );
      }
    }
    this.#checkLength(name, 'name');
    const parts = splitEntryPath(name);
    if (parts === undefined) {
      return this.#refuse(name, name.startsWith('/') ? 'absolute name' : '".." climbs above the root');
    }

    const type = header.type;
    const rawMode = (header.mode ?? 0) & 0o7777;
    const uid = pax?.uid !== undefined ? Number(pax.uid) : (header.uid ?? 0);
    const gid = pax?.gid !== undefined ? Number(pax.gid) : (header.gid ?? 0);
    const mtime = this.#mtime(name, header);

    if (parts.length === 0) {
      // The root itself ("./"): only its metadata can change.
      if (type !== 'directory') return this.#refuse(name, 'a non-directory entry names the root');
      this.#deferred.set('', { mode: rawMode, uid, gid, mtime });
      return undefined;
    }
    const base = parts[parts.length - 1] as string;

    let kind: EntryInfo['type'];
    switch (type) {
      case 'file':
      case 'contiguous-file':
        kind = base === OPAQUE_MARKER ? 'opaque' : base.startsWith(WHITEOUT_PREFIX) ? 'whiteout' : 'file';
        // Old (pre-POSIX) tars mark directories with a trailing slash on a regular-file entry; Go's
        // archive/tar and GNU tar read them as directories (tar-stream means to but keeps 'file').
        if (kind === 'file' && name.endsWith('/')) kind = 'directory';
        break;
      case 'directory':
        kind = 'directory';
        break;
      case 'symlink':
        kind = 'symlink';
        break;
      case 'link':
        kind = 'hardlink';
        break;
      case 'fifo':
        kind = 'fifo';
        break;
      case 'character-device':
        kind = 'char-device';
        break;
      case 'block-device':
        kind = 'block-device';
        break;
      default:
        if (header.gnuSparse !== undefined) {
          kind = 'file';
          break;
        }
        // tar-stream reports unknown type flags (volume labels, multi-volume continuations) as null;
        // the body is still skipped by its size, so the stream stays in sync.
        this.skipped.push({ path: name, reason: `unsupported tar entry type ${String(type)}` });
        this.warnings.push(`${name}: unsupported tar entry type ${String(type)}, skipped`);
        return undefined;
    }
    if (kind !== 'file' && base.startsWith(WHITEOUT_PREFIX)) {
      // A whiteout name on a directory, link or device: containerd and umoci treat any `.wh.` entry as
      // a whiteout, whatever its type.
      kind = base === OPAQUE_MARKER ? 'opaque' : 'whiteout';
    }
    const top = parts[0] as string;
    if (top.startsWith(AUFS_META_PREFIX) && top !== OPAQUE_MARKER) {
      // AUFS bookkeeping at the layer's root (.wh..wh.plnk, .wh..wh.orph, .wh..wh.aufs) is dropped, as
      // Docker drops it. Files and directories inside are written for now and removed when the layer
      // ends: .wh..wh.plnk holds the targets of hardlinks elsewhere in the layer, which then keep them
      // (Docker copies each such target instead; the hardlinks here stay one file, as on AUFS).
      if (!this.#aufsMeta.has(top)) {
        this.#aufsMeta.add(top);
        this.skipped.push({ path: top, reason: 'AUFS metadata, removed at the end of the layer' });
      }
      if (parts.length === 1 ? kind !== 'directory' : kind !== 'file' && kind !== 'directory')
        return undefined;
    }
    const linkname =
      header.linkname === undefined || header.linkname === null ? undefined : this.#name(header.linkname);
    if (linkname !== undefined) this.#checkLength(linkname, 'link target');

    if (this.settings.filter !== undefined) {
      const info: EntryInfo = { path: parts.join('/'), type: kind, size, mode: rawMode, uid, gid };
      if (linkname) info.linkname = linkname;
      if (!this.settings.filter(info)) {
        this.skipped.push({ path: name, reason: 'filtered out' });
        return undefined;
      }
    }

    try {
      switch (kind) {
        case 'whiteout':
        case 'opaque':
          return this.#whiteout(name, parts, kind, header);
        case 'file':
          return this.#file(
            name,
            parts,
            header,
            rawMode,
            uid,
            gid,
            mtime,
            sparse === false ? undefined : { size, segments: sparse === true ? undefined : sparse },
          );
        case 'directory':
          this.#directory(name, parts, header, rawMode, uid, gid, mtime);
          return undefined;
        case 'symlink':
          this.#symlink(name, parts, linkname ?? '', uid, gid, mtime);
          return undefined;
        case 'hardlink':
          this.#hardlink(name, parts, linkname ?? '');
          return undefined;
        case 'fifo':
        case 'char-device':
        case 'block-device':
          this.#special(name, parts, kind, header, rawMode, uid, gid, mtime);
          return undefined;
      }
    } catch (error) {
      if (error instanceof UnsafePathError && this.settings.lenient) {
        this.skipped.push({ path: name, reason: error.reason, code: error.code });
        return undefined;
      }
      throw error;
    }
  }

  /** Applies deferred work: opaque directories (apply mode), then directory metadata deepest first. */
  finish(): void {
    for (const top of this.#aufsMeta) fs.rmSync(this.#full(top), { recursive: true, force: true });
    // The merge acts on the opaque directories and sets the directory metadata, in the rootfs.
    if (this.mode === 'stage') return;
    if (this.mode === 'apply') this.#emptyOpaques(this.#opaques, this);
    this.#applyDirMeta(this.#deferred);
    this.#restoreTimes(this.#deferred);
    this.#deferred.clear();
  }

  /**
   * Moves a layer that a `stage` writer extracted into its own directory onto this `apply` writer's
   * root, with the result applying the same layer here entry by entry would give: the recorded
   * whiteouts remove lower entries, each staged entry is renamed into place (a whole directory at once
   * where the root has nothing there; into it where the root has a directory), opaque directories are
   * emptied of what the layer did not add, and the layer's directory metadata is set, deepest first.
   *
   * Returns false, having changed nothing, when that equivalence does not hold without looking at the
   * entries' order against the root — a staged directory where the root has a symlink or file (apply
   * mode follows a lower symlink, or refuses), a whiteout below a root symlink, nested opaque
   * directories: then apply the layer itself. The staging directory is left empty on success.
   */
  mergeStage(stage: TreeWriter): boolean {
    if (this.mode !== 'apply' || stage.mode !== 'stage') {
      throw new Error('mergeStage merges a stage writer into an apply writer');
    }
    if (stage.#rawNames) this.#rawNames = true;
    for (const path of stage.#implicitDirs) {
      let stat: fs.Stats | undefined;
      try {
        stat = fs.lstatSync(this.#full(path), { throwIfNoEntry: false });
      } catch (error) {
        // ENOTDIR: a file above it, which in place refused the entry.
        if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') return false;
        throw error;
      }
      if (stat !== undefined && !stat.isDirectory()) return false;
    }
    const removed = new Set<string>();
    const opaques: string[] = [];
    for (const op of stage.#stageOps) {
      // Every component must be a directory of the root or missing (apply mode would follow a symlink).
      const parts = op.path === '' ? [] : op.path.split('/');
      const checked = op.kind === 'remove' ? parts.length - 1 : parts.length;
      let prefix = '';
      let present = true;
      for (let index = 0; index < checked; index++) {
        prefix = join(prefix, parts[index] as string);
        const stat = fs.lstatSync(this.#full(prefix), { throwIfNoEntry: false });
        if (stat === undefined) {
          present = false;
          break;
        }
        if (!stat.isDirectory()) return false;
      }
      if (op.kind === 'remove') removed.add(op.path);
      else if (op.kind === 'opaque' || present) opaques.push(op.path);
    }
    for (const outer of opaques) {
      for (const inner of opaques) {
        if (inner !== outer && (outer === '' || inner.startsWith(`${outer}/`))) return false;
      }
    }
    /** Entries to rename, in walk order, with what the root has there now (removed first). */
    const moves: Array<{ path: string; replaced: fs.Stats | undefined }> = [];
    const walk = (dir: string, stat: fs.Stats): boolean => {
      // What is made in a setgid directory or one with a default ACL takes its group or ACL: made
      // in the staging tree, it did not.
      if ((stat.mode & SETGID) !== 0 || this.#hasDefaultAcl(this.#full(dir))) return false;
      for (const entry of fs.readdirSync(stage.#full(dir), { withFileTypes: true, encoding: 'buffer' })) {
        const path = join(dir, this.#decoded(entry.name));
        const here = removed.has(path)
          ? undefined
          : fs.lstatSync(this.#full(path), { throwIfNoEntry: false });
        if (here !== undefined && entry.isDirectory()) {
          if (!here.isDirectory()) return false;
          if (!walk(path, here)) return false;
          continue;
        }
        moves.push({ path, replaced: here });
      }
      return true;
    };
    if (!walk('', fs.lstatSync(this.root))) return false;

    for (const path of removed) {
      const stat = fs.lstatSync(this.#full(path), { throwIfNoEntry: false });
      if (stat !== undefined) this.#remove(path, stat);
    }
    for (const { path, replaced } of moves) {
      if (replaced !== undefined) this.#remove(path, replaced);
      this.#keepTimes(parentOf(path));
      fs.renameSync(stage.#full(path), this.#full(path));
    }
    this.#emptyOpaques(opaques, stage);
    this.#applyDirMeta(stage.#deferred, true);
    this.#restoreTimes(stage.#deferred);
    this.#dirs.clear();
    return true;
  }

  /**
   * Sets deferred directory metadata (and, merging a stage, the directories' xattrs: those of the last
   * entry that declared each, in place of what the rootfs had) under this root, deepest first.
   */
  #applyDirMeta(deferred: Map<string, DirMeta>, merging = false): void {
    const dirs = [...deferred.keys()].map((path) => ({ path, depth: depth(path) }));
    dirs.sort((a, b) => b.depth - a.depth);
    for (const { path } of dirs) {
      const meta = deferred.get(path) as DirMeta;
      const full = this.#full(path);
      const stat = fs.lstatSync(full, { throwIfNoEntry: false });
      if (stat === undefined || !stat.isDirectory()) continue;
      if (merging) this.#clearXattrs(full, path);
      for (const { name, header } of meta.xattrs ?? []) this.#xattrs(full, name, header, 'directory');
      this.#applyMeta(full, path, 'directory', meta.mode, meta.uid, meta.gid, meta.mtime, stat);
    }
  }

  // ---- entry kinds -------------------------------------------------------------------------------

  #file(
    name: string,
    parts: string[],
    header: TarHeader,
    mode: number,
    uid: number,
    gid: number,
    mtime: number | undefined,
    sparse: { size: number; segments: Array<[number, number]> | undefined } | undefined,
  ): BodySink {
    let fd = -1;
    const path = this.#place(name, parts, 'file', (target) => {
      fd = fs.openSync(target, OPEN_NEW_FILE, 0o600);
    });
    const full = this.#full(path);
    let closed = false;
    const abort = () => {
      if (closed) return;
      closed = true;
      fs.closeSync(fd);
    };
    const finish = () => {
      closed = true;
      try {
        if (this.#isRoot) {
          const [hostUid, hostGid] = this.#mapIds(name, uid, gid);
          fs.fchownSync(fd, hostUid, hostGid);
          // chown clears setuid/setgid, so the mode comes after it.
          fs.fchmodSync(fd, mode);
        } else {
          fs.fchmodSync(fd, (mode & 0o777) | 0o600);
        }
        if (mtime !== undefined) fs.futimesSync(fd, timeArg(mtime), timeArg(mtime));
      } finally {
        fs.closeSync(fd);
      }
      this.#xattrs(full, name, header, 'file');
      if (!this.#isRoot) this.#overrideStat(full, name, uid, gid, mode);
    };
    if (sparse !== undefined) return sparseSink(fd, sparse.size, sparse.segments, name, finish, abort);
    return {
      write: (chunk) => writeAll(fd, chunk, -1),
      end: finish,
      abort,
    };
  }

  #directory(
    name: string,
    parts: string[],
    header: TarHeader,
    mode: number,
    uid: number,
    gid: number,
    mtime: number | undefined,
  ): void {
    // Made with the final permission bits when they give the owner rwx and nobody else write access
    // (0755, almost always): the deferred metadata then finds nothing to change but the mtime. Other
    // modes (group/world-writable, setgid, sticky, 0555) start without those bits, with owner rwx,
    // and are set last.
    let made = false;
    // Layer mode: it replaces the layer's own whiteout of the lower directory there, which must stay
    // hidden below it (a layer-mode path is its entry's path: no link is followed).
    const overWhiteout = this.#whiteouts.has(parts.join('/'));
    const path = this.#place(name, parts, 'directory', (target) => {
      fs.mkdirSync(target, (mode & 0o755) | 0o700);
      made = true;
    });
    // It is a real directory now: its children resolve their parent without looking again.
    this.#dirs.set(parts.join('/'), path);
    if (overWhiteout) this.#makeOpaque(name, path);
    if (this.mode === 'stage') {
      // Set by the merge, on the rootfs's directory (which may be a lower layer's): the last entry for
      // the directory describes it, xattrs included, as in apply mode.
      const meta: DirMeta = { mode, uid, gid, mtime };
      if (header.pax !== undefined && header.pax !== null) meta.xattrs = [{ name, header }];
      this.#deferred.set(path, meta);
      return;
    }
    this.#deferred.set(path, { mode, uid, gid, mtime });
    // In a rootfs, a directory entry describes the directory whole: what a lower layer (or an earlier
    // entry) gave it in xattrs goes, as umoci clears them. A per-layer tree keeps them (its opaque mark).
    if (this.mode === 'apply' && !made) this.#clearXattrs(this.#full(path), name);
    this.#xattrs(this.#full(path), name, header, 'directory');
  }

  #symlink(
    name: string,
    parts: string[],
    target: string,
    uid: number,
    gid: number,
    mtime: number | undefined,
  ): void {
    if (target === '') throw new UnsafePathError(name, 'symlink without a target');
    // The target is stored verbatim (absolute targets stay absolute); it is never followed while extracting.
    const rawTarget = this.#rawNames ? fsName(target) : target;
    const path = this.#place(name, parts, 'symlink', (full) => fs.symlinkSync(rawTarget, full));
    const full = this.#full(path);
    if (this.#isRoot) {
      const [hostUid, hostGid] = this.#mapIds(name, uid, gid);
      fs.lchownSync(full, hostUid, hostGid);
    }
    if (mtime !== undefined) fs.lutimesSync(full, timeArg(mtime), timeArg(mtime));
  }

  #hardlink(name: string, parts: string[], target: string): void {
    const targetParts = splitEntryPath(target);
    if (targetParts === undefined || targetParts.length === 0) {
      throw new UnsafePathError(name, `hardlink target ${JSON.stringify(target)} is outside the root`);
    }
    const targetDir = this.#resolveDir(name, targetParts.slice(0, -1), false);
    const targetPath = join(targetDir, targetParts[targetParts.length - 1] as string);
    const targetStat =
      targetDir === undefined ? undefined : fs.lstatSync(this.#full(targetPath), { throwIfNoEntry: false });
    if ((targetDir === undefined || targetStat === undefined) && this.#copyUp(name, targetParts)) {
      this.#hardlink(name, parts, target);
      return;
    }
    if (targetDir === undefined || targetStat === undefined) {
      // The target may be a lower layer's file: only applying the layer in place can tell.
      if (this.mode === 'stage')
        throw new InPlaceOnlyError(name, 'a hardlink to a file the layer does not have');
      throw new UnsafePathError(name, `hardlink target ${JSON.stringify(target)} does not exist (yet)`, {
        missingLinkTarget: true,
      });
    }
    if (targetStat.isDirectory())
      throw new UnsafePathError(name, `hardlink target ${JSON.stringify(target)} is a directory`);
    const dir = this.#resolveDir(name, parts.slice(0, -1), true) as string;
    const path = join(dir, parts[parts.length - 1] as string);
    const existing = fs.lstatSync(this.#full(path), { throwIfNoEntry: false });
    if (existing !== undefined && existing.ino === targetStat.ino && existing.dev === targetStat.dev) {
      this.#markAdded(path);
      return;
    }
    this.#place(name, parts, 'hardlink');
    // link(2) does not follow a symlink target: the new name shares the symlink's own inode.
    fs.linkSync(this.#full(targetPath), this.#full(path));
  }

  /**
   * A hardlink whose target lives in a lower layer (legal: Docker and containerd apply a layer on top
   * of its lowers). A per-layer tree cannot link across trees, so the target is copied up into this
   * layer first, as overlayfs itself does on a link to a lower file; stacked, the trees give the same
   * view. Looks in `settings.lowerLayers` (nearest first) without following any symlink; stops at a
   * whiteout or an opaque directory. Returns false when no lower layer has a linkable target.
   */
  #copyUp(name: string, targetParts: string[]): boolean {
    if (this.mode !== 'layer' || this.settings.lowerLayers.length === 0) return false;
    for (const lower of this.settings.lowerLayers) {
      const found = findInLower(lower, targetParts, this.settings.whiteoutFormat);
      if (found === 'hidden') return false;
      if (found === undefined) continue;
      if (!found.stat.isFile() && !found.stat.isSymbolicLink()) return false;
      // Parents this layer does not have yet take the lower directories' owner and mode, so the
      // stacked view of the directory does not change.
      let relative = '';
      for (let index = 0; index < targetParts.length - 1; index++) {
        relative = relative === '' ? (targetParts[index] as string) : `${relative}/${targetParts[index]}`;
        const full = this.#full(relative);
        const here = fs.lstatSync(full, { throwIfNoEntry: false });
        if (here !== undefined) {
          if (!here.isDirectory()) return false;
          continue;
        }
        const lowerPath = joinPath(lower, relative);
        const lowerDir = fs.lstatSync(lowerPath);
        fs.mkdirSync(full, lowerDir.mode & 0o7777);
        this.#copyMeta(lowerPath, full, lowerDir, name);
        this.#markAdded(relative);
      }
      const path = targetParts.join('/');
      const full = this.#full(path);
      if (found.stat.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(found.path, 'buffer'), full);
      else fs.copyFileSync(found.path, full, fs.constants.COPYFILE_FICLONE);
      this.#copyMeta(found.path, full, found.stat, name);
      this.#markAdded(path);
      this.#dirs.clear();
      return true;
    }
    return false;
  }

  /** Copies owner, mode, mtime and xattrs of a lower entry onto its copy-up. */
  #copyMeta(from: FsPath, to: FsPath, stat: fs.Stats, name: string): void {
    const link = stat.isSymbolicLink();
    if (this.#isRoot) fs.lchownSync(to, stat.uid, stat.gid);
    if (!link) {
      fs.chmodSync(to, stat.mode & 0o7777);
      const xattrs = this.#withXattrPath(from, (path) =>
        listAttributesSync(path).map((key) => [key, getAttributeSync(path, key)] as const),
      );
      for (const [key, value] of xattrs) {
        if (value !== null) this.#setXattr(to, name, key, value, false);
      }
    }
    fs.lutimesSync(to, stat.atime, stat.mtime);
  }

  #special(
    name: string,
    parts: string[],
    kind: 'fifo' | 'char-device' | 'block-device',
    header: TarHeader,
    mode: number,
    uid: number,
    gid: number,
    mtime: number | undefined,
  ): void {
    const record = (type: RecordedDevice['type'], why: string) => {
      const device: RecordedDevice = {
        path: parts.join('/'),
        type,
        major: header.devmajor ?? 0,
        minor: header.devminor ?? 0,
        mode,
        uid,
        gid,
      };
      this.devices.push(device);
      this.warnings.push(`${name}: ${type} ${device.major}:${device.minor} recorded, not created (${why})`);
    };
    if (kind !== 'fifo' && !this.#isRoot) {
      record(kind, 'rootless');
      return;
    }
    const path = this.#place(name, parts, kind);
    const full = this.#full(path);
    if (kind === 'fifo') this.#makeSpecial(full, (target) => run('mkfifo', ['-m', '600', '--', target]));
    else {
      const failure = this.#makeSpecial(full, (target) =>
        tryRun('mknod', [
          '-m',
          '600',
          '--',
          target,
          kind === 'char-device' ? 'c' : 'b',
          String(header.devmajor ?? 0),
          String(header.devminor ?? 0),
        ]),
      );
      if (failure !== undefined) {
        // Root without CAP_MKNOD (many container runtimes drop it) or in a user namespace: the
        // device is recorded as in rootless mode instead of failing the whole layer, as containerd
        // and Docker skip device nodes there.
        if (!/not permitted/i.test(failure.message)) throw commandError('mknod', failure);
        record(kind, 'mknod is not permitted here');
        return;
      }
    }
    this.#applyMeta(full, path, kind, mode, uid, gid, mtime);
    this.#xattrs(full, name, header, kind);
  }

  #whiteout(
    name: string,
    parts: string[],
    kind: 'whiteout' | 'opaque',
    header: TarHeader,
  ): BodySink | undefined {
    const base = parts[parts.length - 1] as string;
    if (kind === 'whiteout' && base.startsWith(AUFS_META_PREFIX)) {
      // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless outside AUFS, Docker skips them too.
      this.skipped.push({ path: name, reason: 'AUFS metadata entry' });
      return undefined;
    }
    if (kind === 'whiteout') {
      const hidden = base.slice(WHITEOUT_PREFIX.length);
      // `.wh.`, `.wh..` and `.wh...` would name the directory itself or its parent (the root's parent at the top).
      if (hidden === '' || hidden === '.' || hidden === '..') {
        throw new UnsafePathError(
          name,
          `whiteout of ${JSON.stringify(hidden)} names no entry of its directory`,
        );
      }
    }
    if (this.mode === 'layer') {
      // 'aufs' keeps the marker files as they are: fuse-overlayfs and containers-storage read them.
      if (this.settings.whiteoutFormat === 'aufs') {
        const uid = header.uid ?? 0;
        const gid = header.gid ?? 0;
        return this.#file(
          name,
          parts,
          header,
          (header.mode ?? 0o644) & 0o7777,
          uid,
          gid,
          this.#mtime(name, header),
          undefined,
        );
      }
      const dirPath = this.#resolveDir(name, parts.slice(0, -1), true) as string;
      if (kind === 'opaque') {
        this.#makeOpaque(name, dirPath);
        return undefined;
      }
      const hidden = base.slice(WHITEOUT_PREFIX.length);
      const path = join(dirPath, hidden);
      if (this.#added.has(path)) {
        // The layer's own entry wins, whatever the order; a directory of its own still hides what the
        // lower layers have in it: in overlay terms, it is opaque.
        if (this.#isDirectory(path)) this.#makeOpaque(name, path);
        return undefined;
      }
      this.#place(name, [...parts.slice(0, -1), hidden], 'whiteout');
      // overlayfs whiteout: a 0:0 character device (Documentation/filesystems/overlayfs.rst, "whiteouts").
      this.#makeSpecial(this.#full(path), (target) =>
        run('mknod', ['-m', '000', '--', target, 'c', '0', '0']),
      );
      this.#whiteouts.add(path);
      return undefined;
    }

    if (this.mode === 'stage') {
      // Recorded as apply mode would act at this point of the tar (the same layer's entries so far
      // win); the merge checks the path against the rootfs and acts on it there.
      const parentParts = parts.slice(0, -1);
      this.#resolveDir(name, parentParts, kind === 'opaque');
      const dirPath = parentParts.join('/');
      if (kind === 'opaque') {
        this.#stageOps.push({ kind: 'opaque', path: dirPath });
        return undefined;
      }
      const path = join(dirPath, base.slice(WHITEOUT_PREFIX.length));
      const ownDirectory = this.#added.has(path) && this.#isDirectory(path);
      if (this.#added.has(path) && !ownDirectory) return undefined;
      if (ownDirectory || this.#addedParents.has(path)) {
        this.#stageOps.push({ kind: 'hide', path });
        return undefined;
      }
      // Directories this layer made there for opaque markers: in place, they are the layer's own (the
      // whiteout passes them by) only where the rootfs had nothing.
      if (fs.lstatSync(this.#full(path), { throwIfNoEntry: false }) !== undefined) {
        throw new InPlaceOnlyError(name, 'a whiteout of directories the layer made for opaque markers');
      }
      this.#stageOps.push({ kind: 'remove', path });
      return undefined;
    }

    // apply mode: whiteouts act on the tree and never appear in it.
    const dirPath = this.#resolveDir(name, parts.slice(0, -1), kind === 'opaque');
    if (dirPath === undefined) return undefined;
    if (kind === 'opaque') {
      this.#opaques.add(dirPath);
      return undefined;
    }
    const path = join(dirPath, base.slice(WHITEOUT_PREFIX.length));
    // The same layer's own entry wins, whatever the order: a file or link of its own replaced the lower
    // one already, but a directory of its own merged with it, so the lower content still goes.
    const ownDirectory = this.#added.has(path) && this.#isDirectory(path);
    if (this.#added.has(path) && !ownDirectory) return undefined;
    if (ownDirectory || this.#addedParents.has(path)) {
      // This layer also writes there or below: hide only the lower content, like an opaque dir.
      this.#opaques.add(path);
      return undefined;
    }
    const stat = fs.lstatSync(this.#full(path), { throwIfNoEntry: false });
    if (stat !== undefined) this.#remove(path, stat);
    return undefined;
  }

  // ---- path resolution ---------------------------------------------------------------------------

  /**
   * Resolves the directory `parts` inside the root. Layer mode refuses a symlinked component; apply
   * mode follows a lower layer's symlink *inside* the root (as umoci's securejoin and Docker's
   * chrooted apply do: absolute targets start at the root), because lower layers legitimately make
   * `lib` a link to `usr/lib`. A link whose `..` climbs above the root, or one the same layer made,
   * is refused. Missing components are created when `create` is set; a missing component otherwise
   * returns undefined.
   */
  #resolveDir(name: string, parts: string[], create: boolean): string | undefined {
    if (parts.length === 0) return '';
    const key = parts.join('/');
    const cached = this.#dirs.get(key);
    if (cached !== undefined) return cached;
    // Continue from the deepest ancestor already resolved: only the components below it need a look.
    let real: string[] = [];
    let resolvedParts = 0;
    for (let slash = key.lastIndexOf('/'); slash > 0; slash = key.lastIndexOf('/', slash - 1)) {
      const ancestor = this.#dirs.get(key.slice(0, slash));
      if (ancestor !== undefined) {
        real = ancestor === '' ? [] : ancestor.split('/');
        resolvedParts = depth(key.slice(0, slash));
        break;
      }
    }
    const pending = parts.slice(resolvedParts).reverse();
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.pop() as string;
      const candidate = real.length === 0 ? part : `${real.join('/')}/${part}`;
      const full = this.#full(candidate);
      const stat = fs.lstatSync(full, { throwIfNoEntry: false });
      if (stat === undefined) {
        if (!create) return undefined;
        this.#keepTimes(real.join('/'));
        fs.mkdirSync(full, 0o755);
        // Stage mode: a parent the layer does not name is not the layer's own (the rootfs may
        // have it); its children still mark it in #addedParents.
        if (this.mode !== 'stage') this.#markAdded(candidate);
        else this.#implicitDirs.add(candidate);
        real.push(part);
        continue;
      }
      if (stat.isDirectory()) {
        real.push(part);
        continue;
      }
      if (this.#whiteouts.delete(candidate)) {
        // Layer mode: an entry below the layer's own whiteout of a lower directory. The directory is
        // the layer's now, and opaque: the lower one stays hidden.
        fs.unlinkSync(full);
        fs.mkdirSync(full, 0o755);
        this.#makeOpaque(name, candidate);
        this.#markAdded(candidate);
        real.push(part);
        continue;
      }
      if (stat.isSymbolicLink()) {
        if (this.mode === 'layer') throw new UnsafePathError(name, `parent ${candidate} is a symlink`);
        // A layer never needs to write through a link it made itself (image builders record real
        // paths); only links from lower layers are followed. A stage tree holds the layer's own only.
        if (this.mode === 'stage' || this.#added.has(candidate)) {
          throw new UnsafePathError(name, `parent ${candidate} is a symlink of the same layer`);
        }
        if (++hops > MAX_SYMLINK_HOPS)
          throw new UnsafePathError(name, `too many symlinks resolving ${candidate}`);
        const resolved = resolveLinkInside(real, this.#decoded(fs.readlinkSync(full, 'buffer')));
        if (resolved === undefined) {
          throw new UnsafePathError(name, `parent ${candidate} is a symlink that leaves the root`);
        }
        for (let index = resolved.length - 1; index >= 0; index--) pending.push(resolved[index] as string);
        real = [];
        continue;
      }
      throw new UnsafePathError(name, `parent ${candidate} is not a directory`);
    }
    const result = real.join('/');
    this.#dirs.set(key, result);
    return result;
  }

  /**
   * Resolves an entry's path, clears the way for it and creates it with `create` when given: an
   * existing directory stays when a directory replaces it (overlay merges them), anything else is
   * removed without following links.
   */
  #place(name: string, parts: string[], kind: string, create?: (full: FsPath) => void): string {
    const dir = this.#resolveDir(name, parts.slice(0, -1), true) as string;
    const path = join(dir, parts[parts.length - 1] as string);
    const full = this.#full(path);
    this.#keepTimes(dir);
    this.#markAdded(path);
    this.#whiteouts.delete(path);
    if (create !== undefined) {
      // Optimistic, as GNU tar is: almost every entry is new, so create it (O_EXCL semantics: open,
      // mkdir and symlink never follow or replace what is there) and look only when the name is taken.
      try {
        create(full);
        return path;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
    }
    const stat = fs.lstatSync(full, { throwIfNoEntry: false });
    if (stat !== undefined) {
      if (kind === 'directory' && stat.isDirectory()) return path;
      this.#remove(path, stat);
    }
    create?.(full);
    return path;
  }

  /** Whether `path` is a directory in this writer's tree now (never following a link). */
  #isDirectory(path: string): boolean {
    return fs.lstatSync(this.#full(path), { throwIfNoEntry: false })?.isDirectory() === true;
  }

  /** Layer mode: marks the directory `path` opaque for overlayfs (its lower content stays hidden). */
  #makeOpaque(name: string, path: string): void {
    this.#setXattr(this.#full(path), name, OVERLAY_OPAQUE_XATTR, Buffer.from('y'), true);
  }

  #markAdded(path: string): void {
    this.#added.add(path);
    for (let slash = path.lastIndexOf('/'); slash > 0; slash = path.lastIndexOf('/', slash - 1)) {
      const parent = path.slice(0, slash);
      if (this.#addedParents.has(parent)) break;
      this.#addedParents.add(parent);
    }
  }

  #remove(path: string, stat: fs.Stats): void {
    // Stage mode: in place, what the rootfs had there went at this point too (the lower entry with
    // the layer's own, whatever replaces it later); the merge removes it first.
    if (this.mode === 'stage') this.#stageOps.push({ kind: 'remove', path });
    this.#keepTimes(parentOf(path));
    const full = this.#full(path);
    if (stat.isDirectory()) {
      // rmSync never follows symlinks inside the tree it removes.
      fs.rmSync(full, { recursive: true, force: true });
      // What was noted for the directories below goes with them: the name may next be a symlink,
      // and nothing may be set through it.
      for (const key of this.#deferred.keys())
        if (key === path || key.startsWith(`${path}/`)) this.#deferred.delete(key);
      for (const key of this.#keptTimes.keys())
        if (key === path || key.startsWith(`${path}/`)) this.#keptTimes.delete(key);
      this.#dirs.clear();
    } else {
      fs.unlinkSync(full);
      if (stat.isSymbolicLink()) this.#dirs.clear();
    }
  }

  /** Apply mode: notes `dir`'s times before the layer first changes its content (see `#keptTimes`). */
  #keepTimes(dir: string): void {
    if (this.mode !== 'apply' || this.#keptTimes.has(dir) || this.#added.has(dir)) return;
    const stat = fs.lstatSync(this.#full(dir), { throwIfNoEntry: false });
    if (stat?.isDirectory()) this.#keptTimes.set(dir, { atime: stat.atimeMs, mtime: stat.mtimeMs });
  }

  /** Sets the kept times back on the directories the layer changed but does not declare. */
  #restoreTimes(declared: Map<string, DirMeta>): void {
    for (const [dir, { atime, mtime }] of this.#keptTimes) {
      if (declared.has(dir)) continue;
      const full = this.#full(dir);
      // Gone, or below what became a file, since (ENOTDIR): nothing to set.
      const stat = statUnlessGone(full);
      if (stat?.isDirectory()) fs.utimesSync(full, timeArg(atime / 1000), timeArg(mtime / 1000));
    }
    this.#keptTimes.clear();
  }

  /**
   * Removes a directory's xattrs before an entry declares it anew (the entry's own are set next). The
   * host's SELinux label stays; without root only `user.*` can go (the rest could not be set either).
   */
  #clearXattrs(full: FsPath, name: string): void {
    let keys: string[];
    try {
      keys = this.#withXattrPath(full, (path) => listAttributesSync(path));
    } catch {
      return;
    }
    for (const key of keys) {
      if (key === 'security.selinux' || (!this.#isRoot && !key.startsWith('user.'))) continue;
      try {
        this.#withXattrPath(full, (path) => removeAttributeSync(path, key));
      } catch (error) {
        this.warnings.push(
          `${name}: cannot remove xattr ${key}: ${error instanceof Error ? error.message : String(error)}`,
        );
      }
    }
  }

  /** Empties each opaque directory of everything `layer` (this writer or a merged stage) did not add. */
  #emptyOpaques(dirs: Iterable<string>, layer: TreeWriter): void {
    const keep = (path: string) => layer.#added.has(path) || layer.#addedParents.has(path);
    for (const dir of dirs) this.#emptyExcept(dir, keep);
  }

  /** Removes everything below `dir` except the paths in `keep` (this layer's own entries and their parents). */
  #emptyExcept(dir: string, keep: (path: string) => boolean): void {
    const full = this.#full(dir);
    // Gone, or below what became a file since (a later entry of the layer replaced it): nothing to empty.
    const stat = statUnlessGone(full);
    if (stat === undefined || !stat.isDirectory()) return;
    for (const entry of fs.readdirSync(full, { withFileTypes: true, encoding: 'buffer' })) {
      const path = join(dir, this.#decoded(entry.name));
      if (!keep(path)) {
        this.#remove(path, fs.lstatSync(this.#full(path)));
      } else if (entry.isDirectory()) {
        this.#emptyExcept(path, keep);
      }
    }
  }

  // ---- metadata ----------------------------------------------------------------------------------

  #applyMeta(
    full: FsPath,
    path: string,
    kind: string,
    mode: number,
    uid: number,
    gid: number,
    mtime: number | undefined,
    /** What `full` is now (lstat'd by the caller): owner and mode are set only where they differ. */
    current?: fs.Stats,
  ): void {
    if (this.#isRoot) {
      const [hostUid, hostGid] = this.#mapIds(path, uid, gid);
      if (current === undefined || current.uid !== hostUid || current.gid !== hostGid) {
        fs.lchownSync(full, hostUid, hostGid);
        // chown clears setuid/setgid, so the mode comes after it.
        fs.chmodSync(full, mode);
      } else if ((current.mode & 0o7777) !== mode) fs.chmodSync(full, mode);
    } else {
      const usable = (mode & 0o777) | (kind === 'directory' ? 0o700 : 0o600);
      if (current === undefined || (current.mode & 0o7777) !== usable) fs.chmodSync(full, usable);
      if (kind === 'directory') this.#overrideStat(full, path, uid, gid, mode);
    }
    if (mtime !== undefined) fs.utimesSync(full, timeArg(mtime), timeArg(mtime));
  }

  /**
   * Records the wanted owner and mode in `user.containers.override_stat` as `uid:gid:0mode`, the
   * format containers-storage writes and fuse-overlayfs reads. The kernel allows user.* xattrs on
   * regular files and directories only, so links and FIFOs keep just their real mode.
   */
  #overrideStat(full: FsPath, name: string, uid: number, gid: number, mode: number): void {
    const [mappedUid, mappedGid] = this.#mapIds(name, uid, gid);
    this.#setXattr(
      full,
      name,
      OVERRIDE_STAT_XATTR,
      Buffer.from(`${mappedUid}:${mappedGid}:0${mode.toString(8)}`),
      false,
    );
  }

  #xattrs(full: FsPath, name: string, header: TarHeader, kind: string): void {
    if (header.pax === undefined || header.pax === null) return;
    const xattrs = paxXattrs(header);
    for (const [key, value] of xattrs) {
      if (!this.#isRoot && (key.startsWith('trusted.') || key.startsWith('security.'))) {
        this.warnings.push(`${name}: xattr ${key} needs root, not applied`);
        continue;
      }
      if (kind !== 'file' && kind !== 'directory' && key.startsWith('user.')) {
        this.warnings.push(`${name}: xattr ${key} not allowed on a ${kind}, not applied`);
        continue;
      }
      this.#setXattr(full, name, key, value, false);
    }
  }

  #setXattr(full: FsPath, name: string, key: string, value: Buffer, essential: boolean): void {
    try {
      this.#withXattrPath(full, (path) => setAttributeSync(path, key, value));
    } catch (error) {
      const message = `${name}: cannot set xattr ${key}: ${error instanceof Error ? error.message : String(error)}`;
      if (essential || this.settings.xattrErrors === 'fail')
        throw new OciError(ErrorCode.Io, message, { cause: error });
      this.warnings.push(message);
    }
  }

  #hasDefaultAcl(full: FsPath): boolean {
    try {
      return withDirXattrPath(full, (path) => getAttributeSync(path, DEFAULT_ACL_XATTR)) !== null;
    } catch {
      return false;
    }
  }

  #mapIds(name: string, uid: number, gid: number): [number, number] {
    return [mapId(name, 'uid', uid, this.settings.uidMap), mapId(name, 'gid', gid, this.settings.gidMap)];
  }

  #mtime(name: string, header: TarHeader): number | undefined {
    if (!this.settings.preserveMtimes) return undefined;
    let seconds: number | undefined;
    const paxTime = header.pax?.mtime;
    if (paxTime !== undefined) {
      const pax = Number(paxTime);
      if (Number.isFinite(pax)) seconds = pax;
    }
    if (seconds === undefined && header.mtime !== undefined) seconds = header.mtime.getTime() / 1000;
    if (seconds === undefined || Number.isNaN(seconds)) return undefined;
    if (Math.abs(seconds) > MAX_MTIME_SECONDS) {
      // GNU tar also extracts the file and only warns ("time stamp out of range").
      this.warnings.push(`${name}: mtime ${paxTime ?? seconds} is out of range, not applied`);
      return undefined;
    }
    return seconds;
  }

  #checkLength(value: string, what: string): void {
    const length = Buffer.byteLength(this.#rawNames ? fsName(value) : value);
    if (length > this.settings.limits.maxPathLength) {
      throw new LimitExceededError(
        'maxPathLength',
        this.settings.limits.maxPathLength,
        `${what} of ${length} bytes`,
      );
    }
  }

  #refuse(name: string, reason: string): undefined {
    if (this.settings.lenient) {
      this.skipped.push({ path: name, reason, code: ErrorCode.UnsafePath });
      return undefined;
    }
    throw new UnsafePathError(name, reason);
  }

  #full(path: string): FsPath {
    if (path === '') return this.root;
    return this.#rawNames ? joinPath(this.root, path) : `${this.root}/${path}`;
  }

  /** A name from a tar header (latin1, one char per byte) in the form of raw-name.ts. */
  #name(latin1: string): string {
    const name = nameFromLatin1(latin1);
    if (!this.#rawNames && name !== latin1 && hasRawBytes(name)) this.#rawNames = true;
    return name;
  }

  /** A name read back from the filesystem (readdir, readlink) as bytes. */
  #decoded(bytes: Buffer): string {
    const name = decodeRawName(bytes);
    if (!this.#rawNames && hasRawBytes(name)) this.#rawNames = true;
    return name;
  }

  /**
   * Runs an xattr call (string paths only, last component never followed) on an entry whose path may
   * not be UTF-8: a directory through `/proc/self/fd/N/.`, anything else through a temporary ASCII
   * hardlink in this tree's root (same inode, same xattrs), removed right after.
   */
  #withXattrPath<T>(path: FsPath, call: (path: string) => T): T {
    if (typeof path === 'string') return call(path);
    if (fs.lstatSync(path).isDirectory()) return withDirXattrPath(path, call);
    const alias = this.#temporaryPath('xattr');
    fs.linkSync(path, alias);
    try {
      return call(alias);
    } finally {
      fs.unlinkSync(alias);
    }
  }

  /** A new ASCII name in this tree's root for a short-lived stand-in (see the two callers). */
  #temporaryPath(kind: 'xattr' | 'special'): string {
    this.#keepTimes('');
    return `${this.root}/.ocipull-${kind}-${process.pid}-${++this.#temporaries}`;
  }

  /**
   * mkfifo(1) and mknod(1) take their path as an argument, and arguments are strings: a path that is
   * not UTF-8 is made under a temporary ASCII name in the root and renamed into place.
   */
  #makeSpecial<T>(full: FsPath, make: (path: string) => T): T {
    if (typeof full === 'string') return make(full);
    const temporary = this.#temporaryPath('special');
    const result = make(temporary);
    if (fs.existsSync(temporary)) fs.renameSync(temporary, full);
    return result;
  }
}

/** A name as `node:fs` takes it: the string itself, or its bytes when they are not UTF-8. */
function fsName(name: string): FsPath {
  return hasRawBytes(name) ? encodeRawName(name) : name;
}

/** `base/name` as a path for `node:fs`. */
function joinPath(base: FsPath, name: string): FsPath {
  const tail = fsName(name);
  if (typeof base === 'string' && typeof tail === 'string') return `${base}/${tail}`;
  return Buffer.concat([
    typeof base === 'string' ? Buffer.from(base) : base,
    Buffer.from('/'),
    typeof tail === 'string' ? Buffer.from(tail) : tail,
  ]);
}

/**
 * Runs an xattr call on a directory. @napi-rs/xattr takes string paths and never follows the last
 * component (l*xattr), so a Buffer path is opened and reached as `/proc/self/fd/N/.`.
 */
function withDirXattrPath<T>(path: FsPath, call: (path: string) => T): T {
  if (typeof path === 'string') return call(path);
  const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  try {
    return call(`/proc/self/fd/${fd}/.`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A time for `fs.*utimes`: Node replaces a negative number by the current time, but takes a numeric
 * string as it is — so files from before 1970 keep their mtime, as GNU tar and umoci keep it.
 */
function timeArg(seconds: number): number | string {
  return seconds < 0 ? String(seconds) : seconds;
}

function join(dir: string | undefined, name: string): string {
  return dir === undefined || dir === '' ? name : `${dir}/${name}`;
}

/** lstat, undefined when nothing is there (ENOENT, or ENOTDIR: a file where a parent was). */
function statUnlessGone(path: FsPath): fs.Stats | undefined {
  try {
    return fs.lstatSync(path, { throwIfNoEntry: false });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw error;
  }
}

/** The directory holding `path` ('' for the root's children). */
function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

function depth(path: string): number {
  if (path === '') return 0;
  let count = 1;
  for (let index = path.indexOf('/'); index >= 0; index = path.indexOf('/', index + 1)) count++;
  return count;
}

function mapId(name: string, what: string, id: number, map: IdMapping[] | undefined): number {
  if (map === undefined || map.length === 0) return id;
  for (const range of map) {
    if (id >= range.containerId && id < range.containerId + range.size)
      return range.hostId + (id - range.containerId);
  }
  throw new OciError(
    ErrorCode.InvalidLayer,
    `${name}: ${what} ${id} is outside every range of the ${what} map`,
  );
}

function writeAll(fd: number, chunk: Buffer, position: number): void {
  let offset = 0;
  while (offset < chunk.length) {
    const written = fs.writeSync(
      fd,
      chunk,
      offset,
      chunk.length - offset,
      position < 0 ? null : position + offset,
    );
    offset += written;
  }
}

/** Why a command failed: its stderr (or the spawn error's message), and the spawn error if any. */
interface CommandFailure {
  message: string;
  cause: Error | undefined;
}

function run(command: string, args: string[]): void {
  const failure = tryRun(command, args);
  if (failure !== undefined) throw commandError(command, failure);
}

function commandError(command: string, failure: CommandFailure): OciError {
  return new OciError(ErrorCode.Io, `${command} failed: ${failure.message}`, { cause: failure.cause });
}

/** Runs a command; undefined when it succeeded, else what went wrong. */
function tryRun(command: string, args: string[]): CommandFailure | undefined {
  // The C locale keeps the messages English: the caller matches "Operation not permitted".
  const result = childProcess().spawnSync(command, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  if (result.error === undefined && result.status === 0) return undefined;
  return {
    message: result.error?.message ?? (result.stderr.toString().trim() || `exit status ${result.status}`),
    cause: result.error,
  };
}

/**
 * Writes a sparse file's body: the data segments back to back, each landing at its offset; holes stay
 * holes. Old GNU sparse gives the map (`known`); GNU sparse 1.0 puts it at the start of the body, as
 * a decimal list (count, then offset/size pairs, one per line, padded to 512 bytes).
 */
function sparseSink(
  fd: number,
  realSize: number,
  known: Array<[number, number]> | undefined,
  name: string,
  finish: () => void,
  abort: () => void,
): BodySink {
  let header: Buffer | undefined = known === undefined ? Buffer.alloc(0) : undefined;
  let segments: Array<[number, number]> = [];
  const check = (at: number, length: number) => {
    if (
      !(
        Number.isSafeInteger(at) &&
        Number.isSafeInteger(length) &&
        at >= 0 &&
        length >= 0 &&
        at + length <= realSize
      )
    ) {
      throw new OciError(
        ErrorCode.InvalidLayer,
        `${name}: sparse map segment ${at}+${length} lies outside the file`,
      );
    }
  };
  if (known !== undefined) {
    for (const [at, length] of known) check(at, length);
    segments = known;
  }
  let segment = 0;
  let within = 0;
  const parseMap = (): number | undefined => {
    const numbers: number[] = [];
    let start = 0;
    for (let index = 0; index < (header as Buffer).length; index++) {
      if ((header as Buffer)[index] !== 0x0a) continue;
      numbers.push(Number((header as Buffer).toString('latin1', start, index)));
      start = index + 1;
      const count = numbers[0] as number;
      if (numbers.length === 1 + 2 * count) {
        for (let pair = 0; pair < count; pair++) {
          const at = numbers[1 + 2 * pair] as number;
          const length = numbers[2 + 2 * pair] as number;
          check(at, length);
          segments.push([at, length]);
        }
        return Math.ceil(start / 512) * 512;
      }
    }
    return undefined;
  };
  const writeData = (data: Buffer) => {
    let offset = 0;
    while (offset < data.length && segment < segments.length) {
      const [at, length] = segments[segment] as [number, number];
      const take = Math.min(length - within, data.length - offset);
      writeAll(fd, data.subarray(offset, offset + take), at + within);
      within += take;
      offset += take;
      if (within === length) {
        segment++;
        within = 0;
      }
    }
  };
  return {
    write(chunk) {
      if (header === undefined) return writeData(chunk);
      header = Buffer.concat([header, chunk]);
      const dataStart = parseMap();
      if (dataStart === undefined) {
        segments = [];
        if (header.length > 1024 * 1024)
          throw new OciError(ErrorCode.InvalidLayer, `${name}: sparse map too large`);
        return;
      }
      if (header.length < dataStart) {
        segments = [];
        return;
      }
      const rest = header.subarray(dataStart);
      header = undefined;
      writeData(rest);
    },
    end() {
      fs.ftruncateSync(fd, realSize);
      finish();
    },
    abort,
  };
}

/**
 * Looks up `parts` in a lower per-layer tree without following symlinks: the entry, `undefined` when
 * the layer does not have it (look further down), or `'hidden'` when the layer whites it out or an
 * opaque directory on the way hides everything below.
 */
function findInLower(
  lower: string,
  parts: string[],
  format: WhiteoutFormat,
): { path: FsPath; stat: fs.Stats } | 'hidden' | undefined {
  let current: FsPath = lower;
  for (let index = 0; index < parts.length; index++) {
    const part = parts[index] as string;
    if (format === 'aufs') {
      if (fs.existsSync(joinPath(current, `${WHITEOUT_PREFIX}${part}`))) return 'hidden';
    }
    const path = joinPath(current, part);
    const stat = fs.lstatSync(path, { throwIfNoEntry: false });
    const last = index === parts.length - 1;
    if (stat === undefined) return isOpaque(current, format) ? 'hidden' : undefined;
    if (stat.isCharacterDevice() && stat.rdev === 0) return 'hidden';
    if (last) return { path, stat };
    if (!stat.isDirectory()) return stat.isSymbolicLink() ? undefined : 'hidden';
    current = path;
  }
  return undefined;
}

function isOpaque(dir: FsPath, format: WhiteoutFormat): boolean {
  if (format === 'aufs') return fs.existsSync(joinPath(dir, `${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}.opq`));
  try {
    return withDirXattrPath(dir, (path) => getAttributeSync(path, OVERLAY_OPAQUE_XATTR))?.toString() === 'y';
  } catch {
    return false;
  }
}

/**
 * `node:child_process`, loaded at its first use: only a credential helper (or mknod/mkfifo) needs it,
 * and importing it with everything else cost every run ~5 ms of start-up.
 */
function childProcess(): typeof import('node:child_process') {
  return process.getBuiltinModule('node:child_process') as typeof import('node:child_process');
}
