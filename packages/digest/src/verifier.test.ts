import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode, type OciError } from '@ocipull/core';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createHasher,
  createVerifier,
  createVerifyStream,
  type Digest,
  DigestMismatchError,
  resumeVerifier,
  SizeMismatchError,
  Verifier,
  VerifyStream,
  verifyBytes,
} from './index.ts';

const sha256 = (bytes: Uint8Array) => `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
const sha512 = (bytes: Uint8Array) => `sha512:${createHash('sha512').update(bytes).digest('hex')}` as Digest;

const directory = mkdtempSync(join(tmpdir(), 'ocipull-digest-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

function caught(action: () => unknown): OciError {
  try {
    action();
  } catch (error) {
    return error as OciError;
  }
  throw new Error('expected a throw');
}

async function rejected(promise: Promise<unknown>): Promise<OciError> {
  try {
    await promise;
  } catch (error) {
    return error as OciError;
  }
  throw new Error('expected a rejection');
}

/** A sink that keeps everything written to it. */
function collector(): { sink: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return { sink, bytes: () => Buffer.concat(chunks) };
}

function chunked(bytes: Buffer, size: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < bytes.length; offset += size)
    chunks.push(bytes.subarray(offset, offset + size));
  return chunks;
}

describe('Verifier', () => {
  const content = randomBytes(10_000);

  it('accepts the right bytes in any chunking and returns the digest', () => {
    for (const size of [1, 7, 4096, 10_000]) {
      const verifier = createVerifier({ digest: sha256(content), size: content.length });
      for (const chunk of chunked(content, size)) verifier.update(chunk);
      expect(verifier.bytes).toBe(content.length);
      expect(verifier.finish()).toBe(sha256(content));
    }
  });

  it('verifies sha512 digests with a sha512 hash', () => {
    expect(verifyBytes(content, { digest: sha512(content), size: content.length })).toBe(sha512(content));
  });

  it('works without a declared size', () => {
    expect(verifyBytes(content, { digest: sha256(content) })).toBe(sha256(content));
  });

  it('fails a digest mismatch with expected and actual', () => {
    const other = Buffer.from(content);
    other[5000] = (other[5000]! + 1) % 256;
    const error = caught(() =>
      verifyBytes(other, { digest: sha256(content), size: content.length, label: 'layer 3' }),
    );
    expect(error).toBeInstanceOf(DigestMismatchError);
    expect(error.code).toBe(ErrorCode.DigestMismatch);
    expect(error).toMatchObject({ expected: sha256(content), actual: sha256(other) });
    expect(error.message).toBe(`layer 3 digest mismatch: expected ${sha256(content)}, got ${sha256(other)}`);
  });

  it('fails short content with ERR_SIZE_MISMATCH at finish', () => {
    const verifier = createVerifier({ digest: sha256(content), size: content.length });
    verifier.update(content.subarray(0, 9_999));
    const error = caught(() => verifier.finish());
    expect(error).toBeInstanceOf(SizeMismatchError);
    expect(error).toMatchObject({ code: ErrorCode.SizeMismatch, expected: 10_000, actual: 9_999 });
    expect(error.message).toContain('fewer than declared');
  });

  it('checks size before digest, so a truncated body reports the size', () => {
    const error = caught(() =>
      verifyBytes(content.subarray(0, 10), { digest: sha256(content), size: 10_000 }),
    );
    expect(error.code).toBe(ErrorCode.SizeMismatch);
  });

  it('throws on the very update that overflows the declared size', () => {
    const verifier = createVerifier({ digest: sha256(content), size: 4 });
    verifier.update(content.subarray(0, 3));
    verifier.update(content.subarray(3, 4));
    const error = caught(() => verifier.update(content.subarray(4, 5)));
    expect(error).toMatchObject({ code: ErrorCode.SizeMismatch, expected: 4, actual: 5 });
    expect(error.message).toContain('at least 5');
    expect(verifier.bytes).toBe(4);
  });

  it('rejects an invalid expected digest and invalid sizes', () => {
    expect(caught(() => createVerifier({ digest: 'sha256:nope' })).code).toBe(ErrorCode.InvalidDigest);
    for (const size of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(caught(() => createVerifier({ digest: sha256(content), size })).code).toBe(
        ErrorCode.InvalidArgument,
      );
    }
  });

  it('refuses a hasher of another algorithm', () => {
    const error = caught(() => new Verifier({ digest: sha512(content) }, createHasher('sha256')));
    expect(error.code).toBe(ErrorCode.InvalidArgument);
  });

  it('continues from a hasher that has already seen a prefix', () => {
    const hasher = createHasher().update(content.subarray(0, 1234));
    const verifier = new Verifier({ digest: sha256(content), size: content.length }, hasher);
    expect(verifier.bytes).toBe(1234);
    verifier.update(content.subarray(1234));
    expect(verifier.finish()).toBe(sha256(content));
  });
});

describe('Verifier properties', () => {
  const contentAndCuts = fc
    .uint8Array({ maxLength: 2048 })
    .chain((bytes) => fc.tuple(fc.constant(bytes), fc.uniqueArray(fc.nat(bytes.length), { maxLength: 8 })));

  function feed(verifier: Verifier, bytes: Uint8Array, cuts: number[]): void {
    const points = [0, ...[...cuts].sort((a, b) => a - b), bytes.length];
    for (let index = 1; index < points.length; index++)
      verifier.update(bytes.subarray(points[index - 1], points[index]));
  }

  it('accepts any content in any chunking', () => {
    fc.assert(
      fc.property(contentAndCuts, ([bytes, cuts]) => {
        const verifier = createVerifier({ digest: sha256(bytes), size: bytes.length });
        feed(verifier, bytes, cuts);
        return verifier.finish() === sha256(bytes);
      }),
    );
  });

  it('fails any one-byte change with ERR_DIGEST_MISMATCH and any length change with ERR_SIZE_MISMATCH', () => {
    fc.assert(
      fc.property(contentAndCuts, fc.nat(), fc.integer({ min: 1, max: 255 }), ([bytes, cuts], at, delta) => {
        fc.pre(bytes.length > 0);
        const changed = Uint8Array.from(bytes);
        changed[at % bytes.length] = (changed[at % bytes.length]! + delta) % 256;
        const verifier = createVerifier({ digest: sha256(bytes), size: bytes.length });
        feed(verifier, changed, cuts);
        expect(caught(() => verifier.finish()).code).toBe(ErrorCode.DigestMismatch);

        const shorter = createVerifier({ digest: sha256(bytes), size: bytes.length });
        feed(shorter, bytes.subarray(0, bytes.length - 1), []);
        expect(caught(() => shorter.finish()).code).toBe(ErrorCode.SizeMismatch);

        const longer = createVerifier({ digest: sha256(bytes), size: bytes.length });
        feed(longer, bytes, cuts);
        expect(caught(() => longer.update(Uint8Array.of(0))).code).toBe(ErrorCode.SizeMismatch);
      }),
    );
  });
});

describe('VerifyStream', () => {
  const content = randomBytes(256 * 1024);

  it('passes the bytes through unchanged when they verify', async () => {
    const { sink, bytes } = collector();
    await pipeline(
      Readable.from(chunked(content, 10_000)),
      createVerifyStream({ digest: sha256(content), size: content.length }),
      sink,
    );
    expect(bytes().equals(content)).toBe(true);
  });

  it('errors the pipeline at the end on a digest mismatch', async () => {
    const tampered = Buffer.from(content);
    tampered[0] = tampered[0]! ^ 1;
    const { sink } = collector();
    const error = await rejected(
      pipeline(
        Readable.from(chunked(tampered, 10_000)),
        createVerifyStream({ digest: sha256(content) }),
        sink,
      ),
    );
    expect(error).toBeInstanceOf(DigestMismatchError);
    expect(error).toMatchObject({ expected: sha256(content), actual: sha256(tampered) });
  });

  it('errors the pipeline at the end when bytes are missing', async () => {
    const { sink } = collector();
    const error = await rejected(
      pipeline(
        Readable.from(chunked(content.subarray(0, 1000), 100)),
        createVerifyStream({ digest: sha256(content), size: content.length }),
        sink,
      ),
    );
    expect(error).toMatchObject({ code: ErrorCode.SizeMismatch, expected: content.length, actual: 1000 });
  });

  it('fails on the first byte past the declared size while the producer is still writing', async () => {
    const declared = 64 * 1024;
    let produced = 0;
    let producerFinished = false;
    // An endless producer: if the verifier waited for end of stream, this test would never finish.
    async function* endless() {
      try {
        while (true) {
          const chunk = randomBytes(1024);
          produced += chunk.length;
          yield chunk;
        }
      } finally {
        producerFinished = true;
      }
    }
    const verify = createVerifyStream({ digest: sha256(content), size: declared });
    const errored = new Promise<Error>((resolve) => verify.once('error', resolve));
    const { sink, bytes } = collector();
    const error = await rejected(pipeline(endless, verify, sink));
    expect(error).toMatchObject({
      code: ErrorCode.SizeMismatch,
      expected: declared,
      actual: declared + 1024,
    });
    expect(await errored).toBe(error);
    // The producer was stopped by the error (its finally ran because the pipeline tore it down),
    // having produced no more than the declared size plus the stream buffers in between.
    expect(producerFinished).toBe(true);
    expect(produced).toBeLessThan(declared + 256 * 1024);
    expect(bytes().length).toBeLessThanOrEqual(declared);
  });

  it('errors on overflow before the producer ends, with a manually driven source', async () => {
    const source = new Readable({ read() {} });
    const verify = createVerifyStream({ digest: sha256(content), size: 10 });
    const { sink } = collector();
    const done = rejected(pipeline(source, verify, sink));
    source.push(Buffer.alloc(10));
    source.push(Buffer.alloc(1));
    const error = await done;
    expect(error).toMatchObject({ code: ErrorCode.SizeMismatch, expected: 10, actual: 11 });
    // push(null) was never called: the stream failed without seeing its end.
    expect(source.readableEnded).toBe(false);
    expect(source.destroyed).toBe(true);
  });

  it('wraps an existing (resumed) verifier', () => {
    const verifier = createVerifier({ digest: sha256(content) });
    const stream = createVerifyStream(verifier);
    expect(stream).toBeInstanceOf(VerifyStream);
    expect(stream.verifier).toBe(verifier);
  });
});

describe('resumeVerifier', () => {
  const content = randomBytes(3 * 1024 * 1024 + 17);
  const digest = sha256(content);
  const part = join(directory, 'blob.part');
  const complete = join(directory, 'blob.complete');
  writeFileSync(complete, content);

  it.each([
    0,
    1,
    1000,
    1024 * 1024,
    1024 * 1024 + 1,
    2 * 1024 * 1024 + 5,
    content.length - 1,
    content.length,
  ])('resumes at offset %i and reaches the same digest', async (offset) => {
    writeFileSync(part, content.subarray(0, offset));
    const verifier = await resumeVerifier({ digest, size: content.length, path: part });
    expect(verifier.bytes).toBe(offset);
    const { sink, bytes } = collector();
    await pipeline(
      Readable.from(chunked(content.subarray(offset), 65_536)),
      createVerifyStream(verifier),
      sink,
    );
    expect(bytes().length).toBe(content.length - offset);
    expect(verifier.finish()).toBe(digest);
  });

  it('counts only the first `length` bytes of a longer file', async () => {
    const verifier = await resumeVerifier({ digest, size: content.length, path: complete, length: 5000 });
    expect(verifier.bytes).toBe(5000);
    verifier.update(content.subarray(5000));
    expect(verifier.finish()).toBe(digest);
  });

  it('fails with ERR_SIZE_MISMATCH when the file is shorter than `length`', async () => {
    writeFileSync(part, content.subarray(0, 100));
    const error = await rejected(resumeVerifier({ digest, path: part, length: 200 }));
    expect(error).toMatchObject({ code: ErrorCode.SizeMismatch, expected: 200, actual: 100 });
  });

  it('fails with ERR_SIZE_MISMATCH when the prefix already exceeds the declared size', async () => {
    const error = await rejected(resumeVerifier({ digest, size: 10, path: complete, length: 11 }));
    expect(error).toMatchObject({ code: ErrorCode.SizeMismatch, expected: 10, actual: 11 });
  });

  it('detects a corrupted prefix at finish', async () => {
    const corrupted = Buffer.from(content.subarray(0, 1000));
    corrupted[10] = corrupted[10]! ^ 0xff;
    writeFileSync(part, corrupted);
    const verifier = await resumeVerifier({ digest, size: content.length, path: part });
    verifier.update(content.subarray(1000));
    expect(caught(() => verifier.finish()).code).toBe(ErrorCode.DigestMismatch);
  });

  it('honours an AbortSignal with ERR_ABORTED', async () => {
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    const error = await rejected(resumeVerifier({ digest, path: complete, signal: controller.signal }));
    expect(error.code).toBe(ErrorCode.Aborted);
  });

  it('rejects a negative length', async () => {
    const error = await rejected(resumeVerifier({ digest, path: complete, length: -1 }));
    expect(error.code).toBe(ErrorCode.InvalidArgument);
  });
});
