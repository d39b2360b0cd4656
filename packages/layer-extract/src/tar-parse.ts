import { isAscii } from 'node:buffer';
import { ErrorCode, OciError } from '@ocipull/core';
import { extract as createExtract, type Extract, type Header } from 'tar-stream';

const RAW_PAX = Symbol('ocipull.rawPax');

/** A tar-stream header with the PAX records kept as bytes (xattr values are binary, e.g. `security.capability`). */
export type TarHeader = Omit<Header, 'type' | 'pax'> & {
  /** null for type flags tar-stream does not know (GNU sparse `S`, volume headers). */
  type: Header['type'] | null;
  pax?: (Record<string, string> & { [RAW_PAX]?: Buffer }) | null;
  /**
   * An old GNU sparse entry (type `S`): the file's real size and its data segments (offset, length), in
   * order; the entry's body is the segments' bytes back to back. Its extension blocks are consumed here.
   */
  gnuSparse?: { realSize: number; segments: Array<[number, number]> };
};

/** tar-stream's BufferList (extract.js): `shift` takes bytes, `_offset` is the read position in the first chunk. */
interface BufferListInternals {
  buffered: number;
  shifted: number;
  _offset: number;
  shift(size: number): Buffer | null;
  push(buffer: Buffer): void;
  queue: { peek(): Buffer | undefined };
}

interface ExtractInternals {
  _header: { type: string | null; size?: number; gnuSparse?: TarHeader['gnuSparse'] } | null;
  _pax: (Record<string, string> & { [RAW_PAX]?: Buffer }) | null;
  _missing: number;
  _locked: boolean;
  _buffer: BufferListInternals;
  _decodeLongHeader?: (buffer: Buffer) => void;
  _consumeHeader?: () => boolean;
  _applyLongHeaders?: () => void;
  _continueWrite(error: Error | null): void;
  _unlockBound?: (error?: Error | null) => void;
}

/** Entry types that never have a body, whatever their size field says (Go's archive/tar: isHeaderOnlyType). */
const HEADER_ONLY_TYPES = new Set([
  'link',
  'symlink',
  'character-device',
  'block-device',
  'directory',
  'fifo',
]);

/** At most this many old GNU sparse extension blocks (21 segments each) per entry: 1 MiB of map. */
const MAX_SPARSE_EXTENSION_BLOCKS = 2048;

/**
 * An entry without a body (size 0: directories, links, devices, FIFOs, empty files) may call its
 * `next` callback before the 'entry' listener returns: the parser then reads the next header in the
 * same loop. tar-stream's own way (the body stream ends on a later tick, its 'end' calls `next`, which
 * parses on) costs a stream, events, ticks and microtasks per entry: more than the `mkdir` of a
 * directory. Entries with a body still end through their stream.
 *
 * A tar-stream extractor that also keeps each PAX header's raw bytes. tar-stream decodes PAX values
 * as UTF-8 text, which mangles binary `SCHILY.xattr.*` values such as file capabilities; the raw
 * record lets `paxXattrs` return them byte for byte. With `onArchiveEnd`, parsing stops at the
 * end-of-archive marker (see below). Relies on tar-stream 3.2's `_decodeLongHeader` and
 * `_consumeHeader` (the version is pinned; tests with a binary capability xattr and with entries after
 * the end marker guard them).
 */
export function createTarExtract(onArchiveEnd?: (rest: Buffer) => void): Extract {
  // Names and link targets are bytes: latin1 keeps them one char per byte (UTF-8 decoding would turn
  // invalid bytes into U+FFFD); the tree writer turns them into names (`nameFromLatin1`).
  // Pre-POSIX (V7) headers carry no "ustar" magic; GNU tar and Go's archive/tar read them, so they
  // are allowed here too (the header checksum is still checked first). Neither option is in
  // tar-stream's typings.
  const options = { filenameEncoding: 'latin1', allowUnknownFormat: true } as unknown as Parameters<
    typeof createExtract
  >[0];
  const extract = createExtract(options);
  const internals = extract as unknown as ExtractInternals;
  const consumeHeader = internals._consumeHeader;
  const applyLongHeaders = internals._applyLongHeaders;
  const unlock = internals._unlockBound;
  if (
    typeof consumeHeader === 'function' &&
    typeof applyLongHeaders === 'function' &&
    typeof unlock === 'function'
  ) {
    let ended = false;
    /** Set while tar-stream emits an entry, and when `next` was called during that. */
    let emitting = false;
    let unlockedEarly = false;
    internals._unlockBound = (error?: Error | null) => {
      if (emitting && (error === undefined || error === null)) unlockedEarly = true;
      else unlock(error);
    };
    /** Set while a header is consumed: what `_applyLongHeaders` adds to the header just decoded. */
    let sparse: TarHeader['gnuSparse'] | undefined;
    internals._consumeHeader = function consumeHeaderLikeGo(this: ExtractInternals) {
      if (this._locked) return consumeHeader.call(this);
      const buffer = this._buffer;
      let extensionBytes = 0;
      // Only the type flag is looked at first: gathering a header split across chunks costs a copy.
      const first = buffer.queue.peek();
      const typeflag =
        first !== undefined && first.byteLength > buffer._offset + 156
          ? first[buffer._offset + 156]
          : peek(buffer, 0, 512)?.[156];
      const block = typeflag === 0x53 /* 'S' */ ? peek(buffer, 0, 512) : undefined;
      if (block !== undefined && headerChecksumOk(block)) {
        // Old GNU sparse: the map's extension blocks sit between the header and the data, outside
        // the size field; tar-stream would read them as data and lose sync. Wait until all are here.
        const parsed = oldGnuSparse(block, buffer);
        if (parsed === 'incomplete') {
          this._continueWrite(null);
          return false;
        }
        if (parsed === 'too-long') {
          // Failed like tar-stream fails a bad header: the write's callback gets the error.
          this._continueWrite(
            new OciError(
              ErrorCode.InvalidLayer,
              `old GNU sparse map longer than ${MAX_SPARSE_EXTENSION_BLOCKS} extension blocks`,
            ),
          );
          return false;
        }
        sparse = parsed.sparse;
        extensionBytes = parsed.extensionBytes;
      }
      // The header block goes through `fixHeader` (signed checksums); the extension blocks are dropped.
      const shift = buffer.shift;
      buffer.shift = function shiftHeader(this: BufferListInternals, size: number) {
        buffer.shift = shift;
        const taken = shift.call(this, size);
        if (taken === null || size !== 512) return taken;
        if (extensionBytes > 0) shift.call(this, extensionBytes);
        return fixHeader(taken);
      };
      let consumed: boolean;
      emitting = true;
      try {
        consumed = consumeHeader.call(this);
      } finally {
        emitting = false;
        buffer.shift = shift;
        sparse = undefined;
      }
      if (unlockedEarly) {
        // What `_unlock` does, minus its recursive `_update`: the loop that called us reads on.
        unlockedEarly = false;
        this._locked = false;
      }
      if (onArchiveEnd !== undefined && consumed && this._header === null && !ended) {
        // tar-stream skips zero blocks and reads on, so entries hidden after the end-of-archive marker
        // would be extracted although GNU tar and Go's archive/tar (containerd, umoci, image scanners)
        // stop there. The first zero block ends the archive, as in GNU tar; what follows is ignored.
        ended = true;
        // Hand over what is buffered after the marker; tar-stream's write loop discards `_missing`
        // bytes, so make that everything written after it.
        const rest = this._buffer.shift(this._buffer.buffered) ?? Buffer.alloc(0);
        this._missing = Number.POSITIVE_INFINITY;
        onArchiveEnd(rest);
      }
      return consumed;
    };
    internals._applyLongHeaders = function applyLongHeadersLikeGo(this: ExtractInternals) {
      applyLongHeaders.call(this);
      const header = this._header;
      if (header === null) return;
      // Links, devices, FIFOs and directories have no body even when their size (or a PAX size)
      // says otherwise, as in Go's archive/tar: reading one would swallow the next headers.
      if (header.type !== null && HEADER_ONLY_TYPES.has(header.type)) header.size = 0;
      if (sparse !== undefined) header.gnuSparse = sparse;
    };
  }
  const original = internals._decodeLongHeader;
  if (typeof original === 'function') {
    internals._decodeLongHeader = function decodeLongHeader(this: ExtractInternals, buffer: Buffer) {
      original.call(this, buffer);
      if (this._header?.type === 'pax-header' && this._pax !== null) {
        const raw = Buffer.from(buffer);
        Object.defineProperty(this._pax, RAW_PAX, { value: raw, enumerable: false });
        // The name records in latin1 like the ustar fields (tar-stream decoded them as UTF-8).
        for (const [key, value] of paxRecords(raw)) {
          if (NAME_RECORDS.has(key)) this._pax[key] = value.toString('latin1');
        }
      }
    };
  }
  return extract;
}

/** PAX records that hold names: kept as bytes (latin1), like the ustar name fields. */
const NAME_RECORDS = new Set(['path', 'linkpath', 'GNU.sparse.name']);

/** A PAX header's records in order, values as bytes. */
function* paxRecords(raw: Buffer): Generator<[string, Buffer]> {
  // Records are "<length> <key>=<value>\n" with length counting the whole record (POSIX pax format).
  let offset = 0;
  while (offset < raw.length) {
    const space = raw.indexOf(0x20, offset);
    if (space < 0) break;
    const length = Number.parseInt(raw.toString('latin1', offset, space), 10);
    if (!(length > 0) || offset + length > raw.length) break;
    const record = raw.subarray(space + 1, offset + length - 1);
    const equals = record.indexOf(0x3d);
    if (equals > 0) yield [record.toString('utf8', 0, equals), record.subarray(equals + 1)];
    offset += length;
  }
}

/** The `SCHILY.xattr.*` records of an entry (POSIX pax, GNU tar and Go's archive/tar write them), values as bytes. */
export function paxXattrs(header: TarHeader): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  const pax = header.pax;
  if (pax === undefined || pax === null) return xattrs;
  const raw = pax[RAW_PAX];
  if (raw !== undefined) {
    for (const [key, value] of paxRecords(raw)) {
      if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice(13), Buffer.from(value));
    }
    return xattrs;
  }
  for (const [key, value] of Object.entries(pax)) {
    if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice(13), Buffer.from(String(value), 'utf8'));
  }
  return xattrs;
}

/** `length` bytes at `offset` of what tar-stream has buffered, without taking them; undefined if not all there. */
function peek(list: BufferListInternals, offset: number, length: number): Buffer | undefined {
  if (list.buffered < offset + length) return undefined;
  let first = list.queue.peek() as Buffer;
  let start = list._offset;
  if (first.byteLength - start < offset + length) {
    // Spread over several written chunks (a header across a chunk boundary, sparse extension blocks):
    // gather everything buffered into one chunk. Taking it all also resets the list's offset.
    const all = list.shift(list.buffered) as Buffer;
    list.shifted -= all.byteLength;
    list.push(all);
    first = all;
    start = 0;
  }
  return first.subarray(start + offset, start + offset + length);
}

/** A numeric header field: octal text (space/NUL padded) or GNU base-256 (high bit of the first byte). */
function headerNumber(block: Buffer, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if (field.length > 0 && ((field[0] as number) & 0x80) !== 0) {
    let value = (field[0] as number) & 0x7f;
    // 0xff first byte: negative (two's complement); not a valid size or offset.
    if (field[0] === 0xff) return Number.NaN;
    for (let index = 1; index < field.length; index++) value = value * 256 + (field[index] as number);
    return value;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  return /^[0-7]+$/.test(text) ? Number.parseInt(text, 8) : Number.NaN;
}

/** The unsigned and the signed (pre-POSIX Sun and old GNU tars) sums of a header with its checksum field as spaces. */
function headerSums(block: Buffer): [number, number] {
  let unsigned = 8 * 0x20;
  let signed = 8 * 0x20;
  for (let index = 0; index < 512; index++) {
    if (index >= 148 && index < 156) continue;
    const byte = block[index] as number;
    unsigned += byte;
    signed += byte >= 0x80 ? byte - 0x100 : byte;
  }
  return [unsigned, signed];
}

function headerChecksumOk(block: Buffer): boolean {
  const stored = headerNumber(block, 148, 8);
  const [unsigned, signed] = headerSums(block);
  return stored === unsigned || stored === signed;
}

/**
 * A header whose checksum was computed over signed bytes (old Sun and GNU tars; only differs when a
 * byte is 0x80 or above, e.g. a Latin-1 name) is accepted, as GNU tar and Go's archive/tar accept
 * it: tar-stream checks the unsigned sum only, so the copy handed to it carries that one.
 */
function fixHeader(block: Buffer): Buffer {
  // Without a byte of 0x80 or above both sums are equal: nothing to fix (a native check, no JS loop).
  if (isAscii(block)) return block;
  const stored = headerNumber(block, 148, 8);
  const [unsigned, signed] = headerSums(block);
  if (stored === unsigned || stored !== signed) return block;
  const fixed = Buffer.from(block);
  fixed.write(`${unsigned.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return fixed;
}

/**
 * The map of an old GNU sparse header (type `S`): four segments in the header, 21 more per extension
 * block while the "is extended" flag is set; the real size at 483. `incomplete` when the extension
 * blocks are not all buffered yet, `too-long` past `MAX_SPARSE_EXTENSION_BLOCKS`.
 */
function oldGnuSparse(
  block: Buffer,
  buffer: BufferListInternals,
): { sparse: NonNullable<TarHeader['gnuSparse']>; extensionBytes: number } | 'incomplete' | 'too-long' {
  const segments: Array<[number, number]> = [];
  const read = (source: Buffer, start: number, count: number) => {
    for (let index = 0; index < count; index++) {
      const at = start + index * 24;
      const offset = headerNumber(source, at, 12);
      const length = headerNumber(source, at + 12, 12);
      // An empty slot ends the list (GNU tar leaves the rest zero).
      if (offset === 0 && length === 0 && source[at] === 0) continue;
      segments.push([offset, length]);
    }
  };
  read(block, 386, 4);
  let extended = block[482] !== 0;
  let blocks = 0;
  while (extended) {
    if (blocks >= MAX_SPARSE_EXTENSION_BLOCKS) return 'too-long';
    const extension = peek(buffer, 512 * (blocks + 1), 512);
    if (extension === undefined) return 'incomplete';
    read(extension, 0, 21);
    extended = extension[504] !== 0;
    blocks++;
  }
  return { sparse: { realSize: headerNumber(block, 483, 12), segments }, extensionBytes: blocks * 512 };
}
