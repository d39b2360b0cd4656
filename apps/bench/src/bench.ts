/**
 * `pnpm bench`: cold and warm `ocipull pull` (the built CLI) against skopeo + umoci, skopeo alone and
 * containerd's `ctr images pull` on harness-built images pushed to the real distribution registry on
 * loopback, then the component benches (registry-client vs curl, blob-cache ingest and cached open,
 * layer-extract vs GNU tar and umoci). Medians of `--runs` runs, all in one run of this script; prints
 * a table and writes `.bench/results.json` and `.bench/results.md` at the repository root.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { extname, join, resolve } from 'node:path';
import type { Descriptor } from '@ocipull/core';
import { type DistributionRegistry, startDistribution, startRegistry } from '@ocipull/test-harness';
import { type BenchArgs, type BenchName, parseBenchArgs, USAGE } from './args.ts';
import { type BenchContainerd, startContainerd } from './containerd.ts';
import { type BenchImage, ensureImage, type ImageName } from './images.ts';
import { lastJson, type Measured, measure, median, run } from './measure.ts';
import { errorRow, markdownTable, type Row, targeted, textTable } from './report.ts';
import type { WorkerJob, WorkerResult } from './worker.ts';

const here = import.meta.dirname;
const repoRoot = resolve(here, '../../..');
const cliBin = join(repoRoot, 'apps/cli/bin/ocipull.js');
const cliLauncher = join(repoRoot, 'apps/cli/bin/ocipull');
const workerFile = join(here, `worker${extname(import.meta.filename)}`);
/** Built layouts are kept here between bench runs, keyed by spec. */
const IMAGE_CACHE = '/tmp/ocipull-bench-cache';
const MB = 1e6;

const IMAGE_OF: Record<BenchName, ImageName> = {
  'pull-debian': 'debian',
  'pull-five': 'five',
  'pull-forty': 'forty',
  'pull-big': 'big',
  stream: 'big',
  ingest: 'big',
  'cache-open': 'forty',
  extract: 'debian',
  'extract-1g': 'huge',
  'slow-link': 'five',
};
const NEEDS_REGISTRY = new Set<BenchName>([
  'pull-debian',
  'pull-five',
  'pull-forty',
  'pull-big',
  'stream',
  'ingest',
  'cache-open',
]);

interface Context {
  args: BenchArgs;
  work: string;
  images: Map<ImageName, BenchImage>;
  registry?: DistributionRegistry;
  /** `host/repo:tag` per pushed image. */
  refs: Map<ImageName, string>;
  snapshotter: string;
}

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

const seconds = (ms: number) => ms / 1000;
const fmt = (ms: number) => `${(ms / 1000).toFixed(2)}s`;

/** Runs a component worker under GNU time. */
async function worker(
  context: Context,
  job: WorkerJob,
  nodeFlags: string[] = process.execArgv,
): Promise<{ result: WorkerResult; measured: Measured }> {
  const { mode, ...rest } = job;
  const measured = await measure(
    process.execPath,
    [...nodeFlags, workerFile, mode, JSON.stringify(rest)],
    context.work,
  );
  return { result: lastJson<WorkerResult>(measured.stdout), measured };
}

/**
 * The built CLI as users run it: the package's bin, the launcher `bin/ocipull`, which starts the Node
 * that built the startup snapshot from it (see apps/cli/README.md), with the flags of `bin/ocipull.js`.
 */
function cli(args: string[]): [string, string[]] {
  return [cliLauncher, args];
}

/** A cold `ocipull pull REF --rootfs` into `dir` (cache and rootfs inside it), without progress output. */
function coldPull(ref: string, dir: string, extra: string[] = []): [string, string[]] {
  return cli([
    'pull',
    ref,
    '--cache',
    join(dir, 'cache'),
    '--rootfs',
    join(dir, 'rootfs'),
    ...extra,
    '--progress',
    'none',
  ]);
}

let shebangFlags: string[] | undefined;
function cliNodeFlags(): string[] {
  shebangFlags ??= (readFileSync(cliBin, 'utf8').split('\n')[0] ?? '')
    .split(/\s+/)
    .filter((word) => word.startsWith('--'));
  return shebangFlags;
}

function required(context: Context, name: ImageName): BenchImage {
  const image = context.images.get(name);
  if (!image) throw new Error(`image ${name} was not built`);
  return image;
}

function refOf(context: Context, name: ImageName): string {
  const ref = context.refs.get(name);
  if (!ref) throw new Error(`image ${name} was not pushed`);
  return ref;
}

/** Whether overlayfs can be mounted here (containerd's default snapshotter needs it). */
async function probeSnapshotter(work: string): Promise<string> {
  const dir = join(work, 'overlay-probe');
  const paths = ['lower', 'upper', 'work', 'merged'].map((name) => join(dir, name));
  try {
    for (const path of paths) await mkdir(path, { recursive: true });
    const [lower, upper, workdir, merged] = paths as [string, string, string, string];
    await run('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${upper},workdir=${workdir}`,
      merged,
    ]);
    await run('umount', [merged]);
    return 'overlayfs';
  } catch {
    return 'native';
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- outputs ----

let trash: string | undefined;
let trashed = 0;

/**
 * Moves a finished output out of the way instead of deleting it. On a journal-less ext4 (this VM's
 * root), the inode allocator skips inodes freed in the last 60 s (360 s while their inode-table block
 * is dirty; ext4 `recently_deleted`, Linux 6.18), so every create after a large delete pays a rescan
 * of them (measured at ~40% of all samples): deleting one tool's output
 * would slow whichever tool runs next, and the order of tools would decide the ratios. Everything is
 * deleted once, when the bench ends.
 */
async function discard(path: string): Promise<void> {
  if (!existsSync(path)) return;
  if (trash === undefined) {
    await rm(path, { recursive: true, force: true });
    return;
  }
  await rename(path, join(trash, String(trashed++)));
}

// ---- pulls ----

async function pullBench(context: Context, name: ImageName): Promise<Row[]> {
  const image = required(context, name);
  const ref = refOf(context, name);
  const section = `pull ${name}`;
  const runs = context.args.runs;
  const ocipull: number[] = [];
  const ocipullRss: number[] = [];
  const skopeo: number[] = [];
  const umoci: number[] = [];
  const both: number[] = [];
  const ctr: number[] = [];
  const download: number[] = [];
  const unpack: number[] = [];
  const fetchFloor: number[] = [];
  const errors: Row[] = [];
  let ctrError: unknown;
  // The registry's own floor for this image: every layer blob fetched by curl over 4 connections (as
  // ocipull's default concurrency) into /dev/null: no verification, no disk, one process start.
  const curlConfig = join(context.work, `${name}-blobs.curl`);
  await writeFile(
    curlConfig,
    image.layers
      .map((layer) => `url = "${blobUrl(context, name, layer.descriptor)}"\noutput = "/dev/null"\n`)
      .join(''),
  );
  for (let index = 0; index < runs; index++) {
    const dir = join(context.work, `${section.replace(' ', '-')}-${index}`);
    await mkdir(dir, { recursive: true });
    try {
      // ocipull, cold: empty cache, rootfs flattened.
      const [node, args] = coldPull(ref, dir);
      const cold = await measure(node, args, context.work);
      ocipull.push(cold.ms);
      ocipullRss.push(cold.rssMb);
      await discard(dir);
      await mkdir(dir, { recursive: true });

      // The same pull in two phases, to see which dominates: download into the cache, then flatten.
      const cache = join(dir, 'cache');
      const [, downloadArgs] = cli(['pull', ref, '--cache', cache, '--no-layers', '--progress', 'none']);
      download.push((await measure(node, downloadArgs, context.work)).ms);
      const [, unpackArgs] = cli(['unpack', ref, join(dir, 'rootfs'), '--cache', cache]);
      unpack.push((await measure(node, unpackArgs, context.work)).ms);
      await discard(dir);
      await mkdir(dir, { recursive: true });

      // skopeo copy to an OCI layout, then umoci unpack.
      const layout = join(dir, 'layout');
      const copy = await measure(
        'skopeo',
        ['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${layout}:t`],
        context.work,
      );
      const unpacked = await measure(
        'umoci',
        ['unpack', '--image', `${layout}:t`, join(dir, 'bundle')],
        context.work,
      );
      skopeo.push(copy.ms);
      umoci.push(unpacked.ms);
      both.push(copy.ms + unpacked.ms);
      await discard(dir);

      fetchFloor.push(
        (await measure('curl', ['-s', '-f', '-Z', '--parallel-max', '4', '-K', curlConfig], context.work)).ms,
      );

      // ctr images pull into a fresh containerd (private root, state and socket).
      if (ctrError === undefined) {
        let daemon: BenchContainerd | undefined;
        try {
          daemon = await startContainerd(join(context.work, 'containerd'), context.snapshotter);
          const pulled = await measure(
            'ctr',
            daemon.ctrArgs(['images', 'pull', '--plain-http', '--snapshotter', daemon.snapshotter, ref]),
            context.work,
          );
          ctr.push(pulled.ms);
        } catch (error) {
          ctrError = error;
        } finally {
          await daemon?.close();
        }
      }
      log(
        `${section} ${index + 1}/${runs}: ocipull ${fmt(cold.ms)} (${cold.rssMb.toFixed(0)} MB; phases ${fmt(download[index] ?? 0)} + ${fmt(unpack[index] ?? 0)}), skopeo ${fmt(copy.ms)} + umoci ${fmt(unpacked.ms)}, ctr ${ctr.length > index ? fmt(ctr[index]!) : 'failed'}`,
      );
    } finally {
      await discard(dir);
    }
  }

  // Warm: everything cached (blobs, layer trees, the tag), `--pull missing` needs no network.
  const warm: number[] = [];
  const warmCache = join(context.work, `${name}-warm-cache`);
  try {
    const [node, primeArgs] = cli(['pull', ref, '--cache', warmCache, '--progress', 'none']);
    await run(node, primeArgs);
    for (let index = 0; index < runs; index++) {
      const [, args] = cli(['pull', ref, '--cache', warmCache, '--pull', 'missing', '--progress', 'none']);
      warm.push((await measure(node, args, context.work)).ms);
    }
  } catch (error) {
    errors.push(errorRow(section, 'warm --pull missing', error));
  } finally {
    await discard(warmCache);
  }

  const mOcipull = median(ocipull);
  const mBoth = median(both);
  const mCtr = median(ctr);
  const mb = (image.compressedBytes / MB).toFixed(0);
  const rows: Row[] = [
    {
      section,
      metric: 'ocipull pull --rootfs (cold)',
      value: seconds(mOcipull),
      unit: 's',
      samples: ocipull.map(seconds),
      note: `${image.layers.length} layer(s), ${mb} MB compressed, ${(image.uncompressedBytes / MB).toFixed(0)} MB tar`,
    },
    {
      section,
      metric: 'skopeo copy + umoci unpack',
      value: seconds(mBoth),
      unit: 's',
      samples: both.map(seconds),
      note: `skopeo ${seconds(median(skopeo)).toFixed(2)} s + umoci ${seconds(median(umoci)).toFixed(2)} s`,
    },
    {
      section,
      metric: 'phase: ocipull pull --no-layers',
      value: seconds(median(download)),
      unit: 's',
      samples: download.map(seconds),
      note: 'download + verify + commit to the cache only',
    },
    {
      section,
      metric: 'phase: ocipull unpack (from cache)',
      value: seconds(median(unpack)),
      unit: 's',
      samples: unpack.map(seconds),
      note: 'flatten the cached blobs only',
    },
    {
      section,
      metric: 'skopeo copy alone',
      value: seconds(median(skopeo)),
      unit: 's',
      samples: skopeo.map(seconds),
    },
    {
      section,
      metric: 'registry floor: curl of every layer',
      value: seconds(median(fetchFloor)),
      unit: 's',
      samples: fetchFloor.map(seconds),
      note: '4 parallel connections into /dev/null: the registry serving the bytes, nothing else',
    },
  ];
  if (ctr.length > 0) {
    rows.push({
      section,
      metric: `ctr images pull (${context.snapshotter})`,
      value: seconds(mCtr),
      unit: 's',
      samples: ctr.map(seconds),
    });
  } else {
    rows.push(errorRow(section, 'ctr images pull', ctrError));
  }
  rows.push(
    targeted({
      section,
      metric: 'ocipull / (skopeo+umoci)',
      value: mOcipull / mBoth,
      unit: '×',
      target: '<= 0.5',
    }),
  );
  if (ctr.length > 0) {
    rows.push(
      targeted({ section, metric: 'ocipull / ctr', value: mOcipull / mCtr, unit: '×', target: '<= 0.7' }),
    );
  }
  rows.push({ section, metric: 'ocipull / skopeo copy', value: mOcipull / median(skopeo), unit: '×' });
  if (warm.length > 0) {
    rows.push(
      targeted({
        section,
        metric: 'warm pull --pull missing',
        value: seconds(median(warm)),
        unit: 's',
        target: '<= 0.3',
        samples: warm.map(seconds),
      }),
    );
  }
  const rss = Math.max(...ocipullRss);
  rows.push(
    name === 'big'
      ? targeted({
          section,
          metric: 'ocipull peak RSS (max of runs)',
          value: rss,
          unit: 'MB',
          target: '<= 200',
        })
      : { section, metric: 'ocipull peak RSS (max of runs)', value: rss, unit: 'MB' },
  );
  return [...rows, ...errors];
}

/** The floor of every CLI call: Node start-up plus loading the CLI's modules. */
async function startupRow(context: Context): Promise<Row> {
  const times: number[] = [];
  for (let index = 0; index < context.args.runs; index++) {
    const [node, args] = cli(['--version']);
    times.push((await measure(node, args, context.work)).ms);
  }
  const bare: number[] = [];
  for (let index = 0; index < context.args.runs; index++) {
    bare.push((await measure(process.execPath, ['-e', '0'], context.work)).ms);
  }
  return {
    section: 'cli',
    metric: 'start-up: ocipull --version',
    value: seconds(median(times)),
    unit: 's',
    samples: times.map(seconds),
    note: `the floor of a warm pull; bare \`node -e 0\` ${seconds(median(bare)).toFixed(3)} s`,
  };
}

// ---- components ----

function blobUrl(context: Context, name: ImageName, descriptor: Descriptor): string {
  const ref = refOf(context, name);
  const registry = context.registry!;
  const repository = ref.slice(registry.host.length + 1).split(':')[0]!;
  return `${registry.url}/v2/${repository}/blobs/${descriptor.digest}`;
}

async function streamBench(context: Context): Promise<Row[]> {
  const image = required(context, 'big');
  const layer = image.layers[0]!;
  const ref = refOf(context, 'big');
  const url = blobUrl(context, 'big', layer.descriptor);
  const client: number[] = [];
  const clientRss: number[] = [];
  const sink: number[] = [];
  const sinkRss: number[] = [];
  const binClient: number[] = [];
  const binClientRss: number[] = [];
  const socket: number[] = [];
  const curl: number[] = [];
  const http: number[] = [];
  const httpRss: number[] = [];
  const httpHash: number[] = [];
  for (let index = 0; index < context.args.runs; index++) {
    // fetchBlobInto as a library user runs it: default Node flags (it allocates nothing per read).
    const sunk = await worker(context, { mode: 'sink', reference: ref, descriptor: layer.descriptor });
    sink.push(sunk.result.ms);
    sinkRss.push(sunk.measured.rssMb);
    const streamed = await worker(context, { mode: 'stream', reference: ref, descriptor: layer.descriptor });
    client.push(streamed.result.ms);
    clientRss.push(streamed.measured.rssMb);
    // The same client in a Node started like the ocipull bin starts it (its shebang's flags).
    const binStreamed = await worker(
      context,
      { mode: 'stream', reference: ref, descriptor: layer.descriptor },
      cliNodeFlags(),
    );
    binClient.push(binStreamed.result.ms);
    binClientRss.push(binStreamed.measured.rssMb);
    const raw = await worker(context, { mode: 'socket', url, size: layer.descriptor.size });
    socket.push(raw.result.ms);
    const plain = await worker(context, { mode: 'http', url, size: layer.descriptor.size, sha256: false });
    http.push(plain.result.ms);
    httpRss.push(plain.measured.rssMb);
    const hashed = await worker(context, { mode: 'http', url, size: layer.descriptor.size, sha256: true });
    httpHash.push(hashed.result.ms);
    const { stdout } = await run('curl', [
      '-s',
      '-f',
      '-o',
      '/dev/null',
      '-w',
      '%{time_total} %{size_download}',
      url,
    ]);
    const [total, size] = stdout.trim().split(' ').map(Number) as [number, number];
    if (size !== layer.descriptor.size)
      throw new Error(`curl downloaded ${size} bytes, expected ${layer.descriptor.size}`);
    curl.push(total * 1000);
    log(
      `stream ${index + 1}/${context.args.runs}: fetchBlobInto ${fmt(sunk.result.ms)} (${sunk.measured.rssMb.toFixed(0)} MB), fetchBlob ${fmt(streamed.result.ms)} (${streamed.measured.rssMb.toFixed(0)} MB), with the bin's flags ${fmt(binStreamed.result.ms)} (${binStreamed.measured.rssMb.toFixed(0)} MB), socket ${fmt(raw.result.ms)}, node:http ${fmt(plain.result.ms)} (${plain.measured.rssMb.toFixed(0)} MB), +sha256 ${fmt(hashed.result.ms)}, curl ${fmt(total * 1000)}`,
    );
  }
  const size = layer.descriptor.size / MB;
  const clientMBs = size / seconds(median(client));
  const sinkMBs = size / seconds(median(sink));
  const binClientMBs = size / seconds(median(binClient));
  const curlMBs = size / seconds(median(curl));
  const flags = cliNodeFlags().join(' ') || 'none';
  const section = 'registry-client';
  /** A throughput row: the blob's size over the median time, every run's figure as a sample. */
  const throughput = (metric: string, times: number[], note: string): Row => ({
    section,
    metric,
    value: size / seconds(median(times)),
    unit: 'MB/s',
    samples: times.map((ms) => size / seconds(ms)),
    note,
  });
  return [
    throughput(
      `fetchBlobInto ${size.toFixed(0)} MB → nowhere`,
      sink,
      `${seconds(median(sink)).toFixed(2)} s in-process, default Node flags; the sink writes each chunk to /dev/null (writeSync)`,
    ),
    throughput(
      `fetchBlob ${size.toFixed(0)} MB → nowhere`,
      binClient,
      `${seconds(median(binClient)).toFixed(2)} s in-process, Node flags of the ocipull bin (${flags})`,
    ),
    throughput(
      'fetchBlob, default Node flags',
      client,
      `${seconds(median(client)).toFixed(2)} s; peak RSS ${Math.max(...clientRss).toFixed(0)} MB (a 16 MiB young generation collects the 64 KiB read buffers later)`,
    ),
    throughput(
      'socket drain into one buffer (floor)',
      socket,
      'net.Socket onread into a reused 1 MiB buffer: no HTTP parser, no stream, no allocation per read',
    ),
    throughput(
      'curl -o /dev/null (same blob)',
      curl,
      `${seconds(median(curl)).toFixed(2)} s (curl time_total)`,
    ),
    throughput(
      'node:http drain',
      http,
      `Node's built-in HTTP client, no verification; peak RSS ${Math.max(...httpRss).toFixed(0)} MB`,
    ),
    throughput('node:http + sha256', httpHash, 'the same, hashing every chunk (node:crypto)'),
    targeted({
      section,
      metric: 'client / curl throughput',
      value: sinkMBs / curlMBs,
      unit: '×',
      target: '>= 0.8',
      note: `fetchBlobInto; the fetchBlob stream: ${(binClientMBs / curlMBs).toFixed(2)}× with the bin's flags, ${(clientMBs / curlMBs).toFixed(2)}× with default ones`,
    }),
    targeted({
      section,
      metric: 'client peak RSS (max of runs)',
      value: Math.max(...sinkRss),
      unit: 'MB',
      target: '< 120',
      note: `fetchBlobInto; the fetchBlob stream: ${Math.max(...binClientRss).toFixed(0)} MB with the bin's flags, ${Math.max(...clientRss).toFixed(0)} MB with default ones`,
    }),
  ];
}

async function ingestBench(context: Context): Promise<Row[]> {
  const image = required(context, 'big');
  const layer = image.layers[0]!;
  const ref = refOf(context, 'big');
  const stream: number[] = [];
  const ingest: number[] = [];
  const ingestRss: number[] = [];
  const write: number[] = [];
  for (let index = 0; index < context.args.runs; index++) {
    // Both sides in a Node started as the ocipull bin starts it (its shebang's heap flags).
    const streamed = await worker(
      context,
      { mode: 'stream', reference: ref, descriptor: layer.descriptor },
      cliNodeFlags(),
    );
    stream.push(streamed.result.ms);
    const cacheRoot = join(context.work, `ingest-cache-${index}`);
    try {
      await mkdir(cacheRoot);
      const written = await worker(context, {
        mode: 'write',
        source: layer.path,
        destination: join(cacheRoot, 'copy'),
        size: layer.descriptor.size,
      });
      write.push(written.result.ms);
      await discard(cacheRoot);
      const ingested = await worker(
        context,
        { mode: 'ingest', reference: ref, descriptor: layer.descriptor, cacheRoot },
        cliNodeFlags(),
      );
      ingest.push(ingested.result.ms);
      ingestRss.push(ingested.measured.rssMb);
      log(
        `ingest ${index + 1}/${context.args.runs}: stream ${fmt(streamed.result.ms)}, write+fsync ${fmt(write[index] ?? 0)}, ingest ${fmt(ingested.result.ms)}`,
      );
    } finally {
      await discard(cacheRoot);
    }
  }
  const size = layer.descriptor.size / MB;
  const section = 'blob-cache';
  return [
    {
      section,
      metric: `ingest ${size.toFixed(0)} MB blob (fresh cache)`,
      value: seconds(median(ingest)),
      unit: 's',
      samples: ingest.map(seconds),
      note: `${(size / seconds(median(ingest))).toFixed(0)} MB/s; plain stream ${seconds(median(stream)).toFixed(2)} s; peak RSS ${Math.max(...ingestRss).toFixed(0)} MB; both with the bin's Node flags`,
    },
    {
      section,
      metric: 'disk: copy blob as an ingest writes (floor)',
      value: seconds(median(write)),
      unit: 's',
      samples: write.map(seconds),
      note: `${(size / seconds(median(write))).toFixed(0)} MB/s from the page cache, fdatasync every 32 MiB and fsync at the end; the write side of an ingest alone`,
    },
    targeted({
      section,
      metric: 'ingest / plain client stream',
      value: median(ingest) / median(stream),
      unit: '×',
      target: '<= 1.15',
    }),
  ];
}

async function cacheOpenBench(context: Context): Promise<Row[]> {
  const image = required(context, 'forty');
  const ref = refOf(context, 'forty');
  const descriptors = image.layers.map((layer) => layer.descriptor);
  const cacheRoot = join(context.work, 'open-cache');
  const times: number[] = [];
  try {
    await worker(context, { mode: 'prime', reference: ref, descriptors, cacheRoot });
    for (let index = 0; index < context.args.runs; index++) {
      const opened = await worker(context, { mode: 'open', descriptors, cacheRoot });
      times.push(opened.result.ms);
    }
  } finally {
    await discard(cacheRoot);
  }
  log(`cache-open: ${times.map((ms) => `${ms.toFixed(1)} ms`).join(', ')}`);
  return [
    targeted({
      section: 'blob-cache',
      metric: `cached has+open of ${descriptors.length} layers`,
      value: median(times),
      unit: 'ms',
      target: '< 20',
      samples: times,
      note: 'sequential, first call in a fresh process (after openCache)',
    }),
  ];
}

async function extractBench(context: Context, name: 'debian' | 'huge'): Promise<Row[]> {
  const image = required(context, name);
  const layer = image.layers[0]!;
  const runs = name === 'huge' ? 1 : context.args.runs;
  const flatten: number[] = [];
  const flattenWall: number[] = [];
  const flattenRss: number[] = [];
  const flattenDefault: number[] = [];
  const flattenDefaultRss: number[] = [];
  const tar: number[] = [];
  const umoci: number[] = [];
  let entries = 0;
  for (let index = 0; index < runs; index++) {
    const dir = join(context.work, `extract-${name}-${index}`);
    await mkdir(dir, { recursive: true });
    try {
      const job: WorkerJob = {
        mode: 'flatten',
        blob: layer.path,
        mediaType: layer.descriptor.mediaType,
        diffId: layer.diffId,
        destination: join(dir, 'rootfs'),
      };
      // Node started as the ocipull bin starts it (its shebang's heap flags), then with defaults.
      const flattened = await worker(context, job, cliNodeFlags());
      flatten.push(flattened.result.ms);
      flattenWall.push(flattened.measured.ms);
      flattenRss.push(flattened.measured.rssMb);
      entries = flattened.result.entries ?? 0;
      await discard(join(dir, 'rootfs'));
      const plain = await worker(context, { ...job, destination: join(dir, 'rootfs-default') });
      flattenDefault.push(plain.result.ms);
      flattenDefaultRss.push(plain.measured.rssMb);
      await discard(join(dir, 'rootfs-default'));
      await mkdir(join(dir, 'tar'));
      const untarred = await measure('tar', ['-xzf', layer.path, '-C', join(dir, 'tar')], context.work);
      tar.push(untarred.ms);
      await discard(join(dir, 'tar'));
      if (name === 'debian') {
        const unpacked = await measure(
          'umoci',
          ['unpack', '--image', image.layoutRef, join(dir, 'bundle')],
          context.work,
        );
        umoci.push(unpacked.ms);
      }
      log(
        `extract ${name} ${index + 1}/${runs}: flatten ${fmt(flattened.result.ms)} (${flattened.measured.rssMb.toFixed(0)} MB; default flags ${fmt(plain.result.ms)}), tar ${fmt(untarred.ms)}${umoci[index] === undefined ? '' : `, umoci ${fmt(umoci[index] ?? 0)}`}`,
      );
    } finally {
      await discard(dir);
    }
  }
  const section = 'layer-extract';
  const mFlatten = median(flatten);
  const rows: Row[] = [
    {
      section,
      metric: `flattenLayers ${name} (${(layer.descriptor.size / MB).toFixed(0)} MB gzip)`,
      value: seconds(mFlatten),
      unit: 's',
      samples: flatten.map(seconds),
      note: `${entries} entries, ${(layer.uncompressedSize / MB).toFixed(0)} MB tar; process wall ${seconds(median(flattenWall)).toFixed(2)} s${runs === 1 ? '; 1 run' : ''}; Node flags of the ocipull bin (${cliNodeFlags().join(' ')}); default flags ${seconds(median(flattenDefault)).toFixed(2)} s, ${Math.max(...flattenDefaultRss).toFixed(0)} MB`,
    },
    {
      section,
      metric: `tar -xzf ${name} (GNU tar)`,
      value: seconds(median(tar)),
      unit: 's',
      samples: tar.map(seconds),
    },
  ];
  if (name === 'debian') {
    rows.push(
      {
        section,
        metric: 'umoci unpack debian',
        value: seconds(median(umoci)),
        unit: 's',
        samples: umoci.map(seconds),
      },
      targeted({
        section,
        metric: 'flatten / tar -xzf',
        value: mFlatten / median(tar),
        unit: '×',
        target: '<= 1.0',
      }),
      targeted({
        section,
        metric: 'flatten / umoci unpack',
        value: mFlatten / median(umoci),
        unit: '×',
        target: '<= 0.5',
      }),
      { section, metric: 'flatten peak RSS (max of runs)', value: Math.max(...flattenRss), unit: 'MB' },
    );
  } else {
    rows.push(
      { section, metric: 'flatten 1 GiB / tar -xzf', value: mFlatten / median(tar), unit: '×' },
      targeted({
        section,
        metric: 'flatten 1 GiB layer peak RSS',
        value: Math.max(...flattenRss),
        unit: 'MB',
        target: '< 150',
      }),
    );
  }
  return rows;
}

/** Per-connection rate of the slow-link bench: a far registry, not this machine's loopback. */
const SLOW_LINK_BYTES_PER_SECOND = 10 * MB;

/**
 * `five` from the harness registry with every blob throttled to 10 MB/s per connection, cold with
 * `--rootfs`, once per `--extract-ahead` mode (interleaved): what extracting the upper layers along
 * their downloads gains where the network, not this machine, is the limit. ocipull only (skopeo and
 * umoci would only measure the throttle).
 */
async function slowLinkBench(context: Context): Promise<Row[]> {
  const image = required(context, 'five');
  const registry = await startRegistry({ repositories: { 'bench/five': image.dir } });
  registry.faults.add({
    match: { kind: 'blob' },
    action: { type: 'throttle', bytesPerSecond: SLOW_LINK_BYTES_PER_SECOND },
  });
  const ref = `${registry.host}/bench/five:${image.tag}`;
  const modes = ['never', 'auto', 'always'] as const;
  const samples: Record<(typeof modes)[number], number[]> = { never: [], auto: [], always: [] };
  try {
    for (let index = 0; index < context.args.runs; index++) {
      for (const mode of modes) {
        const dir = join(context.work, `slow-link-${mode}-${index}`);
        await mkdir(dir, { recursive: true });
        const [node, args] = coldPull(ref, dir, ['--extract-ahead', mode]);
        samples[mode].push((await measure(node, args, context.work)).ms);
        await discard(dir);
      }
      log(
        `slow link ${index + 1}/${context.args.runs}: ${modes.map((mode) => `${mode} ${fmt(samples[mode].at(-1) ?? 0)}`).join(', ')}`,
      );
    }
  } finally {
    await registry.close();
  }
  const rate = `${SLOW_LINK_BYTES_PER_SECOND / MB} MB/s per connection`;
  const rows: Row[] = modes.map((mode) => ({
    section: 'slow link',
    metric: `ocipull pull --rootfs --extract-ahead ${mode}`,
    value: seconds(median(samples[mode])),
    unit: 's',
    samples: samples[mode].map(seconds),
    note: `five (${image.layers.length} layers) from the harness registry at ${rate}`,
  }));
  const never = median(samples.never);
  for (const mode of ['auto', 'always'] as const) {
    rows.push({
      section: 'slow link',
      metric: `extract-ahead ${mode} / never`,
      value: median(samples[mode]) / never,
      unit: '×',
    });
  }
  return rows;
}

async function runBench(context: Context, name: BenchName): Promise<Row[]> {
  switch (name) {
    case 'pull-debian':
      return pullBench(context, 'debian');
    case 'pull-five':
      return pullBench(context, 'five');
    case 'pull-forty':
      return pullBench(context, 'forty');
    case 'pull-big':
      return pullBench(context, 'big');
    case 'stream':
      return streamBench(context);
    case 'ingest':
      return ingestBench(context);
    case 'cache-open':
      return cacheOpenBench(context);
    case 'extract':
      return extractBench(context, 'debian');
    case 'extract-1g':
      return extractBench(context, 'huge');
    case 'slow-link':
      return slowLinkBench(context);
  }
}

// ---- machine ----

async function version(command: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(command, args, { timeoutMs: 10_000 });
    return (stdout || stderr).trim().split('\n')[0] ?? '';
  } catch {
    return 'missing';
  }
}

async function machine() {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    nproc: availableParallelism(),
    memoryGiB: Number((totalmem() / 1024 ** 3).toFixed(1)),
    kernel: release(),
    node: process.version,
    // How the CLI starts here: from its startup snapshot (the launcher's normal way) or its modules.
    ocipullStart: (await run(cliLauncher, ['--version', '--debug'])).stdout.split('\n')[1] ?? 'unknown',
    tools: {
      skopeo: await version('skopeo', ['--version']),
      umoci: await version('umoci', ['--version']),
      ctr: await version('ctr', ['--version']),
      containerd: await version('containerd', ['--version']),
      tar: await version('tar', ['--version']),
      curl: await version('curl', ['--version']),
      distribution: await version('/usr/bin/docker-registry', ['--version']),
    },
  };
}

// ---- main ----

async function main(): Promise<number> {
  const args = parseBenchArgs(process.argv.slice(2));
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!existsSync(join(repoRoot, 'apps/cli/dist/bin.js'))) {
    throw new Error('the CLI is not built (apps/cli/dist/bin.js); run `pnpm bench`, which builds it first');
  }
  const started = new Date();
  const loadBefore = loadavg();
  const work = await mkdtemp('/tmp/ocipull-bench-');
  trash = join(work, 'trash');
  await mkdir(trash);
  const context: Context = { args, work, images: new Map(), refs: new Map(), snapshotter: 'overlayfs' };
  const rows: Row[] = [];
  const imageInfo: Record<string, unknown>[] = [];
  try {
    const names = [...new Set(args.benches.map((bench) => IMAGE_OF[bench]))];
    for (const name of names) {
      log(`image ${name}: building or reusing ${IMAGE_CACHE}`);
      const image = await ensureImage(name, args.quick, IMAGE_CACHE);
      context.images.set(name, image);
      imageInfo.push({
        name,
        description: image.description,
        layers: image.layers.length,
        compressedMB: Number((image.compressedBytes / MB).toFixed(1)),
        uncompressedMB: Number((image.uncompressedBytes / MB).toFixed(1)),
        buildSeconds: Number(image.buildSeconds.toFixed(1)),
        layout: image.layoutRef,
      });
      log(
        `image ${name}: ${image.layers.length} layer(s), ${(image.compressedBytes / MB).toFixed(1)} MB compressed${image.buildSeconds > 0 ? `, built in ${image.buildSeconds.toFixed(1)} s` : ' (cached)'}`,
      );
    }
    if (args.benches.some((bench) => NEEDS_REGISTRY.has(bench))) {
      context.registry = await startDistribution({ mode: 'http' });
      log(`distribution registry at ${context.registry.url}`);
      for (const name of names) {
        if (name === 'huge') continue;
        const image = required(context, name);
        context.refs.set(name, await context.registry.push(image.dir, image.tag, `bench/${name}`));
      }
      log(`pushed ${[...context.refs.values()].join(', ')}`);
    }
    if (args.benches.some((bench) => bench.startsWith('pull-'))) {
      context.snapshotter = await probeSnapshotter(work);
      rows.push(await startupRow(context));
    }
    for (const bench of args.benches) {
      log(`bench ${bench}`);
      try {
        rows.push(...(await runBench(context, bench)));
      } catch (error) {
        log(`bench ${bench} failed: ${(error as Error).stack ?? String(error)}`);
        rows.push(errorRow(bench, 'failed', error));
      }
    }
  } finally {
    await context.registry?.close();
    if (args.keep) log(`work directory kept: ${work}`);
    else await rm(work, { recursive: true, force: true });
  }

  const results = {
    date: started.toISOString(),
    durationSeconds: Number(((Date.now() - started.getTime()) / 1000).toFixed(0)),
    args: { runs: args.runs, quick: args.quick, benches: args.benches },
    machine: { ...(await machine()), loadavgBefore: loadBefore, loadavgAfter: loadavg() },
    images: imageInfo,
    rows,
  };
  const outDir = join(repoRoot, '.bench');
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(join(outDir, 'results.md'), `${markdownTable(rows)}\n`);
  process.stdout.write(`\n${textTable(rows)}\n\n`);
  const misses = rows.filter((row) => row.status === 'MISS').length;
  const failed = rows.filter((row) => row.status === 'ERROR').length;
  const passes = rows.filter((row) => row.status === 'PASS').length;
  process.stdout.write(
    `${passes} PASS, ${misses} MISS, ${failed} ERROR · ${args.runs} run(s) each, ${args.quick ? 'quick sizes' : 'full sizes'} · ` +
      `load average ${loadBefore.map((load) => load.toFixed(1)).join('/')} before, ${loadavg()
        .map((load) => load.toFixed(1))
        .join('/')} after · results in .bench/results.json\n`,
  );
  // A bench reports; it does not fail on a MISS. Errors (a tool or an API call that broke) do.
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
