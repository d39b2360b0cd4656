import { basename, join, relative, resolve } from 'node:path';
import { isLayoutDirectory, listDirectories } from './layout-repository.ts';
import { type HarnessRegistry, startRegistry } from './start-registry.ts';

/** How deep `findLayouts` looks for layouts under a directory (`library/alpine` is depth 2). */
const MAX_REPOSITORY_DEPTH = 4;

/** The auth modes of `ocipull-harness serve`. */
export type ServeAuth = 'none' | 'basic' | 'token';

/** Options for `serveDirectory`. */
export interface ServeDirectoryOptions {
  /** Default 0 (any free port). */
  port?: number;
  /** Default `'none'`. `'token'` allows anonymous pulls; users get push too. */
  auth?: ServeAuth;
  /** Users for `basic` (required) and `token`. */
  users?: Record<string, string>;
}

/** Turns a directory name into a valid repository name component (lower case, `[a-z0-9._-]`). */
export function repositoryNameOf(name: string): string {
  const cleaned = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+|[._-]+$/g, '');
  return cleaned === '' ? 'image' : cleaned;
}

/**
 * Finds the OCI layouts to serve: `dir` itself when it is a layout (named by its base name), otherwise
 * every layout below it, named by its relative path (`dir/library/alpine` → `library/alpine`).
 */
export async function findLayouts(dir: string): Promise<Record<string, string>> {
  const root = resolve(dir);
  if (await isLayoutDirectory(root)) return { [repositoryNameOf(basename(root))]: root };
  const found: Record<string, string> = {};
  const walk = async (current: string, depth: number): Promise<void> => {
    for (const entry of await listDirectories(current)) {
      if (entry.startsWith('.')) continue;
      const path = join(current, entry);
      if (await isLayoutDirectory(path)) {
        const name = relative(root, path).split(/[\\/]/).map(repositoryNameOf).join('/');
        found[name] = path;
      } else if (depth < MAX_REPOSITORY_DEPTH) {
        await walk(path, depth + 1);
      }
    }
  };
  await walk(root, 1);
  return found;
}

/**
 * Starts the harness registry over every layout found in `dir` (see `findLayouts`). When `dir` is a
 * directory of layouts, pushes of new repositories land in it too.
 */
export async function serveDirectory(
  dir: string,
  options: ServeDirectoryOptions = {},
): Promise<HarnessRegistry> {
  const root = resolve(dir);
  const repositories = await findLayouts(root);
  const single = await isLayoutDirectory(root);
  const auth = options.auth ?? 'none';
  if (auth === 'basic' && Object.keys(options.users ?? {}).length === 0) {
    throw new RangeError('serve: --auth basic needs at least one --user NAME:PASSWORD');
  }
  return startRegistry({
    port: options.port ?? 0,
    repositories,
    ...(single ? {} : { storageDir: root }),
    auth:
      auth === 'basic'
        ? { type: 'basic', users: options.users ?? {} }
        : auth === 'token'
          ? { type: 'bearer', users: options.users ?? {} }
          : { type: 'none' },
  });
}
