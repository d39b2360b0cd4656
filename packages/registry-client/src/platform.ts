import {
  type Descriptor,
  ErrorCode,
  type ImageIndex,
  isManifestMediaType,
  OciError,
  type Platform,
} from '@ocipull/core';
import { PlatformNotFoundError } from './errors.ts';

/** Architecture spellings seen in the wild, mapped to the Go names the OCI spec uses. */
const ARCHITECTURE_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  x64: { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  i386: { architecture: '386' },
  i686: { architecture: '386' },
  ia32: { architecture: '386' },
};

/**
 * Normalises a platform the way containerd's `platforms.Normalize` does: lowercase, architecture
 * aliases, `arm64` ≡ `arm64/v8` (variant dropped), `arm` without variant ≡ `arm/v7`, `amd64/v1` ≡ `amd64`.
 */
export function normalizePlatform(platform: Platform): Platform {
  const os = platform.os.toLowerCase();
  let architecture = platform.architecture.toLowerCase();
  let variant = platform.variant?.toLowerCase();
  const alias = ARCHITECTURE_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    variant = variant ?? alias.variant;
  }
  if (architecture === 'arm64' && (variant === 'v8' || variant === '8')) variant = undefined;
  if (architecture === 'amd64' && variant === 'v1') variant = undefined;
  if (architecture === 'arm') {
    if (variant === undefined) variant = 'v7';
    else if (/^\d+$/.test(variant)) variant = `v${variant}`;
  }
  return stripUndefined({ ...platform, os: os === 'macos' ? 'darwin' : os, architecture, variant });
}

/**
 * Parses `os/arch[/variant]` (`linux/arm64/v8`, `linux/amd64`, `windows/amd64`) into a normalised
 * `Platform`; a bare `arch` means linux. Throws `ERR_INVALID_ARGUMENT` for other shapes.
 */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().split('/');
  if (parts.some((part) => !/^[A-Za-z0-9_.-]+$/.test(part)) || parts.length > 3) {
    throw new OciError(
      ErrorCode.InvalidArgument,
      `invalid platform ${JSON.stringify(text)}: expected os/arch[/variant]`,
    );
  }
  const [first, second, third] = parts as [string, string?, string?];
  const platform: Platform =
    second === undefined ? { os: 'linux', architecture: first } : { os: first, architecture: second };
  if (third !== undefined) platform.variant = third;
  return normalizePlatform(platform);
}

/** Formats a platform as `os/arch[/variant]`. */
export function formatPlatform(platform: Platform): string {
  return `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''}`;
}

/** Node's `process.arch` to OCI architecture names. */
const NODE_ARCHITECTURES: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/**
 * The platform of this host as image indexes name it. macOS maps to linux: there are no darwin
 * container images, and Docker Desktop runs linux ones, so that is what a pull on a Mac wants.
 */
export function hostPlatform(): Platform {
  const os = process.platform === 'win32' ? 'windows' : process.platform === 'freebsd' ? 'freebsd' : 'linux';
  const architecture = NODE_ARCHITECTURES[process.arch] ?? process.arch;
  const platform: Platform = { os, architecture };
  if (architecture === 'arm') {
    const version = (process.config.variables as Record<string, unknown>).arm_version;
    platform.variant = `v${typeof version === 'string' || typeof version === 'number' ? version : '7'}`;
  }
  return normalizePlatform(platform);
}

/** Options of `selectManifest`. */
export interface SelectManifestOptions {
  /**
   * Accept older arm variants when the wanted one is missing (`v7` → `v6` → `v5`), as an arm/v7 host
   * can run them. Default false: an exact (normalised) match is required.
   */
  variantFallback?: boolean;
}

/** True for index entries that are not runnable images: BuildKit attestations, `unknown/unknown`. */
export function isAttestation(descriptor: Descriptor): boolean {
  return (
    descriptor.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' ||
    (descriptor.platform?.os === 'unknown' && descriptor.platform.architecture === 'unknown')
  );
}

/**
 * Picks the manifest for `wanted` from an index or manifest list: os and architecture must match
 * after normalisation, the variant must match (or fall back when asked), `os.version` prefers an exact
 * match, then the same build (`10.0.17763.*`), then any, and `os.features` of the entry must all be
 * wanted. Skips attestation entries and nested indexes. With no match, an image entry that names no
 * platform is taken (as skopeo takes it); else throws `PlatformNotFoundError` listing what the index offers.
 */
export function selectManifest(
  index: ImageIndex,
  wanted: Platform | string,
  options: SelectManifestOptions = {},
): Descriptor {
  const target = typeof wanted === 'string' ? parsePlatform(wanted) : normalizePlatform(wanted);
  const candidates = index.manifests.filter(
    (entry) => entry.platform !== undefined && !isAttestation(entry) && isImageManifestEntry(entry),
  );
  const variants = [target.variant];
  if (options.variantFallback && target.architecture === 'arm') {
    const number = Number(target.variant?.slice(1) ?? '7');
    for (let version = number - 1; version >= 5; version--) variants.push(`v${version}`);
  }
  const wantedFeatures = new Set(target['os.features'] ?? []);
  for (const variant of variants) {
    const matches = candidates.filter((entry) => {
      const platform = normalizePlatform(entry.platform!);
      return (
        platform.os === target.os &&
        platform.architecture === target.architecture &&
        platform.variant === variant &&
        (platform['os.features'] ?? []).every((feature) => wantedFeatures.has(feature))
      );
    });
    if (matches.length === 0) continue;
    const version = target['os.version'];
    if (version) {
      const exact = matches.find((entry) => entry.platform?.['os.version'] === version);
      if (exact) return exact;
      // Windows versions are major.minor.build.revision; like containerd, a host takes any revision
      // of its own build before another build.
      const build = osBuild(version);
      const sameBuild = matches.find((entry) => {
        const offered = entry.platform?.['os.version'];
        return offered !== undefined && osBuild(offered) === build;
      });
      if (sameBuild) return sameBuild;
    }
    return matches[0]!;
  }
  // An image entry that names no platform: like skopeo, taken when no entry names the wanted one (its
  // config says what it is for).
  const unnamed = index.manifests.find(
    (entry) => entry.platform === undefined && !isAttestation(entry) && isImageManifestEntry(entry),
  );
  if (unnamed) return unnamed;
  const available = [
    ...new Set(
      index.manifests
        .filter((entry) => entry.platform !== undefined && !isAttestation(entry))
        .map((entry) => formatPlatform(entry.platform!)),
    ),
  ];
  throw new PlatformNotFoundError(formatPlatform(target), available);
}

/** `10.0.17763` of `10.0.17763.1234`: the version without its revision. */
function osBuild(version: string): string {
  return version.split('.').slice(0, 3).join('.');
}

/** Index entries that are image manifests; entries without a media type are assumed to be. */
function isImageManifestEntry(entry: Descriptor): boolean {
  return entry.mediaType === undefined || isManifestMediaType(entry.mediaType);
}

function stripUndefined(platform: Omit<Platform, 'variant'> & { variant?: string | undefined }): Platform {
  const { variant, ...rest } = platform;
  return variant === undefined ? rest : { ...rest, variant };
}
