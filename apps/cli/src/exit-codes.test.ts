import { ErrorCode, OciError } from '@ocipull/core';
import { describe, expect, it } from 'vitest';
import { ExitCode, exitCodeFor, hintFor } from './exit-codes.ts';

describe('hints', () => {
  it('a TLS failure points at the CLI flags that fix it; other network errors at the network', () => {
    const tls = new OciError(
      ErrorCode.Network,
      'r.example: TLS failed (self-signed certificate); trust its CA (registry option ca) or, for a test registry, skip verification (skipVerify)',
    );
    expect(hintFor(tls)).toContain('--ca-file FILE');
    expect(hintFor(tls)).toContain('--tls-skip-verify');
    expect(exitCodeFor(tls)).toBe(ExitCode.Network);
    expect(hintFor(new OciError(ErrorCode.Network, 'r.example: ECONNREFUSED'))).toContain(
      'check the network',
    );
  });

  it('unauthorized: run login, except when login itself was refused', () => {
    const refused = new OciError(ErrorCode.Unauthorized, 'authentication required');
    expect(hintFor(refused, { registry: 'r.example' })).toContain('ocipull login r.example');
    expect(hintFor(refused, { registry: 'r.example', command: 'login' })).toBe(
      'check the username and password (or token) for this registry',
    );
    // Docker Hub's answer for a repository that does not exist, to credentials it accepted.
    const noSuchRepository = new OciError(
      ErrorCode.Unauthorized,
      'r.example answered 401 for manifest nosuch:v1: the token server accepted the configured credentials, but the token gives no access to nosuch: the repository may not exist, or these credentials may not pull from it',
    );
    expect(hintFor(noSuchRepository, { registry: 'r.example' })).toBe(
      'check the repository name; the credentials were accepted, but give no access to it',
    );
  });

  it('denied: blames the credentials only when the request carried some', () => {
    const withCredentials = new OciError(ErrorCode.Denied, 'r.example answered 403 for manifest a:b');
    expect(hintFor(withCredentials)).toContain('with these credentials');
    const anonymous = new OciError(
      ErrorCode.Denied,
      'r.example answered 403 for manifest a:b; the request carried no credentials: none found for r.example',
    );
    expect(hintFor(anonymous, { registry: 'r.example' })).toBe(
      'check the repository name; if it is private, run `ocipull login r.example`',
    );
  });
});
