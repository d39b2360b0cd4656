import { randomBytes, timingSafeEqual } from 'node:crypto';

/** A repository action a credential may be granted (distribution token scopes). */
export type RegistryAction = 'pull' | 'push';

/**
 * Decides what `user` (undefined for anonymous) may do in `repository`. The default grants
 * anonymous callers `pull` (when the mode allows anonymous access) and every known user `pull` and `push`.
 */
export type AccessPolicy = (user: string | undefined, repository: string) => RegistryAction[];

/** How the harness registry authenticates. */
export type RegistryAuth =
  | { type: 'none' }
  /** HTTP basic on every `/v2/` request; `users` maps user name to password (htpasswd-style). */
  | { type: 'basic'; users: Record<string, string>; realm?: string; access?: AccessPolicy }
  /**
   * The bearer-token challenge flow of the distribution token spec: `/v2/` answers 401 with
   * `WWW-Authenticate: Bearer realm="<url>/token",service=…,scope=…`; `<url>/token` issues tokens.
   */
  | {
      type: 'bearer';
      /** Users that may get credentialed tokens (basic auth on GET /token, or the OAuth2 password grant). */
      users?: Record<string, string>;
      /** Whether /token issues anonymous (pull-only) tokens. Default true. */
      anonymous?: boolean;
      /** Token lifetime in seconds; fractions allowed so tests can expire tokens quickly. Default 300. */
      expiresIn?: number;
      /** The `service` of the challenge. Default `'ocipull-harness'`. */
      service?: string;
      access?: AccessPolicy;
    };

/** Default token lifetime: distribution's token spec suggests at least 60 s; 300 s is Docker Hub's. */
export const DEFAULT_TOKEN_EXPIRES_IN = 300;

/** Default `service` of the bearer challenge. */
export const DEFAULT_TOKEN_SERVICE = 'ocipull-harness';

/** The caller behind a request once its credentials checked out. */
export interface Principal {
  /** The user name, or undefined for an anonymous token. */
  user: string | undefined;
  /** What the credential grants per repository (`'*'` for basic auth, decided per request). */
  granted: (repository: string) => RegistryAction[];
}

interface IssuedToken {
  user: string | undefined;
  access: Map<string, RegistryAction[]>;
  expiresAt: number;
  catalog: boolean;
}

/** A parsed `scope` parameter: `repository:<name>:<actions>`, or `registry:catalog:*`. */
export interface Scope {
  type: string;
  name: string;
  actions: string[];
}

/** Parses distribution token scopes (space-separated, possibly repeated parameters). */
export function parseScopes(values: string[]): Scope[] {
  const scopes: Scope[] = [];
  for (const value of values) {
    for (const item of value.split(' ')) {
      if (item === '') continue;
      const first = item.indexOf(':');
      const last = item.lastIndexOf(':');
      if (first < 0 || last === first) continue;
      scopes.push({
        type: item.slice(0, first),
        name: item.slice(first + 1, last),
        actions: item.slice(last + 1).split(','),
      });
    }
  }
  return scopes;
}

/** Compares secrets in constant time so tests of timing do not leak (and linters stay quiet). */
function sameSecret(expected: string, actual: string): boolean {
  const left = Buffer.from(expected, 'utf8');
  const right = Buffer.from(actual, 'utf8');
  return left.length === right.length && timingSafeEqual(left, right);
}

/** Decodes `Authorization: Basic …`; undefined when absent or malformed. */
export function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Checks a user name and password against a users map. */
export function checkPassword(
  users: Record<string, string> | undefined,
  user: string,
  password: string,
): boolean {
  const expected = users && Object.hasOwn(users, user) ? users[user] : undefined;
  return expected !== undefined && sameSecret(expected, password);
}

/** The in-memory token authority of the harness registry's bearer mode. */
export class TokenAuthority {
  private readonly tokens = new Map<string, IssuedToken>();
  private readonly refreshTokens = new Map<string, string>();

  /** Issues an access token for `user` (undefined = anonymous) covering what it may have of `scopes`. */
  issue(
    user: string | undefined,
    scopes: Scope[],
    policy: AccessPolicy,
    expiresInSeconds: number,
  ): { token: string; grantedScope: string } {
    const access = new Map<string, RegistryAction[]>();
    let catalog = false;
    const granted: string[] = [];
    for (const scope of scopes) {
      if (scope.type === 'registry' && scope.name === 'catalog') {
        if (user !== undefined) {
          catalog = true;
          granted.push('registry:catalog:*');
        }
        continue;
      }
      if (scope.type !== 'repository') continue;
      const allowed = policy(user, scope.name);
      const actions = scope.actions.filter((action): action is RegistryAction =>
        allowed.includes(action as RegistryAction),
      );
      const previous = access.get(scope.name) ?? [];
      const merged = [...new Set([...previous, ...actions])];
      access.set(scope.name, merged);
      if (merged.length > 0) granted.push(`repository:${scope.name}:${merged.join(',')}`);
    }
    const token = randomBytes(24).toString('base64url');
    this.tokens.set(token, { user, access, expiresAt: Date.now() + expiresInSeconds * 1000, catalog });
    return { token, grantedScope: granted.join(' ') };
  }

  /** Issues a long-lived refresh token (an "identity token") for a user. */
  issueRefresh(user: string): string {
    const token = randomBytes(24).toString('base64url');
    this.refreshTokens.set(token, user);
    return token;
  }

  /** The user a refresh token belongs to, or undefined when unknown. */
  refreshUser(token: string): string | undefined {
    return this.refreshTokens.get(token);
  }

  /** Looks a bearer token up; undefined when unknown or expired. */
  verify(token: string): Principal | undefined {
    const issued = this.tokens.get(token);
    if (issued === undefined) return undefined;
    if (Date.now() >= issued.expiresAt) {
      this.tokens.delete(token);
      return undefined;
    }
    return { user: issued.user, granted: (repository) => issued.access.get(repository) ?? [] };
  }

  /** Whether a token grants the catalog. */
  grantsCatalog(token: string): boolean {
    return this.tokens.get(token)?.catalog === true;
  }

  /** Forgets every access and refresh token: clients must authenticate again. */
  revokeAll(): void {
    this.tokens.clear();
    this.refreshTokens.clear();
  }
}

/** The default access policy: anonymous callers pull, users pull and push. */
export function defaultAccessPolicy(anonymousPull: boolean): AccessPolicy {
  return (user) => (user === undefined ? (anonymousPull ? ['pull'] : []) : ['pull', 'push']);
}
