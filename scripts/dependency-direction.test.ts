import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The dependency picture of ../shared/ARCHITECTURE.md, as data. `core` is the one addition to it: the
 * error root and the shared nouns live below the three leaves so every package can reach them.
 * The harness imports only `core` and `digest` because every package's tests use it (devDependency).
 */
const allowed: Record<string, string[]> = {
  '@ocipull/core': [],
  '@ocipull/digest': ['@ocipull/core'],
  '@ocipull/lock': ['@ocipull/core'],
  '@ocipull/progress': ['@ocipull/core'],
  '@ocipull/registry-client': ['@ocipull/core', '@ocipull/digest', '@ocipull/lock', '@ocipull/progress'],
  '@ocipull/blob-cache': ['@ocipull/core', '@ocipull/digest', '@ocipull/lock', '@ocipull/progress'],
  '@ocipull/layer-extract': ['@ocipull/core', '@ocipull/digest', '@ocipull/lock', '@ocipull/progress'],
  '@ocipull/pull': [
    '@ocipull/core',
    '@ocipull/digest',
    '@ocipull/lock',
    '@ocipull/progress',
    '@ocipull/registry-client',
    '@ocipull/blob-cache',
    '@ocipull/layer-extract',
  ],
  '@ocipull/test-harness': ['@ocipull/core', '@ocipull/digest'],
  '@ocipull/cli': [
    '@ocipull/core',
    '@ocipull/digest',
    '@ocipull/progress',
    '@ocipull/pull',
    '@ocipull/registry-client',
    '@ocipull/blob-cache',
    '@ocipull/layer-extract',
    '@ocipull/test-harness',
  ],
  '@ocipull/bench': [
    '@ocipull/core',
    '@ocipull/digest',
    '@ocipull/progress',
    '@ocipull/pull',
    '@ocipull/registry-client',
    '@ocipull/blob-cache',
    '@ocipull/layer-extract',
    '@ocipull/test-harness',
  ],
};
/** Workspace packages any package may use in its own tests only. */
const allowedDev = ['@ocipull/test-harness'];

const root = join(import.meta.dirname, '..');

interface Manifest {
  name: string;
  dir: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  exports?: Record<string, unknown>;
}

function workspaceManifests(): Manifest[] {
  return ['packages', 'apps'].flatMap((group) =>
    readdirSync(join(root, group), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => {
        const dir = join(root, group, entry.name);
        return { ...JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')), dir } as Manifest;
      }),
  );
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name));
}

/**
 * Test code: test files, and helpers only tests import, which may use devDependencies such as the
 * harness: `test-helpers.ts`, and `src/testing/` unless the package publishes it as its `./testing`
 * subpath (then it is runtime code for other packages' tests and must respect the direction).
 */
const isTestCode = (file: string, manifest: Manifest) =>
  file.endsWith('.test.ts') ||
  /\/test-helpers?\.ts$/.test(file) ||
  (file.includes('/src/testing/') && manifest.exports?.['./testing'] === undefined);

const workspace = (deps: Record<string, string> | undefined) =>
  Object.keys(deps ?? {}).filter((name) => name.startsWith('@ocipull/'));

describe('dependency direction', () => {
  const manifests = workspaceManifests();

  it('knows every workspace package', () => {
    expect(manifests.map((m) => m.name).sort()).toEqual(Object.keys(allowed).sort());
  });

  for (const manifest of manifests) {
    it(`${manifest.name} depends only downwards`, () => {
      const wanted = allowed[manifest.name] ?? [];
      const runtime = [...workspace(manifest.dependencies), ...workspace(manifest.peerDependencies)];
      expect(runtime.filter((name) => !wanted.includes(name))).toEqual([]);
      const dev = workspace(manifest.devDependencies);
      expect(dev.filter((name) => !wanted.includes(name) && !allowedDev.includes(name))).toEqual([]);
    });

    it(`${manifest.name} imports only what it declares, through public entry points`, () => {
      const declared = new Set([
        ...workspace(manifest.dependencies),
        ...workspace(manifest.devDependencies),
        manifest.name,
      ]);
      const problems: string[] = [];
      for (const file of sourceFiles(join(manifest.dir, 'src'))) {
        const text = readFileSync(file, 'utf8');
        for (const match of text.matchAll(/(?:from|import)\s*\(?\s*['"](@ocipull\/[^'"]+)['"]/g)) {
          const specifier = match[1]!;
          const [scope, name, ...rest] = specifier.split('/');
          const pkg = `${scope}/${name}`;
          const subpath = rest.join('/');
          if (!declared.has(pkg)) problems.push(`${file}: imports undeclared ${pkg}`);
          if (subpath !== '' && subpath !== 'testing' && subpath !== 'package.json') {
            problems.push(`${file}: deep import ${specifier}`);
          }
          const isTest = isTestCode(file, manifest);
          if (!isTest && workspace(manifest.devDependencies).includes(pkg) && !declared.has(pkg)) {
            problems.push(`${file}: runtime import of dev-only ${pkg}`);
          }
          if (!isTest && !(allowed[manifest.name] ?? []).includes(pkg) && pkg !== manifest.name) {
            problems.push(`${file}: runtime import of ${pkg} breaks the dependency direction`);
          }
        }
      }
      expect(problems).toEqual([]);
    });
  }
});
