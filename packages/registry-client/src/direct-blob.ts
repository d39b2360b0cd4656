import { isIP, connect as netConnect, type Socket } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { AbortedError, type BlobSink, ErrorCode } from '@ocipull/core';
import { contentRangeStartsAt } from './blob-stream.ts';
import { BlobInterruptedError, errorFromResponse, RegistryError } from './errors.ts';
import { parseRetryAfter } from './retry.ts';
import type { Timeouts } from './transport.ts';

/** Read buffers per request, and their size: reads go on into free ones while the sink is busy. */
const RING_BUFFERS = 4;
const BUFFER_BYTES = 1024 * 1024;
/** A response head larger than this is not a blob answer this reader takes. */
const MAX_HEAD_BYTES = 64 * 1024;

/**
 * A response head as it arrives over one or more reads. Only what can still be head (at most
 * MAX_HEAD_BYTES + the blank line in all) is decoded: the first read usually carries the start of the
 * body too, up to a whole read buffer, and decoding it all cost ~0.4 ms per small blob.
 */
class HeadReader {
  #text = '';

  /** Some of the head has arrived. */
  get started(): boolean {
    return this.#text !== '';
  }

  /**
   * Takes one read: the head (without its blank line) and the rest of `view` once the blank line is
   * in, `'too large'` past MAX_HEAD_BYTES, undefined while the head goes on.
   */
  read(view: Buffer): { head: string; rest: Buffer } | 'too large' | undefined {
    for (;;) {
      const before = this.#text.length;
      const room = Math.max(0, Math.min(view.byteLength, MAX_HEAD_BYTES + 4 - before));
      this.#text += view.toString('latin1', 0, room);
      const end = this.#text.indexOf('\r\n\r\n');
      if (end < 0) return this.#text.length > MAX_HEAD_BYTES ? 'too large' : undefined;
      const head = this.#text.slice(0, end);
      this.#text = '';
      const rest = view.subarray(end + 4 - before);
      // An interim answer (103 Early Hints, an unasked 100 Continue) comes before the final one, which
      // a client must read on to (RFC 9110 §15.2). 101 switches protocols: that one is final.
      const interim = /^HTTP\/1\.[01] (1\d\d)(?: |$)/.exec(head);
      if (interim === null || interim[1] === '101') return { head, rest };
      view = rest;
    }
  }
}
/**
 * How long a direct connection waits, idle, for the next read before it is closed. Short: it only
 * needs to span the gap between one layer and the next of a pull.
 */
const IDLE_CONNECTION_MS = 5_000;
/** The reason a connection reports when it closes; the request says how far it got. */
const CONNECTION_CLOSED = 'connection closed';

/**
 * A timeout of a direct request: the error undici's would be (`errorFromTransport`). Final for the
 * attempt: sending the same request again the general way would only wait as long once more.
 */
function timeoutError(registry: string, which: 'connect' | 'headers' | 'body'): RegistryError {
  return new RegistryError(ErrorCode.Timeout, `${registry}: ${which} timeout`, { registry, retryable: true });
}

/**
 * A `Content-Length` value as a number: one decimal value, or a list of identical ones (a proxy that
 * repeated the field; RFC 9112 §6.3 lets a recipient take that as the one value). Undefined otherwise.
 */
function contentLength(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const values = value.split(',').map((part) => part.trim());
  const first = values[0] as string;
  if (!/^\d+$/.test(first) || values.some((part) => part !== first)) return undefined;
  return Number(first);
}

/** One direct blob GET: where, with which headers, and what the body must be. */
export interface DirectBlobRequest {
  url: URL;
  /** Request headers besides Host and Connection (lower-case names). */
  headers: Readonly<Record<string, string>>;
  /** TLS options for an https URL (CA, client certificate, `rejectUnauthorized`). */
  tls: Readonly<Record<string, unknown>>;
  timeouts: Timeouts;
  signal?: AbortSignal | undefined;
  digest: string;
  registry: string;
  /** Absolute blob offset asked for (a `Range` header is in `headers` when it is not 0). */
  start: number;
  /** Bytes the body must have: descriptor size minus start. */
  expected: number;
}

/**
 * How a direct GET ended: every byte handed to the sink, or declined before the sink saw any byte (the
 * answer was not a plain 200/206 with the right length, or the connection failed first) so that the
 * caller can go the general way (auth, redirects, retries, errors) with nothing to undo.
 */
export type DirectBlobOutcome =
  | { delivered: true }
  | {
      delivered: false;
      reason: string;
      status?: number;
      /** The connection was a reused one that failed before any answer: try a fresh one. */
      stale?: boolean;
      /**
       * This attempt failed in a way the general path counts as its first failed attempt instead of
       * asking again at once: a connect or headers timeout (`ERR_TIMEOUT`), or a 429/503 whose
       * `Retry-After` (in `retryAfterMs`) the next attempt must wait for.
       */
      failure?: RegistryError;
    };

/** What a connection's reads and failures are routed to: the request using it, or its idle watch. */
interface ConnectionUser {
  onRead(length: number, buffer: Uint8Array): boolean;
  broken(reason: string, cause?: unknown): void;
}

/** One direct connection and its ring of read buffers, both reused from one read to the next. */
class DirectConnection {
  readonly socket: Socket;
  readonly free: Buffer[] = [];
  user: ConnectionUser;
  /** While the connection is idle in `DirectConnections`: the timer that closes it. */
  idleTimer: NodeJS.Timeout | undefined;

  constructor(request: Pick<DirectBlobRequest, 'url' | 'tls'>, user: ConnectionUser) {
    this.user = user;
    const { url } = request;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const https = url.protocol === 'https:';
    const port = Number(url.port) || (https ? 443 : 80);
    const onread = {
      // Called while the socket is being made, too: the ring is the connection's own.
      buffer: () => this.take(),
      callback: (length: number, buffer: Uint8Array) => this.user.onRead(length, buffer),
    };
    if (https) {
      const tls = process.getBuiltinModule('node:tls') as typeof import('node:tls');
      const options: ConnectionOptions & { onread: typeof onread } = {
        ...(request.tls as ConnectionOptions),
        host,
        port,
        ALPNProtocols: ['http/1.1'],
        onread,
      };
      if (isIP(host) === 0) options.servername = host;
      this.socket = tls.connect(options);
    } else {
      this.socket = netConnect({ host, port, onread });
    }
    this.socket.setNoDelay(true);
    this.socket.on('error', (error) => this.user.broken(error.message, error));
    this.socket.on('close', () => this.user.broken(CONNECTION_CLOSED));
  }

  /** A buffer of the ring (a new one while fewer than the ring's size exist). */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(BUFFER_BYTES);
  }
}

/**
 * Idle direct connections per origin (keep-alive): the next direct read of the same registry takes
 * one instead of connecting, which is what makes small blobs worth reading directly. An idle
 * connection keeps reading, so one the server closes (or that sends anything) leaves at once; it
 * also leaves after `IDLE_CONNECTION_MS`, and all of them at `close()`. Nothing here keeps a process
 * alive.
 */
export class DirectConnections {
  readonly #idle = new Map<string, Set<DirectConnection>>();
  #closed = false;

  /** An idle connection to `origin`, now the caller's; undefined when there is none. */
  take(origin: string): DirectConnection | undefined {
    for (;;) {
      const connection = this.#idle.get(origin)?.values().next().value;
      if (connection === undefined) return undefined;
      this.#forget(origin, connection);
      if (!connection.socket.destroyed) return connection;
    }
  }

  /** Keeps a connection whose last answer was read to its end, for the next read of `origin`. */
  give(origin: string, connection: DirectConnection): void {
    if (this.#closed || connection.socket.destroyed) {
      connection.socket.destroy();
      return;
    }
    let idle = this.#idle.get(origin);
    if (idle === undefined) {
      idle = new Set();
      this.#idle.set(origin, idle);
    }
    idle.add(connection);
    const leave = () => {
      this.#forget(origin, connection);
      connection.socket.destroy();
    };
    connection.idleTimer = setTimeout(leave, IDLE_CONNECTION_MS);
    connection.idleTimer.unref();
    connection.socket.unref();
    connection.user = {
      // Nothing may arrive between answers: whatever does makes the connection unusable.
      onRead: () => {
        leave();
        return false;
      },
      broken: leave,
    };
    connection.socket.resume();
  }

  /** Closes every idle connection; later ones are closed as they are given back. */
  close(): void {
    this.#closed = true;
    for (const idle of this.#idle.values()) for (const connection of idle) connection.socket.destroy();
    this.#idle.clear();
  }

  #forget(origin: string, connection: DirectConnection): void {
    const idle = this.#idle.get(origin);
    idle?.delete(connection);
    if (idle?.size === 0) this.#idle.delete(origin);
    clearTimeout(connection.idleTimer);
    connection.idleTimer = undefined;
    connection.socket.ref();
  }
}

interface Queued {
  view: Buffer;
  backing: Buffer;
}

/**
 * Puts `user` on a connection for `request`: a kept one of `connections` (`send` then runs in a
 * microtask, once the caller holds the connection) or a new one (`send` runs once it is up; the
 * returned timer calls `connectTimeout` after the connect timeout, and is cleared then). Then listens for
 * `signal`'s abort. `send` must do nothing once the request has settled.
 */
function attach(
  request: Pick<DirectBlobRequest, 'url' | 'tls' | 'timeouts' | 'signal'>,
  connections: DirectConnections | undefined,
  user: ConnectionUser & { send(): void; connectTimeout(): void; abort(): void },
): { connection: DirectConnection; reused: boolean; timer?: NodeJS.Timeout } {
  request.signal?.addEventListener('abort', user.abort, { once: true });
  const kept = connections?.take(request.url.origin);
  if (kept !== undefined) {
    kept.user = user;
    kept.socket.resume();
    queueMicrotask(user.send);
    return { connection: kept, reused: true };
  }
  const connection = new DirectConnection(request, user);
  const { connect } = request.timeouts;
  const timer = setTimeout(user.connectTimeout, connect);
  connection.socket.once(request.url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
    clearTimeout(timer);
    user.send();
  });
  return { connection, reused: false, timer };
}

/**
 * Streams one blob body over a connection outside undici's pool — a kept one of `connections` when
 * there is one (keep-alive), else a new one (`Connection: close` without `connections`) — into `sink`, reading
 * with `onread` into a small ring of reused buffers: no allocation per read, no `Readable`, which is
 * what keeps Node's HTTP clients at ~0.5–0.6x curl on a fast link (every read there is fresh memory).
 * Only the plain case is taken — 200 (or 206 with the asked-for `Content-Range` start), a
 * `Content-Length` equal to `expected`, no transfer coding; anything else is declined unread.
 *
 * Once the sink has seen a byte, failures reject: a connection that ends early or stays silent for the
 * body-idle timeout with `BlobInterruptedError` at the offset the sink finished (bytes already read are
 * handed over first, and a sink call in flight is awaited, so a resume neither overlaps nor repeats
 * them), an abort with `ERR_ABORTED` (after the call in flight), a sink's own error at once.
 */
export function directBlobGet(
  request: DirectBlobRequest,
  sink: BlobSink,
  connections?: DirectConnections,
): Promise<DirectBlobOutcome> {
  return new Promise((resolve, reject) => {
    const { timeouts, signal, expected } = request;
    const origin = request.url.origin;
    const queue: Queued[] = [];
    let phase: 'connect' | 'head' | 'body' = 'connect';
    const head = new HeadReader();
    let received = 0;
    let handed = 0;
    let delivered = 0;
    let sinking = false;
    /** After a broken connection: the queued bytes still go to the sink before the error. */
    let draining = false;
    let paused = false;
    let settled = false;
    /** The answer allows another request on this connection, and sent nothing past its body. */
    let reusable = false;
    /** Set when the transfer failed; a function of the offset reached for an interruption. */
    let failure: Error | ((offset: number) => Error) | undefined;
    let timer: NodeJS.Timeout | undefined;
    // Assigned below, before any callback can run.
    let connection!: DirectConnection;
    let reused = false;
    /** The connection went back to `connections` (it keeps reading, for its idle watch). */
    let given = false;

    const stopTimer = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
    };
    const finish = (outcome: DirectBlobOutcome | Error) => {
      settled = true;
      stopTimer();
      signal?.removeEventListener('abort', onAbort);
      queue.length = 0;
      given = connections !== undefined && !(outcome instanceof Error) && outcome.delivered && reusable;
      if (given) connections?.give(origin, connection);
      else connection.socket.destroy();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const decline = (
      reason: string,
      { status, stale = false, failure }: { status?: number; stale?: boolean; failure?: RegistryError } = {},
    ) => {
      if (settled) return;
      finish({
        delivered: false,
        reason,
        ...(status === undefined ? {} : { status }),
        ...(stale ? { stale: true } : {}),
        ...(failure === undefined ? {} : { failure }),
      });
    };
    const failed = () => {
      if (settled || failure === undefined) return;
      finish(typeof failure === 'function' ? failure(request.start + delivered) : failure);
    };
    /**
     * Ends with an error once a sink call in flight has settled, so an interruption's offset counts it.
     * With `drain` (the connection broke), bytes already read are handed to the sink first: they are
     * good, and a resume then starts after them.
     */
    const fail = (error: Error | ((offset: number) => Error), drain = false) => {
      if (settled || failure) return;
      failure = error;
      draining = drain;
      if (!drain) queue.length = 0;
      connection.socket.destroy();
      stopTimer();
      pump();
      if (!sinking && queue.length === 0) failed();
    };
    /** The sink's own error ends the transfer at once. */
    const sinkFailed = (error: unknown) => {
      if (!settled) finish(error as Error);
    };
    /** A failure of the connection: declined before the sink saw a byte, an interruption after. */
    const broken = (reason: string, cause?: unknown) => {
      if (settled || failure) return;
      if (received === expected) return; // every byte is here; the sink just has not finished
      if (reason === CONNECTION_CLOSED) reason = `connection closed after ${received} of ${expected} bytes`;
      if (handed === 0 && !sinking) {
        // A kept connection the server had closed meanwhile: nothing was answered, a fresh one may do.
        decline(reason, { stale: reused && phase === 'head' && !head.started });
        return;
      }
      fail((offset) => new BlobInterruptedError(request.digest, offset, reason, cause), true);
    };
    const onAbort = () => fail(new AbortedError(signal?.reason));

    const bodyTimer = () => {
      stopTimer();
      if (paused || settled || failure) return;
      // An interruption even before the first body byte: declining would send the request again the
      // general way, only to wait as long once more. The caller resumes from where the sink got to.
      timer = setTimeout(() => {
        fail(
          (offset) =>
            new BlobInterruptedError(
              request.digest,
              offset,
              `no data for ${timeouts.bodyIdle} ms`,
              timeoutError(request.registry, 'body'),
            ),
          true,
        );
      }, timeouts.bodyIdle);
    };

    const delivering = (chunk: Queued) => {
      handed += chunk.view.byteLength;
      let result: void | Promise<void>;
      try {
        result = sink(chunk.view);
      } catch (error) {
        sinkFailed(error);
        return;
      }
      if (result === undefined || typeof (result as Promise<void>)?.then !== 'function') {
        sunk(chunk);
        return;
      }
      sinking = true;
      (result as Promise<void>).then(
        () => {
          sinking = false;
          sunk(chunk);
          pump();
          if (failure && !sinking && queue.length === 0) failed();
        },
        (error: unknown) => {
          sinking = false;
          sinkFailed(error);
        },
      );
    };
    const sunk = (chunk: Queued) => {
      delivered += chunk.view.byteLength;
      connection.free.push(chunk.backing);
      if (delivered === expected) {
        finish({ delivered: true });
        return;
      }
      if (!failure && paused && queue.length + (sinking ? 1 : 0) < RING_BUFFERS - 1 && received < expected) {
        paused = false;
        connection.socket.resume();
        bodyTimer();
      }
    };
    const pump = () => {
      while (!sinking && !settled && (!failure || draining) && queue.length > 0) {
        delivering(queue.shift() as Queued);
      }
    };

    const onRead = (length: number, buffer: Uint8Array): boolean => {
      const backing = buffer as Buffer;
      if (settled || failure) {
        connection.free.push(backing);
        return false;
      }
      let view = Buffer.from(backing.buffer, backing.byteOffset, length);
      if (phase !== 'body') {
        const read = head.read(view);
        if (read === undefined || read === 'too large') {
          connection.free.push(backing);
          if (read === 'too large') decline('response head too large');
          return !settled;
        }
        const verdict = checkHead(read.head, request);
        if ('reason' in verdict) {
          connection.free.push(backing);
          decline(verdict.reason, verdict);
          return false;
        }
        reusable = verdict.keepAlive;
        view = read.rest;
        phase = 'body';
        bodyTimer();
        if (view.byteLength === 0) {
          connection.free.push(backing);
          return true;
        }
      }
      // Bytes past Content-Length are not the body; the connection is not used again after them.
      if (view.byteLength > expected - received) {
        view = view.subarray(0, expected - received);
        reusable = false;
      }
      received += view.byteLength;
      const chunk = { view, backing };
      if (sinking || queue.length > 0) queue.push(chunk);
      else delivering(chunk);
      if (settled || failure) return given;
      if (received === expected) {
        stopTimer();
        return false;
      }
      if (queue.length + (sinking ? 1 : 0) >= RING_BUFFERS - 1) {
        paused = true;
        stopTimer();
        return false;
      }
      bodyTimer();
      return true;
    };

    const send = () => {
      if (settled) return;
      phase = 'head';
      timer = setTimeout(
        () =>
          decline(`no response head after ${timeouts.headers} ms`, {
            failure: timeoutError(request.registry, 'headers'),
          }),
        timeouts.headers,
      );
      connection.socket.write(requestText('GET', request.url, request.headers, connections !== undefined));
    };
    if (signal?.aborted) {
      reject(new AbortedError(signal.reason));
      return;
    }
    ({ connection, reused, timer } = attach(request, connections, {
      onRead,
      broken,
      send,
      connectTimeout: () =>
        decline(`connect timeout after ${timeouts.connect} ms`, {
          failure: timeoutError(request.registry, 'connect'),
        }),
      abort: onAbort,
    }));
  });
}

/** A request head. HTTP/1.1 keeps a connection by default; without `keepAlive` it says `close`. */
function requestText(
  method: 'GET' | 'HEAD',
  url: URL,
  headers: Readonly<Record<string, string>>,
  keepAlive: boolean,
): string {
  let text = `${method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
  for (const [name, value] of Object.entries(headers)) text += `${name}: ${value}\r\n`;
  return `${text}${keepAlive ? '' : 'connection: close\r\n'}\r\n`;
}

/** Header values a request line could be split with are never sent this way. */
export function directHeadersSafe(headers: Readonly<Record<string, string>>): boolean {
  return Object.values(headers).every((value) => !/[\r\n\0]/.test(value));
}

/** A response head taken apart: status, header fields (lower-case names, repeats joined) and keep-alive. */
interface ParsedHead {
  status: number;
  fields: Map<string, string>;
  /** Every field line in order (lower-case names), repeats kept apart. */
  lines: Array<[string, string]>;
  /** HTTP/1.1 without `Connection: close`: the connection may carry another request afterwards. */
  keepAlive: boolean;
}

function parseHead(text: string): ParsedHead | { reason: string; status?: number } {
  const lines = text.split('\r\n');
  const statusLine = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (!statusLine) return { reason: 'not an HTTP/1.1 response' };
  const status = Number(statusLine[2]);
  const fields = new Map<string, string>();
  const pairs: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) return { reason: 'malformed header line', status };
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    fields.set(name, fields.has(name) ? `${fields.get(name)}, ${value}` : value);
    pairs.push([name, value]);
  }
  const close = (fields.get('connection') ?? '')
    .toLowerCase()
    .split(',')
    .some((token) => token.trim() === 'close');
  return { status, fields, lines: pairs, keepAlive: statusLine[1] === '1' && !close };
}

/** Whether a transfer or content coding other than identity is named. */
function coded(value: string | undefined): boolean {
  return value !== undefined && value.toLowerCase() !== 'identity';
}

/**
 * Why a response head is not a body this reader takes (with, for a 429/503, the failure the general
 * path counts as its first attempt), or (when it is) whether the connection may carry another request
 * afterwards (HTTP/1.1 without `Connection: close`).
 */
function checkHead(
  text: string,
  request: DirectBlobRequest,
): { reason: string; status?: number; failure?: RegistryError } | { keepAlive: boolean } {
  const head = parseHead(text);
  if ('reason' in head) return head;
  const { status, fields } = head;
  if (status === 429 || status === 503) {
    // Asking again at once would ignore the wait the registry asked for: the general path's retry
    // logic takes this as its first attempt's answer and waits as told (or gives up at once).
    const retryAfterMs = parseRetryAfter(fields.get('retry-after'));
    const failure = errorFromResponse(status, [], {
      registry: request.registry,
      what: `blob ${request.digest}`,
      kind: 'blob',
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
    return { reason: `status ${status}`, status, failure };
  }
  if (status !== (request.start === 0 ? 200 : 206)) return { reason: `status ${status}`, status };
  if (request.start > 0 && !contentRangeStartsAt(fields.get('content-range'), request.start)) {
    return { reason: 'unexpected Content-Range', status };
  }
  if (coded(fields.get('transfer-encoding'))) return { reason: 'transfer coding', status };
  if (coded(fields.get('content-encoding'))) return { reason: 'content coding', status };
  if (contentLength(fields.get('content-length')) !== request.expected) {
    return {
      reason: fields.has('content-length') ? 'Content-Length is not the size asked for' : 'no Content-Length',
      status,
    };
  }
  return { keepAlive: head.keepAlive };
}

/** One small direct request (a manifest GET or HEAD): the whole answer is read into memory. */
export interface DirectRequest {
  url: URL;
  method: 'GET' | 'HEAD';
  /** Request headers besides Host and Connection (lower-case names). */
  headers: Readonly<Record<string, string>>;
  tls: Readonly<Record<string, unknown>>;
  timeouts: Timeouts;
  signal?: AbortSignal | undefined;
  /** A longer body is declined (left to the general way, which applies its own cap). */
  maxBodyBytes: number;
  /** The name errors give the host (a registry as references name it, else `host:port`). */
  registry: string;
}

/** A whole answer of `directRequest`, whatever its status. */
export interface DirectResponse {
  status: number;
  /** Header fields by lower-case name; a repeated field is an array of its values (as undici gives it). */
  headers: Record<string, string | string[]>;
  body: Buffer;
}

/**
 * How `directRequest` ended: the answer, or declined — a body without `Content-Length`, coded or over
 * the cap, a head that is not HTTP/1.x (`lasting`: the server will answer so again), a connection that
 * failed before the whole answer (`stale` when a kept connection turned out closed) — so the caller
 * sends the request the general way.
 */
export type DirectRequestOutcome =
  | { response: DirectResponse }
  | { declined: string; stale?: boolean; lasting?: boolean };

/**
 * Sends one GET or HEAD on a kept direct connection of `connections` (or a new one) and reads the
 * whole answer, any status: what a manifest request needs, without loading undici. An abort rejects
 * (`ERR_ABORTED`), and so does a connect, headers or body-idle timeout (`ERR_TIMEOUT`, as undici's
 * would: sending the request again the general way would only wait as long once more); everything
 * else that goes wrong is declined.
 */
export function directRequest(
  request: DirectRequest,
  connections: DirectConnections,
): Promise<DirectRequestOutcome> {
  return new Promise((resolve, reject) => {
    const { timeouts, signal } = request;
    const origin = request.url.origin;
    let phase: 'connect' | 'head' | 'body' = 'connect';
    const head = new HeadReader();
    let status = 0;
    let fields = new Map<string, string>();
    let lines: Array<[string, string]> = [];
    let body = Buffer.alloc(0);
    let received = 0;
    let reusable = false;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let connection!: DirectConnection;
    let reused = false;
    /** The connection went back to `connections` (it keeps reading, for its idle watch). */
    let given = false;

    const stopTimer = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
    };
    const finish = (outcome: DirectRequestOutcome | Error) => {
      if (settled) return;
      settled = true;
      stopTimer();
      signal?.removeEventListener('abort', onAbort);
      given = !(outcome instanceof Error) && 'response' in outcome && reusable;
      if (given) connections.give(origin, connection);
      else connection.socket.destroy();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const decline = (reason: string, stale = false) =>
      finish({ declined: reason, ...(stale ? { stale } : {}) });
    /** A decline for the kind of answer, not for one connection's fate. */
    const declineLasting = (reason: string) => finish({ declined: reason, lasting: true });
    const done = () => {
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of lines) {
        const seen = headers[name];
        headers[name] = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value];
      }
      finish({ response: { status, headers, body } });
    };
    const onAbort = () => finish(new AbortedError(signal?.reason));
    const timedOut = (which: 'connect' | 'headers' | 'body') => finish(timeoutError(request.registry, which));
    const broken = (reason: string) => {
      if (settled) return;
      decline(
        reason === CONNECTION_CLOSED ? 'connection closed before the whole answer' : reason,
        reused && phase === 'head' && !head.started,
      );
    };
    const bodyTimer = () => {
      stopTimer();
      timer = setTimeout(() => timedOut('body'), timeouts.bodyIdle);
    };

    const onRead = (length: number, buffer: Uint8Array): boolean => {
      const backing = buffer as Buffer;
      try {
        if (settled) return false;
        let view = Buffer.from(backing.buffer, backing.byteOffset, length);
        if (phase !== 'body') {
          const read = head.read(view);
          if (read === undefined || read === 'too large') {
            if (read === 'too large') decline('response head too large');
            return !settled;
          }
          const parsed = parseHead(read.head);
          if ('reason' in parsed) {
            declineLasting(parsed.reason);
            return false;
          }
          ({ status, fields, lines } = parsed);
          reusable = parsed.keepAlive;
          let bodyLength = 0;
          if (request.method !== 'HEAD' && status !== 204 && status !== 304 && status >= 200) {
            if (coded(fields.get('transfer-encoding'))) {
              declineLasting('transfer coding');
              return false;
            }
            const length = contentLength(fields.get('content-length'));
            if (length === undefined) {
              declineLasting(fields.has('content-length') ? 'invalid Content-Length' : 'no Content-Length');
              return false;
            }
            bodyLength = length;
            if (bodyLength > request.maxBodyBytes) {
              declineLasting('body over the cap');
              return false;
            }
          }
          view = read.rest;
          phase = 'body';
          body = Buffer.allocUnsafe(bodyLength);
        }
        if (view.byteLength > body.length - received) {
          view = view.subarray(0, body.length - received);
          reusable = false;
        }
        view.copy(body, received);
        received += view.byteLength;
        if (received === body.length) {
          done();
          return given;
        }
        bodyTimer();
        return true;
      } finally {
        connection.free.push(backing);
      }
    };

    const send = () => {
      if (settled) return;
      phase = 'head';
      timer = setTimeout(() => timedOut('headers'), timeouts.headers);
      connection.socket.write(requestText(request.method, request.url, request.headers, true));
    };
    if (signal?.aborted) {
      reject(new AbortedError(signal.reason));
      return;
    }
    ({ connection, reused, timer } = attach(request, connections, {
      onRead,
      broken,
      send,
      connectTimeout: () => timedOut('connect'),
      abort: onAbort,
    }));
  });
}

/**
 * At most `limit` direct reads per origin at a time (the client's `maxConnectionsPerHost`); more wait
 * their turn: the lowest `priority` first, then in order of arrival. A finished read hands its slot
 * straight to the next waiter, so a later arrival cannot take it first. Direct reads do not go
 * through undici's pool, so they are counted here.
 */
export class DirectReadSlots {
  readonly #limit: number;
  readonly #origins = new Map<string, { active: number; waiting: SlotWaiter[] }>();

  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  /** Waits for a slot of `origin`; resolves to its release. Rejects with `ERR_ABORTED` on abort. */
  async acquire(origin: string, signal?: AbortSignal, priority = 0): Promise<() => void> {
    let state = this.#origins.get(origin);
    if (state === undefined) {
      state = { active: 0, waiting: [] };
      this.#origins.set(origin, state);
    }
    if (state.active < this.#limit) {
      state.active += 1;
    } else {
      const { waiting } = state;
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          const index = waiting.indexOf(waiter);
          if (index >= 0) waiting.splice(index, 1);
          reject(new AbortedError(signal?.reason));
        };
        const waiter: SlotWaiter = {
          priority,
          wake: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        if (signal?.aborted) {
          reject(new AbortedError(signal.reason));
          return;
        }
        // After every waiter of the same or a lower priority: ties keep their order of arrival.
        const before = waiting.findIndex((other) => other.priority > priority);
        waiting.splice(before < 0 ? waiting.length : before, 0, waiter);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      // The slot was handed over by its last holder: `active` still counts it.
    }
    return this.#releaser(origin, state);
  }

  #releaser(origin: string, state: { active: number; waiting: SlotWaiter[] }): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = state.waiting.shift();
      if (next) {
        next.wake();
        return;
      }
      state.active -= 1;
      if (state.active === 0) this.#origins.delete(origin);
    };
  }
}

interface SlotWaiter {
  priority: number;
  wake(): void;
}
