import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ErrorCode, OciError } from '@ocipull/core';
import { DEFAULT_REGISTRY, DOCKER_HUB_CONFIG_KEY, normalizeAuthKey } from '@ocipull/registry-client';

/** The parts of `~/.docker/config.json` login and logout touch; everything else is kept as is. */
interface DockerConfig {
  auths?: Record<string, { auth?: string; identitytoken?: string; [key: string]: unknown }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: where `docker login` writes. */
export function dockerConfigPath(env: NodeJS.ProcessEnv): string {
  return join(env.DOCKER_CONFIG ?? join(env.HOME ?? homedir(), '.docker'), 'config.json');
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
      throw new OciError(ErrorCode.InvalidArgument, `${path} is not a JSON object`);
    }
    return parsed as DockerConfig;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    if (error instanceof SyntaxError)
      throw new OciError(ErrorCode.InvalidArgument, `${path} is not valid JSON`);
    throw error;
  }
}

/** Writes the config atomically with mode 0600: it holds secrets. */
async function writeConfig(path: string, config: DockerConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, `${JSON.stringify(config, null, '\t')}\n`, { mode: 0o600 });
    await chmod(temp, 0o600);
    await rename(temp, path);
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
  } else {
    const auth = Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64');
    config.auths = { ...config.auths, [key]: { auth } };
  }
  await writeConfig(path, config);
  return path;
}

/** Removes stored credentials for a registry; false when there were none. */
export async function removeCredentials(registry: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  const path = dockerConfigPath(env);
  const config = await readConfig(path);
  const wanted = normalizeAuthKey(registry);
  const keys = Object.keys(config.auths ?? {}).filter((key) => normalizeAuthKey(key) === wanted);
  const helper = helperFor(config, authKeyFor(registry));
  if (helper) await runHelper(helper, 'erase', authKeyFor(registry), env).catch(() => {});
  if (keys.length === 0) return false;
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
