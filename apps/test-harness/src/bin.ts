#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { type ServeAuth, serveDirectory } from './registry/serve-directory.ts';

const USAGE = `Usage: ocipull-harness serve DIR [--port N] [--auth none|basic|token] [--user NAME:PASSWORD]...

Serves every OCI image layout in DIR (DIR itself, or each layout below it, named by its path) as an
OCI distribution registry on 127.0.0.1, prints "listening on http://127.0.0.1:PORT", and runs until
SIGINT or SIGTERM.`;

function fail(message: string): never {
  process.stderr.write(`ocipull-harness: ${message}\n${USAGE}\n`);
  process.exit(2);
}

const OPTIONS = {
  port: { type: 'string' },
  auth: { type: 'string' },
  user: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

function parse(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (error) {
    return fail((error as Error).message);
  }
}

async function main(argv: string[]): Promise<void> {
  const parsed = parse(argv);
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const [command, dir, ...rest] = positionals;
  if (command !== 'serve' || dir === undefined || rest.length > 0) fail('expected: serve DIR');
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid --port ${values.port}`);
  const auth = (values.auth ?? 'none') as ServeAuth;
  if (!['none', 'basic', 'token'].includes(auth)) fail(`invalid --auth ${values.auth}`);
  const users: Record<string, string> = {};
  for (const entry of values.user ?? []) {
    const colon = entry.indexOf(':');
    if (colon <= 0) fail('--user wants NAME:PASSWORD');
    users[entry.slice(0, colon)] = entry.slice(colon + 1);
  }
  const registry = await serveDirectory(dir, { port, auth, users });
  process.stdout.write(`listening on ${registry.url}\n`);
  process.stderr.write(`repositories: ${registry.repositories().join(', ') || '(none)'}\n`);
  const stop = () => {
    registry.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`ocipull-harness: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
