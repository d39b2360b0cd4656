import { request as httpRequest } from 'node:http';

/** What `fetchRaw` saw: status, headers, the body bytes that arrived, and how the body ended. */
export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** `complete`, `closed` (connection ended before Content-Length bytes) or `idle` (no bytes for `idleMs`). */
  ending: 'complete' | 'closed' | 'idle';
  /** Milliseconds from sending to the end of the body. */
  elapsedMs: number;
}

/**
 * A deliberately plain HTTP client for the harness's own tests (node:http, no retries, no redirects):
 * it reports exactly what the server did, including bodies that stop early.
 */
export function fetchRaw(
  url: string,
  options: {
    method?: string;
    headers?: Record<string, string>;
    body?: Buffer | string;
    idleMs?: number;
  } = {},
): Promise<RawResponse> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, {
      method: options.method ?? 'GET',
      headers: options.headers,
      agent: false,
    });
    request.on('error', reject);
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      let settled = false;
      let idle: NodeJS.Timeout | undefined;
      const finish = (ending: RawResponse['ending']) => {
        if (settled) return;
        settled = true;
        clearTimeout(idle);
        if (ending === 'idle') response.destroy();
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks),
          ending,
          elapsedMs: Date.now() - started,
        });
      };
      const arm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => finish('idle'), options.idleMs ?? 2000);
      };
      arm();
      response.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        arm();
      });
      response.on('end', () => finish(response.complete ? 'complete' : 'closed'));
      response.on('aborted', () => finish('closed'));
      response.on('error', () => finish('closed'));
      response.on('close', () => finish(response.complete ? 'complete' : 'closed'));
    });
    request.end(options.body);
  });
}

/** `Authorization: Basic …` for a user and password. */
export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}
