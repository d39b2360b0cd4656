import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

/** Where each system tool the harness drives comes from (Debian packages), for error messages. */
const PACKAGE_OF: Record<string, string> = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  openssl: 'openssl',
  htpasswd: 'apache2-utils',
};

/**
 * Resolves a system tool on PATH (or the given absolute path), failing with a message that names the
 * Debian package to install. Tests never skip for a missing tool: they fail saying what is missing.
 */
export async function requireTool(name: string): Promise<string> {
  const candidates = name.includes('/')
    ? [name]
    : (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter).map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next PATH entry
    }
  }
  const packageName = PACKAGE_OF[name] ?? name;
  throw new Error(
    `ocipull test-harness: '${name}' is not installed; install it with 'apt-get install ${packageName}' (or run scripts/ensure-tools.sh)`,
  );
}

/** What a finished child process printed. */
export interface ToolResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs a tool and resolves with its output, or rejects with an error holding its exit code and
 * stderr. `input` is written to stdin (how secrets reach htpasswd without appearing in argv).
 */
export async function runTool(
  name: string,
  args: string[],
  options: { input?: string; signal?: AbortSignal; timeoutMs?: number; cwd?: string } = {},
): Promise<ToolResult> {
  const file = await requireTool(name);
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        maxBuffer: 64 * 1024 * 1024,
        timeout: options.timeoutMs ?? 120_000,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.cwd ? { cwd: options.cwd } : {}),
      },
      (error, stdout, stderr) => {
        if (error) {
          reject(
            new Error(
              `${name} ${args[0] ?? ''} failed (${error.code ?? error.signal ?? 'error'}): ${stderr.trim()}`,
              {
                cause: error,
              },
            ),
          );
          return;
        }
        resolve({ stdout, stderr });
      },
    );
    child.stdin?.end(options.input ?? '');
  });
}

/** Options for `skopeo`. */
export interface SkopeoOptions {
  signal?: AbortSignal;
  /** Default 120 s. */
  timeoutMs?: number;
}

/**
 * Runs `skopeo <args>` with `--insecure-policy` (tests copy unsigned images) and resolves with its
 * output. Fails naming the package when skopeo is missing.
 */
export function skopeo(args: string[], options: SkopeoOptions = {}): Promise<ToolResult> {
  return runTool('skopeo', ['--insecure-policy', ...args], options);
}
