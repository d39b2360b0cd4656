import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ErrorCode, type OciError } from '@ocipull/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createHasher, DEFAULT_ALGORITHM, digestOf, digestOfFile, measure } from './index.ts';

const hex = (algorithm: string, bytes: Uint8Array) =>
  `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

const directory = mkdtempSync(join(tmpdir(), 'ocipull-digest-of-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

async function rejected(promise: Promise<unknown>): Promise<OciError> {
  try {
    await promise;
  } catch (error) {
    return error as OciError;
  }
  throw new Error('expected a rejection');
}

describe('digestOf', () => {
  const content = randomBytes(2 * 1024 * 1024 + 3);

  it('hashes bytes, strings (UTF-8), streams and async iterables alike', async () => {
    const text = 'grüße, 世界';
    const utf8 = Buffer.from(text, 'utf8');
    expect(await digestOf(content)).toBe(hex('sha256', content));
    expect(await digestOf(new Uint8Array(content))).toBe(hex('sha256', content));
    expect(await digestOf(text)).toBe(hex('sha256', utf8));
    expect(await digestOf(Readable.from([content.subarray(0, 5), content.subarray(5)]))).toBe(
      hex('sha256', content),
    );
    expect(await digestOf(Readable.from(['grüße', ', 世界']))).toBe(hex('sha256', utf8));
    async function* pieces() {
      yield content.subarray(0, 1);
      yield content.subarray(1);
    }
    expect(await digestOf(pieces())).toBe(hex('sha256', content));
  });

  it('hashes empty content to the well-known empty digest', async () => {
    expect(DEFAULT_ALGORITHM).toBe('sha256');
    expect(await digestOf(new Uint8Array())).toBe(EMPTY_SHA256);
    expect(await digestOf('')).toBe(EMPTY_SHA256);
    expect(await digestOf(Readable.from([]))).toBe(EMPTY_SHA256);
  });

  it('hashes with sha512 when asked', async () => {
    expect(await digestOf(content, { algorithm: 'sha512' })).toBe(hex('sha512', content));
  });

  it('measures digest and size together', async () => {
    expect(await measure(Readable.from([content]))).toEqual({
      digest: hex('sha256', content),
      size: content.length,
    });
    expect(await measure('héllo')).toEqual({ digest: hex('sha256', Buffer.from('héllo')), size: 6 });
  });

  it('stops a stream with ERR_ABORTED when the signal fires mid-way', async () => {
    const controller = new AbortController();
    let yielded = 0;
    async function* endless() {
      while (true) {
        yielded += 1;
        if (yielded === 3) controller.abort(new Error('cancelled'));
        yield Buffer.alloc(16);
      }
    }
    const error = await rejected(digestOf(endless(), { signal: controller.signal }));
    expect(error.code).toBe(ErrorCode.Aborted);
    expect(yielded).toBe(3);
  });

  it('rejects at once when the signal has already fired', async () => {
    const error = await rejected(digestOf(content, { signal: AbortSignal.abort() }));
    expect(error.code).toBe(ErrorCode.Aborted);
  });

  it('keeps a stream error that is not an abort', async () => {
    async function* broken() {
      yield Buffer.alloc(1);
      throw new Error('socket hang up');
    }
    await expect(digestOf(broken())).rejects.toThrow('socket hang up');
  });

  it('hashes incrementally with a Hasher that stays usable after digest()', () => {
    const hasher = createHasher();
    hasher.update(content.subarray(0, 10));
    expect(hasher.digest()).toBe(hex('sha256', content.subarray(0, 10)));
    hasher.update(content.subarray(10));
    expect(hasher.bytes).toBe(content.length);
    expect(hasher.digest()).toBe(hex('sha256', content));
    // A string counts no bytes: refused rather than hashed with a size check blind to it.
    expect(() => hasher.update('text' as unknown as Uint8Array)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(hasher.bytes).toBe(content.length);
  });
});

describe('digestOfFile', () => {
  const content = randomBytes(3 * 1024 * 1024 + 11);
  const path = join(directory, 'file.bin');
  writeFileSync(path, content);

  it('hashes a whole file with its size', async () => {
    expect(await digestOfFile(path)).toEqual({ digest: hex('sha256', content), size: content.length });
    expect(await digestOfFile(path, { algorithm: 'sha512' })).toEqual({
      digest: hex('sha512', content),
      size: content.length,
    });
  });

  it.each([0, 1, 1024 * 1024, 2 * 1024 * 1024 + 1])(
    'hashes only the first %i bytes when given a length',
    async (length) => {
      expect(await digestOfFile(path, { length })).toEqual({
        digest: hex('sha256', content.subarray(0, length)),
        size: length,
      });
    },
  );

  it('reports the smaller size when the file is shorter than length', async () => {
    expect((await digestOfFile(path, { length: content.length + 100 })).size).toBe(content.length);
  });

  it('hashes an empty file', async () => {
    const empty = join(directory, 'empty.bin');
    writeFileSync(empty, '');
    expect(await digestOfFile(empty)).toEqual({ digest: EMPTY_SHA256, size: 0 });
  });

  it('rejects an aborted signal with ERR_ABORTED and a bad length with ERR_INVALID_ARGUMENT', async () => {
    expect((await rejected(digestOfFile(path, { signal: AbortSignal.abort() }))).code).toBe(
      ErrorCode.Aborted,
    );
    expect((await rejected(digestOfFile(path, { length: -5 }))).code).toBe(ErrorCode.InvalidArgument);
  });

  it('passes through a missing file as the filesystem error', async () => {
    await expect(digestOfFile(join(directory, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
