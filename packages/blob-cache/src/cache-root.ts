import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * The default cache directory: `$OCIPULL_CACHE`, else `$XDG_CACHE_HOME/ocipull` (XDG Base Directory
 * spec), else `~/.cache/ocipull`. Empty variables count as unset, as the XDG spec asks.
 */
export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OCIPULL_CACHE) return env.OCIPULL_CACHE;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'ocipull');
  return join(homedir(), '.cache', 'ocipull');
}
