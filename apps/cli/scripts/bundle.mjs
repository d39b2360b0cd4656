// Bundles the compiled CLI (dist/bin.js and everything it imports from the workspace and npm) into
// dist/bundle/: one entry plus a chunk per lazily loaded command. Resolving and linking ~100 ES
// modules cost ~50–75 ms of every run (measured with `ocipull pull`); one file costs a few.
// Left outside: undici (registry-client loads it file by file through createRequire), the native
// xattr addon and the test harness (only `ocipull demo` loads it).
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = join(import.meta.dirname, '..');
const outdir = join(root, 'dist', 'bundle');
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: { ocipull: join(root, 'dist', 'bin.js') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22.19',
  external: ['undici', 'undici/*', '@napi-rs/xattr', '@ocipull/test-harness'],
  // CommonJS dependencies (tar-stream, proper-lockfile) call require() for Node's built-ins.
  banner: {
    js: "import { createRequire as __ocipullRequire } from 'node:module';\nconst require = __ocipullRequire(import.meta.url);",
  },
  legalComments: 'linked',
  logLevel: 'warning',
});
