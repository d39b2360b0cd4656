import { ErrorCode, OciError } from '@ocipull/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { digestAlgorithm, digestEncoded, InvalidDigestError, isDigest, parseDigest } from './index.ts';

const HEX64 = 'a'.repeat(32) + '0123456789abcdef'.repeat(2);
const HEX128 = '0123456789abcdef'.repeat(8);
const SHA256 = `sha256:${HEX64}`;
const SHA512 = `sha512:${HEX128}`;

function rejection(value: unknown): InvalidDigestError {
  try {
    parseDigest(value);
  } catch (error) {
    return error as InvalidDigestError;
  }
  throw new Error(`parseDigest accepted ${String(value)}`);
}

describe('parseDigest', () => {
  it.each([
    ['sha256', SHA256],
    ['sha512', SHA512],
    ['sha256 of the empty string', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
  ])('accepts %s and returns the same string', (_name, value) => {
    expect(parseDigest(value)).toBe(value);
    expect(isDigest(value)).toBe(true);
  });

  it.each([
    ['uppercase hex', `sha256:${HEX64.toUpperCase()}`, 'lowercase hex'],
    ['one uppercase letter', `sha256:${HEX64.slice(0, 63)}A`, 'lowercase hex'],
    ['63 hex characters', `sha256:${HEX64.slice(1)}`, '64 lowercase hex'],
    ['65 hex characters', `sha256:${HEX64}0`, '64 lowercase hex'],
    ['a sha256-length sha512', `sha512:${HEX64}`, '128 lowercase hex'],
    ['129 hex characters', `sha512:${HEX128}f`, '128 lowercase hex'],
    ['non-hex letters', `sha256:${'g'.repeat(64)}`, '64 lowercase hex'],
    ['an unknown algorithm', `md5:${'a'.repeat(32)}`, 'unsupported algorithm "md5"'],
    ['a registered-looking but unsupported algorithm', `blake3:${HEX64}`, 'unsupported algorithm "blake3"'],
    ['an uppercase algorithm', `SHA256:${HEX64}`, 'algorithm:encoded'],
    ['the empty string', '', 'empty'],
    ['no colon', HEX64, 'algorithm:encoded'],
    ['no algorithm', `:${HEX64}`, 'algorithm:encoded'],
    ['no encoded part', 'sha256:', 'algorithm:encoded'],
    ['two colons', `sha256:sha256:${HEX64}`, 'algorithm:encoded'],
    ['leading whitespace', ` ${SHA256}`, 'algorithm:encoded'],
    ['trailing whitespace', `${SHA256} `, 'algorithm:encoded'],
    ['a trailing newline', `${SHA256}\n`, 'algorithm:encoded'],
    ['inner whitespace', `sha256: ${HEX64.slice(1)}`, 'algorithm:encoded'],
    ['a tab', `sha256:\t${HEX64.slice(1)}`, 'algorithm:encoded'],
  ])('rejects %s with ERR_INVALID_DIGEST naming the input', (_name, value, reason) => {
    const error = rejection(value);
    expect(error).toBeInstanceOf(InvalidDigestError);
    expect(OciError.isInstance(error)).toBe(true);
    expect(error.code).toBe(ErrorCode.InvalidDigest);
    expect(error.name).toBe('InvalidDigestError');
    expect(error.input).toBe(value);
    expect(error.message).toContain(JSON.stringify(value));
    expect(error.message).toContain(reason);
    expect(isDigest(value)).toBe(false);
  });

  it.each([
    ['undefined', undefined, 'undefined'],
    ['null', null, 'null'],
    ['a number', 42, '42'],
    ['a symbol', Symbol('x'), 'Symbol(x)'],
    ['an object', { digest: SHA256 }, '[object]'],
    ['an array', [SHA256], '[array]'],
    ['a null-prototype object', Object.create(null), '[object]'],
    ['a String object', new String(SHA256), '[object]'],
  ])('rejects %s as not a string', (_name, value, shown) => {
    const error = rejection(value);
    expect(error.code).toBe(ErrorCode.InvalidDigest);
    expect(error.input).toBe(shown);
    expect(error.message).toContain('not a string');
    expect(isDigest(value)).toBe(false);
  });

  it('never calls into a hostile object to describe it', () => {
    const hostile = {
      toString() {
        throw new Error('boom');
      },
    };
    expect(rejection(hostile).code).toBe(ErrorCode.InvalidDigest);
  });

  it('truncates huge inputs in the error to 200 characters', () => {
    const error = rejection(`sha256:${'a'.repeat(100_000)}`);
    expect(error.input).toHaveLength(200);
    expect(error.message.length).toBeLessThan(400);
  });

  it('splits a digest into algorithm and encoded part', () => {
    expect(digestAlgorithm(parseDigest(SHA256))).toBe('sha256');
    expect(digestEncoded(parseDigest(SHA256))).toBe(HEX64);
    expect(digestAlgorithm(parseDigest(SHA512))).toBe('sha512');
    expect(digestEncoded(parseDigest(SHA512))).toBe(HEX128);
  });
});

describe('parseDigest properties', () => {
  const hex = (length: number) =>
    fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: length, maxLength: length });
  const validDigest = fc.oneof(
    hex(64).map((encoded) => `sha256:${encoded}`),
    hex(128).map((encoded) => `sha512:${encoded}`),
  );
  /** Strings near the valid shape: prefixes, mutations and stray characters around real digests. */
  const nearDigest = fc.oneof(
    fc.tuple(validDigest, fc.nat(140)).map(([digest, cut]) => digest.slice(0, cut)),
    fc
      .tuple(validDigest, fc.nat(140), fc.string({ minLength: 1, maxLength: 2, unit: 'binary' }))
      .map(([digest, at, insert]) => digest.slice(0, at) + insert + digest.slice(at)),
    fc
      .tuple(fc.constantFrom('sha256', 'sha512', 'sha384', 'SHA256', ''), fc.string())
      .map(([a, e]) => `${a}:${e}`),
  );

  it('throws nothing but OciError ERR_INVALID_DIGEST, whatever the input', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.anything({ withNullPrototype: true, withBoxedValues: true }), fc.string(), nearDigest),
        (value) => {
          try {
            parseDigest(value);
          } catch (error) {
            return OciError.isInstance(error) && error.code === ErrorCode.InvalidDigest;
          }
          return true;
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('agrees with isDigest on every input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.anything(), nearDigest, validDigest), (value) => {
        let parsed = true;
        try {
          parseDigest(value);
        } catch {
          parsed = false;
        }
        return parsed === isDigest(value);
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips every valid digest unchanged, and through its parts', () => {
    fc.assert(
      fc.property(validDigest, (value) => {
        const digest = parseDigest(value);
        return digest === value && `${digestAlgorithm(digest)}:${digestEncoded(digest)}` === value;
      }),
    );
  });
});
