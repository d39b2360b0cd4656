import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');

/** Every workspace package: name → private. */
function workspacePackages(): Map<string, boolean> {
  const packages = new Map<string, boolean>();
  for (const group of ['packages', 'apps']) {
    for (const name of readdirSync(join(root, group))) {
      const manifest = JSON.parse(readFileSync(join(root, group, name, 'package.json'), 'utf8')) as {
        name: string;
        private?: boolean;
      };
      packages.set(manifest.name, manifest.private === true);
    }
  }
  return packages;
}

/** The packages a changeset names in its front matter. */
function changesetPackages(text: string): string[] {
  const front = /^---\n([\s\S]*?)\n---/.exec(text)?.[1] ?? '';
  return [...front.matchAll(/^["']?(@[^"':\s]+\/[^"':\s]+)["']?\s*:\s*(patch|minor|major)\s*$/gm)].map(
    (match) => match[1] as string,
  );
}

describe('changesets', () => {
  const packages = workspacePackages();
  const files = readdirSync(join(root, '.changeset')).filter(
    (name) => name.endsWith('.md') && name !== 'README.md',
  );

  it('parses every changeset', () => {
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const named = changesetPackages(readFileSync(join(root, '.changeset', file), 'utf8'));
      expect(named.length, file).toBeGreaterThan(0);
      for (const name of named) expect(packages.has(name), `${file}: ${name}`).toBe(true);
    }
  });

  // With `privatePackages.version: false` changesets treats the private apps as ignored, and
  // `changeset version` refuses a changeset that names ignored and released packages together.
  it('never mixes private apps with published packages in one changeset', () => {
    for (const file of files) {
      const named = changesetPackages(readFileSync(join(root, '.changeset', file), 'utf8'));
      const kinds = new Set(named.map((name) => packages.get(name)));
      expect(kinds.size, `${file} names ${named.join(', ')}`).toBe(1);
    }
  });
});
