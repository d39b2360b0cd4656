import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_UNWRITTEN_BYTES, PartWriter, WRITEBACK_INTERVAL_BYTES } from './part-writer.ts';

const roots: string[] = [];
afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

describe('PartWriter', () => {
  it('appends in order after the prefix, bounding what is unwritten, and reports bytes on disk', async () => {
    const root = await mkdtemp(join(tmpdir(), 'part-writer-'));
    roots.push(root);
    const path = join(root, 'x.part');
    const handle = await open(path, 'a+');
    await handle.write(Buffer.from('prefix'));
    const reported: number[] = [];
    const writer = new PartWriter(handle, 6, (bytes) => reported.push(bytes));
    const chunks: Buffer[] = [];
    for (let index = 0; index < 400; index++) {
      const chunk = Buffer.alloc(64 * 1024 + index, index & 0xff);
      chunks.push(chunk);
      await writer.append(chunk);
    }
    await writer.flush();
    await handle.close();
    const expected = Buffer.concat([Buffer.from('prefix'), ...chunks]);
    expect((await readFile(path)).equals(expected)).toBe(true);
    expect(writer.written).toBe(expected.length);
    expect(reported.at(-1)).toBe(expected.length);
    expect(reported).toEqual([...reported].sort((a, b) => a - b));
    expect(MAX_UNWRITTEN_BYTES).toBeGreaterThan(0);
  });

  it('keeps every byte in order across background writebacks, and flush waits for them', async () => {
    const root = await mkdtemp(join(tmpdir(), 'part-writer-'));
    roots.push(root);
    const path = join(root, 'z.part');
    const handle = await open(path, 'a+');
    const writer = new PartWriter(handle, 0, () => {});
    const chunk = 1024 * 1024 + 7;
    const count = Math.ceil((2.5 * WRITEBACK_INTERVAL_BYTES) / chunk);
    for (let index = 0; index < count; index++) await writer.append(Buffer.alloc(chunk, index & 0xff));
    await writer.flush();
    // Closing right after flush must not race a sync still running on the handle.
    await handle.close();
    const bytes = await readFile(path);
    expect(bytes.length).toBe(count * chunk);
    for (let index = 0; index < count; index++) {
      expect(bytes[index * chunk]).toBe(index & 0xff);
      expect(bytes[(index + 1) * chunk - 1]).toBe(index & 0xff);
    }
    expect(WRITEBACK_INTERVAL_BYTES).toBeGreaterThanOrEqual(MAX_UNWRITTEN_BYTES);
  });

  it('surfaces a write error on the next append or flush', async () => {
    const root = await mkdtemp(join(tmpdir(), 'part-writer-'));
    roots.push(root);
    await (await open(join(root, 'y.part'), 'w')).close();
    const handle = await open(join(root, 'y.part'), 'r');
    const writer = new PartWriter(handle, 0, () => {});
    await writer.append(Buffer.alloc(10));
    await expect(writer.flush()).rejects.toMatchObject({ code: 'EBADF' });
    await expect(writer.append(Buffer.alloc(1))).rejects.toMatchObject({ code: 'EBADF' });
    await writer.stop();
    await handle.close();
  });
});
