import { readFile } from 'node:fs/promises';
import { ErrorCode, isOciError, OciError } from '@ocipull/core';
import type { Command, CommandContext } from './context.ts';
import { ExitCode, exitCodeFor, hintFor } from './exit-codes.ts';
import { isClosedPipe, watchOutput } from './output.ts';

/** The top-level usage text of `ocipull`. */
export const USAGE = `Usage: ocipull <command> [options]

Pull OCI and Docker images into a verified, content-addressed cache and extract them.

Commands:
  pull REF            download an image into the cache (and optionally a rootfs); see \`ocipull pull --help\`
  images              list cached images
  inspect REF         show an image's manifest, config and layers
  config REF          print an image's config as JSON
  rm REF...           remove image records from the cache
  prune               remove unreferenced blobs, layer trees and partial downloads
  verify [DIGEST...]  re-hash cached blobs, quarantine bad ones
  unpack REF DIR      flatten an already-cached image into DIR
  login REGISTRY      check and store credentials in the docker config (-u USER, --password-stdin)
  logout REGISTRY     remove stored credentials
  demo                pull a built-in sample image from an in-process registry

Global options:
  --cache DIR         cache directory (default: $OCIPULL_CACHE, $XDG_CACHE_HOME/ocipull, ~/.cache/ocipull)
  --json              print data as JSON
  --quiet             print nothing but errors
  --debug             print the cause chain of errors
  -h, --help          show help
  --version           print the version

Pull defaults: --pull always, --concurrency 4 (see \`ocipull pull --help\`).
Exit codes: 0 ok, 1 usage, 2 not found or auth, 3 network, 4 integrity, 5 local I/O, 130 interrupted.
`;

/** The usage of each command but `pull` (whose own parser prints `PULL_USAGE`), for `CMD --help` and `help CMD`. */
export const COMMAND_USAGE: Record<string, string> = {
  images: `Usage: ocipull images [--json]

Lists the image records in the cache: reference, manifest digest and size.
`,
  inspect: `Usage: ocipull inspect REF [--platform OS/ARCH[/VARIANT]] [--json]

Shows a cached image's manifest, config and layers (offline; pull it first).
`,
  config: `Usage: ocipull config REF [--platform OS/ARCH[/VARIANT]]

Prints a cached image's config as JSON (offline; pull it first).
`,
  rm: `Usage: ocipull rm REF...

Removes image records from the cache; \`ocipull prune\` then frees their blobs.
`,
  prune: `Usage: ocipull prune [--dry-run] [--json]

Removes blobs, layer trees and partial downloads no image record references.
`,
  verify: `Usage: ocipull verify [DIGEST...] [--json]

Re-hashes cached blobs (all, or the given digests) and quarantines the ones that do not match.
Exit code 4 when a blob is corrupt, 2 when a given digest is missing.
`,
  unpack: `Usage: ocipull unpack REF DIR [--platform OS/ARCH[/VARIANT]] [--json]

Flattens an already-cached image into DIR, which must not exist yet (offline; pull it first).
`,
  login: `Usage: ocipull login REGISTRY -u USER (--password-stdin | -p PASSWORD) [options]

Checks the credentials with REGISTRY (as docker login does) and stores them in the docker config
($DOCKER_CONFIG/config.json or ~/.docker/config.json), or in its credential helper when one is
configured. Prefer --password-stdin: a password on the command line is visible in shell history and \`ps\`.

Options:
  --no-verify         store without asking the registry
  --insecure          plain HTTP (loopback registries default to it)
  --tls               HTTPS even for a loopback registry (implied by --ca-file, --tls-skip-verify)
  --ca-file FILE      extra CA certificate (PEM) for REGISTRY
  --tls-skip-verify   do not verify REGISTRY's TLS certificate (dangerous)
`,
  logout: `Usage: ocipull logout REGISTRY

Removes the stored credentials for REGISTRY.
`,
  demo: `Usage: ocipull demo [--keep] [--progress auto|tty|plain|json|none]

Starts the test-harness registry on 127.0.0.1 with a built-in sample image and pulls it with
progress into a temporary cache and rootfs (kept with --keep).
`,
};

/**
 * Commands load on first use: `ocipull --version` or `ocipull images` should not pay for undici,
 * tar-stream or the test harness (measured: ~0.2 s and ~90 MB RSS when everything loaded eagerly).
 */
const commands: Record<string, () => Promise<Command>> = {
  pull: async () => (await import('./commands/pull.ts')).pullCommand,
  images: async () => (await import('./commands/cache-commands.ts')).imagesCommand,
  inspect: async () => (await import('./commands/cache-commands.ts')).inspectCommand,
  config: async () => (await import('./commands/cache-commands.ts')).configCommand,
  rm: async () => (await import('./commands/cache-commands.ts')).rmCommand,
  prune: async () => (await import('./commands/cache-commands.ts')).pruneCommand,
  verify: async () => (await import('./commands/cache-commands.ts')).verifyCommand,
  unpack: async () => (await import('./commands/cache-commands.ts')).unpackCommand,
  login: async () => (await import('./commands/login.ts')).loginCommand,
  logout: async () => (await import('./commands/login.ts')).logoutCommand,
  demo: async () => (await import('./commands/demo.ts')).demoCommand,
};

/** Where the CLI reads and writes; the real process streams by default. */
export interface MainOptions {
  stdout?: CommandContext['stdout'];
  stderr?: CommandContext['stderr'];
  stdin?: NodeJS.ReadableStream;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/** Splits the global flags (anywhere on the line) from the command and its own arguments. */
function splitGlobals(argv: string[]) {
  const globals = {
    cache: undefined as string | undefined,
    json: false,
    quiet: false,
    debug: false,
    help: false,
    version: false,
  };
  const rest: string[] = [];
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index]!;
    if (argument === '--') {
      rest.push(...argv.slice(index));
      break;
    }
    if (argument === '--cache' || argument.startsWith('--cache=')) {
      globals.cache = cacheValue(argv, index);
      if (argument === '--cache') index++;
    } else if (argument === '--json') globals.json = true;
    else if (argument === '--quiet' || argument === '-q') globals.quiet = true;
    else if (argument === '--debug') globals.debug = true;
    else if (argument === '--version') globals.version = true;
    else rest.push(argument);
  }
  return { globals, rest };
}

/**
 * The directory of `--cache DIR` or `--cache=DIR` at `argv[index]`. Neither a missing nor an empty
 * value means the default cache: a script whose `--cache "$DIR"` lost its variable would otherwise
 * read and write the user's real cache. As parseArgs does for the commands' options, a flag after
 * `--cache` is not taken for its value (`--cache=-DIR` names such a directory).
 */
function cacheValue(argv: string[], index: number): string {
  const argument = argv[index]!;
  const value = argument === '--cache' ? argv[index + 1] : argument.slice('--cache='.length);
  if (value === undefined || (argument === '--cache' && value.startsWith('-'))) {
    throw new OciError(ErrorCode.InvalidArgument, '--cache needs a directory: --cache DIR');
  }
  if (value === '')
    throw new OciError(ErrorCode.InvalidArgument, '--cache needs a directory, not an empty string');
  return value;
}

function causeChain(error: unknown): string {
  const lines: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current && depth < 8; depth++) {
    const value = current as {
      name?: string;
      code?: string;
      message?: string;
      stack?: string;
      cause?: unknown;
    };
    lines.push(
      depth === 0
        ? String(value.stack ?? value.message)
        : `caused by: ${value.stack ?? value.message ?? String(current)}`,
    );
    current = value.cause;
  }
  return lines.join('\n');
}

/** Runs the CLI with the given arguments and resolves to the process exit code. */
export async function main(argv: string[], options: MainOptions = {}): Promise<number> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const output = watchOutput(stdout);
  // Nothing can be told about a broken stderr; its writes are dropped and the exit code says the rest.
  watchOutput(stderr);
  const code = await runCommandLine(argv, { ...options, stdout, stderr });
  // A failed write is reported a tick after the write, which is often after the command returned.
  await new Promise((resolve) => setImmediate(resolve));
  const { error } = output;
  // A closed pipe is the reader saying it has read enough (`| head -1`, `| grep -q`), not a failure:
  // the command carries on with its output dropped and the exit code is its own, 0 when its work
  // succeeded (ripgrep exits 0 on a broken pipe too). Carrying on, rather than exiting at the first
  // failed write, never leaves an `rm` of several images half done; the commands print their results
  // after the work, so little is left by then. 141, a death by SIGPIPE, would fail every such
  // pipeline under `set -o pipefail` and is not a documented exit code.
  if (error === undefined || isClosedPipe(error)) return code;
  // Any other failure (a full disk under `> file`) lost output the user asked for.
  stderr.write(`ocipull: cannot write to stdout: ${error.message}\n`);
  return code === ExitCode.Ok ? ExitCode.LocalIo : code;
}

async function runCommandLine(
  argv: string[],
  options: MainOptions & Required<Pick<MainOptions, 'stdout' | 'stderr'>>,
): Promise<number> {
  const { stdout, stderr } = options;
  let split: ReturnType<typeof splitGlobals>;
  try {
    split = splitGlobals(argv);
  } catch (error) {
    return report(error, { stderr, debug: argv.includes('--debug') }, undefined, undefined);
  }
  const { globals, rest } = split;
  if (globals.version) {
    stdout.write(`ocipull ${await version()}\n`);
    // How this process started: from the startup snapshot (bin/ocipull) or the bundle's modules.
    if (globals.debug) stdout.write(`node ${process.version}, started from ${startedFrom()}\n`);
    return ExitCode.Ok;
  }
  const [name, ...args] = rest;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    const topic = name === 'help' ? args[0] : undefined;
    if (topic === 'pull') return runCommandLine(['pull', '--help'], options);
    stdout.write((topic !== undefined && COMMAND_USAGE[topic]) || USAGE);
    return name === undefined ? ExitCode.Usage : ExitCode.Ok;
  }
  const end = args.indexOf('--');
  const own = end < 0 ? args : args.slice(0, end);
  const usage = COMMAND_USAGE[name];
  if (usage !== undefined && (own.includes('--help') || own.includes('-h'))) {
    stdout.write(usage);
    return ExitCode.Ok;
  }
  const context: CommandContext = {
    args,
    cache: globals.cache,
    json: globals.json,
    quiet: globals.quiet,
    debug: globals.debug,
    stdout,
    stderr,
    stdin: options.stdin ?? process.stdin,
    env: options.env ?? process.env,
    signal: options.signal ?? new AbortController().signal,
  };
  try {
    const load = commands[name];
    if (!load) throw new OciError(ErrorCode.InvalidArgument, `unknown command '${name}'`);
    return await (await load())(context);
  } catch (error) {
    return report(error, context, name, await registryOf(name, context.args));
  }
}

function report(
  error: unknown,
  context: Pick<CommandContext, 'stderr' | 'debug'>,
  name: string | undefined,
  registry: string | undefined,
): number {
  const { stderr } = context;
  if (isOciError(error)) {
    stderr.write(`ocipull: ${error.message} (${error.code})\n`);
    const hint = hintFor(error as OciError, {
      ...(registry ? { registry } : {}),
      ...(name ? { command: name } : {}),
    });
    if (hint) stderr.write(`hint: ${hint}\n`);
    if (exitCodeFor(error) === ExitCode.Usage && error.code === 'ERR_INVALID_ARGUMENT' && !context.debug) {
      stderr.write(`run \`ocipull ${name && commands[name] ? `${name} --help` : '--help'}\` for usage\n`);
    }
    if (context.debug) stderr.write(`${causeChain(error)}\n`);
    return exitCodeFor(error);
  }
  const code = (error as { code?: string }).code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
    stderr.write(`ocipull: ${(error as Error).message}\nrun \`ocipull ${name} --help\` for usage\n`);
    return ExitCode.Usage;
  }
  stderr.write(`ocipull: unexpected error: ${(error as Error)?.message ?? String(error)}\n`);
  if (context.debug) stderr.write(`${causeChain(error)}\n`);
  return ExitCode.LocalIo;
}

/** The registry a failed command talked to, for the login hint. */
async function registryOf(name: string, args: string[]): Promise<string | undefined> {
  const first = args.find((argument) => !argument.startsWith('-'));
  if (!first) return undefined;
  if (name === 'login') return first;
  try {
    const { parseReference } = await import('@ocipull/registry-client');
    return parseReference(first).registry;
  } catch {
    return undefined;
  }
}

async function version(): Promise<string> {
  // Resolved through the package's own exports, so it works from dist/ and from the bundle in dist/bundle/.
  const manifest = JSON.parse(
    await readFile(new URL(import.meta.resolve('@ocipull/cli/package.json')), 'utf8'),
  ) as {
    version: string;
  };
  return manifest.version;
}

/** Set by the startup snapshot's entry (`snapshot-entry.ts`) when the process was started from it. */
export const STARTED_FROM_SNAPSHOT = Symbol.for('ocipull.startedFromSnapshot');

function startedFrom(): string {
  return (globalThis as Record<symbol, unknown>)[STARTED_FROM_SNAPSHOT] === true
    ? 'the startup snapshot'
    : 'modules';
}
