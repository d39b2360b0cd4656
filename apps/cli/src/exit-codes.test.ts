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
  });
});
