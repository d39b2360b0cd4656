import type { CredentialCheck } from '@ocipull/registry-client';
import {
  type CommandContext,
  parseCommandArgs,
  type TlsFlags,
  usageError,
  withTlsFlags,
} from '../context.ts';
import { removeCredentials, saveCredentials } from '../docker-config.ts';
import { ExitCode } from '../exit-codes.ts';

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * `ocipull login REGISTRY -u USER --password-stdin`: stores credentials in the docker config format
 * (or the configured credential helper). The password comes from stdin, never from the command line
 * by default, so it stays out of shell history and `ps`.
 */
export async function loginCommand(context: CommandContext): Promise<number> {
  const { values, positionals } = parseCommandArgs({
    args: context.args,
    allowPositionals: true,
    options: {
      username: { type: 'string', short: 'u' },
      password: { type: 'string', short: 'p' },
      'password-stdin': { type: 'boolean' },
      'no-verify': { type: 'boolean' },
      insecure: { type: 'boolean' },
      tls: { type: 'boolean' },
      'ca-file': { type: 'string' },
      'tls-skip-verify': { type: 'boolean' },
    },
  });
  if (positionals.length !== 1)
    throw usageError('login takes one registry, e.g. `ocipull login ghcr.io -u me --password-stdin`');
  const username = values.username ?? context.env.OCIPULL_USERNAME;
  if (!username) throw usageError('login needs a user name: -u USER');
  let password = values.password;
  if (values['password-stdin']) password = (await readAll(context.stdin)).replace(/\r?\n$/, '');
  password ??= context.env.OCIPULL_PASSWORD;
  if (!password)
    throw usageError('login needs a password: --password-stdin (or -p, which shows it to other users)');
  if (values.password && !context.quiet) {
    context.stderr.write(
      'warning: a password given with -p is visible to other users; prefer --password-stdin\n',
    );
  }
  if (!values['no-verify']) {
    const answer = await checkLogin(positionals[0]!, username, password, values, context);
    if (!answer.authenticated && !context.quiet)
      context.stderr.write(`note: ${answer.registry} did not ask for credentials; storing them anyway\n`);
  }
  const path = await saveCredentials(positionals[0]!, { username, password }, context.env);
  if (!context.quiet)
    context.stdout.write(`login succeeded: credentials for ${positionals[0]} stored in ${path}\n`);
  return ExitCode.Ok;
}

/**
 * Asks the registry whether it takes these credentials before they are stored, as `docker login`
 * does: a refusal is `ERR_UNAUTHORIZED` (exit code 2) and nothing is written.
 */
async function checkLogin(
  registry: string,
  username: string,
  password: string,
  values: TlsFlags & { insecure?: boolean | undefined },
  context: CommandContext,
): Promise<CredentialCheck> {
  const { createRegistryClient, normalizeAuthKey } = await import('@ocipull/registry-client');
  const host = normalizeAuthKey(registry);
  const transport = await withTlsFlags(values.insecure ? { insecure: true } : {}, values);
  const client = createRegistryClient({
    dockerConfig: false,
    credentials: { [host]: { username, password } },
    registries: { [host]: transport },
    env: context.env,
  });
  try {
    return await client.checkCredentials(host, { signal: context.signal });
  } finally {
    await client.close();
  }
}

/** `ocipull logout REGISTRY`. */
export async function logoutCommand(context: CommandContext): Promise<number> {
  const { positionals } = parseCommandArgs({ args: context.args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw usageError('logout takes one registry');
  const removed = await removeCredentials(positionals[0]!, context.env);
  if (!context.quiet) {
    context.stdout.write(
      removed ? `removed credentials for ${positionals[0]}\n` : `not logged in to ${positionals[0]}\n`,
    );
  }
  return ExitCode.Ok;
}
