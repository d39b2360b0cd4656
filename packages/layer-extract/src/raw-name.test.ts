import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { hardlink, layerTarBytes, writeHeaderChecksum } from '@ocipull/test-harness';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer, flattenLayers, OVERRIDE_STAT_XATTR } from './index.ts';
import { decodeRawName, displayName, encodeRawName, hasRawBytes, nameFromLatin1 } from './raw-name.ts';
import { umociUnpackTar } from './testing/oci-layout.ts';
import { bufferStream, sha256Hex } from './testing/tree-snapshot.ts';

const bytes = (...parts: Array<string | number[]>) =>
  Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : Buffer.from(part))));

describe('raw names (surrogateescape)', () => {
  it('decodes valid UTF-8 as usual and escapes only the invalid bytes', () => {
    expect(decodeRawName(Buffer.from('café/😀/x'))).toBe('café/😀/x');
    const latin1 = bytes('caf', [0xe9]);
    const decoded = decodeRawName(latin1);
    expect(decoded).toBe('caf\udce9');
    expect(hasRawBytes(decoded)).toBe(true);
    expect(displayName(decoded)).toBe('caf\\xe9');
    // Overlong '/', an encoded UTF-16 surrogate and a code point past U+10FFFF are not UTF-8 either.
    for (const invalid of [
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xe2, 0x82],
    ]) {
      const name = decodeRawName(Buffer.from(invalid));
      expect(name).toBe(String.fromCharCode(...invalid.map((byte) => 0xdc00 + byte)));
      expect(encodeRawName(name)).toEqual(Buffer.from(invalid));
    }
  });

  it('round-trips any bytes, and never marks valid UTF-8 (astral characters included) as raw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (input) => {
        const name = decodeRawName(input);
        expect(encodeRawName(name)).toEqual(Buffer.from(input));
        expect(nameFromLatin1(Buffer.from(input).toString('latin1'))).toBe(name);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 32 }), (text) => {
        const name = decodeRawName(Buffer.from(text));
        expect(name).toBe(text);
        expect(hasRawBytes(name)).toBe(false);
        expect(encodeRawName(name)).toEqual(Buffer.from(text));
      }),
      { numRuns: 1000 },
    );
    // U+1F080's low surrogate is U+DC80: half of a pair, not an escape.
    expect(hasRawBytes('\u{1F080}')).toBe(false);
    expect(encodeRawName('\u{1F080}\udc80')).toEqual(bytes('\u{1F080}', [0x80]));
  });
});

// ---- extraction: names are written byte for byte, as GNU tar and Go's archive/tar do ----------------

let work: string;
let counter = 0;
const fresh = () => join(work, `t${++counter}`);

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (chown, trusted.* xattrs)');
  work = fs.mkdtempSync(join(tmpdir(), 'raw-name-test-'));
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** `dir/name` as a Buffer path. */
const at = (dir: string, ...names: Buffer[]) =>
  Buffer.concat([Buffer.from(dir), ...names.flatMap((name) => [Buffer.from('/'), name])]);

const CAFE_LATIN1 = bytes('caf', [0xe9]);
const CAFE_UTF8 = Buffer.from('café');
const DIR = bytes('d', [0xff]);
const INNER = bytes('f', [0x80], 'x');
const LINK = bytes('l', [0xfe]);
const HARD = bytes('h', [0xfd]);
const PIPE = bytes('p', [0xfc]);
const LONG = bytes('x'.repeat(120), [0xfb]);

/** A source tree with names that are not UTF-8 (and one that is, to show they stay apart). */
function makeSource(): string {
  const source = fresh();
  fs.mkdirSync(source);
  fs.writeFileSync(at(source, CAFE_LATIN1), 'latin1');
  fs.writeFileSync(at(source, CAFE_UTF8), 'utf8');
  fs.mkdirSync(at(source, DIR));
  fs.writeFileSync(at(source, DIR, INNER), 'inner');
  fs.writeFileSync(at(source, DIR, LONG), 'long');
  fs.symlinkSync(CAFE_LATIN1, at(source, LINK));
  fs.linkSync(at(source, CAFE_LATIN1), at(source, HARD));
  execFileSync('mkfifo', [join(source, 'fifo-tmp')]);
  fs.renameSync(join(source, 'fifo-tmp'), at(source, PIPE));
  return source;
}

/** GNU tar of `source` (`gnu`: raw bytes in the ustar fields and GNU long names; `posix`: PAX records). */
function gnuTar(source: string, format: 'gnu' | 'posix'): Buffer {
  return execFileSync('tar', [`--format=${format}`, '--sort=name', '-C', source, '-cf', '-', '.'], {
    env: { ...process.env, LC_ALL: 'C' },
    maxBuffer: 64 * 1024 * 1024,
  });
}

interface RawNode {
  type: string;
  mode: number;
  content?: string;
  target?: string;
  ino?: number;
}

/** Every entry below `root` keyed by its name bytes (hex), hardlinks grouped by a shared label. */
function rawSnapshot(root: string): Map<string, RawNode> {
  const out = new Map<string, RawNode>();
  const inodes = new Map<number, number>();
  const walk = (dir: Buffer, prefix: Buffer) => {
    for (const name of (fs.readdirSync(dir, { encoding: 'buffer' }) as Buffer[]).sort(Buffer.compare)) {
      const full = Buffer.concat([dir, Buffer.from('/'), name]);
      const relative = prefix.length === 0 ? name : Buffer.concat([prefix, Buffer.from('/'), name]);
      const stat = fs.lstatSync(full);
      const node: RawNode = { type: 'other', mode: stat.mode & 0o7777 };
      if (stat.isFile()) {
        node.type = 'file';
        node.content = sha256Hex(fs.readFileSync(full));
        if (stat.nlink > 1) {
          if (!inodes.has(stat.ino)) inodes.set(stat.ino, inodes.size + 1);
          node.ino = inodes.get(stat.ino) as number;
        }
      } else if (stat.isDirectory()) node.type = 'dir';
      else if (stat.isSymbolicLink()) {
        node.type = 'symlink';
        node.target = fs.readlinkSync(full, 'buffer').toString('hex');
      } else if (stat.isFIFO()) node.type = 'fifo';
      else if (stat.isCharacterDevice()) node.type = `char ${stat.rdev}`;
      out.set(relative.toString('hex'), node);
      if (stat.isDirectory()) walk(full, relative);
    }
  };
  walk(Buffer.from(root), Buffer.alloc(0));
  return out;
}

function gnuUntar(tar: Buffer): string {
  const destination = fresh();
  fs.mkdirSync(destination);
  execFileSync('tar', ['-C', destination, '-xf', '-'], { input: tar, env: { ...process.env, LC_ALL: 'C' } });
  return destination;
}

describe('names that are not UTF-8', () => {
  for (const format of ['gnu', 'posix'] as const) {
    it(`flattens them byte for byte like GNU tar (${format} format)`, async () => {
      const tar = gnuTar(makeSource(), format);
      const destination = fresh();
      await flattenLayers([{ open: () => bufferStream(tar) }], { destination });
      const ours = rawSnapshot(destination);
      expect(ours).toEqual(rawSnapshot(gnuUntar(tar)));
      // The two cafés stay two files; the link, the hardlink and the FIFO carry their bytes.
      expect(fs.readFileSync(at(destination, CAFE_LATIN1), 'utf8')).toBe('latin1');
      expect(fs.readFileSync(at(destination, CAFE_UTF8), 'utf8')).toBe('utf8');
      expect(fs.readlinkSync(at(destination, LINK), 'buffer')).toEqual(CAFE_LATIN1);
      expect(fs.statSync(at(destination, HARD)).ino).toBe(fs.statSync(at(destination, CAFE_LATIN1)).ino);
      expect(fs.lstatSync(at(destination, PIPE)).isFIFO()).toBe(true);
      expect(fs.readFileSync(at(destination, DIR, LONG), 'utf8')).toBe('long');
      // Nothing was left under a temporary name.
      expect(fs.readdirSync(destination).filter((name) => name.startsWith('.ocipull'))).toEqual([]);
    });
  }

  it('flattens them as umoci unpack does (the oracle)', async () => {
    const tar = gnuTar(makeSource(), 'posix');
    const rootfs = umociUnpackTar(tar, fresh(), fresh());
    const destination = fresh();
    await flattenLayers([{ open: () => bufferStream(tar) }], { destination });
    expect(rawSnapshot(destination)).toEqual(rawSnapshot(rootfs));
  });

  it('applies whiteouts and opaque markers that name them, and keeps them in a per-layer tree', async () => {
    const lower = gnuTar(makeSource(), 'posix');
    const upperSource = fresh();
    fs.mkdirSync(upperSource);
    fs.writeFileSync(at(upperSource, Buffer.concat([Buffer.from('.wh.'), CAFE_LATIN1])), '');
    fs.mkdirSync(at(upperSource, DIR));
    fs.writeFileSync(at(upperSource, DIR, Buffer.from('.wh..wh..opq')), '');
    fs.writeFileSync(at(upperSource, DIR, bytes('new', [0xaa])), 'new');
    const upper = gnuTar(upperSource, 'posix');

    // Applied in place, and extracted ahead into a staging tree and merged by renames.
    for (const stageAhead of [0, 2]) {
      const destination = fresh();
      await flattenLayers([{ open: () => bufferStream(lower) }, { open: () => bufferStream(upper) }], {
        destination,
        stageAhead,
      });
      expect(fs.existsSync(at(destination, CAFE_LATIN1))).toBe(false);
      expect(fs.readFileSync(at(destination, CAFE_UTF8), 'utf8')).toBe('utf8');
      expect((fs.readdirSync(at(destination, DIR), { encoding: 'buffer' }) as Buffer[]).map(String)).toEqual([
        String(bytes('new', [0xaa])),
      ]);
      // The hardlink and symlink to the whited-out name are other names: they stay.
      expect(fs.readFileSync(at(destination, HARD), 'utf8')).toBe('latin1');
    }

    const tree = fresh();
    await extractLayer(bufferStream(upper), { destination: tree, whiteoutFormat: 'overlayfs' });
    const whiteout = fs.lstatSync(at(tree, CAFE_LATIN1));
    expect(whiteout.isCharacterDevice() && whiteout.rdev === 0).toBe(true);
    const fd = fs.openSync(at(tree, DIR), fs.constants.O_RDONLY);
    try {
      expect(getAttributeSync(`/proc/self/fd/${fd}/.`, 'trusted.overlay.opaque')?.toString()).toBe('y');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('records rootless ownership and copies xattrs up on them (through temporary ASCII aliases)', async () => {
    const source = makeSource();
    // A user.* xattr on the latin1 file, set through an ASCII alias (the library follows no links).
    fs.linkSync(at(source, CAFE_LATIN1), join(source, 'alias'));
    setAttributeSync(join(source, 'alias'), 'user.origin', 'lower');
    fs.unlinkSync(join(source, 'alias'));
    const tar = gnuTarWithXattrs(source);

    const rootless = fresh();
    await flattenLayers([{ open: () => bufferStream(tar) }], { destination: rootless, rootless: true });
    expect(xattrOf(rootless, CAFE_LATIN1, OVERRIDE_STAT_XATTR)).toBe('0:0:0644');
    expect(xattrOf(rootless, CAFE_LATIN1, 'user.origin')).toBe('lower');
    expect(xattrOf(rootless, DIR, OVERRIDE_STAT_XATTR)).toBe('0:0:0755');

    // A hardlink in an upper layer to the lower latin1 file: copied up with its xattr.
    const lower = fresh();
    await extractLayer(bufferStream(tar), { destination: lower });
    const upperTar = withBytesReplaced(
      await layerTarBytes([hardlink('alias', 'cafX')]),
      Buffer.from('cafX'),
      CAFE_LATIN1,
    );
    const upper = fresh();
    await extractLayer(bufferStream(upperTar), { destination: upper, lowerLayers: [lower] });
    expect(fs.statSync(join(upper, 'alias')).ino).toBe(fs.statSync(at(upper, CAFE_LATIN1)).ino);
    expect(fs.readFileSync(join(upper, 'alias'), 'utf8')).toBe('latin1');
    expect(xattrOf(upper, CAFE_LATIN1, 'user.origin')).toBe('lower');
    for (const tree of [rootless, lower, upper]) {
      expect(fs.readdirSync(tree).filter((name) => name.startsWith('.ocipull'))).toEqual([]);
    }
  });
});

/** GNU tar in PAX format with xattrs (`SCHILY.xattr.*`). */
function gnuTarWithXattrs(source: string): Buffer {
  return execFileSync(
    'tar',
    ['--format=posix', '--xattrs', '--xattrs-include=user.*', '--sort=name', '-C', source, '-cf', '-', '.'],
    { env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 64 * 1024 * 1024 },
  );
}

/** An xattr of `root/name` read through an ASCII hardlink (files) or `/proc/self/fd` (directories). */
function xattrOf(root: string, name: Buffer, key: string): string | undefined {
  const path = at(root, name);
  if (fs.lstatSync(path).isDirectory()) {
    const fd = fs.openSync(path, fs.constants.O_RDONLY);
    try {
      return getAttributeSync(`/proc/self/fd/${fd}/.`, key)?.toString();
    } finally {
      fs.closeSync(fd);
    }
  }
  const alias = join(work, `xattr-alias-${++counter}`);
  fs.linkSync(path, alias);
  try {
    return getAttributeSync(alias, key)?.toString();
  } finally {
    fs.unlinkSync(alias);
  }
}

/** `tar` with every header's `search` bytes replaced by `replacement` (same length), checksums fixed. */
function withBytesReplaced(tar: Buffer, search: Buffer, replacement: Buffer): Buffer {
  const out = Buffer.from(tar);
  for (let block = 0; block + 512 <= out.length; block += 512) {
    const header = out.subarray(block, block + 512);
    if (header.toString('latin1', 257, 262) !== 'ustar') continue;
    let found = false;
    for (let index = header.indexOf(search); index >= 0; index = header.indexOf(search, index + 1)) {
      replacement.copy(header, index);
      found = true;
    }
    if (found) writeHeaderChecksum(header);
  }
  return out;
}
