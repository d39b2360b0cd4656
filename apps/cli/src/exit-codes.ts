import { ErrorCode, type OciError } from '@ocipull/core';

/** The documented process exit codes of `ocipull`. */
export const ExitCode = {
  Ok: 0,
  Usage: 1,
  NotFoundOrAuth: 2,
  Network: 3,
  Integrity: 4,
  LocalIo: 5,
  /** 128 + SIGINT, as shells report an interrupted command. */
  Interrupted: 130,
} as const;

const byCode: Record<string, number> = {
  [ErrorCode.InvalidArgument]: ExitCode.Usage,
  [ErrorCode.InvalidReference]: ExitCode.Usage,
  [ErrorCode.ManifestUnknown]: ExitCode.NotFoundOrAuth,
  [ErrorCode.BlobUnknown]: ExitCode.NotFoundOrAuth,
  [ErrorCode.NameUnknown]: ExitCode.NotFoundOrAuth,
  [ErrorCode.Unauthorized]: ExitCode.NotFoundOrAuth,
  [ErrorCode.Denied]: ExitCode.NotFoundOrAuth,
  [ErrorCode.PlatformNotFound]: ExitCode.NotFoundOrAuth,
  [ErrorCode.NotCached]: ExitCode.NotFoundOrAuth,
  [ErrorCode.Network]: ExitCode.Network,
  [ErrorCode.Timeout]: ExitCode.Network,
  [ErrorCode.TooManyRequests]: ExitCode.Network,
  [ErrorCode.Registry]: ExitCode.Network,
  [ErrorCode.BlobInterrupted]: ExitCode.Network,
  [ErrorCode.DigestMismatch]: ExitCode.Integrity,
  [ErrorCode.SizeMismatch]: ExitCode.Integrity,
  [ErrorCode.DiffIdMismatch]: ExitCode.Integrity,
  [ErrorCode.InvalidDigest]: ExitCode.Integrity,
  [ErrorCode.InvalidManifest]: ExitCode.Integrity,
  [ErrorCode.UnsupportedMediaType]: ExitCode.Integrity,
  [ErrorCode.CacheCorrupt]: ExitCode.Integrity,
  [ErrorCode.InvalidLayer]: ExitCode.Integrity,
  [ErrorCode.UnsafePath]: ExitCode.Integrity,
  [ErrorCode.LimitExceeded]: ExitCode.Integrity,
  [ErrorCode.Io]: ExitCode.LocalIo,
  [ErrorCode.NoSpace]: ExitCode.LocalIo,
  [ErrorCode.LockTimeout]: ExitCode.LocalIo,
  [ErrorCode.LockCompromised]: ExitCode.LocalIo,
  [ErrorCode.Aborted]: ExitCode.Interrupted,
};

/** The exit code for an ocipull error; unknown codes count as local failures. */
export function exitCodeFor(error: OciError): number {
  return byCode[error.code] ?? ExitCode.LocalIo;
}

/** A one-line hint that tells the user what to do next, where there is an obvious next step. */
export function hintFor(
  error: OciError,
  context: { registry?: string; command?: string } = {},
): string | undefined {
  switch (error.code) {
    case ErrorCode.Unauthorized:
      // `login` itself failed: telling the user to run it again says nothing.
      if (context.command === 'login') return 'check the username and password (or token) for this registry';
      if (error.message.includes('the repository may not exist')) {
        return 'check the repository name; the credentials were accepted, but give no access to it';
      }
      return `run \`ocipull login ${context.registry ?? 'REGISTRY'}\`, or check the credentials in your docker config`;
    case ErrorCode.Denied:
      if (error.message.includes('carried no credentials')) {
        return `check the repository name; if it is private, run \`ocipull login ${context.registry ?? 'REGISTRY'}\``;
      }
      return 'the registry refused access with these credentials; check the repository name and your permissions';
    case ErrorCode.NotCached:
      // `pull --pull never` has the flag; the offline verbs (inspect, config, unpack) have none.
      if (context.command === 'pull')
        return 'the image is not in the cache; pull it with `--pull missing` or `--pull always`';
      return 'pull it first: `ocipull pull REF` (with `--platform` when it is for another platform)';
    case ErrorCode.PlatformNotFound:
      return 'choose one of the available platforms with `--platform os/arch[/variant]`';
    case ErrorCode.ManifestUnknown:
    case ErrorCode.NameUnknown:
      return 'check the repository and tag; `skopeo list-tags` shows what a repository has';
    case ErrorCode.NoSpace:
      return 'free disk space, or run `ocipull prune` to drop unreferenced blobs';
    case ErrorCode.LockTimeout:
      return 'another ocipull process holds the cache lock; wait for it or check for a hung process';
    case ErrorCode.Network:
      if (error.message.includes('TLS failed')) {
        return "pass the registry's CA certificate with --ca-file FILE, or --tls-skip-verify for a test registry";
      }
      return 'check the network and the registry address; TLS problems can be ruled out with --insecure-registry for test registries';
    case ErrorCode.Timeout:
      return 'check the network and the registry address; TLS problems can be ruled out with --insecure-registry for test registries';
    case ErrorCode.DigestMismatch:
    case ErrorCode.SizeMismatch:
    case ErrorCode.DiffIdMismatch:
      return 'the registry served content that does not match its digest; nothing was kept, retrying may help if a proxy corrupted it';
    case ErrorCode.CacheCorrupt:
      return 'run `ocipull verify` to find and remove damaged cache entries';
    default:
      return undefined;
  }
}
