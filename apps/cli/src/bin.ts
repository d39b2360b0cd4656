#!/usr/bin/env node
import module from 'node:module';

// Cache compiled bytecode between runs (Node 22.1+): start-up is a large part of a warm pull.
module.enableCompileCache?.();
const { runCli } = await import('./run.ts');
await runCli(process.argv.slice(2));
