import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortedError, ErrorCode, homeDirectory, OciError } from '@ocipull/core';
import { DEFAULT_REGISTRY } from './reference.ts';

/**
 * Credentials for one registry. `username`+`password` authenticate with Basic (to the registry or
 * the token realm); `identityToken` is an OAuth2 refresh token (Docker's `identitytoken`, a helper's
 * `<token>` user); `registryToken` is a bearer token sent as-is.
 */
export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

/** Where credentials come from: a function of the registry host, or a map keyed by registry host. */
export type CredentialsOption =
  | ((registry: string) => Credentials | undefined | Promise<Credentials | undefined>)
  | Readonly<Record<string, Credentials>>;

/** The key Docker stores Docker Hub credentials under. */
export const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';
/** How long a credential helper may run before we give up on it. */
export const CREDENTIAL_HELPER_TIMEOUT_MS = 30_000;

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  registrytoken?: string;
}

interface AuthFile {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/**
 * The auth files consulted, first match wins: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
 * `~/.config/containers/auth.json` (podman/skopeo order), then `$DOCKER_CONFIG/config.json` or
 * `~/.docker/config.json`. An explicit `dockerConfig` path replaces the docker one.
 */
export function authFilePaths(dockerConfig?: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const paths: string[] = [];
  if (env.REGISTRY_AUTH_FILE) paths.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) paths.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  const home = homeDirectory(env);
  paths.push(join(env.XDG_CONFIG_HOME ?? join(home, '.config'), 'containers', 'auth.json'));
  paths.push(dockerConfig ?? join(env.DOCKER_CONFIG ?? join(home, '.docker'), 'config.json'));
  return paths;
}

/** Normalises a config key the way Docker does: drop the scheme and a path (`https://host/v1/` → `host`). */
export function normalizeAuthKey(key: string): string {
  let value = key.trim().toLowerCase();
  value = value.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  if (value === 'index.docker.io/v1/' || value === 'index.docker.io/v1' || value === 'index.docker.io') {
    return DEFAULT_REGISTRY;
  }
  if (value === 'registry-1.docker.io') return DEFAULT_REGISTRY;
  // `host/v1/`, `host/v2/`: API paths, not repository scopes.
  value = value.replace(/\/v[12]\/?$/, '');
  return value.replace(/\/+$/, '');
}

/**
 * Finds credentials for `registry` (and, for podman's per-repository entries, `repository`) in the
 * auth files, running credential helpers (`docker-credential-<name> get`) as configured. Returns
 * undefined when nothing applies. A helper that fails or is missing is an `ERR_UNAUTHORIZED` error
 * naming the helper, never the secret.
 */
export async function lookupConfigCredentials(
  registry: string,
  repository: string | undefined,
  options: { dockerConfig?: string; env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {},
): Promise<Credentials | undefined> {
  const env = options.env ?? process.env;
  for (const path of authFilePaths(options.dockerConfig, env)) {
    const file = await readAuthFile(path);
    if (!file) continue;
    const found = await fromAuthFile(file, registry, repository, env, options.signal);
    if (found) return found;
  }
  return undefined;
}

async function readAuthFile(path: string): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    return typeof parsed === 'object' && parsed !== null ? (parsed as AuthFile) : undefined;
  } catch (error) {
    // A local file to fix, not a bad argument (exit 5 in the CLI, not "see --help").
    throw new OciError(ErrorCode.Io, `auth file ${path} is not valid JSON: fix or remove it`, {
      cause: error,
    });
  }
}

async function fromAuthFile(
  file: AuthFile,
  registry: string,
  repository: string | undefined,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal | undefined,
): Promise<Credentials | undefined> {
  const wanted = registry.toLowerCase();
  // Docker: a per-registry credHelpers entry wins over auths and credsStore.
  const helpers = file.credHelpers ?? {};
  for (const [key, helper] of Object.entries(helpers)) {
    if (normalizeAuthKey(key) === wanted)
      return runCredentialHelper(helper, serverUrl(registry), { env, signal });
  }
  const entries = new Map<string, AuthEntry>();
  for (const [key, entry] of Object.entries(file.auths ?? {})) {
    const normalized = normalizeAuthKey(key);
    if (!entries.has(normalized)) entries.set(normalized, entry);
  }
  // podman: `registry/namespace/repo` entries, most specific first.
  const candidates: string[] = [];
  if (repository) {
    const parts = repository.split('/');
    for (let length = parts.length; length > 0; length--)
      candidates.push(`${wanted}/${parts.slice(0, length).join('/')}`);
  }
  candidates.push(wanted);
  for (const key of candidates) {
    const entry = entries.get(key);
    if (entry) {
      const credentials = decodeEntry(entry);
      if (credentials) return credentials;
    }
  }
  if (file.credsStore) {
    return runCredentialHelper(file.credsStore, serverUrl(registry), { env, signal, missingIsEmpty: true });
  }
  return undefined;
}

/** The server URL credential helpers are keyed by: Docker Hub's legacy URL, else the host. */
function serverUrl(registry: string): string {
  return registry === DEFAULT_REGISTRY ? DOCKER_HUB_CONFIG_KEY : registry;
}

function decodeEntry(entry: AuthEntry): Credentials | undefined {
  const credentials: Credentials = {};
  if (typeof entry.auth === 'string' && entry.auth.length > 0) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      credentials.username = decoded.slice(0, colon);
      credentials.password = decoded.slice(colon + 1);
    }
  }
  if (typeof entry.username === 'string' && entry.username) credentials.username = entry.username;
  if (typeof entry.password === 'string' && entry.password) credentials.password = entry.password;
  if (typeof entry.identitytoken === 'string' && entry.identitytoken)
    credentials.identityToken = entry.identitytoken;
  if (typeof entry.registrytoken === 'string' && entry.registrytoken)
    credentials.registryToken = entry.registrytoken;
  return Object.keys(credentials).length === 0 ? undefined : credentials;
}

/**
 * Runs `docker-credential-<helper> get` with the server URL on stdin (the docker-credential-helpers
 * protocol) and returns its credentials. A `<token>` username means the secret is an identity token.
 * "credentials not found" answers undefined.
 */
export async function runCredentialHelper(
  helper: string,
  server: string,
  options: {
    env?: NodeJS.ProcessEnv;
    signal?: AbortSignal;
    missingIsEmpty?: boolean;
    timeoutMs?: number;
  } = {},
): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) {
    throw new OciError(ErrorCode.InvalidArgument, `invalid credential helper name ${JSON.stringify(helper)}`);
  }
  const program = `docker-credential-${helper}`;
  const timeoutMs = options.timeoutMs ?? CREDENTIAL_HELPER_TIMEOUT_MS;
  const { code, stdout, stderr, spawnError, timedOut } = await new Promise<{
    code: number | null;
    stdout: string;
    stderr: string;
    spawnError?: NodeJS.ErrnoException;
    timedOut?: boolean;
  }>((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new AbortedError(options.signal.reason));
      return;
    }
    // In a process group of its own, so a timeout or an abort ends the helper *and* what it started:
    // a shell-script helper's `sleep` or `curl` keeps the pipes open after the shell is killed, and
    // waiting for them to close would wait forever.
    const child = childProcess().spawn(program, ['get'], {
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let settled = false;
    /** Kills the helper's process group and stops reading it. */
    const stop = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
      child.stdout.destroy();
      child.stderr.destroy();
    };
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const onAbort = () =>
      finish(() => {
        stop();
        reject(new AbortedError(options.signal?.reason));
      });
    const timer = setTimeout(
      () =>
        finish(() => {
          stop();
          resolve({ code: null, stdout: '', stderr: '', timedOut: true });
        }),
      timeoutMs,
    );
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.stdin.on('error', () => {
      // The helper may exit without reading stdin; its exit status tells the story.
    });
    child.on('error', (error: NodeJS.ErrnoException) =>
      finish(() => resolve({ code: null, stdout: '', stderr: '', spawnError: error })),
    );
    child.on('close', (exitCode) =>
      finish(() =>
        resolve({
          code: exitCode,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        }),
      ),
    );
    child.stdin.end(server);
  });
  if (timedOut) {
    throw new OciError(
      ErrorCode.Unauthorized,
      `credential helper ${program} did not answer within ${Math.round(timeoutMs / 1000)} s`,
    );
  }
  if (spawnError) {
    if (spawnError.code === 'ENOENT' && options.missingIsEmpty) return undefined;
    throw new OciError(
      ErrorCode.Unauthorized,
      `credential helper ${program} could not run (${spawnError.code ?? spawnError.message})`,
      {
        cause: spawnError,
      },
    );
  }
  if (code !== 0) {
    // The helpers print "credentials not found in native keychain" for unknown servers.
    const said = `${stdout}\n${stderr}`;
    if (/credentials not found/i.test(said)) return undefined;
    throw new OciError(
      ErrorCode.Unauthorized,
      `credential helper ${program} failed with exit code ${String(code)}: ${stderr.trim().slice(0, 200) || 'no message'}`,
    );
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout) as typeof parsed;
  } catch {
    // Never echo the output: it may hold a secret.
    throw new OciError(
      ErrorCode.Unauthorized,
      `credential helper ${program} printed something other than JSON`,
    );
  }
  const username = typeof parsed.Username === 'string' ? parsed.Username : '';
  const secret = typeof parsed.Secret === 'string' ? parsed.Secret : '';
  if (!secret) return undefined;
  if (username === '<token>') return { identityToken: secret };
  return { username, password: secret };
}

/**
 * `node:child_process`, loaded at its first use: only a credential helper (or mknod/mkfifo) needs it,
 * and importing it with everything else cost every run ~5 ms of start-up.
 */
function childProcess(): typeof import('node:child_process') {
  return process.getBuiltinModule('node:child_process') as typeof import('node:child_process');
}
