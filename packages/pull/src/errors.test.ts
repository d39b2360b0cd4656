import { AbortedError, ErrorCode, isOciError, type OciError } from '@ocipull/core';
import { DigestMismatchError, InvalidDigestError, SizeMismatchError } from '@ocipull/digest';
import { DiffIdMismatchError, LimitExceededError, UnsafePathError } from '@ocipull/layer-extract';
import { LockCompromisedError, LockTimeoutError } from '@ocipull/lock';
import {
  BlobInterruptedError,
  InvalidManifestError,
  InvalidReferenceError,
  PlatformNotFoundError,
  RegistryError,
} from '@ocipull/registry-client';
import { describe, expect, it } from 'vitest';

const a = `sha256:${'a'.repeat(64)}`;
const b = `sha256:${'b'.repeat(64)}`;

/**
 * Every error class of every package, in one table (house style 9): its name, its stable code, that
 * it is an `OciError` by brand, and the facts its message must carry so a user can act on one line.
 */
const table: Array<{ error: OciError; name: string; code: string; says: string[] }> = [
  {
    error: new AbortedError(new Error('^C')),
    name: 'AbortedError',
    code: ErrorCode.Aborted,
    says: ['aborted'],
  },
  {
    error: new InvalidDigestError('sha256:XYZ', 'not hex'),
    name: 'InvalidDigestError',
    code: ErrorCode.InvalidDigest,
    says: ['sha256:XYZ', 'not hex'],
  },
  {
    error: new DigestMismatchError(a, b, 'layer'),
    name: 'DigestMismatchError',
    code: ErrorCode.DigestMismatch,
    says: [a, b, 'layer'],
  },
  {
    error: new SizeMismatchError(10, 12, 'blob'),
    name: 'SizeMismatchError',
    code: ErrorCode.SizeMismatch,
    says: ['10', '12', 'blob'],
  },
  {
    error: new LockTimeoutError('/cache/locks/x', 1500),
    name: 'LockTimeoutError',
    code: ErrorCode.LockTimeout,
    says: ['/cache/locks/x'],
  },
  {
    error: new LockCompromisedError('/cache/locks/y'),
    name: 'LockCompromisedError',
    code: ErrorCode.LockCompromised,
    says: ['/cache/locks/y'],
  },
  {
    error: new RegistryError(ErrorCode.ManifestUnknown, 'manifest unknown: library/alpine:nope', {
      status: 404,
    }),
    name: 'RegistryError',
    code: ErrorCode.ManifestUnknown,
    says: ['library/alpine:nope'],
  },
  {
    error: new InvalidReferenceError('UPPER/case', 'repository names are lower case'),
    name: 'InvalidReferenceError',
    code: ErrorCode.InvalidReference,
    says: ['UPPER/case', 'lower case'],
  },
  {
    error: new BlobInterruptedError(a, 4096, 'connection reset'),
    name: 'BlobInterruptedError',
    code: ErrorCode.BlobInterrupted,
    says: [a, '4096'],
  },
  {
    error: new PlatformNotFoundError('linux/s390x', ['linux/amd64', 'linux/arm64/v8']),
    name: 'PlatformNotFoundError',
    code: ErrorCode.PlatformNotFound,
    says: ['linux/s390x', 'linux/amd64', 'linux/arm64/v8'],
  },
  {
    error: new InvalidManifestError('manifest has no layers array'),
    name: 'InvalidManifestError',
    code: ErrorCode.InvalidManifest,
    says: ['no layers'],
  },
  {
    error: new UnsafePathError('../etc/passwd', 'escapes the root'),
    name: 'UnsafePathError',
    code: ErrorCode.UnsafePath,
    says: ['../etc/passwd', 'escapes the root'],
  },
  {
    error: new DiffIdMismatchError(a, b),
    name: 'DiffIdMismatchError',
    code: ErrorCode.DiffIdMismatch,
    says: [a, b],
  },
  {
    error: new LimitExceededError('maxEntries', 50_001, 'entry 50001'),
    name: 'LimitExceededError',
    code: ErrorCode.LimitExceeded,
    says: ['maxEntries'],
  },
];

describe('error classes', () => {
  for (const { error, name, code, says } of table) {
    it(`${name} has code ${code} and says what happened`, () => {
      expect(error).toBeInstanceOf(Error);
      expect(error.name).toBe(name);
      expect(error.code).toBe(code);
      expect(isOciError(error, code as OciError['code'])).toBe(true);
      expect(Object.values(ErrorCode)).toContain(error.code);
      for (const fact of says) expect(error.message).toContain(fact);
    });
  }
});
