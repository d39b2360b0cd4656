#!/usr/bin/env node
import { main } from './main.ts';

// ^C cancels the running command cleanly (the cache stays consistent); a second ^C exits at once.
const controller = new AbortController();
process.once('SIGINT', () => {
  controller.abort(new Error('interrupted'));
  process.once('SIGINT', () => process.exit(130));
});
process.once('SIGTERM', () => controller.abort(new Error('terminated')));
process.exitCode = await main(process.argv.slice(2), { signal: controller.signal });
