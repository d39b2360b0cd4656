import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Challenge, formatChallenges, parseChallenges, pickChallenge } from './index.ts';

function plain(challenges: Challenge[]): unknown {
  return challenges.map((challenge) => ({ ...challenge, params: { ...challenge.params } }));
}

describe('parseChallenges', () => {
  it('reads Docker Hub’s bearer challenge', () => {
    const header =
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"';
    expect(plain(parseChallenges(header))).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/alpine:pull',
        },
      },
    ]);
  });

  it('reads several challenges on one line and across lines', () => {
    const challenges = parseChallenges([
      'Basic realm="Registry Realm", Bearer realm="https://x/token",  error=insufficient_scope',
      'Negotiate abc=',
    ]);
    expect(plain(challenges)).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'https://x/token', error: 'insufficient_scope' } },
      { scheme: 'negotiate', params: {}, token68: 'abc=' },
    ]);
    expect(pickChallenge(challenges)?.scheme).toBe('bearer');
    expect(pickChallenge(challenges.slice(0, 1))?.scheme).toBe('basic');
    expect(pickChallenge(challenges.slice(2))).toBeUndefined();
  });

  it('unescapes quoted strings, lowercases names, tolerates spacing and commas', () => {
    const challenges = parseChallenges(' ,BEARER  Realm = "a \\"quoted\\" \\\\ realm" ,, Service=svc , ');
    expect(plain(challenges)).toEqual([
      { scheme: 'bearer', params: { realm: 'a "quoted" \\ realm', service: 'svc' } },
    ]);
  });

  it('keeps the scope of a challenge with several scopes intact', () => {
    const [challenge] = parseChallenges('Bearer realm="r",scope="repository:a:pull repository:b:pull,push"');
    expect(challenge?.params.scope).toBe('repository:a:pull repository:b:pull,push');
  });

  it('drops malformed tails instead of throwing', () => {
    expect(plain(parseChallenges('Bearer realm="unterminated'))).toEqual([{ scheme: 'bearer', params: {} }]);
    expect(plain(parseChallenges('"junk", Basic realm=x'))).toEqual([
      { scheme: 'basic', params: { realm: 'x' } },
    ]);
    expect(parseChallenges('')).toEqual([]);
    expect(parseChallenges(undefined)).toEqual([]);
    expect(plain(parseChallenges('Bearer a==b, realm="r"'))).toEqual([
      { scheme: 'bearer', params: { realm: 'r' } },
    ]);
  });
});

describe('parseChallenges properties', () => {
  const token = fc.stringMatching(/^[a-z][a-z0-9!#$%&'*+.^_`|~-]{0,10}$/);
  const value = fc.string({
    unit: fc.constantFrom(...' !"#$%&\'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~'.split('')),
    maxLength: 30,
  });
  const challenge = fc.record({
    scheme: token,
    params: fc.dictionary(token, value, { maxKeys: 4 }),
  });

  it('round-trips through formatChallenges', () => {
    fc.assert(
      fc.property(fc.array(challenge, { minLength: 1, maxLength: 4 }), (challenges) => {
        const parsed = parseChallenges(formatChallenges(challenges));
        expect(plain(parsed)).toEqual(
          challenges.map((entry) => ({ scheme: entry.scheme, params: { ...entry.params } })),
        );
      }),
      { numRuns: 1000 },
    );
  });

  it('never throws and always returns well-formed challenges', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom(...'Bb =",\\a1'.split('')), maxLength: 60 })),
        (input) => {
          const parsed = parseChallenges(input);
          for (const entry of parsed) {
            expect(entry.scheme).toMatch(/^[!#$%&'*+\-.^_`|~0-9a-z]+$/);
            for (const name of Object.keys(entry.params)) expect(name).toBe(name.toLowerCase());
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
