#!/usr/bin/env node
import module from 'node:module';

// Cache compiled bytecode between runs (Node 22.1+): start-up is a large part of a warm pull.
module.enableCompileCache?.();
const { main } = await import('./main.ts');

// ^C cancels the running command cleanly (the cache stays consistent); a second ^C exits at once.
const controller = new AbortController();
process.once('SIGINT', () => {
  controller.abort(new Error('interrupted'));
  process.once('SIGINT', () => process.exit(130));
});
process.once('SIGTERM', () => controller.abort(new Error('terminated')));
process.exitCode = await main(process.argv.slice(2), { signal: controller.signal });
