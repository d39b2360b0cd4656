import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Digest } from '@ocipull/core';
import { digestOf, isDigest } from '@ocipull/digest';
import {
  type AccessPolicy,
  checkPassword,
  DEFAULT_TOKEN_EXPIRES_IN,
  DEFAULT_TOKEN_SERVICE,
  defaultAccessPolicy,
  type Principal,
  parseBasic,
  parseScopes,
  type RegistryAction,
  type RegistryAuth,
  TokenAuthority,
} from './auth.ts';
import { type AppliedFaults, createFaultController, type FaultController, type RouteKind } from './faults.ts';
import { LayoutRepository } from './layout-repository.ts';
import { type BodySource, parseRange, sendBody } from './send-body.ts';

/** Repository names as the distribution spec allows them (spec.md, "Pulling manifests"). */
const NAME_PATTERN = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;

/** Manifests above this are refused on push, as distribution does (4 MiB). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** Token request bodies are tiny forms; anything larger is refused. */
const MAX_FORM_BYTES = 64 * 1024;

/** Options for `startRegistry`. */
export interface RegistryOptions {
  /** Port on 127.0.0.1. Default 0 (any free port). */
  port?: number;
  /** Repositories to serve: name → OCI layout directory. More can be added with `addRepository`. */
  repositories?: Record<string, string>;
  /**
   * Where pushes to a repository that does not exist yet create its layout (`<storageDir>/<name>`).
   * Default: a temporary directory removed by `close()`.
   */
  storageDir?: string;
  /** Authentication. Default `{ type: 'none' }`. */
  auth?: RegistryAuth;
  /**
   * `'strict'`: a manifest GET/HEAD whose `Accept` header does not list the manifest's media type (nor
   * `*\/*`) gets 404 `MANIFEST_UNKNOWN`, as distribution answers for OCI manifests and indexes — to
   * test that a client sends `Accept`. Default `'lenient'`: serve whatever was asked.
   */
  manifestAccept?: 'lenient' | 'strict';
  /** The redirect target (`registry.origin`), which stands for an object store. */
  origin?: {
    /**
     * Answer 400 when a redirected request still carries an `Authorization` header, as S3 does for a
     * presigned URL. Default false (it serves the bytes and records the header's presence).
     */
    rejectAuthorization?: boolean;
  };
}

/** One request the registry (or its redirect origin) received. Never holds a credential's value. */
export interface RequestRecord {
  /** Increasing per registry, origin requests included. */
  id: number;
  method: string;
  /** The URL path, percent-decoded. */
  path: string;
  /** The query string including `?`, or `''`. */
  query: string;
  kind: RouteKind | 'unknown';
  /** Repository name, when the route has one. */
  name?: string;
  /** Manifest reference as requested (tag or digest). */
  reference?: string;
  /** Digest of the blob, or of the manifest the reference resolved to. */
  digest?: string;
  /** The `Range` header, verbatim. */
  range?: string;
  /** The `Accept` header, verbatim. */
  accept?: string;
  /** The `Connection` header, verbatim (`close` from a client that does not keep the connection). */
  connection?: string;
  /** The client's port: requests with the same one came over the same connection. */
  clientPort?: number;
  /** Response status; 0 until headers are sent. */
  status: number;
  /** Body bytes written so far. */
  bytesSent: number;
  /** Whether an `Authorization` header arrived (its value is never kept). */
  authorization: boolean;
  /** The scheme of that header (`basic`, `bearer`, …), lower case. */
  authScheme?: string;
  /** The authenticated user name, when credentials checked out. */
  user?: string;
  /** Faults applied to this request (`'cut'`, `'status'`, …). */
  faults: string[];
  /** How the body ended: `complete`, `cut`, `stalled`, `aborted` (client went away); unset without body. */
  outcome?: 'complete' | 'cut' | 'stalled' | 'aborted';
  /** `Date.now()` when the request arrived. */
  startedAt: number;
  /** `Date.now()` when the response finished or the connection closed. */
  finishedAt?: number;
}

/** A second HTTP origin that serves redirected blob GETs. */
export interface RedirectOrigin {
  url: string;
  host: string;
  port: number;
}

/** A running harness registry. */
export interface HarnessRegistry {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>`, the registry part of an image reference. */
  host: string;
  port: number;
  /** The redirect target used by `redirect` faults. */
  origin: RedirectOrigin;
  /** The token endpoint (`<url>/token`), also advertised in bearer challenges. */
  tokenUrl: string;
  /** The request log, oldest first (a live array). */
  readonly requests: readonly RequestRecord[];
  /** Empties the request log. */
  clearRequests(): void;
  /** The fault table. */
  faults: FaultController;
  /** Serves `layoutDir` (an OCI image layout) as repository `name`, replacing any previous one. */
  addRepository(name: string, layoutDir: string): void;
  /** Stops serving a repository (its directory is left alone). */
  removeRepository(name: string): void;
  /** The layout directory behind a repository, or undefined. */
  repositoryDir(name: string): string | undefined;
  /** Names of the repositories, sorted. */
  repositories(): string[];
  /** Forgets every issued token (bearer mode): the next request with an old token gets 401. */
  revokeTokens(): void;
  /** Closes both servers, destroys open (also stalled) connections and removes temporary storage. */
  close(): Promise<void>;
}

type Route =
  | { kind: 'ping' }
  | { kind: 'catalog' }
  | { kind: 'token' }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'upload'; name: string; session?: string }
  | { kind: 'tags'; name: string }
  | { kind: 'unknown' };

function parseRoute(path: string): Route {
  if (path === '/v2' || path === '/v2/') return { kind: 'ping' };
  if (path === '/token') return { kind: 'token' };
  if (path === '/v2/_catalog') return { kind: 'catalog' };
  let match = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
  if (match) return { kind: 'manifest', name: match[1]!, reference: match[2]! };
  match = /^\/v2\/(.+)\/blobs\/uploads\/?$/.exec(path);
  if (match) return { kind: 'upload', name: match[1]! };
  match = /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/.exec(path);
  if (match) return { kind: 'upload', name: match[1]!, session: match[2]! };
  match = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(path);
  if (match) return { kind: 'blob', name: match[1]!, digest: match[2]! };
  match = /^\/v2\/(.+)\/tags\/list$/.exec(path);
  if (match) return { kind: 'tags', name: match[1]! };
  return { kind: 'unknown' };
}

/** Writes a distribution-spec error body (`{ errors: [{ code, message, detail }] }`). */
function sendError(
  response: ServerResponse,
  status: number,
  code: string,
  message: string,
  detail?: unknown,
  headers: Record<string, string> = {},
): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = Buffer.from(JSON.stringify({ errors: [{ code, message, detail: detail ?? null }] }));
  response.writeHead(status, {
    ...headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(body.length),
  });
  response.end(body);
}

function sendJson(
  response: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
) {
  const body = Buffer.from(JSON.stringify(value));
  response.writeHead(status, {
    ...headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(body.length),
  });
  response.end(body);
}

async function readBody(request: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > limit) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Whether an `Accept` header (possibly several, comma-separated, with parameters) admits a media type. */
function accepts(header: string | undefined, mediaType: string): boolean {
  if (header === undefined) return false;
  return header
    .split(',')
    .map((part) => part.split(';')[0]!.trim().toLowerCase())
    .some((type) => type === mediaType || type === '*/*' || type === 'application/*');
}

function retryAfterValue(value: number | Date): string {
  return value instanceof Date ? value.toUTCString() : String(value);
}

function statusCode(status: number): string {
  if (status === 429) return 'TOOMANYREQUESTS';
  if (status === 503) return 'UNAVAILABLE';
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  return 'UNKNOWN';
}

interface UploadSession {
  name: string;
  file: string;
  size: number;
}

/**
 * Starts the harness registry: an OCI distribution registry on 127.0.0.1 that serves OCI layout
 * directories, accepts pushes (skopeo works against it), authenticates in the mode asked, and injects
 * the faults a test scripts. Resolves once both it and its redirect origin listen.
 */
export async function startRegistry(options: RegistryOptions = {}): Promise<HarnessRegistry> {
  const auth: RegistryAuth = options.auth ?? { type: 'none' };
  const repositories = new Map<string, LayoutRepository>();
  for (const [name, dir] of Object.entries(options.repositories ?? {})) {
    checkName(name);
    repositories.set(name, new LayoutRepository(resolve(dir)));
  }
  const ownsStorage = options.storageDir === undefined;
  const storageDir = options.storageDir
    ? resolve(options.storageDir)
    : await mkdtemp(join(tmpdir(), 'ocipull-registry-'));
  const uploadsDir = join(storageDir, '.uploads');
  const uploads = new Map<string, UploadSession>();
  const requests: RequestRecord[] = [];
  const faults = createFaultController();
  const authority = new TokenAuthority();
  const service = auth.type === 'bearer' ? (auth.service ?? DEFAULT_TOKEN_SERVICE) : DEFAULT_TOKEN_SERVICE;
  const policy: AccessPolicy =
    auth.type === 'none'
      ? () => ['pull', 'push']
      : (auth.access ?? defaultAccessPolicy(auth.type === 'bearer' && auth.anonymous !== false));
  const originSecret = randomBytes(16).toString('hex');
  let nextId = 1;
  let url = '';
  let originUrl = '';

  function checkName(name: string): void {
    if (!NAME_PATTERN.test(name)) throw new RangeError(`invalid repository name ${JSON.stringify(name)}`);
  }

  function startRecord(request: IncomingMessage, response: ServerResponse, path: string, query: string) {
    const header = request.headers.authorization;
    const record: RequestRecord = {
      id: nextId++,
      method: request.method ?? 'GET',
      path,
      query,
      kind: 'unknown',
      status: 0,
      bytesSent: 0,
      authorization: header !== undefined,
      faults: [],
      startedAt: Date.now(),
    };
    if (header !== undefined) record.authScheme = header.split(' ')[0]!.toLowerCase();
    if (request.headers.range !== undefined) record.range = request.headers.range;
    if (request.headers.accept !== undefined) record.accept = request.headers.accept;
    if (request.headers.connection !== undefined) record.connection = request.headers.connection;
    if (request.socket.remotePort !== undefined) record.clientPort = request.socket.remotePort;
    requests.push(record);
    const finish = () => {
      record.status = response.statusCode;
      record.finishedAt ??= Date.now();
    };
    response.on('finish', finish);
    response.on('close', finish);
    const writeHead = response.writeHead.bind(response);
    response.writeHead = ((...args: Parameters<ServerResponse['writeHead']>) => {
      record.status = args[0];
      return writeHead(...args);
    }) as ServerResponse['writeHead'];
    return record;
  }

  async function repositoryForPush(name: string): Promise<LayoutRepository> {
    let repository = repositories.get(name);
    if (repository === undefined) {
      repository = new LayoutRepository(join(storageDir, name));
      repositories.set(name, repository);
    }
    await repository.ensureLayout();
    return repository;
  }

  /** Authenticates a request; undefined means a response (401) was already sent. */
  function authenticate(
    request: IncomingMessage,
    response: ServerResponse,
    record: RequestRecord,
    scope: { name: string; actions: RegistryAction[] } | undefined,
    headers: Record<string, string>,
  ): Principal | undefined | 'handled' {
    if (auth.type === 'none') return { user: undefined, granted: () => ['pull', 'push'] };
    const header = request.headers.authorization;
    if (auth.type === 'basic') {
      const realm = auth.realm ?? 'ocipull-harness';
      const credentials = parseBasic(header);
      if (!credentials || !checkPassword(auth.users, credentials.user, credentials.password)) {
        sendError(response, 401, 'UNAUTHORIZED', 'authentication required', null, {
          ...headers,
          'WWW-Authenticate': `Basic realm="${realm}"`,
        });
        return 'handled';
      }
      record.user = credentials.user;
      const user = credentials.user;
      return { user, granted: (repository) => policy(user, repository) };
    }
    const scopeText = scope ? `,scope="repository:${scope.name}:${scope.actions.join(',')}"` : '';
    const challenge = (error?: string) =>
      `Bearer realm="${url}/token",service="${service}"${scopeText}${error ? `,error="${error}"` : ''}`;
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    const principal = match ? authority.verify(match[1]!) : undefined;
    if (principal === undefined) {
      sendError(response, 401, 'UNAUTHORIZED', 'authentication required', null, {
        ...headers,
        'WWW-Authenticate': challenge(match ? 'invalid_token' : undefined),
      });
      return 'handled';
    }
    if (principal.user !== undefined) record.user = principal.user;
    return principal;
  }

  /** Checks that a principal holds `actions` on `name`; sends 401/403 and returns false otherwise. */
  function authorize(
    response: ServerResponse,
    principal: Principal,
    name: string,
    actions: RegistryAction[],
    headers: Record<string, string>,
  ): boolean {
    if (auth.type === 'none') return true;
    const granted = principal.granted(name);
    if (actions.every((action) => granted.includes(action))) return true;
    const obtainable = policy(principal.user, name);
    if (auth.type === 'bearer' && actions.every((action) => obtainable.includes(action))) {
      // The token is fine but too narrow: the client should fetch one for the scope in the challenge.
      sendError(response, 401, 'UNAUTHORIZED', 'insufficient scope', null, {
        ...headers,
        'WWW-Authenticate': `Bearer realm="${url}/token",service="${service}",scope="repository:${name}:${actions.join(',')}",error="insufficient_scope"`,
      });
    } else if (principal.user === undefined) {
      sendError(response, 401, 'UNAUTHORIZED', 'authentication required', null, {
        ...headers,
        'WWW-Authenticate': `Bearer realm="${url}/token",service="${service}",scope="repository:${name}:${actions.join(',')}"`,
      });
    } else {
      sendError(
        response,
        403,
        'DENIED',
        'requested access to the resource is denied',
        {
          repository: name,
          actions,
        },
        headers,
      );
    }
    return false;
  }

  function applyStatusFault(
    response: ServerResponse,
    applied: AppliedFaults,
    headers: Record<string, string>,
  ) {
    const fault = applied.status;
    if (!fault) return false;
    const extra: Record<string, string> = { ...headers };
    if (fault.retryAfter !== undefined) extra['Retry-After'] = retryAfterValue(fault.retryAfter);
    sendError(
      response,
      fault.status,
      fault.code ?? statusCode(fault.status),
      fault.message ?? `injected ${fault.status}`,
      null,
      extra,
    );
    return true;
  }

  async function serveBytes(
    request: IncomingMessage,
    response: ServerResponse,
    record: RequestRecord,
    source: BodySource,
    size: number,
    headers: Record<string, string>,
    applied: AppliedFaults,
    allowRange: boolean,
  ): Promise<void> {
    const method = request.method ?? 'GET';
    const range = allowRange && !applied.ignoreRange ? parseRange(request.headers.range, size) : undefined;
    if (range === 'unsatisfiable') {
      sendError(
        response,
        416,
        'RANGE_INVALID',
        'requested range not satisfiable',
        { size },
        {
          ...headers,
          'Content-Range': `bytes */${size}`,
        },
      );
      return;
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    const status = range ? 206 : 200;
    const responseHeaders: Record<string, string> = {
      ...headers,
      'Content-Length': String(end - start + 1),
    };
    if (allowRange) responseHeaders['Accept-Ranges'] = 'bytes';
    if (range) responseHeaders['Content-Range'] = `bytes ${start}-${end}/${size}`;
    response.writeHead(status, responseHeaders);
    if (method === 'HEAD') {
      response.end();
      return;
    }
    record.outcome = await sendBody(response, source, start, end, applied, (sent) => {
      record.bytesSent = sent;
    });
  }

  async function handleToken(
    request: IncomingMessage,
    response: ServerResponse,
    record: RequestRecord,
    search: URLSearchParams,
  ) {
    if (auth.type !== 'bearer') {
      sendError(response, 404, 'UNSUPPORTED', 'this registry does not issue tokens');
      return;
    }
    const expiresIn = auth.expiresIn ?? DEFAULT_TOKEN_EXPIRES_IN;
    const expiresInText = Math.max(1, Math.ceil(expiresIn));
    const applied = faults.take({ kind: 'token', method: record.method }, false, false);
    record.faults = applied.names;
    if (applyStatusFault(response, applied, {})) return;
    const unauthorized = (oauthError: string) =>
      sendJson(response, 401, {
        error: oauthError,
        errors: [{ code: 'UNAUTHORIZED', message: 'authentication failed', detail: null }],
      });
    if (request.method === 'GET') {
      const scopes = parseScopes(search.getAll('scope'));
      let user: string | undefined;
      if (request.headers.authorization !== undefined) {
        const credentials = parseBasic(request.headers.authorization);
        if (!credentials || !checkPassword(auth.users, credentials.user, credentials.password)) {
          unauthorized('invalid_grant');
          return;
        }
        user = credentials.user;
      } else if (auth.anonymous === false) {
        unauthorized('invalid_request');
        return;
      }
      if (user !== undefined) record.user = user;
      const issued = authority.issue(user, scopes, policy, expiresIn);
      const body: Record<string, unknown> = {
        token: issued.token,
        access_token: issued.token,
        expires_in: expiresInText,
        issued_at: new Date().toISOString(),
      };
      if (user !== undefined && search.get('offline_token') === 'true')
        body.refresh_token = authority.issueRefresh(user);
      sendJson(response, 200, body);
      return;
    }
    if (request.method === 'POST') {
      const raw = await readBody(request, MAX_FORM_BYTES);
      if (raw === undefined) {
        sendJson(response, 413, { error: 'invalid_request' });
        return;
      }
      const form = new URLSearchParams(raw.toString('utf8'));
      const scopes = parseScopes(form.getAll('scope'));
      const grant = form.get('grant_type');
      let user: string | undefined;
      if (grant === 'password') {
        const name = form.get('username') ?? '';
        if (!checkPassword(auth.users, name, form.get('password') ?? '')) {
          unauthorized('invalid_grant');
          return;
        }
        user = name;
      } else if (grant === 'refresh_token') {
        user = authority.refreshUser(form.get('refresh_token') ?? '');
        if (user === undefined) {
          unauthorized('invalid_grant');
          return;
        }
      } else {
        sendJson(response, 400, { error: 'unsupported_grant_type' });
        return;
      }
      record.user = user;
      const issued = authority.issue(user, scopes, policy, expiresIn);
      const body: Record<string, unknown> = {
        access_token: issued.token,
        scope: issued.grantedScope,
        expires_in: expiresInText,
        issued_at: new Date().toISOString(),
      };
      if (grant === 'password' && form.get('access_type') === 'offline')
        body.refresh_token = authority.issueRefresh(user);
      if (grant === 'refresh_token') body.refresh_token = form.get('refresh_token');
      sendJson(response, 200, body);
      return;
    }
    sendError(response, 405, 'UNSUPPORTED', 'method not allowed');
  }

  async function handleRegistry(request: IncomingMessage, response: ServerResponse) {
    const parsed = new URL(request.url ?? '/', 'http://localhost');
    let path: string;
    try {
      path = decodeURIComponent(parsed.pathname);
    } catch {
      path = parsed.pathname;
    }
    const record = startRecord(request, response, path, parsed.search);
    const method = record.method;
    const route = parseRoute(path);
    record.kind = route.kind;
    if (route.kind === 'token') return handleToken(request, response, record, parsed.searchParams);
    const headers: Record<string, string> = { 'Docker-Distribution-API-Version': 'registry/2.0' };
    if (route.kind === 'unknown') {
      sendError(response, 404, 'UNSUPPORTED', 'no such route', { path }, headers);
      return;
    }
    if (route.kind === 'ping' || route.kind === 'catalog') {
      const principal = authenticate(request, response, record, undefined, headers);
      if (principal === 'handled' || principal === undefined) return;
      const applied = faults.take({ kind: route.kind, method }, false, false);
      record.faults = applied.names;
      if (applyStatusFault(response, applied, headers)) return;
      if (route.kind === 'ping') {
        sendJson(response, 200, {}, headers);
        return;
      }
      sendJson(response, 200, { repositories: [...repositories.keys()].sort() }, headers);
      return;
    }
    const name = route.name;
    record.name = name;
    if (!NAME_PATTERN.test(name)) {
      sendError(response, 400, 'NAME_INVALID', 'invalid repository name', { name }, headers);
      return;
    }
    const writes = method === 'PUT' || method === 'POST' || method === 'PATCH' || method === 'DELETE';
    const actions: RegistryAction[] = writes ? ['pull', 'push'] : ['pull'];
    const principal = authenticate(request, response, record, { name, actions }, headers);
    if (principal === 'handled' || principal === undefined) return;
    if (!authorize(response, principal, name, actions, headers)) return;

    if (route.kind === 'upload')
      return handleUpload(request, response, record, route.name, route.session, parsed.searchParams, headers);

    if (route.kind === 'manifest' && method === 'PUT')
      return handleManifestPut(request, response, record, name, route.reference, headers);

    if (method !== 'GET' && method !== 'HEAD') {
      sendError(response, 405, 'UNSUPPORTED', 'method not allowed', { method }, headers);
      return;
    }
    const repository = repositories.get(name);
    if (repository === undefined) {
      const applied = faults.take({ kind: route.kind, method, name }, false, false);
      record.faults = applied.names;
      if (applyStatusFault(response, applied, headers)) return;
      sendError(response, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name }, headers);
      return;
    }
    if (route.kind === 'tags') {
      const applied = faults.take({ kind: 'tags', method, name }, false, false);
      record.faults = applied.names;
      if (applyStatusFault(response, applied, headers)) return;
      let tags = await repository.tags();
      const last = parsed.searchParams.get('last');
      if (last) tags = tags.filter((tag) => tag > last);
      const count = parsed.searchParams.get('n');
      const extra: Record<string, string> = { ...headers };
      if (count !== null && Number(count) >= 0 && tags.length > Number(count)) {
        tags = tags.slice(0, Number(count));
        extra.Link = `</v2/${name}/tags/list?n=${count}&last=${encodeURIComponent(tags.at(-1) ?? '')}>; rel="next"`;
      }
      sendJson(response, 200, { name, tags }, extra);
      return;
    }
    if (route.kind === 'manifest') {
      record.reference = route.reference;
      const manifest = await repository.manifest(route.reference);
      if (manifest) record.digest = manifest.digest;
      const applied = faults.take(
        { kind: 'manifest', method, name, reference: route.reference, digest: manifest?.digest },
        method === 'GET' && manifest !== undefined,
        false,
      );
      record.faults = applied.names;
      if (applyStatusFault(response, applied, headers)) return;
      if (!manifest) {
        sendError(
          response,
          404,
          'MANIFEST_UNKNOWN',
          'manifest unknown',
          { name, reference: route.reference },
          headers,
        );
        return;
      }
      if (options.manifestAccept === 'strict' && !accepts(request.headers.accept, manifest.mediaType)) {
        sendError(
          response,
          404,
          'MANIFEST_UNKNOWN',
          `${manifest.mediaType} found, but the accept header does not support it`,
          { name, reference: route.reference, mediaType: manifest.mediaType },
          headers,
        );
        return;
      }
      await serveBytes(
        request,
        response,
        record,
        { bytes: manifest.bytes },
        manifest.bytes.length,
        { ...headers, 'Content-Type': manifest.mediaType, 'Docker-Content-Digest': manifest.digest },
        applied,
        false,
      );
      return;
    }
    // Blob GET/HEAD.
    record.digest = route.digest;
    if (!isDigest(route.digest)) {
      sendError(response, 400, 'DIGEST_INVALID', 'invalid digest', { digest: route.digest }, headers);
      return;
    }
    const digest = route.digest as Digest;
    const size = await repository.blobSize(digest);
    const applied = faults.take(
      { kind: 'blob', method, name, digest },
      method === 'GET' && size !== undefined,
      method === 'GET' && size !== undefined,
    );
    record.faults = applied.names;
    if (applyStatusFault(response, applied, headers)) return;
    if (size === undefined) {
      sendError(response, 404, 'BLOB_UNKNOWN', 'blob unknown to registry', { digest }, headers);
      return;
    }
    if (applied.redirect) {
      const location = `${originUrl}/blobs/${name}/${digest}?X-Harness-Signature=${originSecret}`;
      response.writeHead(applied.redirect.status ?? 307, {
        ...headers,
        Location: location,
        'Content-Length': '0',
      });
      response.end();
      return;
    }
    await serveBytes(
      request,
      response,
      record,
      { file: repository.blobPath(digest) },
      size,
      { ...headers, 'Content-Type': 'application/octet-stream', 'Docker-Content-Digest': digest },
      applied,
      true,
    );
  }

  async function handleManifestPut(
    request: IncomingMessage,
    response: ServerResponse,
    record: RequestRecord,
    name: string,
    reference: string,
    headers: Record<string, string>,
  ) {
    record.reference = reference;
    const applied = faults.take({ kind: 'manifest', method: 'PUT', name, reference }, false, false);
    record.faults = applied.names;
    if (applyStatusFault(response, applied, headers)) return;
    const body = await readBody(request, MAX_MANIFEST_BYTES);
    if (body === undefined) {
      sendError(response, 413, 'SIZE_INVALID', 'manifest too large', { limit: MAX_MANIFEST_BYTES }, headers);
      return;
    }
    let mediaType = request.headers['content-type']?.split(';')[0]?.trim();
    let parsedManifest: { mediaType?: unknown };
    try {
      parsedManifest = JSON.parse(body.toString('utf8'));
    } catch {
      sendError(response, 400, 'MANIFEST_INVALID', 'manifest is not JSON', null, headers);
      return;
    }
    if (typeof parsedManifest.mediaType === 'string') mediaType = parsedManifest.mediaType;
    const digest = await digestOf(
      body,
      isDigest(reference) ? { algorithm: reference.startsWith('sha512:') ? 'sha512' : 'sha256' } : {},
    );
    record.digest = digest;
    if (isDigest(reference) && reference !== digest) {
      sendError(
        response,
        400,
        'DIGEST_INVALID',
        'manifest digest does not match',
        { expected: reference, actual: digest },
        headers,
      );
      return;
    }
    if (!isDigest(reference) && !/^[\w][\w.-]{0,127}$/.test(reference)) {
      sendError(response, 400, 'TAG_INVALID', 'invalid tag', { tag: reference }, headers);
      return;
    }
    const repository = await repositoryForPush(name);
    await repository.putManifest(
      reference,
      digest,
      mediaType ?? 'application/vnd.oci.image.manifest.v1+json',
      body,
    );
    response.writeHead(201, {
      ...headers,
      Location: `/v2/${name}/manifests/${digest}`,
      'Docker-Content-Digest': digest,
      'Content-Length': '0',
    });
    response.end();
  }

  async function handleUpload(
    request: IncomingMessage,
    response: ServerResponse,
    record: RequestRecord,
    name: string,
    sessionId: string | undefined,
    search: URLSearchParams,
    headers: Record<string, string>,
  ) {
    const method = record.method;
    const applied = faults.take({ kind: 'upload', method, name }, false, false);
    record.faults = applied.names;
    if (applyStatusFault(response, applied, headers)) return;
    const accepted = (session: string, upload: UploadSession) => {
      response.writeHead(202, {
        ...headers,
        Location: `/v2/${name}/blobs/uploads/${session}`,
        Range: `0-${Math.max(0, upload.size - 1)}`,
        'Docker-Upload-UUID': session,
        'Content-Length': '0',
      });
      response.end();
    };
    const created = (digest: string) => {
      response.writeHead(201, {
        ...headers,
        Location: `/v2/${name}/blobs/${digest}`,
        'Docker-Content-Digest': digest,
        'Content-Length': '0',
      });
      response.end();
    };
    const append = async (upload: UploadSession) => {
      await pipeline(request, createWriteStream(upload.file, { flags: 'a' }));
      upload.size = (await stat(upload.file)).size;
    };
    const commit = async (upload: UploadSession, session: string, digestText: string | null) => {
      if (!digestText || !isDigest(digestText)) {
        sendError(
          response,
          400,
          'DIGEST_INVALID',
          'missing or invalid digest',
          { digest: digestText },
          headers,
        );
        return;
      }
      const repository = await repositoryForPush(name);
      const committed = await repository.commitUpload(upload.file, digestText);
      uploads.delete(session);
      await rm(upload.file, { force: true });
      if (!committed) {
        sendError(
          response,
          400,
          'DIGEST_INVALID',
          'uploaded content does not match digest',
          { digest: digestText },
          headers,
        );
        return;
      }
      created(digestText);
    };

    if (sessionId === undefined) {
      if (method !== 'POST') {
        sendError(response, 405, 'UNSUPPORTED', 'method not allowed', { method }, headers);
        return;
      }
      const mount = search.get('mount');
      const from = search.get('from');
      if (mount && from && isDigest(mount)) {
        const source = repositories.get(from);
        if (source && (await source.blobSize(mount)) !== undefined) {
          const repository = await repositoryForPush(name);
          await repository.mountFrom(source, mount);
          created(mount);
          return;
        }
      }
      await mkdir(uploadsDir, { recursive: true });
      const session = randomUUID();
      const upload: UploadSession = { name, file: join(uploadsDir, session), size: 0 };
      uploads.set(session, upload);
      const digest = search.get('digest');
      if (digest !== null) {
        await append(upload);
        await commit(upload, session, digest);
        return;
      }
      // A POST may carry no body; consume whatever it sent so the connection stays usable.
      await append(upload);
      accepted(session, upload);
      return;
    }
    const upload = uploads.get(sessionId);
    if (upload === undefined || upload.name !== name) {
      sendError(
        response,
        404,
        'BLOB_UPLOAD_UNKNOWN',
        'blob upload unknown to registry',
        { session: sessionId },
        headers,
      );
      return;
    }
    if (method === 'GET') {
      response.writeHead(204, {
        ...headers,
        Location: `/v2/${name}/blobs/uploads/${sessionId}`,
        Range: `0-${Math.max(0, upload.size - 1)}`,
        'Docker-Upload-UUID': sessionId,
      });
      response.end();
      return;
    }
    if (method === 'DELETE') {
      uploads.delete(sessionId);
      await rm(upload.file, { force: true });
      response.writeHead(204, headers);
      response.end();
      return;
    }
    if (method === 'PATCH') {
      const contentRange = request.headers['content-range'];
      const rangeMatch = contentRange ? /^(?:bytes )?(\d+)-(\d+)$/.exec(contentRange) : null;
      if (rangeMatch && Number(rangeMatch[1]) !== upload.size) {
        request.resume();
        sendError(
          response,
          416,
          'BLOB_UPLOAD_INVALID',
          'chunk out of order',
          { size: upload.size },
          {
            ...headers,
            Range: `0-${Math.max(0, upload.size - 1)}`,
          },
        );
        return;
      }
      await append(upload);
      accepted(sessionId, upload);
      return;
    }
    if (method === 'PUT') {
      await append(upload);
      await commit(upload, sessionId, search.get('digest'));
      return;
    }
    sendError(response, 405, 'UNSUPPORTED', 'method not allowed', { method }, headers);
  }

  async function handleOrigin(request: IncomingMessage, response: ServerResponse) {
    const parsed = new URL(request.url ?? '/', 'http://localhost');
    const path = decodeURIComponent(parsed.pathname);
    const record = startRecord(request, response, path, '');
    record.kind = 'origin';
    const match = /^\/blobs\/(.+)\/([^/]+)$/.exec(path);
    const xml = (status: number, code: string) => {
      const body = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code></Error>`);
      response.writeHead(status, {
        'Content-Type': 'application/xml',
        'Content-Length': String(body.length),
      });
      response.end(body);
    };
    if (!match || parsed.searchParams.get('X-Harness-Signature') !== originSecret) {
      xml(403, 'AccessDenied');
      return;
    }
    const [, name = '', digest = ''] = match;
    record.name = name;
    record.digest = digest;
    if (options.origin?.rejectAuthorization && request.headers.authorization !== undefined) {
      xml(400, 'InvalidArgument');
      return;
    }
    const repository = repositories.get(name);
    const size = repository && isDigest(digest) ? await repository.blobSize(digest) : undefined;
    const method = record.method;
    const applied = faults.take(
      { kind: 'origin', method, name, digest },
      method === 'GET' && size !== undefined,
      false,
    );
    record.faults = applied.names;
    if (applied.status) {
      xml(applied.status.status, 'InjectedFault');
      return;
    }
    if (!repository || size === undefined || (method !== 'GET' && method !== 'HEAD')) {
      xml(404, 'NoSuchKey');
      return;
    }
    await serveBytes(
      request,
      response,
      record,
      { file: repository.blobPath(digest as Digest) },
      size,
      { 'Content-Type': 'application/octet-stream', ETag: `"${digest}"` },
      applied,
      true,
    );
  }

  const sockets = new Set<Socket>();
  const guard =
    (handler: (request: IncomingMessage, response: ServerResponse) => Promise<void>) =>
    (request: IncomingMessage, response: ServerResponse) => {
      handler(request, response).catch((error: unknown) => {
        sendError(response, 500, 'UNKNOWN', 'internal error in the harness registry', String(error));
      });
    };
  const track = (server: Server) =>
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
  const server = track(createServer(guard(handleRegistry)));
  const originServer = track(createServer(guard(handleOrigin)));
  const listen = (target: Server, port: number) =>
    new Promise<number>((resolvePort, reject) => {
      target.once('error', reject);
      target.listen(port, '127.0.0.1', () => {
        target.off('error', reject);
        resolvePort((target.address() as AddressInfo).port);
      });
    });
  const port = await listen(server, options.port ?? 0);
  const originPort = await listen(originServer, 0);
  url = `http://127.0.0.1:${port}`;
  originUrl = `http://127.0.0.1:${originPort}`;
  let closed: Promise<void> | undefined;

  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    origin: { url: originUrl, host: `127.0.0.1:${originPort}`, port: originPort },
    tokenUrl: `${url}/token`,
    requests,
    clearRequests() {
      requests.length = 0;
    },
    faults: { add: faults.add, list: faults.list, clear: faults.clear },
    addRepository(name, layoutDir) {
      checkName(name);
      repositories.set(name, new LayoutRepository(resolve(layoutDir)));
    },
    removeRepository(name) {
      repositories.delete(name);
    },
    repositoryDir(name) {
      return repositories.get(name)?.dir;
    },
    repositories() {
      return [...repositories.keys()].sort();
    },
    revokeTokens() {
      authority.revokeAll();
    },
    close() {
      closed ??= (async () => {
        const closing = [server, originServer].map(
          (target) => new Promise<void>((done) => target.close(() => done())),
        );
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
        originServer.closeAllConnections();
        await Promise.all(closing);
        await rm(uploadsDir, { recursive: true, force: true });
        if (ownsStorage) await rm(storageDir, { recursive: true, force: true });
      })();
      return closed;
    },
  };
}
