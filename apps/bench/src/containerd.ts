import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './measure.ts';

/** The namespace the bench pulls into. */
export const CTR_NAMESPACE = 'bench';

/** A containerd started for the bench: private root, state directory and sockets. */
export interface BenchContainerd {
  socket: string;
  snapshotter: string;
  /** `ctr -a <socket> -n bench <args>`. */
  ctrArgs(args: readonly string[]): string[];
  /** Stops the daemon (SIGTERM, then SIGKILL) and removes its directories. */
  close(): Promise<void>;
}

/**
 * Starts `containerd --config <dir>/config.toml` with everything under `dir` (which it owns and
 * removes on close). The CRI plugin and the snapshotters that cannot work here are disabled.
 */
export async function startContainerd(dir: string, snapshotter: string): Promise<BenchContainerd> {
  await mkdir(dir, { recursive: true });
  const socket = join(dir, 'containerd.sock');
  const config = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
    '[grpc]',
    `  address = ${JSON.stringify(socket)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(join(dir, 'containerd.sock.ttrpc'))}`,
    '[debug]',
    '  address = ""',
    '  level = "warn"',
    '[metrics]',
    '  address = ""',
    '',
  ].join('\n');
  const configFile = join(dir, 'config.toml');
  await writeFile(configFile, config);
  const child: ChildProcess = spawn('containerd', ['--config', configFile], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    log = (log + chunk).slice(-8000);
  });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const ctrArgs = (args: readonly string[]) => ['-a', socket, '-n', CTR_NAMESPACE, ...args];
  const close = async () => {
    if (!exited) {
      const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
    }
    // Overlay snapshots are plain directories once the daemon is gone (ctr pull mounts nothing that
    // stays). Moved aside, not deleted: a large delete slows the next tool's writes on journal-less
    // ext4 (see `discard` in bench.ts); the bench's work directory goes at the end.
    await rename(dir, `${dir}.done-${process.hrtime.bigint()}`).catch(() =>
      rm(dir, { recursive: true, force: true }),
    );
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await run('ctr', ctrArgs(['version']), { timeoutMs: 5000 });
      break;
    } catch (error) {
      if (exited || Date.now() > deadline) {
        await close();
        throw new Error(`containerd did not start: ${(error as Error).message}\n${log.slice(-2000)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return { socket, snapshotter, ctrArgs, close };
}
