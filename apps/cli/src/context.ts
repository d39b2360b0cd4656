import { mkdir, readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ErrorCode, OciError, type Platform } from '@ocipull/core';
import { parsePlatform, type RegistryTransportOptions } from '@ocipull/registry-client';

/** What every command gets: its arguments, the global flags and where to write. */
export interface CommandContext {
  /** Arguments after the command name. */
  args: string[];
  /** `--cache DIR`, else undefined (the library default applies). */
  cache: string | undefined;
  json: boolean;
  quiet: boolean;
  debug: boolean;
  stdout: Writable & { isTTY?: boolean; columns?: number };
  stderr: Writable & { isTTY?: boolean; columns?: number };
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
}

/** A CLI command: resolves to the exit code. */
export type Command = (context: CommandContext) => Promise<number>;

/** A usage error (exit code 1). */
export function usageError(message: string): OciError {
  return new OciError(ErrorCode.InvalidArgument, message);
}

/**
 * `parseArgs` of `node:util`, and a usage error for an empty option value or argument (`--rootfs ""`,
 * `--ca-file=`, `unpack REF ""`). Each names a path, host, platform or word, and taking '' for "not
 * given" silently did something else: no rootfs, the default cache, the host's platform.
 */
export function parseCommandArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  const parsed = parseArgs(config);
  for (const [name, value] of Object.entries(parsed.values as Record<string, unknown>)) {
    if (value === '' || (Array.isArray(value) && value.includes(''))) {
      throw usageError(`--${name} needs a value, not an empty string`);
    }
  }
  if ((parsed.positionals as string[]).includes('')) throw usageError('an argument is an empty string');
  return parsed;
}

/**
 * `--platform`, parsed where the command reads its flags: before any request, since a single-platform
 * image never reads it and a mistyped one would go unnoticed there.
 */
export function platformFlag(value: string | undefined): Platform | undefined {
  return value === undefined ? undefined : parsePlatform(value);
}

/** Prints what an extraction left out on stderr, as skopeo and umoci warn (stdout stays the result). */
export function printWarnings(context: CommandContext, warnings: readonly string[]): void {
  if (!context.quiet) for (const warning of warnings) context.stderr.write(`warning: ${warning}\n`);
}

/** Writes a value as pretty JSON followed by a newline. */
export function printJson(context: CommandContext, value: unknown): void {
  context.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Formats rows as a left-aligned table with two spaces between columns. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((cell, column) =>
    Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** The TLS flags `pull` and `login` share. */
export interface TlsFlags {
  tls?: boolean | undefined;
  'ca-file'?: string | undefined;
  'tls-skip-verify'?: boolean | undefined;
}

/**
 * Applies `--ca-file`, `--tls-skip-verify` and `--tls` to a registry's transport options. Loopback
 * registries default to plain HTTP (like Docker's built-in insecure range); asking for a CA or for
 * TLS options means the user runs TLS there.
 */
export async function withTlsFlags(
  options: RegistryTransportOptions,
  flags: TlsFlags,
): Promise<RegistryTransportOptions> {
  const result = { ...options };
  if (flags['ca-file']) result.ca = await readCaFile(flags['ca-file']);
  if (flags['tls-skip-verify']) result.skipVerify = true;
  if (flags.tls || flags['ca-file'] || flags['tls-skip-verify']) result.insecure = false;
  return result;
}

/** The PEM certificates of `--ca-file FILE`: a file that cannot be read or holds none is a usage error. */
async function readCaFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw usageError(`--ca-file ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  // Node would take a file without one and verify against nothing it names, failing later as a TLS error.
  if (!text.includes('-----BEGIN CERTIFICATE-----')) {
    throw usageError(`--ca-file ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  return text;
}

/**
 * Creates the parent directories of an output directory (`--rootfs`, `unpack DIR`), as `umoci unpack`
 * does for its bundle; the directory itself must not exist (the extractor renames it into place).
 */
export async function prepareOutputParent(path: string): Promise<void> {
  const parent = dirname(resolve(path));
  try {
    await mkdir(parent, { recursive: true });
  } catch (error) {
    throw new OciError(
      ErrorCode.Io,
      `cannot create ${parent}: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}
