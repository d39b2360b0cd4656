import { createPrivateKey, randomUUID, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkPassword, parseBasic, parseScopes } from '../registry/auth.ts';

/** Options for `startTokenServer`. */
export interface TokenServerOptions {
  /** The `aud` claim: must equal the registry's `auth.token.service`. */
  service: string;
  /** The `iss` claim: must equal the registry's `auth.token.issuer`. */
  issuer: string;
  /** PEM files of the RSA signing key and its certificate (the one in the registry's rootcertbundle). */
  keyFile: string;
  certFile: string;
  /** Users that get credentialed (pull and push) tokens. */
  users: Record<string, string>;
  /** Whether callers without credentials get pull tokens. */
  anonymousPull: boolean;
  /** Token lifetime in seconds. */
  expiresIn: number;
}

/** One token request the token server answered (never the password or the token). */
export interface TokenRequestRecord {
  /** The authenticated user, or undefined for an anonymous request. */
  user: string | undefined;
  /** The `scope` parameters, verbatim. */
  scopes: string[];
  status: number;
}

/** A running token server for distribution's `auth.token` mode. */
export interface TokenServer {
  /** The realm: `http://127.0.0.1:<port>/token`. */
  url: string;
  readonly requests: readonly TokenRequestRecord[];
  close(): Promise<void>;
}

function base64url(value: Buffer | string): string {
  return Buffer.from(value).toString('base64url');
}

/** The DER bytes of the first certificate of a PEM file, base64 (standard alphabet) as `x5c` wants. */
function pemToX5c(pem: string): string {
  const match = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw new Error('token server: no certificate in the signing certificate file');
  return match[1]!.replace(/\s+/g, '');
}

/**
 * Starts the small token server distribution 2.8's `auth.token` needs: it issues RS256 JWTs whose
 * `x5c` header carries the signing certificate (which the registry trusts through `rootcertbundle`),
 * with claims `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti` and `access`.
 */
export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const key = createPrivateKey(await readFile(options.keyFile));
  const x5c = pemToX5c(await readFile(options.certFile, 'utf8'));
  const requests: TokenRequestRecord[] = [];

  const issue = (user: string | undefined, scopes: string[]) => {
    const access = parseScopes(scopes).flatMap((scope) => {
      if (scope.type === 'registry' && scope.name === 'catalog') {
        return user === undefined ? [] : [{ type: 'registry', name: 'catalog', actions: ['*'] }];
      }
      if (scope.type !== 'repository') return [];
      const allowed = user === undefined ? (options.anonymousPull ? ['pull'] : []) : ['pull', 'push'];
      const actions = scope.actions.filter((action) => allowed.includes(action));
      return [{ type: 'repository', name: scope.name, actions }];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', x5c: [x5c] };
    const claims = {
      iss: options.issuer,
      sub: user ?? '',
      aud: options.service,
      exp: now + Math.max(1, Math.ceil(options.expiresIn)),
      // Clock skew between this process and the registry is nil, but distribution allows leeway anyway.
      nbf: now - 1,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('RSA-SHA256', Buffer.from(signingInput), key);
    return `${signingInput}.${base64url(signature)}`;
  };

  const handle = (request: IncomingMessage, response: ServerResponse) => {
    const parsed = new URL(request.url ?? '/', 'http://localhost');
    const scopes = parsed.searchParams.getAll('scope');
    const record: TokenRequestRecord = { user: undefined, scopes, status: 0 };
    requests.push(record);
    const reply = (status: number, body: unknown) => {
      record.status = status;
      const bytes = Buffer.from(JSON.stringify(body));
      response.writeHead(status, {
        'Content-Type': 'application/json',
        'Content-Length': String(bytes.length),
      });
      response.end(bytes);
    };
    if (parsed.pathname !== '/token' || request.method !== 'GET') {
      reply(404, { errors: [{ code: 'UNSUPPORTED', message: 'GET /token only', detail: null }] });
      return;
    }
    let user: string | undefined;
    if (request.headers.authorization !== undefined) {
      const credentials = parseBasic(request.headers.authorization);
      if (!credentials || !checkPassword(options.users, credentials.user, credentials.password)) {
        reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication failed', detail: null }] });
        return;
      }
      user = credentials.user;
      record.user = user;
    } else if (!options.anonymousPull) {
      reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] });
      return;
    }
    const token = issue(user, scopes);
    reply(200, {
      token,
      access_token: token,
      expires_in: Math.max(1, Math.ceil(options.expiresIn)),
      issued_at: new Date().toISOString(),
    });
  };

  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/token`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
