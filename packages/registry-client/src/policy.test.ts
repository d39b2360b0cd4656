import { ErrorCode, MediaType, OciError } from '@ocipull/core';
import { describe, expect, it } from 'vitest';
import {
  BlobInterruptedError,
  backoffDelay,
  DEFAULT_RETRY_POLICY,
  errorFromResponse,
  errorFromTransport,
  InvalidManifestError,
  isRetryableStatus,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_BYTES,
  parseErrorBody,
  parseManifest,
  parseRetryAfter,
  RegistryError,
} from './index.ts';

const DIGEST = `sha256:${'ab'.repeat(32)}`;
const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

describe('retry policy', () => {
  it('backs off exponentially with equal jitter up to the ceiling', () => {
    const policy = { ...DEFAULT_RETRY_POLICY, baseMs: 100, maxMs: 1000 };
    expect(backoffDelay(0, policy, () => 0)).toBe(50);
    expect(backoffDelay(0, policy, () => 1)).toBe(100);
    expect(backoffDelay(2, policy, () => 0)).toBe(200);
    expect(backoffDelay(2, policy, () => 1)).toBe(400);
    expect(backoffDelay(10, policy, () => 1)).toBe(1000);
    expect(backoffDelay(1000, policy, () => 0.5)).toBe(750);
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    const now = Date.parse('Sat, 28 Nov 2026 12:00:00 GMT');
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter(['0'], now)).toBe(0);
    expect(parseRetryAfter('Sat, 28 Nov 2026 12:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-1', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it('retries 408, 429 and 5xx except 501 and 505', () => {
    for (const status of [408, 429, 500, 502, 503, 504])
      expect(isRetryableStatus(status), String(status)).toBe(true);
    for (const status of [400, 401, 403, 404, 416, 501, 505])
      expect(isRetryableStatus(status), String(status)).toBe(false);
  });
});

describe('error mapping', () => {
  const context = { registry: 'r.example', what: 'manifest a:b', kind: 'manifest' as const };

  it.each([
    [404, 'MANIFEST_UNKNOWN', ErrorCode.ManifestUnknown, false],
    [404, 'BLOB_UNKNOWN', ErrorCode.BlobUnknown, false],
    [404, 'NAME_UNKNOWN', ErrorCode.NameUnknown, false],
    [401, 'UNAUTHORIZED', ErrorCode.Unauthorized, false],
    [403, 'DENIED', ErrorCode.Denied, false],
    [429, 'TOOMANYREQUESTS', ErrorCode.TooManyRequests, true],
    [503, 'UNAVAILABLE', ErrorCode.Registry, true],
    [500, 'UNKNOWN', ErrorCode.Registry, true],
    [400, 'MANIFEST_INVALID', ErrorCode.Registry, false],
  ])('%i %s → %s', (status, code, expected, retryable) => {
    const errors = parseErrorBody(
      JSON.stringify({ errors: [{ code, message: 'said so', detail: { x: 1 } }] }),
    );
    const error = errorFromResponse(status, errors, context);
    expect(error).toBeInstanceOf(RegistryError);
    expect(error.code).toBe(expected);
    expect(error.status).toBe(status);
    expect(error.retryable).toBe(retryable);
    expect(error.errors).toEqual([{ code, message: 'said so', detail: { x: 1 } }]);
    expect(error.message).toContain(`${code}: said so`);
    expect(error.message).toContain('r.example answered');
  });

  it('maps bare statuses by what was asked for', () => {
    expect(errorFromResponse(404, [], context).code).toBe(ErrorCode.ManifestUnknown);
    expect(errorFromResponse(404, [], { ...context, kind: 'blob' }).code).toBe(ErrorCode.BlobUnknown);
    expect(errorFromResponse(401, [], context).code).toBe(ErrorCode.Unauthorized);
    expect(errorFromResponse(403, [], context).code).toBe(ErrorCode.Denied);
    expect(errorFromResponse(429, [], { ...context, retryAfterMs: 2000 }).retryAfterMs).toBe(2000);
  });

  it('tolerates non-JSON and odd error bodies', () => {
    expect(parseErrorBody('<html>bad gateway</html>')).toEqual([]);
    expect(parseErrorBody('')).toEqual([]);
    expect(parseErrorBody('{"errors":[null,{"message":"m"}]}')).toEqual([{ code: 'UNKNOWN', message: 'm' }]);
  });

  it('maps transport failures to timeouts, network errors and aborts', () => {
    const headers = errorFromTransport(
      Object.assign(new Error('x'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
      'r',
    );
    expect([headers.code, headers.retryable, headers.message]).toEqual([
      ErrorCode.Timeout,
      true,
      'r: headers timeout',
    ]);
    const reset = errorFromTransport(
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
      'r',
    );
    expect([reset.code, reset.retryable]).toEqual([ErrorCode.Network, true]);
    const tls = errorFromTransport(
      Object.assign(new Error('self-signed'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }),
      'r',
    );
    expect([tls.code, tls.retryable]).toEqual([ErrorCode.Network, false]);
    expect(tls.message).toContain('trust its CA (registry option ca)');
    const controller = new AbortController();
    controller.abort();
    expect(errorFromTransport(new Error('x'), 'r', controller.signal).code).toBe(ErrorCode.Aborted);
    const own = new OciError(ErrorCode.Io, 'mine');
    expect(errorFromTransport(own, 'r')).toBe(own);
  });

  it('carries the resume offset of an interrupted blob', () => {
    const error = new BlobInterruptedError(DIGEST, 1234, 'connection closed');
    expect([error.code, error.offset, error.retryable, error.digest]).toEqual([
      ErrorCode.BlobInterrupted,
      1234,
      true,
      DIGEST,
    ]);
  });
});

describe('parseManifest', () => {
  const descriptor = { mediaType: MediaType.OciLayerGzip, digest: DIGEST, size: 3 };
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: descriptor,
    layers: [descriptor],
  };

  it('asks for OCI and Docker v2 manifests and indexes, never schema 1', () => {
    expect(MANIFEST_ACCEPT).toEqual([
      MediaType.OciIndex,
      MediaType.DockerManifestList,
      MediaType.OciManifest,
      MediaType.DockerManifest,
    ]);
  });

  it('parses manifests and indexes, inferring the media type when it is missing', () => {
    expect(parseManifest(encode(manifest)).kind).toBe('manifest');
    const { mediaType: _omit, ...bare } = manifest;
    expect(parseManifest(encode(bare), 'application/json').mediaType).toBe(MediaType.OciManifest);
    expect(parseManifest(encode(bare), `${MediaType.DockerManifest}; charset=utf-8`).mediaType).toBe(
      MediaType.DockerManifest,
    );
    const index = parseManifest(encode({ schemaVersion: 2, manifests: [descriptor] }));
    expect([index.kind, index.mediaType]).toEqual(['index', MediaType.OciIndex]);
  });

  it.each([
    [
      'schema 1 by content type',
      encode({ schemaVersion: 1 }),
      MediaType.DockerSchema1Signed,
      /schema 1 is not supported/,
    ],
    [
      'schema 1 by body',
      encode({ schemaVersion: 1, fsLayers: [] }),
      'application/json',
      /schema 1 is not supported/,
    ],
    ['not JSON', new TextEncoder().encode('nope'), undefined, /not valid UTF-8 JSON/],
    ['an array', encode([]), undefined, /not a JSON object/],
    ['schemaVersion 3', encode({ ...manifest, schemaVersion: 3 }), undefined, /schemaVersion 3/],
    [
      'a bad layer digest',
      encode({ ...manifest, layers: [{ ...descriptor, digest: 'sha256:zz' }] }),
      undefined,
      /layers\[0\]/,
    ],
    [
      'a negative size',
      encode({ ...manifest, config: { ...descriptor, size: -1 } }),
      undefined,
      /config has an invalid size/,
    ],
    [
      'layer urls that are not an array of strings',
      encode({ ...manifest, layers: [{ ...descriptor, urls: 'http://127.0.0.1/x' }] }),
      undefined,
      /layers\[0\] has invalid urls/,
    ],
    ['no layers', encode({ ...manifest, layers: undefined }), undefined, /no layers/],
    ['an unknown shape', encode({ schemaVersion: 2 }), 'text/plain', /unsupported manifest media type/],
    ['more than 4 MiB', new Uint8Array(MAX_MANIFEST_BYTES + 1), undefined, /exceeds/],
  ])('refuses %s', (_name, bytes, contentType, message) => {
    expect(() => parseManifest(bytes, contentType)).toThrow(InvalidManifestError);
    expect(() => parseManifest(bytes, contentType)).toThrow(message);
  });
});
