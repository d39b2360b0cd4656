import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Descriptor,
  type Digest,
  ErrorCode,
  type ImageIndex,
  MediaType,
  type Platform,
} from '@ocipull/core';
import { buildImage, file } from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  PlatformNotFoundError,
  parsePlatform,
  selectManifest,
} from './index.ts';

function digestOf(n: number): Digest {
  return `sha256:${n.toString(16).padStart(64, '0')}` as Digest;
}

function entry(n: number, platform?: Platform, extra: Partial<Descriptor> = {}): Descriptor {
  return {
    mediaType: MediaType.OciManifest,
    digest: digestOf(n),
    size: 100 + n,
    ...(platform ? { platform } : {}),
    ...extra,
  };
}

function index(manifests: Descriptor[]): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
}

describe('parsePlatform and normalizePlatform', () => {
  it.each([
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64', { os: 'linux', architecture: 'arm64' }],
    ['linux/aarch64', { os: 'linux', architecture: 'arm64' }],
    ['linux/x86_64', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v1', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v3', { os: 'linux', architecture: 'amd64', variant: 'v3' }],
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/6', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['Windows/AMD64', { os: 'windows', architecture: 'amd64' }],
    ['arm64', { os: 'linux', architecture: 'arm64' }],
  ])('%s', (text, expected) => {
    expect(parsePlatform(text)).toEqual(expected);
  });

  it.each(['', 'linux/', '/amd64', 'a/b/c/d', 'linux amd64'])('rejects %j', (text) => {
    expect(() => parsePlatform(text)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument }));
  });

  it('formats back and maps this host', () => {
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe('linux/arm/v7');
    const host = hostPlatform();
    expect(host.os).toBe('linux');
    expect(host.architecture).toBe(process.arch === 'x64' ? 'amd64' : normalizePlatform(host).architecture);
  });
});

describe('selectManifest', () => {
  const multi = index([
    entry(1, { os: 'linux', architecture: 'amd64' }),
    entry(2, { os: 'linux', architecture: 'arm64', variant: 'v8' }),
    entry(3, { os: 'linux', architecture: 'arm', variant: 'v6' }),
    entry(4, { os: 'linux', architecture: 'arm', variant: 'v5' }),
    entry(
      5,
      { os: 'unknown', architecture: 'unknown' },
      {
        annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
      },
    ),
    entry(6, { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1' }),
    entry(7, { os: 'windows', architecture: 'amd64', 'os.version': '10.0.20348.2' }),
    entry(8, { os: 'linux', architecture: 's390x' }, { mediaType: MediaType.OciIndex }),
  ]);

  it('matches os and architecture, arm64 with or without v8', () => {
    expect(selectManifest(multi, 'linux/amd64').digest).toBe(digestOf(1));
    expect(selectManifest(multi, 'linux/arm64').digest).toBe(digestOf(2));
    expect(selectManifest(multi, { os: 'linux', architecture: 'arm64', variant: 'v8' }).digest).toBe(
      digestOf(2),
    );
    const noVariant = index([entry(9, { os: 'linux', architecture: 'arm64' })]);
    expect(selectManifest(noVariant, 'linux/arm64/v8').digest).toBe(digestOf(9));
  });

  it('takes an image entry that names no platform when none names the wanted one, as skopeo does', () => {
    const unnamed = index([
      entry(11, undefined, { annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } }),
      entry(12, undefined, { mediaType: MediaType.OciIndex }),
      entry(13, { os: 'windows', architecture: 'amd64' }),
      entry(14),
      entry(15, { os: 'linux', architecture: 'arm64' }),
    ]);
    expect(selectManifest(unnamed, 'linux/amd64').digest).toBe(digestOf(14));
    // A named match still wins over it, wherever it is listed.
    expect(selectManifest(unnamed, 'linux/arm64').digest).toBe(digestOf(15));
    expect(selectManifest(unnamed, 'windows/amd64').digest).toBe(digestOf(13));
    const none = index([entry(11, undefined, { mediaType: MediaType.OciIndex })]);
    expect(() => selectManifest(none, 'linux/amd64')).toThrow(PlatformNotFoundError);
  });

  it('falls back from arm/v7 to v6 then v5 only when asked', () => {
    expect(() => selectManifest(multi, 'linux/arm/v7')).toThrow(PlatformNotFoundError);
    expect(selectManifest(multi, 'linux/arm/v7', { variantFallback: true }).digest).toBe(digestOf(3));
    expect(selectManifest(multi, 'linux/arm/v6').digest).toBe(digestOf(3));
    const onlyV5 = index([entry(4, { os: 'linux', architecture: 'arm', variant: 'v5' })]);
    expect(selectManifest(onlyV5, 'linux/arm/v7', { variantFallback: true }).digest).toBe(digestOf(4));
    expect(() => selectManifest(onlyV5, 'linux/arm/v7')).toThrow(PlatformNotFoundError);
  });

  it('prefers an exact os.version, then the same build, else the first match', () => {
    expect(
      selectManifest(multi, { os: 'windows', architecture: 'amd64', 'os.version': '10.0.20348.2' }).digest,
    ).toBe(digestOf(7));
    expect(selectManifest(multi, 'windows/amd64').digest).toBe(digestOf(6));
    // Another revision of the same build beats an earlier-listed other build, as in containerd.
    expect(
      selectManifest(multi, { os: 'windows', architecture: 'amd64', 'os.version': '10.0.20348.900' }).digest,
    ).toBe(digestOf(7));
    expect(
      selectManifest(multi, { os: 'windows', architecture: 'amd64', 'os.version': '10.0.26100.1' }).digest,
    ).toBe(digestOf(6));
  });

  it('requires os.features of the entry to be wanted', () => {
    const withFeatures = index([
      entry(10, { os: 'windows', architecture: 'amd64', 'os.features': ['win32k'] }),
    ]);
    expect(() => selectManifest(withFeatures, 'windows/amd64')).toThrow(PlatformNotFoundError);
    expect(
      selectManifest(withFeatures, { os: 'windows', architecture: 'amd64', 'os.features': ['win32k'] })
        .digest,
    ).toBe(digestOf(10));
  });

  it('skips attestations and nested indexes, and lists what the index offers on a miss', () => {
    try {
      selectManifest(multi, 'linux/s390x');
      expect.unreachable();
    } catch (error) {
      const miss = error as PlatformNotFoundError;
      expect(miss.code).toBe(ErrorCode.PlatformNotFound);
      expect(miss.wanted).toBe('linux/s390x');
      expect(miss.available).toEqual([
        'linux/amd64',
        'linux/arm64/v8',
        'linux/arm/v6',
        'linux/arm/v5',
        'windows/amd64',
        'linux/s390x',
      ]);
      expect(miss.available).not.toContain('unknown/unknown');
      expect(miss.message).toContain('linux/arm64/v8');
    }
  });
});

describe('selectManifest on fixture indexes', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'registry-client-platform-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it.each(['oci', 'docker'] as const)(
    'picks each platform of a %s index with attestations',
    async (format) => {
      const image = await buildImage(
        {
          format,
          attestations: true,
          images: [
            { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ entries: [file('a', 'amd64')] }] },
            {
              platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
              layers: [{ entries: [file('a', 'arm64')] }],
            },
            {
              platform: { os: 'linux', architecture: 'arm', variant: 'v7' },
              layers: [{ entries: [file('a', 'arm')] }],
            },
          ],
        },
        { dir: join(root, format) },
      );
      const built = image.index!;
      expect(built.manifests.length).toBe(6);
      expect(selectManifest(built, 'linux/amd64').digest).toBe(image.manifests[0]!.descriptor.digest);
      expect(selectManifest(built, 'linux/arm64').digest).toBe(image.manifests[1]!.descriptor.digest);
      expect(selectManifest(built, 'linux/arm/v7').digest).toBe(image.manifests[2]!.descriptor.digest);
      expect(() => selectManifest(built, 'linux/arm/v6')).toThrow(PlatformNotFoundError);
      expect(() => selectManifest(built, 'linux/ppc64le')).toThrow(
        /offers linux\/amd64, linux\/arm64\/v8, linux\/arm\/v7$/,
      );
    },
  );
});
