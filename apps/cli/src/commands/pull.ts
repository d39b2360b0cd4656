import {
  createProgressEmitter,
  createRenderer,
  type ProgressFormat,
  type ProgressListener,
} from '@ocipull/progress';
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_EXTRACT_AHEAD,
  EXTRACT_AHEAD_MODES,
  type ExtractAhead,
  PULL_POLICIES,
  type PullPolicy,
  pull,
} from '@ocipull/pull';
import { parseReference, type RegistryTransportOptions } from '@ocipull/registry-client';
import {
  type CommandContext,
  parseCommandArgs,
  platformFlag,
  prepareOutputParent,
  printJson,
  printWarnings,
  usageError,
  withTlsFlags,
} from '../context.ts';

/** Usage of `ocipull pull`. */
export const PULL_USAGE = `Usage: ocipull pull REF [options]

Download an image into the cache and extract it.

Options:
  --platform os/arch[/variant]   platform to pick from an index (default: this host's)
  --rootfs DIR                   also flatten the image into DIR (must not exist; parents are made)
  --layers / --no-layers         extract per-layer trees into the cache (default: on, off with --rootfs)
  --pull always|missing|never    when to ask the registry (default: always)
  --concurrency N                layers at once (default: ${DEFAULT_CONCURRENCY})
  --extract-ahead auto|always|never   with --rootfs, extract upper layers while they download, into
                                 staging trees merged in order (default: auto, while the network is
                                 slower than the extraction)
  --mirror URL                   pull-through mirror for the image's registry (repeatable, tried in order)
  --insecure-registry HOST       use plain HTTP for HOST (repeatable; loopback registries default to HTTP)
  --tls                          use HTTPS even for a loopback registry (implied by --ca-file, --tls-skip-verify)
  --ca-file FILE                 extra CA certificate (PEM) for the image's registry
  --tls-skip-verify              do not verify the registry's TLS certificate (dangerous)
  --progress auto|tty|plain|json|none   progress output on stderr (default: auto)
  --cache DIR, --json, --quiet, --debug
`;

/** Where a command's progress goes: a throttled emitter feeding the renderer `--progress` chose. */
export interface ProgressSink {
  onProgress?: ProgressListener;
  /** Delivers what the throttle still holds and draws the final state. */
  close(): void;
}

/**
 * Builds the progress sink for `--progress` (`json` is NDJSON on stderr). Events go through the
 * emitter's throttle (at most ~10 byte-counter updates a second per layer) so neither a TTY nor an
 * NDJSON consumer sees one line per network chunk.
 */
export function progressSink(context: CommandContext, format: string | undefined): ProgressSink {
  if (context.quiet || format === 'none') return { close() {} };
  const formats: Record<string, ProgressFormat> = {
    auto: 'auto',
    tty: 'tty',
    plain: 'plain',
    json: 'ndjson',
  };
  const chosen = formats[format ?? 'auto'];
  if (!chosen)
    throw usageError(`--progress takes auto, tty, plain, json or none, not ${JSON.stringify(format)}`);
  const renderer = createRenderer(context.stderr, { format: chosen });
  const emitter = createProgressEmitter();
  emitter.subscribe((event) => renderer.handle(event));
  let closed = false;
  return {
    onProgress: emitter.onProgress,
    close() {
      if (closed) return;
      closed = true;
      emitter.flush();
      renderer.close();
    },
  };
}

/** `ocipull pull REF`. */
export async function pullCommand(context: CommandContext): Promise<number> {
  const { values, positionals } = parseCommandArgs({
    args: context.args,
    allowPositionals: true,
    allowNegative: true,
    options: {
      platform: { type: 'string' },
      rootfs: { type: 'string' },
      layers: { type: 'boolean' },
      pull: { type: 'string' },
      concurrency: { type: 'string' },
      'extract-ahead': { type: 'string' },
      mirror: { type: 'string', multiple: true },
      'insecure-registry': { type: 'string', multiple: true },
      tls: { type: 'boolean' },
      'ca-file': { type: 'string' },
      'tls-skip-verify': { type: 'boolean' },
      'variant-fallback': { type: 'boolean' },
      progress: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    context.stdout.write(PULL_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw usageError(`pull takes one image reference\n\n${PULL_USAGE}`);
  const reference = parseReference(positionals[0]!);
  const platform = platformFlag(values.platform);
  const policy = values.pull ?? 'always';
  if (!PULL_POLICIES.includes(policy as PullPolicy)) {
    throw usageError(`--pull takes always, missing or never, not ${JSON.stringify(policy)}`);
  }
  const concurrency = values.concurrency === undefined ? DEFAULT_CONCURRENCY : Number(values.concurrency);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    throw usageError(
      `--concurrency takes a whole number from 1 to 64, not ${JSON.stringify(values.concurrency)}`,
    );
  }

  const extractAhead = values['extract-ahead'] ?? DEFAULT_EXTRACT_AHEAD;
  if (!EXTRACT_AHEAD_MODES.includes(extractAhead as ExtractAhead)) {
    throw usageError(`--extract-ahead takes auto, always or never, not ${JSON.stringify(extractAhead)}`);
  }

  const registries: Record<string, RegistryTransportOptions> = {};
  for (const host of values['insecure-registry'] ?? [])
    registries[host] = { ...registries[host], insecure: true };
  const own = await withTlsFlags({ ...registries[reference.registry] }, values);
  if (values.mirror?.length) own.mirrors = values.mirror;
  registries[reference.registry] = own;

  if (values.rootfs) await prepareOutputParent(values.rootfs);
  const progress = progressSink(context, values.progress);
  try {
    const result = await pull(reference.toString(), {
      ...(context.cache ? { cache: context.cache } : {}),
      ...(platform ? { platform } : {}),
      ...(values['variant-fallback'] ? { variantFallback: true } : {}),
      ...(values.rootfs ? { rootfs: values.rootfs } : {}),
      layers: values.layers ?? !values.rootfs,
      policy: policy as PullPolicy,
      concurrency,
      extractAhead: extractAhead as ExtractAhead,
      registry: { registries, env: context.env },
      ...(progress.onProgress ? { onProgress: progress.onProgress } : {}),
      signal: context.signal,
    });
    progress.close();
    // The JSON carries them too.
    printWarnings(context, result.warnings);
    if (context.json) {
      printJson(context, {
        reference: result.reference,
        manifestDigest: result.manifestDigest,
        indexDigest: result.indexDigest,
        platform: result.platform,
        layers: result.layers,
        rootfs: result.rootfs,
        config: result.summary,
        offline: result.offline,
        durationMs: Math.round(result.durationMs),
        warnings: result.warnings,
      });
    } else if (!context.quiet) {
      // A reference by digest names what was pulled already (an index's digest stays as given).
      const pinned = result.reference.includes('@')
        ? result.reference
        : `${result.reference}@${result.manifestDigest}`;
      context.stdout.write(`${pinned}\n`);
      if (result.rootfs) context.stdout.write(`rootfs: ${result.rootfs}\n`);
    }
    return 0;
  } finally {
    progress.close();
  }
}
