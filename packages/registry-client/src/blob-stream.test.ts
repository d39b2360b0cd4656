import { Readable } from 'node:stream';
import { ErrorCode } from '@ocipull/core';
import { describe, expect, it } from 'vitest';
import { BlobBodyStream } from './blob-stream.ts';
import type { BlobInterruptedError } from './errors.ts';
import { drain } from './testing/clients.ts';

const body = (...sizes: number[]) => Readable.from(sizes.map((size) => Buffer.alloc(size, 7)));
const options = { digest: 'sha256:ab', registry: 'r.test', start: 100, skip: 0 };

// Bodies whose length is not known up front (chunked): what the stream alone must catch.
describe('BlobBodyStream', () => {
  it('hands over exactly the expected bytes', async () => {
    const { bytes, error } = await drain(new BlobBodyStream(body(10, 20), { ...options, expected: 30 }));
    expect(error).toBeUndefined();
    expect(bytes.length).toBe(30);
  });

  it('one byte more than expected: ERR_SIZE_MISMATCH, the chunk with the extra bytes never handed over', async () => {
    const { bytes, error } = await drain(new BlobBodyStream(body(10, 21), { ...options, expected: 30 }));
    expect(error?.code).toBe(ErrorCode.SizeMismatch);
    expect(bytes.length).toBeLessThanOrEqual(10);
  });

  it('a body that ends early: a resumable interruption at the bytes handed over', async () => {
    const { bytes, error } = await drain(new BlobBodyStream(body(10, 5), { ...options, expected: 30 }));
    expect(error?.code).toBe(ErrorCode.BlobInterrupted);
    expect((error as BlobInterruptedError).offset).toBe(100 + bytes.length);
  });
});
