import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { dir, file, hardlink, layerTarBytes, symlink, writeHeaderChecksum } from '@ocipull/test-harness';
import { afterAll, describe, expect, it } from 'vitest';
import { flattenLayers } from './index.ts';
import { umociUnpackTar } from './testing/oci-layout.ts';
import { bufferStream, type NodeSnapshot, sha256Hex, snapshotTree } from './testing/tree-snapshot.ts';

// Tar corners where tar-stream and Go's archive/tar (containerd, umoci, Docker) part ways; umoci is the oracle.

const scratch = fs.mkdtempSync(join(tmpdir(), 'tar-compat-'));
let counter = 0;
const fresh = () => join(scratch, `d${counter++}`);

afterAll(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

/** The tree umoci unpacks from a one-layer image of `tar`, and ours; inode numbers left out. */
async function bothTrees(
  tar: Buffer,
): Promise<{ ours: Map<string, NodeSnapshot>; umoci: Map<string, NodeSnapshot> }> {
  const rootfs = umociUnpackTar(tar, fresh(), fresh());
  const destination = fresh();
  await flattenLayers([{ open: () => bufferStream(tar) }], { destination });
  const strip = (tree: Map<string, NodeSnapshot>) =>
    new Map(
      [...tree].filter(([path]) => path !== '.').map(([path, node]) => [path, { ...node, ino: undefined }]),
    );
  return { ours: strip(snapshotTree(destination)), umoci: strip(snapshotTree(rootfs)) };
}

/** Each 512-byte block of `tar` whose name field starts with `name`. */
function headersNamed(tar: Buffer, name: string): Buffer[] {
  const found: Buffer[] = [];
  for (let block = 0; block + 512 <= tar.length; block += 512) {
    const header = tar.subarray(block, block + 512);
    if (header.toString('latin1', 0, name.length + 1) === `${name}\0`) found.push(header);
  }
  return found;
}

describe('tar corners read like Go', () => {
  it('headers whose checksum is the signed sum (old Sun and GNU tars) are accepted', async () => {
    const source = fresh();
    fs.mkdirSync(join(source, 'caf\u00e9'), { recursive: true });
    fs.writeFileSync(join(source, 'caf\u00e9', 'cr\u00e8me.txt'), 'br\u00fbl\u00e9e');
    const tar = execFileSync('tar', [
      '-C',
      source,
      '--format=gnu',
      '--sort=name',
      '--owner=0',
      '--group=0',
      '-cf',
      '-',
      '.',
    ]);
    let rewritten = 0;
    for (let block = 0; block + 512 <= tar.length; block += 512) {
      const header = tar.subarray(block, block + 512);
      if (header.toString('latin1', 257, 262) !== 'ustar') continue;
      if (writeHeaderChecksum(header, { signed: true })) rewritten++;
    }
    expect(rewritten).toBe(2);
    const { ours, umoci } = await bothTrees(tar);
    expect(ours).toEqual(umoci);
    expect(
      ours.get('./caf\u00e9/cr\u00e8me.txt')?.sha256 ?? ours.get('caf\u00e9/cr\u00e8me.txt')?.sha256,
    ).toBe(sha256Hex(Buffer.from('br\u00fbl\u00e9e')));

    // A checksum that is neither sum is still refused.
    const broken = Buffer.from(tar);
    broken.write('0000001\0', 148, 8, 'latin1');
    await expect(
      flattenLayers([{ open: () => bufferStream(broken) }], { destination: fresh() }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_LAYER' });
  });

  it('links, symlinks, directories and FIFOs have no body whatever their size field says', async () => {
    const tar = Buffer.from(
      await layerTarBytes([
        file('a.txt', 'hello'),
        hardlink('b.txt', 'a.txt'),
        symlink('c', 'a.txt'),
        dir('d', { mode: 0o755 }),
        file('d/after.txt', 'after the odd headers'),
      ]),
    );
    for (const name of ['b.txt', 'c', 'd/']) {
      const [header] = headersNamed(tar, name);
      expect(header).toBeDefined();
      // A size with no body behind it: a reader that believes it swallows the next header.
      (header as Buffer).write('00000001000\0', 124, 12, 'latin1');
      writeHeaderChecksum(header as Buffer);
    }
    const { ours, umoci } = await bothTrees(tar);
    expect(ours).toEqual(umoci);
    expect(ours.get('d/after.txt')?.sha256).toBe(sha256Hex(Buffer.from('after the odd headers')));
    expect(ours.get('b.txt')?.nlink).toBe(2);
    expect(ours.get('c')).toMatchObject({ type: 'symlink', target: 'a.txt' });
  });

  it('old GNU sparse files, their map continued in extension blocks, equal GNU tar -x (umoci and Docker refuse type S)', async () => {
    const source = fresh();
    fs.mkdirSync(source);
    const image = fs.openSync(join(source, 'disk.img'), 'w');
    for (let island = 0; island < 60; island++) {
      fs.writeSync(image, `block ${island} `.repeat(50), island * 128 * 1024 + 1000);
    }
    fs.ftruncateSync(image, 61 * 128 * 1024 + 5);
    fs.closeSync(image);
    fs.writeFileSync(join(source, 'tail.txt'), 'still in sync');
    const tar = execFileSync(
      'tar',
      ['-C', source, '--format=gnu', '--sparse', '--sort=name', '--owner=0', '--group=0', '-cf', '-', '.'],
      { maxBuffer: 64 << 20 },
    );
    const [header] = headersNamed(tar, './disk.img');
    expect(String.fromCharCode((header as Buffer)[156] as number)).toBe('S');
    expect((header as Buffer)[482]).toBe(1);
    const untarred = fresh();
    fs.mkdirSync(untarred);
    execFileSync('tar', ['-C', untarred, '--same-owner', '-xf', '-'], { input: tar });
    // Whole, and in odd slices: headers and extension blocks then arrive split across chunks.
    const sliced = () =>
      Readable.from(
        Array.from({ length: Math.ceil(tar.length / 333) }, (_, index) =>
          tar.subarray(index * 333, (index + 1) * 333),
        ),
      );
    const destination = fresh();
    await flattenLayers([{ open: () => bufferStream(tar) }], { destination });
    const slicedDestination = fresh();
    await flattenLayers([{ open: sliced }], { destination: slicedDestination });
    const withoutInodes = (tree: Map<string, NodeSnapshot>) =>
      new Map(
        [...tree].filter(([path]) => path !== '.').map(([path, node]) => [path, { ...node, ino: undefined }]),
      );
    expect(withoutInodes(snapshotTree(destination))).toEqual(withoutInodes(snapshotTree(untarred)));
    expect(withoutInodes(snapshotTree(slicedDestination))).toEqual(withoutInodes(snapshotTree(untarred)));
    expect(snapshotTree(destination).get('disk.img')?.sha256).toBe(
      sha256Hex(fs.readFileSync(join(source, 'disk.img'))),
    );
    expect(fs.statSync(join(destination, 'disk.img')).blocks).toBeLessThan(
      fs.statSync(join(destination, 'disk.img')).size / 512 / 4,
    );
  });

  it('an old GNU sparse map that never ends, or is cut short, is refused as an invalid layer', async () => {
    const header = Buffer.alloc(512);
    header.write('endless.img', 0, 'latin1');
    header.write('0000644\0', 100, 8, 'latin1');
    header.write('00000000000\0', 124, 12, 'latin1');
    header.write('00000000000\0', 136, 12, 'latin1');
    header.write('S', 156, 'latin1');
    header.write('ustar  \0', 257, 8, 'latin1');
    header[482] = 1;
    header.write('00000001000\0', 483, 12, 'latin1');
    writeHeaderChecksum(header);
    const extension = Buffer.alloc(512);
    extension[504] = 1;
    const endless = Buffer.concat([
      header,
      ...Array.from({ length: 2100 }, () => extension),
      Buffer.alloc(1024),
    ]);
    const cut = Buffer.concat([header, extension, extension]);
    for (const tar of [endless, cut]) {
      await expect(
        flattenLayers([{ open: () => bufferStream(tar) }], { destination: fresh() }),
      ).rejects.toMatchObject({ code: 'ERR_INVALID_LAYER' });
    }
  });
});
