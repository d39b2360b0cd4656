import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import type { Descriptor, ImageIndex } from '@ocipull/core';
import { REF_NAME_ANNOTATION } from '../registry/layout-repository.ts';

/** Where and how `pushLayout` talks to a registry. */
export interface PushTarget {
  /** `http://127.0.0.1:<port>` or `https://…`. */
  url: string;
  /** PEM bytes of the CA to trust for https. */
  ca?: Buffer;
  /** Credentials: sent as basic auth, or to the token realm in the token flow. */
  username?: string;
  password?: string;
  signal?: AbortSignal;
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

/** A blob streamed from disk as a request body. */
interface FileBody {
  file: string;
  size: number;
}

function send(
  url: string,
  target: PushTarget,
  method: string,
  headers: Record<string, string>,
  body?: Buffer | string | FileBody,
): Promise<Reply> {
  const file = typeof body === 'object' && !Buffer.isBuffer(body) ? body : undefined;
  return new Promise((resolve, reject) => {
    const request = (url.startsWith('https:') ? httpsRequest : httpRequest)(
      url,
      {
        method,
        headers: file
          ? { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(file.size) }
          : headers,
        agent: false,
        ...(target.ca ? { ca: target.ca } : {}),
        ...(target.signal ? { signal: target.signal } : {}),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    if (file) createReadStream(file.file).on('error', reject).pipe(request);
    else request.end(body as Buffer | string | undefined);
  });
}

/** Parses `WWW-Authenticate: Bearer realm="…",service="…"` into its parameters. */
function bearerParameters(header: string | undefined): Record<string, string> | undefined {
  if (!header || !/^Bearer\s/i.test(header)) return undefined;
  const parameters: Record<string, string> = {};
  for (const match of header.matchAll(/(\w+)="([^"]*)"/g)) parameters[match[1]!] = match[2]!;
  return parameters;
}

/**
 * Pushes the image tagged `tag` in an OCI layout (a manifest, or an index and every manifest in it,
 * with all their blobs) to `<repository>:<destinationTag>` over the distribution API: monolithic blob
 * uploads, children before parents, media types as stored. Unlike skopeo 1.9 it pushes Docker
 * schema 2 manifests and manifest lists from a layout unchanged. Speaks basic auth and the token flow.
 */
export async function pushLayout(
  layoutDir: string,
  tag: string,
  repository: string,
  destinationTag: string,
  target: PushTarget,
): Promise<void> {
  const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as ImageIndex;
  const top = index.manifests.findLast(
    (entry: Descriptor) => entry.annotations?.[REF_NAME_ANNOTATION] === tag,
  );
  if (!top) throw new Error(`pushLayout: no tag ${JSON.stringify(tag)} in ${layoutDir}`);
  const blobFile = (digest: string) => join(layoutDir, 'blobs', ...digest.split(':'));
  const basic =
    target.username === undefined
      ? undefined
      : `Basic ${Buffer.from(`${target.username}:${target.password ?? ''}`).toString('base64')}`;
  let authorization: string | undefined;

  /** Sends a request, answering one auth challenge (basic or bearer) and retrying once. */
  const call = async (
    method: string,
    path: string,
    headers: Record<string, string> = {},
    body?: Buffer,
  ): Promise<Reply> => {
    const url = path.startsWith('http') ? path : `${target.url}${path}`;
    const withAuth = () => (authorization ? { ...headers, Authorization: authorization } : headers);
    let reply = await send(url, target, method, withAuth(), body);
    if (reply.status !== 401) return reply;
    const challenge = reply.headers['www-authenticate'];
    const bearer = bearerParameters(challenge);
    if (bearer?.realm) {
      const query = new URLSearchParams({
        service: bearer.service ?? '',
        scope: `repository:${repository}:pull,push`,
      });
      const token = await send(
        `${bearer.realm}?${query}`,
        target,
        'GET',
        basic ? { Authorization: basic } : {},
      );
      if (token.status !== 200) throw new Error(`pushLayout: token request failed with ${token.status}`);
      const parsed = JSON.parse(token.body.toString('utf8')) as { token?: string; access_token?: string };
      authorization = `Bearer ${parsed.token ?? parsed.access_token}`;
    } else if (basic) {
      authorization = basic;
    } else {
      return reply;
    }
    reply = await send(url, target, method, withAuth(), body);
    return reply;
  };
  const expect = (reply: Reply, statuses: number[], what: string) => {
    if (!statuses.includes(reply.status)) {
      throw new Error(
        `pushLayout: ${what} answered ${reply.status}: ${reply.body.toString('utf8').slice(0, 300)}`,
      );
    }
  };

  const pushBlob = async (descriptor: Descriptor) => {
    const head = await call('HEAD', `/v2/${repository}/blobs/${descriptor.digest}`);
    if (head.status === 200) return;
    const start = await call('POST', `/v2/${repository}/blobs/uploads/`, { 'Content-Length': '0' });
    expect(start, [202], `starting the upload of ${descriptor.digest}`);
    const location = new URL(String(start.headers.location), target.url);
    location.searchParams.set('digest', descriptor.digest);
    const file = blobFile(descriptor.digest);
    const size = (await stat(file)).size;
    const headers: Record<string, string> = authorization ? { Authorization: authorization } : {};
    const done = await send(location.toString(), target, 'PUT', headers, { file, size });
    expect(done, [201], `uploading ${descriptor.digest}`);
  };

  const pushManifest = async (descriptor: Descriptor, reference: string) => {
    const bytes = await readFile(blobFile(descriptor.digest));
    const parsed = JSON.parse(bytes.toString('utf8')) as {
      mediaType?: string;
      manifests?: Descriptor[];
      config?: Descriptor;
      layers?: Descriptor[];
    };
    const mediaType = parsed.mediaType ?? descriptor.mediaType;
    if (INDEX_TYPES.has(mediaType)) {
      for (const child of parsed.manifests ?? []) await pushManifest(child, child.digest);
    } else {
      for (const blob of [...(parsed.config ? [parsed.config] : []), ...(parsed.layers ?? [])])
        await pushBlob(blob);
    }
    const put = await call(
      'PUT',
      `/v2/${repository}/manifests/${reference}`,
      { 'Content-Type': mediaType, 'Content-Length': String(bytes.length) },
      bytes,
    );
    expect(put, [201], `putting manifest ${reference}`);
  };

  await pushManifest(top, destinationTag);
}
