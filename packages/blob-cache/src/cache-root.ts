import { isAbsolute, join } from 'node:path';
import { homeDirectory } from '@ocipull/core';

/**
 * The default cache directory: `$OCIPULL_CACHE`, else `$XDG_CACHE_HOME/ocipull` (XDG Base Directory
 * spec), else `~/.cache/ocipull`. Empty variables count as unset, and a relative `XDG_CACHE_HOME` is
 * ignored, as the XDG spec asks; an empty `HOME` falls back to the password database's home.
 */
export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OCIPULL_CACHE) return env.OCIPULL_CACHE;
  if (env.XDG_CACHE_HOME && isAbsolute(env.XDG_CACHE_HOME)) return join(env.XDG_CACHE_HOME, 'ocipull');
  return join(homeDirectory(env), '.cache', 'ocipull');
}
