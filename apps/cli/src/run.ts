import { main } from './main.ts';

/**
 * Runs the CLI on `argv` and sets `process.exitCode` (both entries: `bin.ts` and the startup snapshot's
 * `snapshot-entry.ts`). ^C cancels the running command cleanly (the cache stays consistent); a second
 * ^C (or SIGTERM) exits at once. SIGTERM cancels like the first ^C.
 */
export async function runCli(argv: string[]): Promise<void> {
  // Eight thread-pool threads unless the user chose: a pull keeps several blob fsyncs in flight, each
  // holding a thread for as long as the disk takes, and with libuv's default four they starved the
  // decompression and the `.part` writes of the layer being extracted (a 5-layer pull stalled ~100 ms;
  // cold `pull --rootfs` of it 0.785 → 0.725 s median, 6 interleaved runs). Read when the pool starts,
  // at the first thread-pool job, which is later than this.
  process.env.UV_THREADPOOL_SIZE ??= '8';
  const controller = new AbortController();
  // Listeners that stay (`on`, not `once`): proper-lockfile's signal-exit re-raises a signal, killing the
  // process mid-cancel, when at that moment it is the signal's only listener left — which a `once`
  // listener that already ran made it (SIGTERM then exited 143 at once and left the rootfs's temp tree).
  let signals = 0;
  const stop = (reason: string, code: number) => () => {
    signals += 1;
    if (signals > 1) process.exit(code);
    controller.abort(new Error(reason));
  };
  process.on('SIGINT', stop('interrupted', 130));
  process.on('SIGTERM', stop('terminated', 143));
  process.exitCode = await main(argv, { signal: controller.signal });
}
