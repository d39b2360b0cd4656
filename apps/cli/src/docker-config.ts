import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, readlink, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ErrorCode, homeDirectory, OciError } from '@ocipull/core';
import {
  authFilePaths,
  DEFAULT_REGISTRY,
  DOCKER_HUB_CONFIG_KEY,
  normalizeAuthKey,
} from '@ocipull/registry-client';

/** The parts of `~/.docker/config.json` login and logout touch; everything else is kept as is. */
interface DockerConfig {
  auths?: Record<string, { auth?: string; identitytoken?: string; [key: string]: unknown }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: where `docker login` writes. */
export function dockerConfigPath(env: NodeJS.ProcessEnv): string {
  return join(env.DOCKER_CONFIG || join(homeDirectory(env), '.docker'), 'config.json');
}

/** The key Docker uses in `auths` for a registry (`https://index.docker.io/v1/` for Docker Hub). */
export function authKeyFor(registry: string): string {
  const normalized = normalizeAuthKey(registry);
  return normalized === DEFAULT_REGISTRY ? DOCKER_HUB_CONFIG_KEY : normalized;
}

async function readConfig(path: string): Promise<DockerConfig> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new OciError(ErrorCode.Io, `${path} is not a JSON object: fix or remove it`);
    }
    return parsed as DockerConfig;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    if (error instanceof SyntaxError)
      throw new OciError(ErrorCode.Io, `${path} is not valid JSON: fix or remove it`);
    throw error;
  }
}

/** Links followed at most, as Linux's `MAXSYMLINKS` (40) before `ELOOP`. */
const MAX_SYMLINKS = 40;

/**
 * The file a write of the config at `path` should replace: `path` itself, or the file its symlinks
 * lead to (a config kept in a dotfiles repository and linked into place). Renaming over the link
 * would turn it into a regular file and leave the linked file stale; docker's config writer resolves
 * the link first too. A dangling link leads to the file it names, which the write creates.
 */
async function writeTarget(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    // Missing, or a link to a missing file: follow the links by hand to the name they end at.
    let current = path;
    for (let hops = 0; hops < MAX_SYMLINKS; hops++) {
      let link: string;
      try {
        link = await readlink(current);
      } catch {
        return current;
      }
      current = resolve(dirname(current), link);
    }
    return current;
  }
}

/**
 * Writes the config atomically with mode 0600: it holds secrets. Through a symlink, the temporary file
 * is made beside the link's target, so the rename stays in one directory and file system.
 */
async function writeConfig(path: string, config: DockerConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const target = await writeTarget(path);
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const temp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, `${JSON.stringify(config, null, '\t')}\n`, { mode: 0o600 });
    await chmod(temp, 0o600);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw new OciError(ErrorCode.Io, `could not write ${path}`, { cause: error });
  }
}

function helperFor(config: DockerConfig, key: string): string | undefined {
  const helpers = config.credHelpers ?? {};
  for (const [name, helper] of Object.entries(helpers)) {
    if (normalizeAuthKey(name) === normalizeAuthKey(key)) return helper;
  }
  return config.credsStore;
}

/** Runs `docker-credential-<helper> <verb>` with `input` on stdin; the secret never reaches an error. */
function runHelper(
  helper: string,
  verb: 'store' | 'erase',
  input: string,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) {
    return Promise.reject(
      new OciError(ErrorCode.InvalidArgument, `invalid credential helper name ${JSON.stringify(helper)}`),
    );
  }
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(`docker-credential-${helper}`, [verb], {
      env,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    const errors: Buffer[] = [];
    child.stderr.on('data', (chunk: Buffer) => errors.push(chunk));
    child.stdin.on('error', () => {});
    child.on('error', (error) =>
      reject(
        new OciError(ErrorCode.Io, `credential helper docker-credential-${helper} could not run`, {
          cause: error,
        }),
      ),
    );
    child.on('close', (code) => {
      if (code === 0) resolve();
      else
        reject(
          new OciError(ErrorCode.Io, `docker-credential-${helper} ${verb} failed with exit code ${code}`),
        );
    });
    child.stdin.end(input);
  });
}

/** Stores credentials the way `docker login` does: in the configured helper, else base64 in `auths`. */
export async function saveCredentials(
  registry: string,
  credentials: { username: string; password: string },
  env: NodeJS.ProcessEnv,
): Promise<string> {
  const path = dockerConfigPath(env);
  const config = await readConfig(path);
  const key = authKeyFor(registry);
  const helper = helperFor(config, key);
  if (helper) {
    await runHelper(
      helper,
      'store',
      JSON.stringify({ ServerURL: key, Username: credentials.username, Secret: credentials.password }),
      env,
    );
    config.auths = { ...config.auths, [key]: {} };
    await writeConfig(path, config);
    return `credential helper docker-credential-${helper}`;
  } else {
    const auth = Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64');
    config.auths = { ...config.auths, [key]: { auth } };
  }
  await writeConfig(path, config);
  // A podman/skopeo auth file is read before the docker config (their order): an entry for this
  // registry there would win over what was just stored, so it gets the new credentials too.
  await inContainersAuthFiles(registry, env, (entries, key) => {
    entries[key] = {
      ...entries[key],
      auth: Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64'),
    };
  });
  return path;
}

/**
 * Runs `change` on each podman/skopeo auth file (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/
 * auth.json`, `~/.config/containers/auth.json`) for each of its `auths` keys naming `registry`, and
 * writes the files it changed; true when there was any such key.
 */
async function inContainersAuthFiles(
  registry: string,
  env: NodeJS.ProcessEnv,
  change: (entries: NonNullable<DockerConfig['auths']>, key: string) => void,
): Promise<boolean> {
  const wanted = normalizeAuthKey(registry);
  const docker = dockerConfigPath(env);
  let found = false;
  for (const path of authFilePaths(undefined, env)) {
    if (resolve(path) === resolve(docker)) continue;
    const config = await readConfig(path);
    const entries = config.auths ?? {};
    const keys = Object.keys(entries).filter((key) => normalizeAuthKey(key) === wanted);
    if (keys.length === 0) continue;
    for (const key of keys) change(entries, key);
    config.auths = entries;
    await writeConfig(path, config);
    found = true;
  }
  return found;
}

/** Removes stored credentials for a registry; false when there were none. */
export async function removeCredentials(registry: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  // Also from the podman/skopeo auth files a pull reads first: logged out means none is used.
  const elsewhere = await inContainersAuthFiles(registry, env, (entries, key) => {
    delete entries[key];
  });
  const path = dockerConfigPath(env);
  const config = await readConfig(path);
  const wanted = normalizeAuthKey(registry);
  const keys = Object.keys(config.auths ?? {}).filter((key) => normalizeAuthKey(key) === wanted);
  const helper = helperFor(config, authKeyFor(registry));
  if (helper) await runHelper(helper, 'erase', authKeyFor(registry), env).catch(() => {});
  if (keys.length === 0) return elsewhere;
  for (const key of keys) delete config.auths![key];
  await writeConfig(path, config);
  return true;
}

/**
 * `node:child_process`, loaded at its first use: only a credential helper (or mknod/mkfifo) needs it,
 * and importing it with everything else cost every run ~5 ms of start-up.
 */
function childProcess(): typeof import('node:child_process') {
  return process.getBuiltinModule('node:child_process') as typeof import('node:child_process');
}
