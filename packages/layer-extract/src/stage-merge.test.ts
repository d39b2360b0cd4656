import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isOciError } from '@ocipull/core';
import {
  dir,
  file,
  hardlink,
  layerTarBytes,
  opaque,
  Prng,
  symlink,
  type TreeEntry,
  whiteout,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FlattenLayersOptions, type FlattenResult, flattenLayers } from './index.ts';
import { type ComparableNode, comparableTree, listAll } from './testing/tree-snapshot.ts';

// flattenLayers with `stageAhead` extracts the upper layers into staging trees and merges them by
// renames: its result must be the result of applying the layers one by one, whatever the layers do.
// These tests flatten seeded random layer stacks both ways over a small name space (so entries collide:
// files over directories, symlinked parents, whiteouts of lower and own entries, opaque directories,
// hardlinks within and across layers, children before their parents) and compare the trees.

let work: string;
let counter = 0;
const OCI_TAR = 'application/vnd.oci.image.layer.v1.tar';
/** Directory mtimes at or after this are "now" (written by the extraction, not taken from the tar). */
let started: number;

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (chown, trusted.* xattrs)');
  work = fs.mkdtempSync(join(tmpdir(), 'stage-merge-test-'));
  started = Date.now() - 1000;
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** Numbers in [0, 1) from the harness's seeded generator. */
function prng(seed: number): () => number {
  const generator = new Prng(seed);
  return () => generator.nextUint32() / 0x1_0000_0000;
}

const NAMES = ['a', 'b', 'c'];

/**
 * A random path of depth 1–3 over `NAMES`; with `leaf`, its last name is mostly `x` or `y`, so files
 * collide with directories now and then rather than all the time.
 */
function randomPath(random: () => number, leaf = false): string {
  const depth = 1 + Math.floor(random() * 3);
  const parts: string[] = [];
  for (let index = 0; index < depth; index++)
    parts.push(NAMES[Math.floor(random() * NAMES.length)] as string);
  if (leaf && random() < 0.7) parts[parts.length - 1] = random() < 0.5 ? 'x' : 'y';
  return parts.join('/');
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)] as T;
}

/** One random layer: a few entries of every kind, in random order (children may come first). */
function randomLayer(random: () => number, layerIndex: number, lowerPaths: string[]): TreeEntry[] {
  const entries: TreeEntry[] = [];
  const count = 1 + Math.floor(random() * 8);
  const written: string[] = [];
  const mtime = new Date(Date.UTC(2020, 0, 1 + layerIndex, 0, 0, Math.floor(random() * 60)));
  for (let index = 0; index < count; index++) {
    const kind = random();
    const path = randomPath(random, kind < 0.35 || (kind >= 0.5 && kind < 0.7));
    const meta = {
      mtime,
      mode: pick(random, [0o755, 0o700, 0o644, 0o2775]),
      uid: pick(random, [0, 1, 1000]),
    };
    if (kind < 0.35) {
      entries.push(file(path, `layer ${layerIndex} entry ${index}`, { ...meta, mode: meta.mode & 0o777 }));
      written.push(path);
    } else if (kind < 0.55) {
      const xattrs = random() < 0.2 ? { xattrs: { 'user.layer': String(layerIndex) } } : {};
      entries.push(dir(path, { ...meta, ...xattrs }));
    } else if (kind < 0.62) {
      // Relative, absolute and climbing targets: lower symlinked parents are followed inside the root.
      const target = pick(random, [randomPath(random), `/${randomPath(random)}`, `../${randomPath(random)}`]);
      entries.push(symlink(path, target, { mtime }));
    } else if (kind < 0.7) {
      // Mostly targets this layer wrote before; sometimes a lower layer's path (or nothing at all).
      const candidates = random() < 0.6 && written.length > 0 ? written : lowerPaths;
      if (candidates.length === 0) continue;
      entries.push(hardlink(path, pick(random, candidates)));
    } else if (kind < 0.9) {
      entries.push(whiteout(path));
    } else {
      entries.push(opaque(randomPath(random)));
    }
  }
  return entries;
}

type Outcome =
  | { ok: true; tree: Record<string, ComparableNode>; result: FlattenResult; opens: number[] }
  | { ok: false; code: string; message: string; opens: number[] };

async function flattenBoth(
  layers: TreeEntry[][],
  options: Partial<FlattenLayersOptions> = {},
): Promise<[Outcome, Outcome]> {
  const tars = await Promise.all(layers.map((entries) => layerTarBytes(entries)));
  const run = async (stageAhead: number): Promise<Outcome> => {
    const parent = join(work, `t${++counter}`);
    fs.mkdirSync(parent);
    const destination = join(parent, 'rootfs');
    const opens = tars.map(() => 0);
    try {
      const result = await flattenLayers(
        tars.map((tar, index) => ({
          open: () => {
            opens[index] = (opens[index] as number) + 1;
            return Readable.from([tar]);
          },
          mediaType: OCI_TAR,
        })),
        { destination, stageAhead, ...options },
      );
      // Nothing but the rootfs is left next to it (no staging trees).
      expect(fs.readdirSync(parent)).toEqual(['rootfs']);
      return { ok: true, tree: comparableTree(destination, started), result, opens };
    } catch (error) {
      expect(isOciError(error), String(error)).toBe(true);
      expect(fs.readdirSync(parent)).toEqual([]);
      return { ok: false, code: (error as { code: string }).code, message: (error as Error).message, opens };
    }
  };
  return [await run(0), await run(3)];
}

function expectSame(sequential: Outcome, staged: Outcome, context: string): void {
  if (!sequential.ok || !staged.ok) {
    expect(staged.ok, `${context}: ${staged.ok ? 'staged succeeded' : staged.message}`).toBe(sequential.ok);
    if (!sequential.ok && !staged.ok) expect(staged.code, context).toBe(sequential.code);
    return;
  }
  expect(staged.tree, context).toEqual(sequential.tree);
  const summary = (result: FlattenResult) =>
    result.layers.map((layer) => ({
      entries: layer.entries,
      bytes: layer.bytes,
      diffId: layer.diffId,
      skipped: layer.skipped,
      warnings: [...layer.warnings].sort(),
      devices: layer.devices,
    }));
  expect(summary(staged.result), context).toEqual(summary(sequential.result));
}

describe('flattenLayers stageAhead', () => {
  const SEEDS = Number(process.env.OCIPULL_STAGE_SEEDS ?? 300);
  it.each([
    ['as root', {}],
    ['rootless', { rootless: true }],
    ['lenient', { lenient: true }],
  ] as const)(
    'gives the tree of applying layer by layer (%s), for seeded random layer stacks',
    async (_, options) => {
      let merged = 0;
      let reapplied = 0;
      let failed = 0;
      for (let seed = 1; seed <= SEEDS; seed++) {
        // In-memory layers never wait for I/O: let the worker's event loop (vitest's RPC) run.
        if (seed % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
        const random = prng(seed);
        const layers: TreeEntry[][] = [];
        const paths: string[] = [];
        const layerCount = 2 + Math.floor(random() * 3);
        for (let index = 0; index < layerCount; index++) {
          const layer = randomLayer(random, index, paths);
          for (const entry of layer) if (entry.type === 'file') paths.push(entry.path);
          layers.push(layer);
        }
        const [sequential, staged] = await flattenBoth(layers, options);
        expectSame(sequential, staged, `seed ${seed}: ${JSON.stringify(layers)}`);
        if (!staged.ok) failed++;
        else {
          const again = staged.opens.slice(1).filter((opens) => opens > 1).length;
          reapplied += again;
          merged += staged.opens.length - 1 - again;
        }
      }
      // The name space is small enough that every path is exercised: merges, re-applies and failures.
      expect(merged).toBeGreaterThan(SEEDS / 2);
      expect(reapplied).toBeGreaterThan(SEEDS / 20);
      if (!('lenient' in options)) expect(failed).toBeGreaterThan(SEEDS / 20);
    },
    120_000,
  );

  it('merges typical upper layers without opening them again', async () => {
    const layers: TreeEntry[][] = [
      [
        dir('usr'),
        dir('usr/bin'),
        file('usr/bin/sh', 'sh'),
        symlink('bin', 'usr/bin'),
        dir('etc'),
        file('etc/os', '1'),
      ],
      [
        dir('usr/bin'),
        file('usr/bin/python', 'py'),
        hardlink('usr/bin/python3', 'usr/bin/python'),
        whiteout('etc/os'),
      ],
      [
        opaque('etc'),
        file('etc/app.conf', 'x'),
        dir('app', { mode: 0o750, uid: 1000 }),
        file('app/main', 'main'),
      ],
    ];
    const [sequential, staged] = await flattenBoth(layers);
    expectSame(sequential, staged, 'typical');
    expect(staged.ok && staged.opens).toEqual([1, 1, 1]);
    expect(staged.ok && Object.keys(staged.tree).sort()).toEqual([
      '.',
      'app',
      'app/main',
      'bin',
      'etc',
      'etc/app.conf',
      'usr',
      'usr/bin',
      'usr/bin/python',
      'usr/bin/python3',
      'usr/bin/sh',
    ]);
  });

  it('passes over a whiteout of a directory the layer itself made, as applying in place does', async () => {
    // In place, `a/b` is the layer's own (it made it for `a/b/b`): `a/.wh.b` skips it, and `a` then
    // becomes a file. Found by the 3,000-seed run: the merge emptied `a/b` below the new file (ENOTDIR).
    const layers: TreeEntry[][] = [
      [file('x', 'lower')],
      [file('a/b/b', 'own'), whiteout('a/b'), file('a', 'now a file')],
    ];
    const [sequential, staged] = await flattenBoth(layers);
    expectSame(sequential, staged, 'own directory whited out');
    expect(staged.ok && staged.opens).toEqual([1, 1]);
  });

  it('applies in place (opening the layer again) what renames cannot reproduce', async () => {
    const cases: Array<{ name: string; layers: TreeEntry[][] }> = [
      {
        name: 'a hardlink to a lower file',
        layers: [[file('a', 'lower')], [hardlink('b', 'a')]],
      },
      {
        name: 'a file below a lower symlinked directory',
        layers: [[dir('usr/lib'), symlink('lib', 'usr/lib')], [file('lib/x', 'x')]],
      },
      {
        name: 'a directory over a lower symlink',
        layers: [
          [dir('usr/lib'), symlink('lib', 'usr/lib')],
          [dir('lib'), file('lib/x', 'x')],
        ],
      },
      {
        name: 'a whiteout below a lower symlink',
        layers: [[dir('usr/lib'), file('usr/lib/x', 'x'), symlink('lib', 'usr/lib')], [whiteout('lib/x')]],
      },
      {
        name: 'nested opaque directories',
        layers: [
          [file('d/e/f', 'f'), file('d/g', 'g')],
          [opaque('d'), opaque('d/e')],
        ],
      },
    ];
    for (const { name, layers } of cases) {
      const [sequential, staged] = await flattenBoth(layers);
      expectSame(sequential, staged, name);
      expect(staged.ok, name).toBe(true);
      expect(staged.opens, name).toEqual([1, 2]);
    }
  });

  it('stages only while stageWhen says so, asking again while layers wait', async () => {
    const tars = await Promise.all([0, 1, 2, 3, 4].map((index) => layerTarBytes([file(`f${index}`, 'x')])));
    const run = async (when: () => boolean) => {
      const parent = join(work, `t${++counter}`);
      fs.mkdirSync(parent);
      const events: string[] = [];
      await flattenLayers(
        tars.map((tar, index) => ({
          open: () => {
            events.push(`open ${index}`);
            // Each layer takes a while to arrive, so staging has time to start.
            return Readable.from(
              (async function* () {
                await new Promise((resolve) => setTimeout(resolve, 60));
                yield tar;
              })(),
            );
          },
          mediaType: OCI_TAR,
        })),
        {
          destination: join(parent, 'rootfs'),
          stageAhead: 4,
          stageWhen: when,
          onLayerStart: (index) => events.push(`apply ${index}`),
        },
      );
      expect(fs.readdirSync(join(parent, 'rootfs')).sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'f4']);
      return events;
    };
    // Never: each layer is opened when the one below is applied.
    expect(await run(() => false)).toEqual([
      'open 0',
      'apply 0',
      'open 1',
      'apply 1',
      'open 2',
      'apply 2',
      'open 3',
      'apply 3',
      'open 4',
      'apply 4',
    ]);
    // Always: every upper layer is opened before the bottom one is applied.
    expect((await run(() => true)).slice(0, 5).sort()).toEqual([
      'open 0',
      'open 1',
      'open 2',
      'open 3',
      'open 4',
    ]);
    // Later: a "no" is asked again, and staging starts once it turns to "yes".
    const since = Date.now();
    const events = await run(() => Date.now() - since > 20);
    expect(events.indexOf('open 4')).toBeLessThan(events.indexOf('apply 3'));
  });

  it('fails at once with the error of a layer extracted ahead, and leaves nothing', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    const bottom = await layerTarBytes([file('big', big)]);
    const bad = Buffer.from((await layerTarBytes([file('x', 'x')])).subarray(0, 700));
    const parent = join(work, `t${++counter}`);
    fs.mkdirSync(parent);
    const failedLayers: number[] = [];
    let bottomRead = 0;
    const error = await flattenLayers(
      [
        {
          // The bottom layer trickles in slowly: the broken upper layer fails long before it ends.
          open: () =>
            Readable.from(
              (async function* () {
                for (let offset = 0; offset < bottom.length; offset += 64 * 1024) {
                  await new Promise((resolve) => setTimeout(resolve, 5));
                  bottomRead = offset;
                  yield bottom.subarray(offset, offset + 64 * 1024);
                }
              })(),
            ),
          mediaType: OCI_TAR,
        },
        { open: () => Readable.from([bad]), mediaType: OCI_TAR },
      ],
      {
        destination: join(parent, 'rootfs'),
        stageAhead: 2,
        onLayerError: (index) => failedLayers.push(index),
      },
    ).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(isOciError(error), String(error)).toBe(true);
    expect((error as { code: string }).code).toBe('ERR_INVALID_LAYER');
    expect(failedLayers).toEqual([1]);
    expect(bottomRead).toBeLessThan(bottom.length / 2);
    expect(listAll(parent)).toEqual([]);
  });

  it('stops every staged layer on abort and leaves nothing', async () => {
    const parent = join(work, `t${++counter}`);
    fs.mkdirSync(parent);
    const controller = new AbortController();
    const start = (await layerTarBytes([file('start', 'x')])).subarray(0, 1024);
    // The first KiB of a layer, then nothing: a download that stalls.
    const endless = () => {
      const stream = new Readable({ read() {} });
      stream.push(start);
      return stream;
    };
    const layers = [0, 1, 2].map(() => ({ open: endless, mediaType: OCI_TAR }));
    setTimeout(() => controller.abort(), 50);
    const error = await flattenLayers(layers, {
      destination: join(parent, 'rootfs'),
      stageAhead: 2,
      signal: controller.signal,
    }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect((error as { code?: string }).code).toBe('ERR_ABORTED');
    expect(listAll(parent)).toEqual([]);
  });
});
