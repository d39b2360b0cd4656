import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { isOciError } from '@ocipull/core';
import { dir, file, layerTarBytes, symlink } from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer, flattenLayers } from './index.ts';

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(join(tmpdir(), 'ocipull-hostile-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A seeded generator (the cases must be the same in every run). */
function generator(seed: number) {
  let state = seed;
  const next = () => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return state / 0x7fffffff;
  };
  const int = (below: number) => Math.floor(next() * below);
  const bytes = (length: number) => Buffer.from(Array.from({ length }, () => int(256)));
  return { next, int, bytes };
}

/** `bytes` in random chunks (often a whole 512-byte block or a block split), some after a timer tick. */
function chunked(bytes: Buffer, random: ReturnType<typeof generator>): Readable {
  const stream = new Readable({ read() {} });
  const sizes: number[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = random.next() < 0.3 ? 512 * (1 + random.int(2)) : 1 + random.int(3000);
    sizes.push(size);
    at += size;
  }
  const delays = sizes.map(() => random.next() < 0.3);
  let at = 0;
  let index = 0;
  const step = () => {
    if (at >= bytes.length) {
      stream.push(null);
      return;
    }
    const size = sizes[index] ?? 1;
    const delayed = delays[index++] ?? false;
    stream.push(bytes.subarray(at, at + size));
    at += size;
    if (delayed) setTimeout(step, 1);
    else setImmediate(step);
  };
  setImmediate(step);
  return stream;
}

describe('hostile and broken layers', () => {
  it('never hang, always fail with ERR_INVALID_LAYER, and leave nothing (seeded mutations, random chunking)', async () => {
    const good = await layerTarBytes([
      dir('d'),
      file('d/a', 'hello'),
      file('d/b', { size: 3000, seed: 5 }),
      symlink('d/l', 'a'),
      file('e', ''),
    ]);
    const random = generator(42);
    const mutate = (input: Buffer): Buffer => {
      switch (random.int(5)) {
        case 0: {
          const copy = Buffer.from(input);
          for (let flips = 1 + random.int(10); flips > 0; flips--)
            copy[random.int(copy.length)] = random.int(256);
          return copy;
        }
        case 1:
          return input.subarray(0, random.int(input.length));
        case 2:
          return random.bytes(random.int(4000));
        case 3:
          return Buffer.concat([input, random.bytes(random.int(2000))]);
        default:
          return input;
      }
    };
    const outcomes = new Map<string, number>();
    for (let index = 0; index < 150; index++) {
      let bytes = mutate(good);
      const compression = random.int(3);
      if (compression === 1) bytes = gzipSync(bytes);
      if (compression === 2) bytes = zstdCompressSync(bytes);
      if (compression !== 0 && random.next() < 0.5) bytes = mutate(bytes);
      const destination = join(work, `case-${index}`);
      const flatten = random.next() < 0.5;
      const openAhead = random.next() < 0.5;
      const extraction = flatten
        ? flattenLayers([{ open: () => chunked(bytes, random) }, { open: () => chunked(good, random) }], {
            destination,
            openAhead,
          })
        : extractLayer(chunked(bytes, random), { destination });
      const outcome = await Promise.race([
        extraction.then(
          () => 'ok',
          (error: unknown) => (isOciError(error) ? error.code : `untyped: ${String(error)}`),
        ),
        new Promise<string>((resolve) => setTimeout(() => resolve('hung'), 5000)),
      ]);
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      const what = `case ${index} (${['plain', 'gzip', 'zstd'][compression]}, ${bytes.length} bytes, ${flatten ? 'flatten' : 'extract'})`;
      expect(['ok', 'ERR_INVALID_LAYER'], what).toContain(outcome);
      if (outcome !== 'ok') expect(fs.existsSync(destination), what).toBe(false);
    }
    // Temp siblings of failed outputs are gone too; both outcomes were exercised.
    expect(fs.readdirSync(work).filter((name) => name.startsWith('.'))).toEqual([]);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(10);
    expect(outcomes.get('ERR_INVALID_LAYER') ?? 0).toBeGreaterThan(10);
  }, 120_000);
});
