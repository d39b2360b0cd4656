// Bundles the compiled CLI (dist/bin.js and everything it imports from the workspace and npm) into
// dist/bundle/: one entry plus a chunk per lazily loaded command. Resolving and linking ~100 ES
// modules cost ~50–75 ms of every run (measured with `ocipull pull`); one file costs a few.
// Left outside: undici (registry-client loads it file by file through createRequire), the native
// xattr addon and the test harness (only `ocipull demo` loads it). Then the same code once more as
// the V8 startup snapshot bin/ocipull starts from (below).
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
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

// The startup snapshot (see src/snapshot-entry.ts and bin/ocipull): the same code as one CommonJS file
// (`--build-snapshot` runs a script, not ES modules), evaluated by `node --build-snapshot` into
// dist/snapshot/ocipull.blob. What must not be evaluated ahead of time is loaded at its first use:
// proper-lockfile (signal-exit installs signal handlers when loaded, and a snapshot cannot hold them;
// graceful-fs replaces process.cwd with one that caches its first answer, which a snapshot would keep
// from the build: relative paths then resolved against the build's directory), the xattr addon
// (native) and the test harness (loaded at run time from this install).
const snapshotDir = join(root, 'dist', 'snapshot');
await rm(snapshotDir, { recursive: true, force: true });
const requireHere = createRequire(join(root, 'package.json'));
const atRunTime = (name) => `globalThis.__ocipullRequire(${JSON.stringify(name)})`;
const deferred = {
  name: 'deferred-modules',
  setup(build) {
    build.onResolve({ filter: /^(proper-lockfile|@napi-rs\/xattr|@ocipull\/test-harness)$/ }, (args) => ({
      path: args.path,
      namespace: 'deferred',
      pluginData: args.resolveDir,
    }));
    build.onLoad({ filter: /.*/, namespace: 'deferred' }, async (args) => {
      if (args.path === 'proper-lockfile') {
        // Bundled, but evaluated at the first lock: `require` of the real file inside the getter.
        const real = createRequire(join(args.pluginData, 'x.js')).resolve('proper-lockfile');
        return {
          contents: `module.exports = new Proxy({}, { get: (_, key) => require(${JSON.stringify(real)})[key] });`,
          loader: 'js',
          resolveDir: args.pluginData,
        };
      }
      if (args.path === '@napi-rs/xattr') {
        // Named imports need named exports: one forwarding function per export of the addon.
        const names = Object.keys(requireHere('@napi-rs/xattr'));
        const lines = names.map((name) => `exports.${name} = (...a) => load().${name}(...a);`);
        return {
          contents: `let m; const load = () => (m ??= ${atRunTime(args.path)});\n${lines.join('\n')}`,
          loader: 'js',
        };
      }
      return { contents: `module.exports = ${atRunTime(args.path)};`, loader: 'js' };
    });
  },
};
await build({
  entryPoints: [join(root, 'dist', 'snapshot-entry.js')],
  outfile: join(snapshotDir, 'entry.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node22.19',
  plugins: [deferred],
  define: {
    'import.meta.url': 'globalThis.__ocipullModuleUrl',
    'import.meta.resolve': 'globalThis.__ocipullResolve',
  },
  legalComments: 'linked',
  logLevel: 'warning',
});
// The V8 flags of bin/ocipull.js's shebang, which bin/ocipull (the launcher) must pass too.
const shebang = readFileSync(join(root, 'bin', 'ocipull.js'), 'utf8').split('\n')[0];
const flags = shebang
  .replace(/^#!\/usr\/bin\/env -S node\s*/, '')
  .split(/\s+/)
  .filter(Boolean);
const launcher = readFileSync(join(root, 'bin', 'ocipull'), 'utf8');
if (!launcher.includes(`flags='${flags.join(' ')}'`)) {
  throw new Error(`bin/ocipull must pass the flags of bin/ocipull.js's shebang: ${flags.join(' ')}`);
}
const blob = join(snapshotDir, 'ocipull.blob');
const made = spawnSync(
  process.execPath,
  [...flags, '--no-warnings', '--snapshot-blob', blob, '--build-snapshot', join(snapshotDir, 'entry.cjs')],
  { stdio: 'inherit' },
);
if (made.status !== 0)
  throw new Error(`building the startup snapshot failed (exit ${made.status ?? made.signal})`);
// The Node binary the blob belongs to (the launcher starts it), and what it was when the blob was
// made, the way the launcher checks it (`stat -L -c %s:%Y:%i`): a replaced binary is not used.
const node = statSync(process.execPath);
await writeFile(
  join(snapshotDir, 'node'),
  `${process.execPath}\n${node.size}:${Math.floor(node.mtimeMs / 1000)}:${node.ino}\n`,
);
