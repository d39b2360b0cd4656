import { extract as createExtract, type Extract, type Header } from 'tar-stream';

const RAW_PAX = Symbol('ocipull.rawPax');

/** A tar-stream header with the PAX records kept as bytes (xattr values are binary, e.g. `security.capability`). */
export type TarHeader = Omit<Header, 'type' | 'pax'> & {
  /** null for type flags tar-stream does not know (GNU sparse `S`, volume headers). */
  type: Header['type'] | null;
  pax?: (Record<string, string> & { [RAW_PAX]?: Buffer }) | null;
};

interface ExtractInternals {
  _header: { type: string | null } | null;
  _pax: (Record<string, string> & { [RAW_PAX]?: Buffer }) | null;
  _missing: number;
  _buffer: { buffered: number; shift(size: number): Buffer | null };
  _decodeLongHeader?: (buffer: Buffer) => void;
  _consumeHeader?: () => boolean;
}

/**
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
  if (onArchiveEnd !== undefined && typeof consumeHeader === 'function') {
    // tar-stream skips zero blocks and reads on, so entries hidden after the end-of-archive marker
    // would be extracted although GNU tar and Go's archive/tar (containerd, umoci, image scanners)
    // stop there. The first zero block ends the archive, as in GNU tar; what follows is ignored.
    let ended = false;
    internals._consumeHeader = function consumeHeaderUntilEnd(this: ExtractInternals) {
      const consumed = consumeHeader.call(this);
      if (consumed && this._header === null && !ended) {
        ended = true;
        // Hand over what is buffered after the marker; tar-stream's write loop discards `_missing`
        // bytes, so make that everything written after it.
        const rest = this._buffer.shift(this._buffer.buffered) ?? Buffer.alloc(0);
        this._missing = Number.POSITIVE_INFINITY;
        onArchiveEnd(rest);
      }
      return consumed;
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
