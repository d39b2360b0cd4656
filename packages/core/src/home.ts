import { homedir, userInfo } from 'node:os';

/**
 * The user's home directory: `$HOME` when set and not empty, else the password database's entry (as
 * Docker's `homedir.Get` and Go's `os.UserHomeDir` fall back), else Node's `os.homedir()`. An empty
 * `HOME` must not turn `~/.cache` or `~/.docker` into paths relative to the working directory.
 */
export function homeDirectory(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HOME) return env.HOME;
  try {
    const home = userInfo().homedir;
    if (home) return home;
  } catch {
    // No password entry for this uid (a container's arbitrary user): fall through.
  }
  return homedir() || '/';
}
