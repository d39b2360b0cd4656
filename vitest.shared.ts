import { defineConfig } from 'vitest/config';

/**
 * One vitest configuration for every workspace package: tests import sibling packages through the
 * `@ocipull/source` export condition, so they run against `src/` without a build step.
 */
const conditions = ['@ocipull/source', 'node', 'import', 'default'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ['@ocipull/source'] } },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
