import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** GNU time, for the peak RSS of a child process (`%M`, kilobytes). */
export const GNU_TIME = '/usr/bin/time';

/** One timed child process. */
export interface Measured {
  /** Wall time measured around the spawn, in ms. */
  ms: number;
  /** Peak resident set size of the child (largest of it and the descendants it waited for), in MB. */
  rssMb: number;
  stdout: string;
  stderr: string;
}

/** Options of `measure` and `run`. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Killed (SIGKILL) after this long. Default 15 min. */
  timeoutMs?: number;
}

let sequence = 0;

function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Runs a command to completion, collecting output; rejects on a non-zero exit. */
export function run(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15 * 60_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else {
        const how = signal ? `signal ${signal}` : `exit code ${String(code)}`;
        reject(new Error(`${command} ${args.join(' ')} failed (${how}):\n${tail(stderr || stdout)}`));
      }
    });
  });
}

/**
 * Runs a command under GNU time after a `sync`: wall time measured here (ms resolution, includes only
 * the fork and exec of `time` itself on top of the command), peak RSS from `time -f %M`.
 */
export async function measure(
  command: string,
  args: readonly string[],
  workDir: string,
  options: RunOptions = {},
): Promise<Measured> {
  const output = join(workDir, `time-${process.pid}-${++sequence}.txt`);
  // Flush what earlier steps left dirty (an extracted tree, a deleted one) so its writeback is not
  // billed to this command.
  await run('sync', []);
  const start = performance.now();
  const { stdout, stderr } = await run(GNU_TIME, ['-f', '%e %M', '-o', output, command, ...args], options);
  const ms = performance.now() - start;
  const text = await readFile(output, 'utf8');
  await rm(output, { force: true });
  const last = text.trim().split('\n').at(-1) ?? '';
  const kb = Number(last.split(' ')[1]);
  if (!Number.isFinite(kb)) throw new Error(`could not read GNU time output ${JSON.stringify(text)}`);
  return { ms, rssMb: kb / 1024, stdout, stderr };
}

/** The median of a non-empty list (mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The last line of a worker's stdout, parsed as JSON. */
export function lastJson<T>(stdout: string): T {
  const line = stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`expected a JSON line from the worker, got ${JSON.stringify(tail(stdout, 5))}`);
  }
}
