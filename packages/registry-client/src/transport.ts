import { createRequire } from 'node:module';
import type { Agent, Dispatcher, EnvHttpProxyAgent, Pool } from 'undici';
import { isLoopbackRegistry } from './reference.ts';

/** Made at the first use, not at load: the CLI's startup snapshot evaluates this module ahead of time. */
let undiciRequire: NodeJS.Require | undefined;
function requireUndici(id: string): unknown {
  undiciRequire ??= createRequire(import.meta.url);
  return undiciRequire(id);
}

interface UndiciParts {
  Agent: typeof Agent;
  Pool: typeof Pool;
  request: (this: Dispatcher, options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;
}
let undiciParts: UndiciParts | undefined;

/**
 * undici's dispatchers and `request`, loaded file by file: the package index also evaluates fetch,
 * WebSocket, EventSource, the cache stores and the mock agents, which cost ~50 ms of every CLI start
 * (measured: 77 ms for `require('undici')`, 24 ms for these files). undici 7 has no `exports` map, so
 * these paths resolve (the version is pinned; every client test goes through them). With a proxy
 * configured the full package is loaded. Loaded at the first request that goes through undici, not
 * with this module or a client: a pull served from the cache, `unpack`, `inspect`, and a pull whose
 * requests all go the direct way (manifests and blobs of a registry without auth) never pay for them.
 */
function undici(): UndiciParts {
  undiciParts ??= {
    Agent: requireUndici('undici/lib/dispatcher/agent.js') as typeof Agent,
    Pool: requireUndici('undici/lib/dispatcher/pool.js') as typeof Pool,
    request: requireUndici('undici/lib/api/api-request.js') as UndiciParts['request'],
  };
  return undiciParts;
}

/** Per-registry transport settings. */
export interface RegistryTransportOptions {
  /**
   * Plain HTTP instead of HTTPS. Default: true for loopback hosts (`localhost`, 127.0.0.0/8, `::1`),
   * false otherwise. Unlike Docker we never fall back from HTTPS to HTTP silently: one scheme per
   * registry, chosen here, so a downgrade can never be forced by an attacker.
   */
  insecure?: boolean;
  /** Extra CA certificates (PEM) trusted for this registry, added to Node's default roots. */
  ca?: string | string[];
  /** Skip TLS certificate verification for this registry. Default false. Dangerous. */
  skipVerify?: boolean;
  /** Client certificate (PEM) for mutual TLS. */
  cert?: string;
  /** Client key (PEM) for mutual TLS. */
  key?: string;
  /** Pull-through mirrors tried in order before this registry (`http://127.0.0.1:5001`, `mirror.example`). */
  mirrors?: string[];
}

/** Timeouts in milliseconds. */
export interface Timeouts {
  /** TCP+TLS connect. Default 30 000 (Docker's dialer timeout). */
  connect: number;
  /** From request sent to response headers. Default 60 000. */
  headers: number;
  /** Longest silence between two body chunks. Default 60 000. */
  bodyIdle: number;
}

/** Default timeouts. */
export const DEFAULT_TIMEOUTS: Timeouts = { connect: 30_000, headers: 60_000, bodyIdle: 60_000 };
/** Connections per host: registries and CDNs throttle above ~6, and containerd uses a similar cap. */
export const DEFAULT_MAX_CONNECTIONS_PER_HOST = 6;
/** How long an idle keep-alive connection is kept. */
export const DEFAULT_KEEP_ALIVE_MS = 30_000;

/** The `connect` (TLS) options of a registry, in undici's shape. */
function tlsOptions(options: RegistryTransportOptions | undefined): Record<string, unknown> {
  if (!options) return {};
  const tls: Record<string, unknown> = {};
  if (options.ca !== undefined) {
    // Add to the default roots rather than replacing them, so a registry's CDN keeps working.
    const extra = Array.isArray(options.ca) ? options.ca : [options.ca];
    tls.ca = [...tlsRootCertificates(), ...extra];
  }
  if (options.skipVerify) tls.rejectUnauthorized = false;
  if (options.cert !== undefined) tls.cert = options.cert;
  if (options.key !== undefined) tls.key = options.key;
  return tls;
}

let roots: readonly string[] | undefined;
function tlsRootCertificates(): readonly string[] {
  if (!roots) {
    // Lazy: node:tls is only needed when a custom CA is configured.
    roots = (process.getBuiltinModule('node:tls') as typeof import('node:tls')).rootCertificates;
  }
  return roots;
}

/**
 * The HTTP side of a client: one undici `Agent` with keep-alive and a per-origin connection cap, a
 * pool per origin carrying that registry's TLS settings; when `HTTPS_PROXY`/`HTTP_PROXY` is set, an
 * `EnvHttpProxyAgent` honouring `NO_PROXY` for everything but loopback, which always stays direct.
 */
export class Transport {
  #direct: Agent | undefined;
  readonly #proxied = new Map<string, Dispatcher>();
  readonly #hosts = new Map<string, RegistryTransportOptions>();
  readonly #common: Agent.Options;
  readonly #useProxy: boolean;
  readonly #proxyEnv: { httpProxy?: string; httpsProxy?: string; noProxy?: string };
  readonly #timeouts: Timeouts;

  constructor(options: { timeouts: Timeouts; maxConnectionsPerHost: number; env?: NodeJS.ProcessEnv }) {
    const env = options.env ?? process.env;
    this.#timeouts = options.timeouts;
    const httpProxy = env.http_proxy ?? env.HTTP_PROXY;
    const httpsProxy = env.https_proxy ?? env.HTTPS_PROXY;
    const noProxy = env.no_proxy ?? env.NO_PROXY;
    this.#useProxy = Boolean(httpProxy || httpsProxy);
    // Passed explicitly so a client built with `env` never falls back to process.env.
    this.#proxyEnv = { httpProxy: httpProxy ?? '', httpsProxy: httpsProxy ?? '', noProxy: noProxy ?? '' };
    this.#common = {
      connections: options.maxConnectionsPerHost,
      keepAliveTimeout: DEFAULT_KEEP_ALIVE_MS,
      headersTimeout: options.timeouts.headers,
      bodyTimeout: options.timeouts.bodyIdle,
      connect: { timeout: options.timeouts.connect },
    };
  }

  /**
   * undici's agent for requests without a proxy, made (and undici loaded) at the first request that
   * needs it: a pull whose requests all go the direct way never loads undici (~35–50 ms of start-up).
   */
  #agent(): Agent {
    if (this.#direct === undefined) {
      const { Agent: AgentClass, Pool: PoolClass } = undici();
      this.#direct = new AgentClass({
        ...this.#common,
        factory: (origin, poolOptions) => {
          const host = new URL(String(origin)).host;
          const base = poolOptions as Pool.Options;
          return new PoolClass(origin, {
            ...base,
            connect: { ...(base.connect as object), ...tlsOptions(this.#hosts.get(host)) },
          });
        },
      });
    }
    return this.#direct;
  }

  /** Records the TLS settings for an API host (`host:port`) before requests reach it. */
  configureHost(host: string, options: RegistryTransportOptions | undefined): void {
    if (options) this.#hosts.set(host.toLowerCase(), options);
  }

  /**
   * Gives `host` the settings of `from` (a host configured before) unless it has some already: the
   * redirect target or token realm of a registry is reached with that registry's TLS settings. The
   * first registry to send us there decides: undici makes an origin's pool, with its TLS, only once.
   */
  inheritHost(host: string, from: string): void {
    const key = host.toLowerCase();
    if (this.#hosts.has(key)) return;
    const options = this.#hosts.get(from.toLowerCase());
    if (options) this.#hosts.set(key, options);
  }

  /** Whether requests to `url` go through the proxy: one is configured, and loopback stays direct. */
  #viaProxy(url: URL): boolean {
    return this.#useProxy && !isLoopbackRegistry(url.host);
  }

  /** The dispatcher for a URL. */
  dispatcherFor(url: URL): Dispatcher {
    if (!this.#viaProxy(url)) return this.#agent();
    const key = url.host.toLowerCase();
    const options = this.#hosts.get(key);
    const tlsKey = options ? key : '';
    let proxied = this.#proxied.get(tlsKey);
    if (!proxied) {
      const tls = tlsOptions(options);
      // The whole package here: the proxy agent calls `connect` from the API that its index installs.
      const ProxyAgentClass = (requireUndici('undici') as { EnvHttpProxyAgent: typeof EnvHttpProxyAgent })
        .EnvHttpProxyAgent;
      proxied = new ProxyAgentClass({
        ...this.#common,
        ...this.#proxyEnv,
        connect: { ...(this.#common.connect as object), ...tls },
        requestTls: tls,
      });
      this.#proxied.set(tlsKey, proxied);
    }
    return proxied;
  }

  /**
   * What a connection of its own to `url` needs (TLS settings, timeouts), for reads that bypass undici;
   * undefined when requests to it go through a proxy.
   */
  directOptions(url: URL): { tls: Record<string, unknown>; timeouts: Timeouts } | undefined {
    if (this.#viaProxy(url)) return undefined;
    return { tls: tlsOptions(this.#hosts.get(url.host.toLowerCase())), timeouts: this.#timeouts };
  }

  /** Sends one request through the dispatcher for `url` (undici's `Dispatcher#request`). */
  request(url: URL, options: Omit<Dispatcher.RequestOptions, 'origin'>): Promise<Dispatcher.ResponseData> {
    return undici().request.call(this.dispatcherFor(url), { ...options, origin: url.origin });
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    // destroy, not close: a graceful close waits for every response body to be read, and a caller's
    // stream it never reads would hold it forever. Whatever is still in flight fails instead.
    await Promise.all([
      this.#direct?.destroy(),
      ...[...this.#proxied.values()].map((dispatcher) => dispatcher.destroy()),
    ]);
  }
}
