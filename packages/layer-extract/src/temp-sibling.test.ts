import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { dir, file } from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer, flattenLayers } from './index.ts';
import { removeAbandonedSiblings, tempSibling } from './temp-sibling.ts';
import { layerStream } from './testing/tree-snapshot.ts';

let work: string;
let counter = 0;
const fresh = () => {
  const parent = join(work, `t${++counter}`);
  fs.mkdirSync(parent);
  return parent;
};
/** A process that is still running, for a live owner. */
let sleeper: ChildProcess;

/** The pid of a process that has exited (and been reaped). */
function deadPid(): number {
  const child = spawnSync('true');
  expect(child.pid).toBeGreaterThan(0);
  return child.pid!;
}

/** A sibling named as `owner` (a pid) would have named it in this process's scope, with some content. */
function leftover(destination: string, kind: 'tmp' | 'stage', owner: number): string {
  // The scope is what this process puts in its own names: made here, renamed to the owner's pid.
  const made = tempSibling(destination, kind);
  const name = basename(made).replace(`-${process.pid}.`, `-${owner}.`);
  expect(name).not.toBe(basename(made));
  const sibling = join(destination, '..', name);
  fs.renameSync(made, sibling);
  fs.mkdirSync(join(sibling, 'usr', 'lib'), { recursive: true });
  fs.writeFileSync(join(sibling, 'usr', 'lib', 'half-written'), 'x'.repeat(1000));
  return sibling;
}

beforeAll(() => {
  work = fs.mkdtempSync(join(tmpdir(), 'ocipull-temp-sibling-'));
  sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
});

afterAll(() => {
  sleeper.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

describe('temporary siblings', () => {
  it('names a sibling after the destination and the process that made it', () => {
    const parent = fresh();
    const made = tempSibling(join(parent, 'rootfs'), 'tmp');
    expect(basename(made)).toMatch(
      new RegExp(`^\\.rootfs\\.tmp-${process.pid}\\.[0-9a-z]+\\.[A-Za-z0-9]{6}$`),
    );
    expect(fs.statSync(made).isDirectory()).toBe(true);
    expect(basename(tempSibling(join(parent, 'rootfs'), 'stage'))).toMatch(/^\.rootfs\.stage-/);
  });

  it('removes the siblings of a dead process, and only those', () => {
    const parent = fresh();
    const destination = join(parent, 'rootfs');
    const dead = deadPid();
    const abandoned = [leftover(destination, 'tmp', dead), leftover(destination, 'stage', dead)];
    const live = leftover(destination, 'tmp', sleeper.pid!);
    const own = tempSibling(destination, 'stage');
    // Another destination's, another pid namespace's (or machine's), and one without an owner.
    const other = leftover(join(parent, 'rootfs2'), 'tmp', dead);
    const foreign = join(parent, basename(abandoned[0]!).replace(/\.([0-9a-z]+)\.(\w{6})$/, '.zz$1.$2'));
    fs.mkdirSync(foreign);
    const unowned = join(parent, '.rootfs.tmp-AbC123');
    fs.mkdirSync(unowned);
    const lookalike = join(parent, `.rootfs.tmp-${dead}.x.y.abcdef`);
    fs.mkdirSync(lookalike);

    expect(removeAbandonedSiblings(destination).sort()).toEqual(abandoned.sort());
    expect(fs.readdirSync(parent).sort()).toEqual(
      [live, own, other, foreign, unowned, lookalike].map((path) => basename(path)).sort(),
    );
    // Nothing left to remove: a second pass removes nothing.
    expect(removeAbandonedSiblings(destination)).toEqual([]);
  });

  it('removes an abandoned symlink by that name without following it', () => {
    const parent = fresh();
    const destination = join(parent, 'rootfs');
    const target = join(parent, 'precious');
    fs.mkdirSync(target);
    fs.writeFileSync(join(target, 'keep'), 'k');
    const name = basename(leftover(destination, 'tmp', deadPid()));
    fs.rmSync(join(parent, name), { recursive: true });
    fs.symlinkSync(target, join(parent, name));
    expect(removeAbandonedSiblings(destination)).toEqual([join(parent, name)]);
    expect(fs.readFileSync(join(target, 'keep'), 'utf8')).toBe('k');
  });

  it('extractLayer and flattenLayers clear what a killed extraction into the same destination left', async () => {
    const parent = fresh();
    const layer = [dir('etc'), file('etc/os-release', 'ID=test\n')];
    const single = join(parent, 'layer');
    leftover(single, 'tmp', deadPid());
    await extractLayer(await layerStream(layer), { destination: single });
    expect(fs.readdirSync(parent)).toEqual(['layer']);

    const rootfs = join(parent, 'rootfs');
    const dead = deadPid();
    leftover(rootfs, 'tmp', dead);
    leftover(rootfs, 'stage', dead);
    const live = leftover(rootfs, 'stage', sleeper.pid!);
    await flattenLayers([{ open: () => layerStream(layer) }], { destination: rootfs });
    expect(fs.readdirSync(parent).sort()).toEqual(['layer', 'rootfs', basename(live)].sort());
    expect(fs.readFileSync(join(rootfs, 'etc', 'os-release'), 'utf8')).toBe('ID=test\n');
  });
});
