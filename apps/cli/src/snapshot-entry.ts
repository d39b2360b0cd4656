/**
 * The entry of the CLI's V8 startup snapshot (`dist/snapshot/ocipull.blob`, built by
 * `scripts/bundle.mjs` with `node --build-snapshot`; `bin/ocipull` starts Node from it when it was
 * built by the same Node binary). Building it evaluates the modules of every command but `demo`, and
 * with them the Node built-ins they use, so a start from the snapshot neither loads nor compiles them:
 * with the bin's V8 heap flags Node rejects its own code cache for built-ins, and loading the CLI cost
 * ~60–100 ms of every command. Never imported by anything else: `setDeserializeMainFunction` only
 * exists while a snapshot is being built.
 *
 * What must not be evaluated ahead of time (native addons, modules that install signal handlers at
 * load, anything resolved relative to the install) is loaded at its first use; see the bundle script.
 */
import { realpathSync } from 'node:fs';
import module from 'node:module';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import { imagesCommand, unpackCommand } from './commands/cache-commands.ts';
import { loginCommand } from './commands/login.ts';
import { pullCommand } from './commands/pull.ts';
import { STARTED_FROM_SNAPSHOT } from './main.ts';
import { runCli } from './run.ts';

/** Where this install's bundle is, from the blob's real path (`<cli>/dist/snapshot/ocipull.blob`). */
function bundleEntry(): string {
  const args = process.execArgv;
  const at = args.indexOf('--snapshot-blob');
  const blob = at >= 0 ? args[at + 1] : args.find((arg) => arg.startsWith('--snapshot-blob='))?.slice(16);
  if (blob === undefined) throw new Error('ocipull: started from a snapshot without --snapshot-blob');
  return resolve(dirname(realpathSync(blob)), '..', 'bundle', 'ocipull.js');
}

// Evaluated into the snapshot (the commands are otherwise imported on first use).
const preloaded = [pullCommand, imagesCommand, unpackCommand, loginCommand];

v8.startupSnapshot.setDeserializeMainFunction(() => {
  const entry = bundleEntry();
  const globals = globalThis as Record<string | symbol, unknown>;
  // What the snapshot's code resolves at run time (undici, the xattr addon, the test harness, the
  // package.json), it resolves from the bundle's place in this install, as the bundle itself would.
  const require = module.createRequire(entry);
  globals.__ocipullRequire = require;
  globals.__ocipullModuleUrl = pathToFileURL(entry).href;
  globals.__ocipullResolve = (specifier: string) => pathToFileURL(require.resolve(specifier)).href;
  globals[STARTED_FROM_SNAPSHOT] = preloaded.length > 0;
  module.enableCompileCache?.();
  void runCli(process.argv.slice(1));
});
