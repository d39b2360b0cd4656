import { type BlobCache, openCache } from '@ocipull/blob-cache';
import { ErrorCode, isOciError } from '@ocipull/core';
import { formatBytes } from '@ocipull/progress';
import { inspectImage, unpackImage } from '@ocipull/pull';
import { formatPlatform, parseReference } from '@ocipull/registry-client';
import {
  type CommandContext,
  formatTable,
  parseCommandArgs,
  platformFlag,
  prepareOutputParent,
  printJson,
  printWarnings,
  usageError,
} from '../context.ts';
import { ExitCode } from '../exit-codes.ts';

async function withCache<T>(context: CommandContext, work: (cache: BlobCache) => Promise<T>): Promise<T> {
  const cache = await openCache(context.cache ? { root: context.cache } : {});
  try {
    return await work(cache);
  } finally {
    await cache.close();
  }
}

function oneReference(
  context: CommandContext,
  command: string,
  extra: Record<string, { type: 'string' }> = {},
) {
  const { values, positionals } = parseCommandArgs({
    args: context.args,
    allowPositionals: true,
    options: { platform: { type: 'string' }, ...extra },
  });
  if (positionals.length < 1) throw usageError(`${command} takes an image reference`);
  return {
    reference: parseReference(positionals[0]!).toString(),
    platform: platformFlag(values.platform),
    values,
    positionals,
  };
}

const shortDigest = (digest: string) => digest.slice(0, 19);

/** `inspect` and `config`: the cached image for REF (and `--platform`), offline. */
function inspectArgument(context: CommandContext, command: string) {
  const { reference, platform } = oneReference(context, command);
  return inspectImage(reference, {
    ...(context.cache ? { cache: context.cache } : {}),
    ...(platform ? { platform } : {}),
    signal: context.signal,
  });
}

/** `ocipull images`: the cached image records. */
export async function imagesCommand(context: CommandContext): Promise<number> {
  parseCommandArgs({ args: context.args, options: {} });
  return withCache(context, async (cache) => {
    const records = await cache.listImages();
    const usage = await cache.usage();
    const bytesOf = new Map(usage.images.map((image) => [image.ref, image.bytes]));
    if (context.json) {
      printJson(
        context,
        records.map((record) => ({
          reference: record.ref,
          digest: record.descriptor.digest,
          mediaType: record.descriptor.mediaType,
          bytes: bytesOf.get(record.ref) ?? 0,
        })),
      );
      return ExitCode.Ok;
    }
    const rows = records.map((record) => [
      record.ref,
      shortDigest(record.descriptor.digest),
      formatBytes(bytesOf.get(record.ref) ?? 0),
    ]);
    context.stdout.write(formatTable(['REFERENCE', 'DIGEST', 'SIZE'], rows));
    return ExitCode.Ok;
  });
}

/** `ocipull inspect REF`: manifest, config and layers of a cached image. */
export async function inspectCommand(context: CommandContext): Promise<number> {
  const inspection = await inspectArgument(context, 'inspect');
  if (context.json) {
    printJson(context, inspection);
    return ExitCode.Ok;
  }
  const summary = inspection.summary;
  const lines = [
    `Reference:  ${inspection.reference}`,
    `Digest:     ${inspection.manifestDigest}`,
    ...(inspection.indexDigest ? [`Index:      ${inspection.indexDigest}`] : []),
    `MediaType:  ${inspection.mediaType}`,
    `Platform:   ${formatPlatform(inspection.platform)}`,
    `Size:       ${formatBytes(inspection.size)} in ${inspection.layers.length} layers`,
    ...(summary.created ? [`Created:    ${summary.created}`] : []),
    `User:       ${summary.user || '(root)'}`,
    `WorkingDir: ${summary.workingDir || '/'}`,
    `Entrypoint: ${JSON.stringify(summary.entrypoint)}`,
    `Cmd:        ${JSON.stringify(summary.cmd)}`,
    `Env:        ${summary.env.join(' ') || '(none)'}`,
    ...(summary.exposedPorts.length ? [`Ports:      ${summary.exposedPorts.join(' ')}`] : []),
    'Layers:',
  ];
  context.stdout.write(lines.join('\n') + '\n');
  context.stdout.write(
    formatTable(
      ['  DIGEST', 'DIFF_ID', 'SIZE', 'EXTRACTED'],
      inspection.layers.map((layer) => [
        `  ${shortDigest(layer.digest)}`,
        shortDigest(layer.diffId),
        formatBytes(layer.size),
        layer.extracted ? 'yes' : 'no',
      ]),
    ),
  );
  return ExitCode.Ok;
}

/** `ocipull config REF`: the image config as JSON. */
export async function configCommand(context: CommandContext): Promise<number> {
  const inspection = await inspectArgument(context, 'config');
  printJson(context, inspection.config);
  return ExitCode.Ok;
}

/** `ocipull rm REF...`: removes image records (blobs go with the next `prune`). */
export async function rmCommand(context: CommandContext): Promise<number> {
  const { positionals } = parseCommandArgs({ args: context.args, allowPositionals: true, options: {} });
  if (positionals.length === 0) throw usageError('rm takes one or more image references');
  return withCache(context, async (cache) => {
    const removed: string[] = [];
    const missing: string[] = [];
    for (const input of positionals) {
      const reference = parseReference(input).toString();
      if (await cache.untag(reference)) {
        removed.push(reference);
        if (!context.quiet && !context.json) context.stdout.write(`removed ${reference}\n`);
      } else {
        missing.push(reference);
        context.stderr.write(`ocipull: ${reference} is not in the cache (${ErrorCode.NotCached})\n`);
      }
    }
    if (context.json) printJson(context, { removed, missing });
    return missing.length === 0 ? ExitCode.Ok : ExitCode.NotFoundOrAuth;
  });
}

/** `ocipull prune`: garbage-collects what no image record reaches. */
export async function pruneCommand(context: CommandContext): Promise<number> {
  const { values } = parseCommandArgs({ args: context.args, options: { 'dry-run': { type: 'boolean' } } });
  return withCache(context, async (cache) => {
    const result = await cache.gc({ dryRun: values['dry-run'] ?? false, signal: context.signal });
    if (context.json) printJson(context, result);
    else if (!context.quiet) {
      const verb = values['dry-run'] ? 'would remove' : 'removed';
      context.stdout.write(
        `${verb} ${result.removedBlobs.length} blobs, ${result.removedLayers.length} layer trees and ` +
          `${result.removedPartials} partial downloads, freeing ${formatBytes(result.freedBytes)}\n`,
      );
    }
    return ExitCode.Ok;
  });
}

/** `ocipull verify`: re-hashes every cached blob and quarantines bad ones. */
export async function verifyCommand(context: CommandContext): Promise<number> {
  const { positionals } = parseCommandArgs({ args: context.args, allowPositionals: true, options: {} });
  return withCache(context, async (cache) => {
    const report = await cache
      .verify({ ...(positionals.length ? { digests: positionals } : {}), signal: context.signal })
      .catch((error: unknown) => {
        // A DIGEST argument that is not a digest is the command line's fault, not the cache's.
        throw isOciError(error, ErrorCode.InvalidDigest) ? usageError(error.message) : error;
      });
    if (context.json) printJson(context, report);
    else {
      // --quiet: only what is wrong.
      if (!context.quiet)
        context.stdout.write(`checked ${report.checked} blobs (${formatBytes(report.bytes)})\n`);
      for (const bad of report.corrupt) {
        context.stdout.write(
          `corrupt ${bad.digest} (hashes to ${bad.actual})${bad.quarantinedTo ? `, moved to ${bad.quarantinedTo}` : ''}\n`,
        );
      }
      for (const digest of report.missing) context.stdout.write(`missing ${digest}\n`);
      if (report.indexCorrupt !== undefined)
        context.stdout.write(`corrupt index.json: ${report.indexCorrupt}\n`);
      for (const image of report.incompleteImages) {
        context.stdout.write(
          `incomplete ${image.ref ?? image.digest}${image.ref ? ` (${image.digest})` : ''}: missing ${image.missing.join(', ')}\n`,
        );
      }
      if (report.incompleteImages.length > 0 && !context.quiet) {
        context.stderr.write('hint: pull the incomplete images again, or `ocipull rm` them\n');
      }
    }
    if (
      report.corrupt.length > 0 ||
      report.incompleteImages.length > 0 ||
      report.indexCorrupt !== undefined
    ) {
      return ExitCode.Integrity;
    }
    return report.missing.length > 0 ? ExitCode.NotFoundOrAuth : ExitCode.Ok;
  });
}

/** `ocipull unpack REF DIR`: flattens an already-cached image. */
export async function unpackCommand(context: CommandContext): Promise<number> {
  const { reference, platform, positionals } = oneReference(context, 'unpack');
  if (positionals.length !== 2) throw usageError('unpack takes an image reference and a directory');
  await prepareOutputParent(positionals[1]!);
  const result = await unpackImage(reference, positionals[1]!, {
    ...(context.cache ? { cache: context.cache } : {}),
    ...(platform ? { platform } : {}),
    signal: context.signal,
  });
  printWarnings(context, result.warnings);
  if (context.json) printJson(context, result);
  else if (!context.quiet)
    context.stdout.write(`unpacked ${result.layers} layers into ${result.destination}\n`);
  return ExitCode.Ok;
}
