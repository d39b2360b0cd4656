import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Descriptor, ImageIndex } from '@ocipull/core';
import { REF_NAME_ANNOTATION } from '../registry/layout-repository.ts';
import { generateCertificates, generateSigningCertificate } from './certificates.ts';
import { freePort } from './free-port.ts';
import { pushLayout } from './push-layout.ts';
import { startTokenServer, type TokenRequestRecord, type TokenServer } from './token-server.ts';
import { requireTool, runTool, skopeo } from './tools.ts';

/** The three set-ups of the real registry. */
export type DistributionMode = 'http' | 'tls-basic' | 'token';

/** Options for `startDistribution`. */
export interface DistributionOptions {
  /** Default `'http'` (no TLS, no auth). */
  mode?: DistributionMode;
  /** Users (name → password) for `tls-basic` (htpasswd, bcrypt) and `token` (credentialed tokens). Default `DEFAULT_DISTRIBUTION_USERS`. */
  users?: Record<string, string>;
  /** `token` mode: whether the token server gives anonymous callers pull tokens. Default true. */
  anonymousPull?: boolean;
  /** `token` mode: token lifetime in seconds. Default 300. */
  tokenExpiresIn?: number;
  /** Run as a pull-through cache of `remoteurl` (distribution's `proxy` section). Pushes are refused then. */
  proxy?: { remoteurl: string; username?: string; password?: string };
  /** The registry binary. Default `/usr/bin/docker-registry` (Debian package `docker-registry`). */
  binary?: string;
  /** How long to wait for `/v2/` to answer. Default 20 s. */
  startTimeoutMs?: number;
}

/** Users of the authenticated set-ups when none are given. Test-only secrets. */
export const DEFAULT_DISTRIBUTION_USERS: Readonly<Record<string, string>> = {
  ocipull: 'ocipull-test-password',
};

/** The `service` and `issuer` the token set-up agrees on with its token server. */
export const DISTRIBUTION_TOKEN_SERVICE = 'ocipull-distribution';
const TOKEN_ISSUER = 'ocipull-harness-token-server';

/** A request line from distribution's access log. */
export interface DistributionRequest {
  method: string;
  /** The request URI (path and query). */
  path: string;
  status: number;
  bytes: number;
}

/** Options for `DistributionRegistry.push`. */
export interface PushOptions {
  /** The destination tag. Default: the source tag. */
  destinationTag?: string;
  /**
   * `'skopeo'` (`skopeo copy --all --preserve-digests`), `'native'` (the harness's own HTTP push,
   * `pushLayout`), or `'auto'` (default): native for Docker-typed images, which skopeo 1.9 cannot read
   * out of an OCI layout, skopeo otherwise.
   */
  method?: 'auto' | 'skopeo' | 'native';
  signal?: AbortSignal;
}

/** A running CNCF distribution registry. */
export interface DistributionRegistry {
  mode: DistributionMode;
  /** `http://127.0.0.1:<port>` or `https://…` in `tls-basic` mode. */
  url: string;
  /** `127.0.0.1:<port>`. */
  host: string;
  port: number;
  /** `tls-basic`: the CA certificate (PEM) that signed the server certificate. */
  caFile?: string;
  /** `tls-basic`: a directory holding `ca.crt`, for `skopeo --src-cert-dir` / `--dest-cert-dir`. */
  certDir?: string;
  /** `token`: the token server's realm. */
  tokenUrl?: string;
  /** `token`: requests the token server answered. */
  tokenRequests?: readonly TokenRequestRecord[];
  /** The users of the authenticated modes. */
  users: Readonly<Record<string, string>>;
  /** The registry's storage root. */
  storageDir: string;
  /** Every line the registry logged (stdout and stderr), oldest first. */
  readonly logLines: readonly string[];
  /**
   * The access-log requests logged so far (one per HTTP request the registry served). The registry
   * writes a request's line just after answering it, so a client can see the answer first: count
   * with `settled()` right after a request.
   */
  requests(): DistributionRequest[];
  /**
   * Waits until the log has been quiet for `quietMs` (default 150, at most `timeoutMs`, default
   * 5000), then returns `requests()`: every request answered before the call is in it.
   */
  settled(options?: { quietMs?: number; timeoutMs?: number }): Promise<DistributionRequest[]>;
  /**
   * Pushes `layoutDir:tag` (all platforms of an index, digests preserved) to
   * `<host>/<repository>:<tag>`, with skopeo or the harness's own push (see `PushOptions.method`),
   * using the first user's credentials in authenticated modes. Resolves to the pushed reference.
   */
  push(layoutDir: string, tag: string, repository: string, options?: PushOptions): Promise<string>;
  /** Stops the registry (SIGTERM, then SIGKILL), its token server, and removes its temporary files. */
  close(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Runs the registry under a watchdog shell that holds our end of a stdin pipe: when this process
 * closes stdin (`close()`) or dies in any way (even SIGKILL, so no exit hook runs), the pipe reaches
 * EOF and the shell sends the registry SIGTERM. Background jobs of a non-interactive shell get
 * /dev/null as stdin, hence the copy of the pipe on fd 3.
 */
const WATCHDOG =
  'exec 3<&0; "$0" serve "$1" </dev/null & pid=$!; (read _ <&3; kill "$pid" 2>/dev/null) & wait "$pid"';

/** Kills a watchdog and its registry: they share the process group the watchdog leads. */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** A test runner that exits normally stops its registries at once rather than through the watchdog. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) killGroup(child);
  });
}

const ACCESS_LOG = /^\S+ - \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)/;

function yamlString(value: string): string {
  return JSON.stringify(value);
}

async function writeHtpasswd(file: string, users: Record<string, string>): Promise<void> {
  const lines: string[] = [];
  for (const [user, password] of Object.entries(users)) {
    // -i reads the password from stdin so it never shows in a process list.
    const { stdout } = await runTool('htpasswd', ['-niB', '-C', '4', user], { input: `${password}\n` });
    lines.push(stdout.trim());
  }
  await writeFile(file, `${lines.join('\n')}\n`);
}

function ping(url: string, caFile: Buffer | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const options = {
      method: 'GET',
      timeout: 2000,
      agent: false as const,
      ...(caFile ? { ca: caFile } : {}),
    };
    const request = (url.startsWith('https:') ? httpsRequest : httpRequest)(
      `${url}/v2/`,
      options,
      (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      },
    );
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', reject);
    request.end();
  });
}

/**
 * Starts `/usr/bin/docker-registry serve CONFIG` on a free 127.0.0.1 port with temporary storage, in
 * one of three set-ups: plain HTTP; TLS (a generated CA) with htpasswd basic auth; or token auth with
 * a token server run in this process. Resolves once `/v2/` answers. Fails with a clear message when
 * docker-registry, openssl or htpasswd are missing.
 */
export async function startDistribution(options: DistributionOptions = {}): Promise<DistributionRegistry> {
  const mode = options.mode ?? 'http';
  const binary = await requireTool(options.binary ?? '/usr/bin/docker-registry');
  const users = { ...(options.users ?? DEFAULT_DISTRIBUTION_USERS) };
  const workDir = await mkdtemp(join(tmpdir(), 'ocipull-distribution-'));
  const storageDir = join(workDir, 'storage');
  await mkdir(storageDir);
  let tokenServer: TokenServer | undefined;
  let child: ChildProcess | undefined;
  const logLines: string[] = [];
  let lastLineAt = Date.now();
  try {
    let caFile: string | undefined;
    let certDir: string | undefined;
    const authLines: string[] = [];
    const tlsLines: string[] = [];
    if (mode === 'tls-basic') {
      const certificates = await generateCertificates(workDir);
      caFile = certificates.caFile;
      certDir = join(workDir, 'certs.d');
      await mkdir(certDir);
      await copyFile(certificates.caFile, join(certDir, 'ca.crt'));
      const htpasswdFile = join(workDir, 'htpasswd');
      await writeHtpasswd(htpasswdFile, users);
      tlsLines.push(
        '  tls:',
        `    certificate: ${yamlString(certificates.certFile)}`,
        `    key: ${yamlString(certificates.keyFile)}`,
      );
      authLines.push(
        'auth:',
        '  htpasswd:',
        '    realm: "ocipull-distribution"',
        `    path: ${yamlString(htpasswdFile)}`,
      );
    } else if (mode === 'token') {
      const signer = await generateSigningCertificate(workDir);
      tokenServer = await startTokenServer({
        service: DISTRIBUTION_TOKEN_SERVICE,
        issuer: TOKEN_ISSUER,
        keyFile: signer.keyFile,
        certFile: signer.certFile,
        users,
        anonymousPull: options.anonymousPull ?? true,
        expiresIn: options.tokenExpiresIn ?? 300,
      });
      authLines.push(
        'auth:',
        '  token:',
        `    realm: ${yamlString(tokenServer.url)}`,
        `    service: ${yamlString(DISTRIBUTION_TOKEN_SERVICE)}`,
        `    issuer: ${yamlString(TOKEN_ISSUER)}`,
        `    rootcertbundle: ${yamlString(signer.certFile)}`,
      );
    } else if (mode !== 'http') {
      throw new RangeError(`startDistribution: unknown mode ${JSON.stringify(mode)}`);
    }
    const proxyLines: string[] = [];
    if (options.proxy) {
      proxyLines.push('proxy:', `  remoteurl: ${yamlString(options.proxy.remoteurl)}`);
      if (options.proxy.username !== undefined)
        proxyLines.push(`  username: ${yamlString(options.proxy.username)}`);
      if (options.proxy.password !== undefined)
        proxyLines.push(`  password: ${yamlString(options.proxy.password)}`);
    }
    const caBytes = caFile ? await readFile(caFile) : undefined;
    const scheme = mode === 'tls-basic' ? 'https' : 'http';
    const configFile = join(workDir, 'config.yml');
    installExitHook();

    let port = 0;
    for (let attempt = 1; ; attempt += 1) {
      port = await freePort();
      const config = [
        'version: 0.1',
        'log:',
        '  level: info',
        '  formatter: text',
        '  accesslog:',
        '    disabled: false',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${yamlString(storageDir)}`,
        '  delete:',
        '    enabled: true',
        '  maintenance:',
        '    uploadpurging:',
        '      enabled: false',
        'http:',
        `  addr: "127.0.0.1:${port}"`,
        `  secret: ${yamlString(randomBytes(16).toString('hex'))}`,
        ...tlsLines,
        ...authLines,
        ...proxyLines,
        '',
      ].join('\n');
      await writeFile(configFile, config);
      const started = spawn('/bin/sh', ['-c', WATCHDOG, binary, configFile], {
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
      child = started;
      running.add(started);
      let exited = false;
      started.once('exit', () => {
        exited = true;
        running.delete(started);
      });
      for (const stream of [started.stdout, started.stderr]) {
        createInterface({ input: stream! }).on('line', (line) => {
          logLines.push(line);
          lastLineAt = Date.now();
        });
      }
      const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
      let ready = false;
      while (!exited && Date.now() < deadline) {
        try {
          await ping(`${scheme}://127.0.0.1:${port}`, caBytes);
          ready = true;
          break;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      if (ready) break;
      const addressInUse = logLines.some((line) => line.includes('address already in use'));
      killGroup(started);
      if (addressInUse && attempt < 5) continue;
      throw new Error(
        `docker-registry did not answer /v2/ on 127.0.0.1:${port} (${exited ? 'it exited' : 'timed out'}); log:\n${logLines.slice(-20).join('\n')}`,
      );
    }

    const host = `127.0.0.1:${port}`;
    const url = `${scheme}://${host}`;
    const readyChild = child!;
    let closed: Promise<void> | undefined;
    const authFile = join(workDir, 'auth.json');
    const [firstUser] = Object.entries(users);
    if (mode !== 'http' && firstUser) {
      const auth = Buffer.from(`${firstUser[0]}:${firstUser[1]}`).toString('base64');
      await writeFile(authFile, JSON.stringify({ auths: { [host]: { auth } } }), { mode: 0o600 });
    }
    const registry: DistributionRegistry = {
      mode,
      url,
      host,
      port,
      users,
      storageDir,
      logLines,
      requests() {
        const result: DistributionRequest[] = [];
        for (const line of logLines) {
          const match = ACCESS_LOG.exec(line);
          if (!match) continue;
          result.push({
            method: match[1]!,
            path: match[2]!,
            status: Number(match[3]),
            bytes: match[4] === '-' ? 0 : Number(match[4]),
          });
        }
        return result;
      },
      async settled({ quietMs = 150, timeoutMs = 5000 } = {}) {
        const deadline = Date.now() + timeoutMs;
        // At least one quiet period from now: a line for a request answered just before may be in flight.
        const since = Date.now();
        while (Date.now() < deadline && Date.now() - Math.max(lastLineAt, since) < quietMs) {
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        return registry.requests();
      },
      async push(layoutDir, tag, repository, pushOptions = {}) {
        const destinationTag = pushOptions.destinationTag ?? tag;
        const destination = `${host}/${repository}:${destinationTag}`;
        let method = pushOptions.method ?? 'auto';
        if (method === 'auto') {
          const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as ImageIndex;
          const top = index.manifests.findLast(
            (entry: Descriptor) => entry.annotations?.[REF_NAME_ANNOTATION] === tag,
          );
          method = top?.mediaType.startsWith('application/vnd.docker.') ? 'native' : 'skopeo';
        }
        if (method === 'native') {
          await pushLayout(layoutDir, tag, repository, destinationTag, {
            url,
            ...(caBytes ? { ca: caBytes } : {}),
            ...(firstUser && mode !== 'http' ? { username: firstUser[0], password: firstUser[1] } : {}),
            ...(pushOptions.signal ? { signal: pushOptions.signal } : {}),
          });
          return destination;
        }
        const args = ['copy', '--all', '--preserve-digests', '--retry-times', '2'];
        if (mode === 'tls-basic') args.push('--dest-cert-dir', certDir!);
        else args.push('--dest-tls-verify=false');
        if (mode !== 'http') args.push('--dest-authfile', authFile);
        args.push(`oci:${layoutDir}:${tag}`, `docker://${destination}`);
        await skopeo(args, pushOptions.signal ? { signal: pushOptions.signal } : {});
        return destination;
      },
      close() {
        closed ??= (async () => {
          if (readyChild.exitCode === null && readyChild.signalCode === null) {
            const exited = new Promise<void>((resolve) => readyChild.once('exit', () => resolve()));
            // EOF on the watchdog's stdin makes it SIGTERM the registry and exit with it.
            readyChild.stdin?.end();
            const timer = setTimeout(() => killGroup(readyChild), 5000);
            await exited;
            clearTimeout(timer);
          }
          running.delete(readyChild);
          await tokenServer?.close();
          await rm(workDir, { recursive: true, force: true });
        })();
        return closed;
      },
    };
    if (caFile) registry.caFile = caFile;
    if (certDir) registry.certDir = certDir;
    if (tokenServer) {
      registry.tokenUrl = tokenServer.url;
      registry.tokenRequests = tokenServer.requests;
    }
    return registry;
  } catch (error) {
    if (child) killGroup(child);
    await tokenServer?.close();
    await rm(workDir, { recursive: true, force: true });
    throw error;
  }
}
