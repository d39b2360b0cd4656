import { ErrorCode, OciError } from '@ocipull/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidReferenceError, isLoopbackRegistry, parseReference, registryHostname } from './index.ts';

const HEX = '0123456789abcdef'.repeat(4);
const DIGEST = `sha256:${HEX}`;

function rejection(input: string): InvalidReferenceError {
  try {
    parseReference(input);
  } catch (error) {
    return error as InvalidReferenceError;
  }
  throw new Error(`parseReference accepted ${input}`);
}

describe('parseReference', () => {
  it.each([
    [
      'alpine',
      'docker.io',
      'library/alpine',
      'latest',
      undefined,
      'docker.io/library/alpine:latest',
      'alpine:latest',
    ],
    [
      'alpine:3.20',
      'docker.io',
      'library/alpine',
      '3.20',
      undefined,
      'docker.io/library/alpine:3.20',
      'alpine:3.20',
    ],
    [
      'library/alpine:3.20',
      'docker.io',
      'library/alpine',
      '3.20',
      undefined,
      'docker.io/library/alpine:3.20',
      'alpine:3.20',
    ],
    [
      'docker.io/alpine',
      'docker.io',
      'library/alpine',
      'latest',
      undefined,
      'docker.io/library/alpine:latest',
      'alpine:latest',
    ],
    [
      'index.docker.io/user/app',
      'docker.io',
      'user/app',
      'latest',
      undefined,
      'docker.io/user/app:latest',
      'user/app:latest',
    ],
    [
      'user/app',
      'docker.io',
      'user/app',
      'latest',
      undefined,
      'docker.io/user/app:latest',
      'user/app:latest',
    ],
    [
      `ghcr.io/o/r@${DIGEST}`,
      'ghcr.io',
      'o/r',
      undefined,
      DIGEST,
      `ghcr.io/o/r@${DIGEST}`,
      `ghcr.io/o/r@${DIGEST}`,
    ],
    [
      'localhost:5000/x',
      'localhost:5000',
      'x',
      'latest',
      undefined,
      'localhost:5000/x:latest',
      'localhost:5000/x:latest',
    ],
    ['localhost/x:1', 'localhost', 'x', '1', undefined, 'localhost/x:1', 'localhost/x:1'],
    [
      '127.0.0.1:5000/a/b/c:v1',
      '127.0.0.1:5000',
      'a/b/c',
      'v1',
      undefined,
      '127.0.0.1:5000/a/b/c:v1',
      '127.0.0.1:5000/a/b/c:v1',
    ],
    ['[::1]:5000/x:tag', '[::1]:5000', 'x', 'tag', undefined, '[::1]:5000/x:tag', '[::1]:5000/x:tag'],
    [
      `alpine:3.20@${DIGEST}`,
      'docker.io',
      'library/alpine',
      '3.20',
      DIGEST,
      `docker.io/library/alpine:3.20@${DIGEST}`,
      `alpine:3.20@${DIGEST}`,
    ],
    [
      'a.b-c/d__e---f/g.h',
      'a.b-c',
      'd__e---f/g.h',
      'latest',
      undefined,
      'a.b-c/d__e---f/g.h:latest',
      'a.b-c/d__e---f/g.h:latest',
    ],
    [
      'docker.io/a.b/c',
      'docker.io',
      'a.b/c',
      'latest',
      undefined,
      'docker.io/a.b/c:latest',
      'docker.io/a.b/c:latest',
    ],
    ['Registry/x', 'Registry', 'x', 'latest', undefined, 'Registry/x:latest', 'Registry/x:latest'],
  ])('%s', (input, registry, repository, tag, digest, full, familiar) => {
    const reference = parseReference(input);
    expect(reference.registry).toBe(registry);
    expect(reference.repository).toBe(repository);
    expect(reference.tag).toBe(tag);
    expect(reference.digest).toBe(digest);
    expect(reference.toString()).toBe(full);
    expect(String(reference)).toBe(full);
    expect(reference.familiar).toBe(familiar);
    expect(reference.name).toBe(`${registry}/${repository}`);
  });

  it('talks to registry-1.docker.io for docker.io and to the registry itself otherwise', () => {
    expect(parseReference('alpine').apiHost).toBe('registry-1.docker.io');
    expect(parseReference('ghcr.io/o/r').apiHost).toBe('ghcr.io');
    expect(parseReference('[::1]:5000/x').apiHost).toBe('[::1]:5000');
  });

  it('honours defaultRegistry and defaultTag', () => {
    const reference = parseReference('team/app', { defaultRegistry: 'registry.example', defaultTag: false });
    expect(reference.toString()).toBe('registry.example/team/app');
    expect(reference.tag).toBeUndefined();
    expect(parseReference('app', { defaultTag: 'stable' }).tag).toBe('stable');
    // The library/ prefix is Docker Hub's alone.
    expect(parseReference('app', { defaultRegistry: 'registry.example' }).repository).toBe('app');
  });

  it.each([
    ['', 'empty'],
    [' alpine', 'whitespace'],
    ['Alpine', 'must be lowercase'],
    ['docker.io/Library/alpine', 'must be lowercase'],
    ['alpine:', 'invalid tag'],
    ['alpine:-x', 'invalid tag'],
    [`alpine:${'a'.repeat(129)}`, 'invalid tag'],
    ['alpine@sha256:abc', 'malformed digest'],
    [`alpine@md5:${HEX.slice(0, 32)}`, 'sha256 (64) or sha512'],
    [`alpine@sha256:${HEX.toUpperCase()}`, 'lowercase hex'],
    ['a//b', 'empty path component'],
    ['a/b/', 'empty path component'],
    ['ghcr.io/', 'missing repository'],
    [':tag', 'missing repository'],
    ['a_-b', 'invalid path component'],
    ['-a', 'invalid path component'],
    ['host..com/x', 'invalid registry host'],
    ['-host.com/x', 'invalid registry host'],
    [HEX, 'ambiguous'],
    [`registry.example/${'a'.repeat(250)}`, 'longer than 255'],
  ])('rejects %j (%s)', (input, reason) => {
    const error = rejection(input);
    expect(error).toBeInstanceOf(InvalidReferenceError);
    expect(error.code).toBe(ErrorCode.InvalidReference);
    expect(error.reason).toContain(reason);
    expect(error.message).toContain(JSON.stringify(input.slice(0, 300)));
  });

  it('rejects non-strings with ERR_INVALID_REFERENCE', () => {
    expect(() => parseReference(42 as unknown as string)).toThrow(InvalidReferenceError);
    expect(() => parseReference(null as unknown as string)).toThrow(/invalid reference "\[null\]"/);
  });

  it('recognises loopback registries', () => {
    for (const host of [
      'localhost:5000',
      'localhost',
      '127.0.0.1:5000',
      '127.1.2.3',
      '[::1]:5000',
      'app.localhost',
    ]) {
      expect(isLoopbackRegistry(host), host).toBe(true);
    }
    for (const host of ['ghcr.io', '10.0.0.1:5000', '128.0.0.1', 'localhost.example.com', '[::2]:5000']) {
      expect(isLoopbackRegistry(host), host).toBe(false);
    }
    expect(registryHostname('[::1]:5000')).toBe('::1');
    expect(registryHostname('ghcr.io:443')).toBe('ghcr.io');
  });
});

describe('parseReference properties', () => {
  const component = fc
    .stringMatching(/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/, { size: 'small' })
    .filter((value) => value.length <= 30);
  const domainPart = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?$/);
  const host = fc.oneof(
    fc.tuple(domainPart, domainPart).map(([a, b]) => `${a}.${b}`),
    fc.constant('localhost'),
    fc.integer({ min: 1, max: 65535 }).map((port) => `127.0.0.1:${port}`),
    fc.integer({ min: 1, max: 65535 }).map((port) => `[::1]:${port}`),
    fc.constant('docker.io'),
  );
  const tag = fc.stringMatching(/^[\w][\w.-]{0,20}$/);
  const digest = fc.stringMatching(/^[a-f0-9]{64}$/).map((hex) => `sha256:${hex}`);

  it('round-trips: toString() parses back to the same reference', () => {
    fc.assert(
      fc.property(
        fc.option(host, { nil: undefined }),
        fc.array(component, { minLength: 1, maxLength: 4 }),
        fc.option(tag, { nil: undefined }),
        fc.option(digest, { nil: undefined }),
        (registry, path, tagValue, digestValue) => {
          const input = `${registry ? `${registry}/` : ''}${path.join('/')}${tagValue ? `:${tagValue}` : ''}${digestValue ? `@${digestValue}` : ''}`;
          if (input.length > 255 || /^[a-f0-9]{64}$/.test(input)) return;
          // Without a host, a first component with a dot is a host (Docker's rule), not a path.
          if (!registry && path.length > 1 && path[0]!.includes('.')) return;
          const first = parseReference(input);
          const second = parseReference(first.toString());
          expect(second.toString()).toBe(first.toString());
          expect({ ...second, toString: undefined }).toEqual({ ...first, toString: undefined });
          expect(parseReference(first.familiar).toString()).toBe(first.toString());
          if (tagValue) expect(first.tag).toBe(tagValue);
          if (digestValue) expect(first.digest).toBe(digestValue);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('never throws anything but an OciError', () => {
    const alphabet = fc.constantFrom(...'aZ09.-_/:@[]%sha256 \u00e9'.split(''));
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: alphabet, maxLength: 80 }), fc.string({ unit: 'grapheme' })),
        (input) => {
          try {
            parseReference(input);
          } catch (error) {
            expect(OciError.isInstance(error)).toBe(true);
            expect((error as OciError).code).toBe(ErrorCode.InvalidReference);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
