import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import {
  AbortedError,
  type Digest,
  discard,
  drained,
  ErrorCode,
  OciError,
  throwIfAborted,
} from '@ocipull/core';
import { createHasher } from '@ocipull/digest';
import { decompressLayer } from './decompress.ts';
import { DiffIdMismatchError, LimitExceededError, toOciError } from './errors.ts';
import {
  type CommonExtractOptions,
  DEFAULT_LIMITS,
  type ExtractResult,
  type LayerStreamOptions,
  type WhiteoutFormat,
} from './options.ts';
import { createTarExtract, type TarHeader } from './tar-parse.ts';
import { removeAbandonedSiblings, tempSibling } from './temp-sibling.ts';
import {
  type BodySink,
  InPlaceOnlyError,
  type RecordedDevice,
  type TreeMode,
  type TreeSettings,
  TreeWriter,
} from './tree-writer.ts';

/** How often (in entries) `onProgress` is called. */
const PROGRESS_EVERY = 256;

/** Options of `extractLayer`. */
export interface ExtractLayerOptions extends LayerStreamOptions {
  /** The per-layer directory to create; it must not exist yet (its parent must). */
  destination: string;
  /**
   * How whiteouts are kept: `'overlayfs'` (0:0 character devices and `trusted.overlay.opaque=y`,
   * what a kernel overlay mount reads; needs root) or `'aufs'` (the `.wh.*` marker files as written,
   * what fuse-overlayfs and containers-storage read rootless). Default: `'overlayfs'` as root, else `'aufs'`.
   */
  whiteoutFormat?: WhiteoutFormat;
  /**
   * The per-layer trees of the layers below this one, nearest first. Only consulted for a hardlink
   * whose target is not in this layer: the target is copied up from the nearest lower tree that has
   * it (as overlayfs does), so the stacked trees show the link. Default: none (such a link fails
   * with `ERR_UNSAFE_PATH`).
   */
  lowerLayers?: readonly string[];
}

/** Options of `applyLayer`. */
export interface ApplyLayerOptions extends LayerStreamOptions {
  /** The existing rootfs directory the layer is applied onto, in place. */
  root: string;
}

/** One layer for `flattenLayers`. */
export interface FlattenLayer {
  /**
   * Opens the layer's (compressed) byte stream: once, when the layer's turn comes (or ahead of it, see
   * `openAhead` and `stageAhead`). With `stageAhead`, a second time when the layer extracted ahead has
   * to be applied in place after all: it must give the same bytes again.
   */
  open: () => Promise<Readable> | Readable;
  mediaType?: string;
  /**
   * The config's diff_id of the layer, checked like `LayerStreamOptions.diffId`. A function is called
   * once the layer's last byte is read and awaited then, so a caller whose config is still downloading
   * can start the layers anyway; its rejection fails the flatten.
   */
  diffId?: Digest | string | (() => Promise<Digest | string | undefined>);
  /** What the layer counts against `stageAhead` while it is extracted ahead. Default 1. */
  weight?: number;
}

/** Options of `flattenLayers`. */
export interface FlattenLayersOptions extends CommonExtractOptions {
  /** The rootfs directory to create; it must not exist yet (its parent must). */
  destination: string;
  /**
   * Open the next layer while this one is applied (its open and first read overlap the work), instead
   * of when its turn comes. A layer opened ahead that is never applied (an earlier layer failed) is
   * destroyed. Default false.
   */
  openAhead?: boolean;
  /**
   * Extract the layers above the bottom one ahead of their turn, concurrently, each into its own
   * staging directory next to the destination, while the layers below are applied; when its turn
   * comes, a staged layer is moved into the rootfs by renames (a directory the rootfs does not have
   * yet in one rename), with the result applying it there would give. The number is how many layers
   * (by `FlattenLayer.weight`) are extracted ahead at once; default 0: each layer is read when its turn
   * comes. A staged layer whose result depends on the layers below in a way renames cannot reproduce
   * (a hardlink to a lower file, a directory over a lower symlink, …) is discarded and applied in
   * place, opening its stream again. A staged layer's failure fails the flatten at once.
   */
  stageAhead?: number;
  /**
   * With `stageAhead`: asked before each layer starts being extracted ahead; while it answers false
   * none starts (it is asked again every 50 ms), and a layer whose turn comes unstaged is applied in
   * place. For a caller that knows when extracting ahead pays (a main thread with time to spare).
   * Default: always.
   */
  stageWhen?: () => boolean;
  /** Called when layer `index` starts being applied (with `openAhead`, later than its `open`). */
  onLayerStart?: (index: number) => void;
  /** Called with the layer whose failure fails the flatten (not for an abort from `signal`), before it rejects. */
  onLayerError?: (index: number, error: unknown) => void;
}

/** The result of `extractLayer` and `applyLayer`, with device nodes that were recorded instead of created. */
export interface LayerExtractResult extends ExtractResult {
  /** Device nodes not created because the extraction is rootless. */
  devices: RecordedDevice[];
}

/** The result of `flattenLayers`. */
export interface FlattenResult {
  /** One result per layer, bottom to top. */
  layers: LayerExtractResult[];
  /** Entries over all layers. */
  entries: number;
  /** Uncompressed bytes over all layers. */
  bytes: number;
}

/**
 * Extracts ONE layer's own content into a new directory `options.destination`, atomically: the tree
 * is written into a temporary sibling directory and renamed into place at the end, so a failure
 * (unsafe entry, diff_id mismatch, abort, full disk) leaves nothing behind. Whiteouts are kept in
 * the form `options.whiteoutFormat` names, so a runtime can stack the per-layer trees.
 */
export async function extractLayer(
  input: Readable,
  options: ExtractLayerOptions,
): Promise<LayerExtractResult> {
  const destination = path.resolve(options.destination);
  const temp = makeTempSibling(destination, input);
  try {
    const { result } = await processLayer(input, temp, 'layer', options, options.whiteoutFormat);
    if (!rootHasEntry(result)) fs.chmodSync(temp, 0o755);
    commit(temp, destination);
    return result;
  } catch (error) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw toOciError(error, `extracting layer into ${destination}`);
  }
}

/**
 * Applies one layer onto an existing rootfs directory with overlay semantics: `.wh.<name>` removes
 * the lower entry, `.wh..wh..opq` empties the directory's lower content but keeps what the same
 * layer adds (in any tar order), later entries replace earlier ones, a file replaces a directory
 * and vice versa, hardlinks resolve against the tree as it is. Whiteouts never appear in the tree.
 *
 * The root is changed in place: on a diff_id mismatch or any failure the tree is left half-applied.
 * Work on a copy (or use `flattenLayers`, which does) when that matters.
 */
export async function applyLayer(input: Readable, options: ApplyLayerOptions): Promise<LayerExtractResult> {
  if (options.root === '') {
    discard(input);
    throw new OciError(ErrorCode.InvalidArgument, 'root is an empty string');
  }
  const root = path.resolve(options.root);
  const stat = fs.statSync(root, { throwIfNoEntry: false });
  if (stat === undefined || !stat.isDirectory()) {
    discard(input);
    throw new OciError(ErrorCode.InvalidArgument, `root ${root} is not a directory`);
  }
  try {
    return (await processLayer(input, root, 'apply', options, undefined)).result;
  } catch (error) {
    throw toOciError(error, `applying layer onto ${root}`);
  }
}

/**
 * Builds a flattened rootfs: applies `layers` bottom to top into a temporary sibling of
 * `options.destination` and renames it into place at the end, so a failure leaves nothing.
 */
export async function flattenLayers(
  layers: FlattenLayer[],
  options: FlattenLayersOptions,
): Promise<FlattenResult> {
  const destination = path.resolve(options.destination);
  const temp = makeTempSibling(destination, undefined);
  const results: LayerExtractResult[] = [];
  // A staged layer's failure stops the layer being applied (and the other stages) at once.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const layerOptions = (layer: FlattenLayer): LayerStreamOptions & { lateDiffId?: LateDiffId } => {
    const result: LayerStreamOptions & { lateDiffId?: LateDiffId } = { ...options, signal };
    if (layer.mediaType !== undefined) result.mediaType = layer.mediaType;
    if (typeof layer.diffId === 'string') result.diffId = layer.diffId;
    if (typeof layer.diffId === 'function') result.lateDiffId = layer.diffId;
    return result;
  };
  const stages = new Stages(
    layers,
    destination,
    options.stageAhead ?? 0,
    options.stageWhen,
    layerOptions,
    stop.signal,
    (index, error) => {
      failed ??= { index, error };
      stop.abort(error);
    },
  );
  let failed: { index: number; error: unknown } | undefined;
  let current = 0;
  let ahead: Promise<Readable> | undefined;
  try {
    fs.chmodSync(temp, 0o755);
    for (const [index, layer] of layers.entries()) {
      current = index;
      throwIfAborted(signal);
      stages.startAbove(index);
      const staged = stages.take(index);
      let input: Readable;
      if (staged !== undefined) {
        const outcome = await staged;
        if (outcome.error !== undefined) throw outcome.error;
        options.onLayerStart?.(index);
        if (outcome.staged !== undefined) {
          const merger = new TreeWriter(temp, 'apply', resolveSettings(options, undefined));
          if (merger.mergeStage(outcome.staged.writer)) {
            outcome.staged.result.warnings.push(...merger.warnings);
            results.push(outcome.staged.result);
            removeStage(outcome);
            continue;
          }
        }
        // Not mergeable: the layer is applied in place, from its stream opened again.
        removeStage(outcome);
        input = await openLayer(layer);
      } else {
        stages.claim(index);
        const pending = ahead ?? openLayer(layer);
        ahead = undefined;
        // Opened: only now the next one (a caller's download of it may be starting meanwhile).
        input = await pending;
        const next = layers[index + 1];
        if (options.openAhead && next !== undefined && stages.claim(index + 1)) {
          ahead = openLayer(next);
          // Its failure is reported when its turn comes, or never if this layer fails first.
          ahead.catch(ignoreError);
        }
        options.onLayerStart?.(index);
      }
      const { lateDiffId, ...streamOptions } = layerOptions(layer);
      const { result } = await processLayer(input, temp, 'apply', streamOptions, undefined, lateDiffId);
      results.push(result);
    }
    stages.close();
    commit(temp, destination);
  } catch (error) {
    // A staged layer that failed first stopped this one: its error is the one to report.
    const first = failed ?? { index: current, error };
    stop.abort(error);
    if (ahead !== undefined) discardOpened(ahead);
    await stages.discard();
    fs.rmSync(temp, { recursive: true, force: true });
    if (!options.signal?.aborted) options.onLayerError?.(first.index, first.error);
    throw toOciError(first.error, `flattening layers into ${destination}`);
  }
  let entries = 0;
  let bytes = 0;
  for (const result of results) {
    entries += result.entries;
    bytes += result.bytes;
  }
  return { layers: results, entries, bytes };
}

type LateDiffId = () => Promise<Digest | string | undefined>;

/** How often `stageWhen` is asked again while it says no. */
const STAGE_POLL_MS = 50;

/** A layer extracted ahead: its tree (to merge), or why it cannot be used. */
interface StageOutcome {
  /** The staging directory (unset when it could not be made). */
  dir?: string;
  /** Set when the tree is complete and verified. */
  staged?: { writer: TreeWriter; result: LayerExtractResult };
  /** A failure that fails the flatten (a layer to apply in place has neither this nor `staged`). */
  error?: unknown;
}

/**
 * The layers `flattenLayers` extracts ahead: each into its own `stage`-mode tree next to the
 * destination, as many at once as the budget allows (by weight, at least one), in layer order.
 */
class Stages {
  readonly #layers: FlattenLayer[];
  readonly #destination: string;
  readonly #budget: number;
  readonly #when: (() => boolean) | undefined;
  /** Asks `#when` again while layers wait to be staged. */
  #poll: NodeJS.Timeout | undefined;
  readonly #options: (layer: FlattenLayer) => LayerStreamOptions & { lateDiffId?: LateDiffId };
  readonly #onFailure: (index: number, error: unknown) => void;
  readonly #stopped: AbortSignal;
  readonly #pending = new Map<number, Promise<StageOutcome>>();
  readonly #all: Promise<StageOutcome>[] = [];
  #next = 1;
  #used = 0;
  #running = 0;

  constructor(
    layers: FlattenLayer[],
    destination: string,
    budget: number,
    when: (() => boolean) | undefined,
    options: (layer: FlattenLayer) => LayerStreamOptions & { lateDiffId?: LateDiffId },
    stopped: AbortSignal,
    onFailure: (index: number, error: unknown) => void,
  ) {
    this.#stopped = stopped;
    this.#layers = layers;
    this.#destination = destination;
    this.#budget = budget;
    this.#when = when;
    this.#options = options;
    this.#onFailure = onFailure;
  }

  /**
   * Takes layer `index` to be applied in place: true unless it is already being extracted ahead (or
   * was taken before); it is then never staged.
   */
  claim(index: number): boolean {
    if (index < this.#next) return false;
    this.#next = index + 1;
    return true;
  }

  /** Starts extracting layers above `index` while the budget (and `when`) allows. */
  startAbove(index: number): void {
    if (this.#budget <= 0 || this.#stopped.aborted) return;
    if (this.#next <= index) this.#next = index + 1;
    while (this.#next < this.#layers.length) {
      const layer = this.#layers[this.#next] as FlattenLayer;
      const weight = layer.weight ?? 1;
      if (this.#running > 0 && this.#used + weight > this.#budget) break;
      if (this.#when !== undefined && !this.#when()) {
        this.#poll ??= setTimeout(() => {
          this.#poll = undefined;
          this.startAbove(this.#next - 1);
        }, STAGE_POLL_MS);
        break;
      }
      this.#used += weight;
      this.#running++;
      const index = this.#next++;
      const outcome = this.#stage(layer, index).finally(() => {
        this.#used -= weight;
        this.#running--;
        this.startAbove(index);
      });
      this.#pending.set(index, outcome);
      this.#all.push(outcome);
    }
  }

  /** The outcome of layer `index` extracted ahead, if it was. */
  take(index: number): Promise<StageOutcome> | undefined {
    const outcome = this.#pending.get(index);
    this.#pending.delete(index);
    return outcome;
  }

  /** Stops asking `when` (every layer has had its turn, or the flatten failed). */
  close(): void {
    clearTimeout(this.#poll);
    this.#poll = undefined;
  }

  /** After a failure (the stages were aborted): waits for every stage to stop and removes its tree. */
  async discard(): Promise<void> {
    this.close();
    const outcomes = await Promise.allSettled(this.#all);
    for (const settled of outcomes) if (settled.status === 'fulfilled') removeStage(settled.value);
  }

  async #stage(layer: FlattenLayer, index: number): Promise<StageOutcome> {
    let dir: string | undefined;
    try {
      dir = tempSibling(this.#destination, 'stage');
      const input = await openLayer(layer);
      const { lateDiffId, ...streamOptions } = this.#options(layer);
      return { dir, staged: await processLayer(input, dir, 'stage', streamOptions, undefined, lateDiffId) };
    } catch (error) {
      // Applied in place, the layer may well be fine (its result depends on the layers below), or
      // fail earlier, on a lower entry, with another error: that run gives the answer.
      if (!this.#stopped.aborted && appliesInPlace(error)) return dir === undefined ? {} : { dir };
      this.#onFailure(index, error);
      return dir === undefined ? { error } : { dir, error };
    }
  }
}

/**
 * True for a staged layer's failure that applying the layer in place may not share: an entry that
 * needs the lower layers, or a tree error (an unsafe path, a filesystem error), which in place could
 * come at another entry or not at all. Errors of the bytes themselves (decompression, tar format,
 * diff_id, the stream) fail the flatten at once.
 */
function appliesInPlace(error: unknown): boolean {
  if (error instanceof InPlaceOnlyError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === ErrorCode.UnsafePath || code === ErrorCode.Io || code === ErrorCode.NoSpace) return true;
  return typeof (error as { syscall?: unknown } | null)?.syscall === 'string';
}

/**
 * Stops a parser that has seen the end-of-archive marker. streamx makes a `STREAM_DESTROYED` error for
 * it that nobody sees (it is not emitted), and capturing that error's stack cost ~0.08 ms per layer.
 */
function destroyQuietly(extract: { destroy(): void }): void {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    extract.destroy();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

function removeStage(outcome: StageOutcome): void {
  if (outcome.dir !== undefined) fs.rmSync(outcome.dir, { recursive: true, force: true });
}

/**
 * Opens a layer's stream. From its open until the parser listens, an abort may already be destroying
 * it with an AbortError (a stream opened with the same signal): an 'error' nobody listens to would
 * crash the process. The parser's own listeners still see every error.
 */
function openLayer(layer: FlattenLayer): Promise<Readable> {
  return Promise.resolve()
    .then(() => layer.open())
    .then((input) => input.on('error', ignoreError));
}

/** Renames the finished tree into place; another writer winning the race is reported like an existing destination. */
function commit(temp: string, destination: string): void {
  try {
    fs.renameSync(temp, destination);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') {
      throw new OciError(ErrorCode.InvalidArgument, `destination ${destination} already exists`, {
        cause: error,
      });
    }
    throw error;
  }
}

function makeTempSibling(destination: string, input: Readable | undefined): string {
  // Anything there counts, a dangling symlink too: the final rename could not replace it.
  if (statUnlessGone(destination) !== undefined) {
    if (input) discard(input);
    throw new OciError(ErrorCode.InvalidArgument, `destination ${destination} already exists`);
  }
  // What an extraction into the same destination left when it was killed goes first.
  removeAbandonedSiblings(destination);
  try {
    return tempSibling(destination, 'tmp');
  } catch (error) {
    if (input) discard(input);
    throw toOciError(error, `creating a temporary directory next to ${destination}`);
  }
}

const ROOT_ENTRY = Symbol('rootEntry');

function rootHasEntry(result: LayerExtractResult): boolean {
  return (result as { [ROOT_ENTRY]?: boolean })[ROOT_ENTRY] === true;
}

function resolveSettings(
  options: CommonExtractOptions,
  whiteoutFormat: WhiteoutFormat | undefined,
): TreeSettings {
  const rootless = options.rootless ?? process.getuid?.() !== 0;
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  for (const [key, value] of Object.entries(limits)) {
    if (!(typeof value === 'number' && value > 0)) {
      throw new OciError(ErrorCode.InvalidArgument, `limits.${key} must be a positive number`);
    }
  }
  return {
    rootless,
    uidMap: options.uidMap,
    gidMap: options.gidMap,
    filter: options.filter,
    preserveMtimes: options.preserveMtimes ?? true,
    lenient: options.lenient ?? false,
    limits,
    xattrErrors: options.xattrErrors ?? 'report',
    whiteoutFormat: whiteoutFormat ?? (rootless ? 'aufs' : 'overlayfs'),
    lowerLayers: (options as { lowerLayers?: readonly string[] }).lowerLayers ?? [],
  };
}

/**
 * The pipeline of one layer: decompress (zlib streams, big chunks) → hash the uncompressed bytes →
 * tar-stream parser → `TreeWriter`, whose synchronous writes run inside the parser's entry events
 * so no promise is made per entry or per chunk. The whole stream is read (trailing padding
 * included) so the diff_id covers every byte.
 */
async function processLayer(
  input: Readable,
  root: string,
  mode: TreeMode,
  options: LayerStreamOptions,
  whiteoutFormat: WhiteoutFormat | undefined,
  lateDiffId?: LateDiffId,
): Promise<{ result: LayerExtractResult; writer: TreeWriter }> {
  const settings = resolveSettings(options, whiteoutFormat);
  const signal = options.signal;
  if (signal?.aborted) {
    discard(input);
    throw new AbortedError(signal.reason);
  }
  const writer = new TreeWriter(root, mode, settings);
  const { stream, warning } = await decompressLayer(input, options.mediaType);
  if (warning !== undefined) writer.warnings.push(warning);
  if (signal?.aborted) {
    stream.destroy();
    throw new AbortedError(signal.reason);
  }

  const hasher = createHasher();
  /** Set at the end-of-archive marker: later bytes are only hashed (the diff_id covers them). */
  let archiveEnded = false;
  let trailingData = false;
  const extract = createTarExtract((rest) => {
    archiveEnded = true;
    trailingData = !isZeros(rest);
  });
  let failure: unknown;
  let rootEntry = false;
  /** The file whose body is being written, closed in `finally` if the stream fails mid-body. */
  let active: BodySink | undefined;
  const fail = (error: unknown) => {
    if (failure === undefined) failure = error;
    extract.destroy(error as Error);
    stream.destroy();
  };
  const onAbort = () => fail(new AbortedError(signal?.reason));
  signal?.addEventListener('abort', onAbort, { once: true });

  const report = () => options.onProgress?.({ entries: writer.entries, bytes: hasher.bytes });

  extract.on('entry', (tarHeader, body, next) => {
    const header = tarHeader as unknown as TarHeader;
    // The parser destroys the entry stream with its own error on failure; that error is already
    // `failure`. (An entry without a body has no stream the parser reads: see below.)
    if (header.size !== 0) body.on('error', () => {});
    let sink: ReturnType<TreeWriter['begin']>;
    try {
      if (header.name === './' || header.name === '.' || header.name === '/') rootEntry = true;
      sink = writer.begin(header);
      if (options.onProgress !== undefined && writer.entries % PROGRESS_EVERY === 0) report();
      if (header.size === 0) {
        // No body (most entries of a rootfs: directories, links, empty files): done here, and the
        // parser reads on in the same loop (see createTarExtract); its body stream is never read.
        sink?.end();
        next();
        return;
      }
    } catch (error) {
      fail(error);
      return;
    }
    if (sink === undefined) {
      body.on('end', () => next());
      body.resume();
      return;
    }
    const target = sink;
    active = sink;
    body.on('data', (data) => {
      const chunk = data as Buffer;
      if (failure !== undefined) return;
      try {
        target.write(chunk);
      } catch (error) {
        fail(error);
      }
    });
    body.on('end', () => {
      if (failure !== undefined) return;
      try {
        active = undefined;
        target.end();
      } catch (error) {
        fail(error);
        return;
      }
      next();
    });
  });

  const parsed = new Promise<void>((resolve, reject) => {
    extract.on('finish', () => resolve());
    extract.on('error', (error: Error) => reject(failure ?? error));
    extract.on('close', () => {
      if (failure !== undefined) reject(failure);
      else if (archiveEnded) resolve();
    });
  });
  parsed.catch(() => {});

  try {
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        hasher.update(chunk);
        if (hasher.bytes > settings.limits.maxBytes) {
          throw new LimitExceededError(
            'maxBytes',
            settings.limits.maxBytes,
            `more than ${settings.limits.maxBytes} uncompressed bytes`,
          );
        }
        if (failure !== undefined) break;
        if (archiveEnded) {
          trailingData ||= !isZeros(chunk);
          continue;
        }
        // A parser that failed (a bad header) is destroyed: its error is `parsed`'s, stop feeding it.
        if (extract.destroyed) break;
        if (!extract.write(chunk)) await drained(extract);
      }
      if (failure === undefined) {
        if (archiveEnded) destroyQuietly(extract);
        else extract.end(undefined);
      }
    } catch (error) {
      fail(failure ?? wrapStreamError(error));
    }
    try {
      await parsed;
    } catch (error) {
      throw wrapParseError(failure ?? error);
    }
    if (failure !== undefined) throw failure;
    if (trailingData) {
      writer.warnings.push(
        'data after the end-of-archive marker was not extracted (GNU tar and Go archive/tar stop there too)',
      );
    }
    writer.finish();
    const diffId = hasher.digest();
    const expected = options.diffId ?? (await lateDiffId?.());
    if (expected !== undefined && expected !== diffId) throw new DiffIdMismatchError(expected, diffId);
    report();
    const result: LayerExtractResult = {
      entries: writer.entries,
      bytes: hasher.bytes,
      diffId,
      skipped: writer.skipped,
      warnings: writer.warnings,
      devices: writer.devices,
    };
    if (rootEntry) Object.defineProperty(result, ROOT_ENTRY, { value: true, enumerable: false });
    return { result, writer };
  } finally {
    active?.abort();
    signal?.removeEventListener('abort', onAbort);
    stream.destroy();
  }
}

const ZERO_BLOCK = Buffer.alloc(64 * 1024);

/** True when every byte of `chunk` is zero (tar pads archives with zero blocks). */
function isZeros(chunk: Buffer): boolean {
  for (let offset = 0; offset < chunk.length; offset += ZERO_BLOCK.length) {
    const end = Math.min(chunk.length, offset + ZERO_BLOCK.length);
    if (!chunk.subarray(offset, end).equals(ZERO_BLOCK.subarray(0, end - offset))) return false;
  }
  return true;
}

function wrapStreamError(error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (
    typeof code === 'string' &&
    (code.startsWith('Z_') || code.startsWith('ERR_ZSTD') || code === 'ERR__ERROR_FORMAT_PADDING_1')
  ) {
    return new OciError(ErrorCode.InvalidLayer, `cannot decompress layer: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return error;
}

function wrapParseError(error: unknown): unknown {
  if (OciError.isInstance(error) || error instanceof InPlaceOnlyError) return error;
  if (error instanceof Error && /header|tar|Unexpected end/i.test(error.message)) {
    return new OciError(ErrorCode.InvalidLayer, `not a readable tar stream: ${error.message}`, {
      cause: error,
    });
  }
  return error;
}

function ignoreError(): void {}

/** Destroys a layer stream opened ahead that will not be applied (once its open settles). */
function discardOpened(opened: Promise<Readable>): void {
  opened.then((input) => input.destroy(), ignoreError);
}

/** lstat, undefined when nothing is there (or a parent is a file, or it cannot be looked at). */
function statUnlessGone(path: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}
