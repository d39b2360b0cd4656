import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatBytes } from '@ocipull/progress';
import { pull } from '@ocipull/pull';
import { buildImage, dir, file, randomImage, startRegistry, symlink } from '@ocipull/test-harness';
import { type CommandContext, parseCommandArgs } from '../context.ts';
import { ExitCode } from '../exit-codes.ts';
import { progressSink } from './pull.ts';

/** The built-in sample: a small base layer, three layers of seeded random data, a config. */
export async function buildDemoImage(layoutDir: string): Promise<void> {
  const random = randomImage({ seed: 2026, layers: 3, bytesPerLayer: 4 * 1024 * 1024, filesPerLayer: 24 });
  await buildImage(
    {
      layers: [
        {
          entries: [
            dir('etc'),
            file('etc/os-release', 'NAME="ocipull demo"\nID=ocipull-demo\n'),
            dir('bin'),
            file('bin/hello', '#!/bin/sh\necho hello from the ocipull demo image\n', { mode: 0o755 }),
            symlink('bin/sh-link', '/bin/hello'),
          ],
        },
        ...random.layers,
      ],
      config: {
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        Cmd: ['/bin/hello'],
        WorkingDir: '/',
        Labels: { 'org.opencontainers.image.title': 'ocipull demo' },
      },
    },
    { dir: layoutDir, tag: 'latest' },
  );
}

/**
 * `ocipull demo`: starts the harness registry on 127.0.0.1 with the built-in sample image and pulls it
 * with progress into a temporary cache and rootfs, which are removed afterwards unless `--keep`.
 */
export async function demoCommand(context: CommandContext): Promise<number> {
  const { values } = parseCommandArgs({
    args: context.args,
    options: { keep: { type: 'boolean' }, progress: { type: 'string' } },
  });
  const work = await mkdtemp(join(tmpdir(), 'ocipull-demo-'));
  const registry = await startRegistry();
  try {
    const layout = join(work, 'layout');
    await buildDemoImage(layout);
    registry.addRepository('demo/sample', layout);
    const reference = `${registry.host}/demo/sample:latest`;
    const cache = context.cache ?? join(work, 'cache');
    const rootfs = join(work, 'rootfs');
    // Not on stdout with --json: stdout is the JSON document alone.
    if (!context.quiet) {
      (context.json ? context.stderr : context.stdout).write(
        `harness registry at ${registry.url}; pulling ${reference}\n`,
      );
    }
    const progress = progressSink(context, values.progress);
    const result = await pull(reference, {
      cache,
      rootfs,
      platform: 'linux/amd64',
      layers: true,
      ...(progress.onProgress ? { onProgress: progress.onProgress } : {}),
      signal: context.signal,
    });
    progress.close();
    const downloaded = registry.requests
      .filter((request) => request.kind === 'blob')
      .reduce((sum, request) => sum + request.bytesSent, 0);
    const summary = {
      reference: result.reference,
      manifestDigest: result.manifestDigest,
      layers: result.layers.length,
      downloaded,
      cache,
      rootfs,
      rootfsEntries: (await readdir(rootfs)).sort(),
      cmd: result.summary.cmd,
      durationMs: Math.round(result.durationMs),
    };
    if (context.json) context.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    else if (!context.quiet) {
      context.stdout.write(
        `pulled ${result.reference}@${result.manifestDigest}\n` +
          `  ${result.layers.length} layers, ${formatBytes(downloaded)} downloaded in ${summary.durationMs} ms\n` +
          `  rootfs ${rootfs}: ${summary.rootfsEntries.join(' ')}\n` +
          `  cmd ${JSON.stringify(result.summary.cmd)}\n` +
          (values.keep ? `  kept ${work}\n` : ''),
      );
    }
    return ExitCode.Ok;
  } finally {
    await registry.close();
    if (!values.keep) await rm(work, { recursive: true, force: true });
  }
}
