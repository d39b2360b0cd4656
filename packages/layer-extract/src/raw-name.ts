import { isUtf8 } from 'node:buffer';

/**
 * Tar names are bytes. Almost all are UTF-8, but nothing in tar, POSIX or the OCI spec requires it,
 * and GNU tar, Go's archive/tar (containerd, umoci, Docker) and the kernel keep whatever bytes a
 * layer holds. Decoding such a name as UTF-8 turns every invalid byte into U+FFFD — a different file
 * name, and two names can collapse into one. So names travel as JS strings in the "surrogateescape"
 * form (PEP 383): valid UTF-8 decodes as usual, each byte of an invalid sequence becomes the lone
 * surrogate U+DC80–U+DCFF. Valid UTF-8 never decodes to a lone surrogate, so the mapping is one to one
 * and `encodeRawName` gives the exact bytes back for the filesystem.
 */

const ESCAPE_BASE = 0xdc00;
/** An escape: a low surrogate U+DC80–U+DCFF that is not the second half of a pair (an astral character). */
const HAS_ESCAPE = /(?<![\ud800-\udbff])[\udc80-\udcff]/;
const ESCAPES = /(?<![\ud800-\udbff])[\udc80-\udcff]/g;
const NON_ASCII = /[^\u0000-\u007f]/;

/** A name decoded from tar bytes (see above); pure ASCII and valid UTF-8 come out as usual. */
export function decodeRawName(bytes: Uint8Array): string {
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (isUtf8(buffer)) return buffer.toString('utf8');
  let out = '';
  let index = 0;
  while (index < buffer.length) {
    const length = sequenceLength(buffer, index);
    if (length === 0) {
      out += String.fromCharCode(ESCAPE_BASE + (buffer[index] as number));
      index += 1;
    } else {
      out += buffer.toString('utf8', index, index + length);
      index += length;
    }
  }
  return out;
}

/**
 * A name that tar-stream decoded as latin1 (one char per byte, as the extractor asks it to), in the
 * form above. ASCII, nearly every name, is returned as it is.
 */
export function nameFromLatin1(latin1: string): string {
  return NON_ASCII.test(latin1) ? decodeRawName(Buffer.from(latin1, 'latin1')) : latin1;
}

/** Whether a decoded name carries bytes that are not UTF-8 (and so needs a Buffer path). */
export function hasRawBytes(name: string): boolean {
  return HAS_ESCAPE.test(name);
}

/** The bytes a decoded name stands for. */
export function encodeRawName(name: string): Buffer {
  if (!hasRawBytes(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let index = 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    if (code < 0xdc80 || code > 0xdcff) continue;
    // A low surrogate right after a high one is half of a real (astral) character, not an escape.
    const previous = index > 0 ? name.charCodeAt(index - 1) : 0;
    if (previous >= 0xd800 && previous <= 0xdbff) continue;
    if (index > start) parts.push(Buffer.from(name.slice(start, index), 'utf8'));
    parts.push(Buffer.of(code - ESCAPE_BASE));
    start = index + 1;
  }
  if (start < name.length) parts.push(Buffer.from(name.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

/** A decoded name for messages: escaped bytes shown as `\xNN`. */
export function displayName(name: string): string {
  if (!hasRawBytes(name)) return name;
  return name.replace(ESCAPES, (char) => `\\x${(char.charCodeAt(0) - ESCAPE_BASE).toString(16)}`);
}

/** The length of the valid UTF-8 sequence starting at `index`, or 0 when the byte there starts none. */
function sequenceLength(bytes: Buffer, index: number): number {
  const first = bytes[index] as number;
  if (first < 0x80) return 1;
  let length: number;
  let min: number;
  if (first >= 0xc2 && first <= 0xdf) {
    length = 2;
    min = 0x80;
  } else if (first >= 0xe0 && first <= 0xef) {
    length = 3;
    min = 0x800;
  } else if (first >= 0xf0 && first <= 0xf4) {
    length = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (index + length > bytes.length) return 0;
  let code = first & (0xff >> (length + 1));
  for (let offset = 1; offset < length; offset++) {
    const next = bytes[index + offset] as number;
    if ((next & 0xc0) !== 0x80) return 0;
    code = (code << 6) | (next & 0x3f);
  }
  // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 either.
  if (code < min || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) return 0;
  return length;
}
