import type { Digest } from '@ocipull/core';
import { isDigest } from '@ocipull/digest';
import { InvalidReferenceError } from './errors.ts';

/** The registry a reference without a host names, like Docker. */
export const DEFAULT_REGISTRY = 'docker.io';
/** The tag a reference without tag or digest means, like Docker. */
export const DEFAULT_TAG = 'latest';
/** The host Docker Hub's API answers on; `docker.io` itself only redirects. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
/** Longest repository path distribution accepts (reference.NameTotalLengthMax). */
const MAX_NAME_LENGTH = 255;

/** A parsed, normalised image reference. */
export interface Reference {
  /** The registry as users name it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `[::1]:5000`. */
  readonly registry: string;
  /** The repository path inside the registry: `library/alpine`. */
  readonly repository: string;
  /** The tag, when given or defaulted (`latest` when neither tag nor digest was given). */
  readonly tag?: string;
  /** The digest, when pinned; it wins over the tag when both are present, as in Docker. */
  readonly digest?: Digest;
  /** The host the API lives on: `registry-1.docker.io` for `docker.io`, else `registry`. */
  readonly apiHost: string;
  /** Docker's short form (`alpine:3.20`, `user/app@sha256:…`), as `docker images` shows it. */
  readonly familiar: string;
  /** `registry/repository`, without tag or digest. */
  readonly name: string;
  /** The normalised full form: `docker.io/library/alpine:latest`. */
  toString(): string;
}

/** Options of `parseReference`. */
export interface ParseReferenceOptions {
  /** Registry for names without a host. Default `docker.io`. */
  defaultRegistry?: string;
  /** Tag for references with neither tag nor digest; `false` leaves the tag empty. Default `latest`. */
  defaultTag?: string | false;
}

// The grammar of distribution/reference (reference/regexp.go).
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const IPV6 = '\\[[a-fA-F0-9:]+\\]';
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6})(?::[0-9]+)?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST_SHAPE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX64 = /^[a-f0-9]{64}$/;

/**
 * Parses an image reference and normalises it like Docker: `alpine` → `docker.io/library/alpine:latest`,
 * `localhost:5000/x`, `[::1]:5000/x`, `ghcr.io/o/r@sha256:…`, tag plus digest. Throws
 * `InvalidReferenceError` (`ERR_INVALID_REFERENCE`) with the reason otherwise.
 */
export function parseReference(input: string, options: ParseReferenceOptions = {}): Reference {
  if (typeof input !== 'string') throw new InvalidReferenceError(input, 'not a string');
  if (input.length === 0) throw new InvalidReferenceError(input, 'empty');
  if (input.length > 4096) throw new InvalidReferenceError(input, 'too long');
  if (input.trim() !== input) throw new InvalidReferenceError(input, 'leading or trailing whitespace');
  if (HEX64.test(input)) {
    throw new InvalidReferenceError(input, 'a bare 64-character hex string is ambiguous (an image id?)');
  }

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    const digestText = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_SHAPE.test(digestText)) throw new InvalidReferenceError(input, 'malformed digest');
    if (!isDigest(digestText)) {
      throw new InvalidReferenceError(input, 'digest must be sha256 (64) or sha512 (128) lowercase hex');
    }
    digest = digestText;
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  // A colon after the last slash starts the tag; one before it is a registry port.
  if (colon > lastSlash && !(lastSlash === -1 && rest.startsWith('['))) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new InvalidReferenceError(input, `invalid tag ${JSON.stringify(tag)}`);
  }
  if (rest.length === 0) throw new InvalidReferenceError(input, 'missing repository name');

  const defaultRegistry = options.defaultRegistry ?? DEFAULT_REGISTRY;
  let registry: string;
  let repository: string;
  const firstSlash = rest.indexOf('/');
  const first = firstSlash === -1 ? '' : rest.slice(0, firstSlash);
  // distribution/reference splitDockerDomain: the first component is a host when it looks like one.
  if (
    firstSlash !== -1 &&
    (first.includes('.') || first.includes(':') || first === 'localhost' || first.toLowerCase() !== first)
  ) {
    registry = first;
    repository = rest.slice(firstSlash + 1);
    if (!DOMAIN.test(registry)) throw new InvalidReferenceError(input, `invalid registry host ${registry}`);
  } else {
    registry = defaultRegistry;
    repository = rest;
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DEFAULT_REGISTRY;
  if (registry === DEFAULT_REGISTRY && !repository.includes('/')) repository = `library/${repository}`;

  if (repository.length === 0) throw new InvalidReferenceError(input, 'missing repository name');
  for (const component of repository.split('/')) {
    if (component.length === 0) throw new InvalidReferenceError(input, 'empty path component');
    if (!PATH_COMPONENT.test(component)) {
      const reason =
        component.toLowerCase() !== component
          ? 'repository name must be lowercase'
          : `invalid path component ${JSON.stringify(component)}`;
      throw new InvalidReferenceError(input, reason);
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH) {
    throw new InvalidReferenceError(input, `name longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (tag === undefined && digest === undefined && options.defaultTag !== false) {
    tag = options.defaultTag ?? DEFAULT_TAG;
  }
  return makeReference(registry, repository, tag, digest);
}

/** Builds a `Reference` from parts already validated; `parseReference` is the checked way in. */
export function makeReference(
  registry: string,
  repository: string,
  tag?: string,
  digest?: Digest,
): Reference {
  const name = `${registry}/${repository}`;
  const suffix = `${tag === undefined ? '' : `:${tag}`}${digest === undefined ? '' : `@${digest}`}`;
  const full = `${name}${suffix}`;
  let familiarName = name;
  if (registry === DEFAULT_REGISTRY) {
    const parts = repository.split('/');
    if (parts.length === 2 && parts[0] === 'library') familiarName = parts[1]!;
    // `docker.io/a.b/c` must keep its host: `a.b/c` would name registry `a.b`.
    else if (parts.length === 1 || !/[.:]|^localhost$/.test(parts[0]!)) familiarName = repository;
  }
  return {
    registry,
    repository,
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
    apiHost: registry === DEFAULT_REGISTRY ? DOCKER_HUB_API_HOST : registry,
    familiar: `${familiarName}${suffix}`,
    name,
    toString: () => full,
  };
}

/** Accepts a `Reference` or a string to parse; the shape every client call takes. */
export function toReference(reference: Reference | string): Reference {
  return typeof reference === 'string' ? parseReference(reference) : reference;
}

/** The host part of a registry without its port or IPv6 brackets: `127.0.0.1`, `::1`, `ghcr.io`. */
export function registryHostname(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const colon = registry.lastIndexOf(':');
  return colon === -1 ? registry : registry.slice(0, colon);
}

/** True for `localhost`, 127.0.0.0/8 and ::1: hosts Docker talks plain HTTP to by default. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registryHostname(registry).toLowerCase();
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '::1' ||
    /^127(?:\.\d{1,3}){3}$/.test(host) ||
    host === '0:0:0:0:0:0:0:1'
  );
}
