import { basename, join } from 'node:path';
import { defineConfig } from 'vitest/config';

/**
 * One vitest configuration for every workspace package: tests import sibling packages through the
 * `@ocipull/source` export condition, so they run against `src/` without a build step.
 */
const conditions = ['@ocipull/source', 'node', 'import', 'default'];

/**
 * With OCIPULL_TEST_RESULTS set (the `ci` script sets it), every run also writes a JSON report there,
 * one file per package and suite, which `scripts/test-summary.ts` totals into one closing line.
 */
const resultsDir = process.env.OCIPULL_TEST_RESULTS;
// The e2e scripts pass the bare filter `e2e.test`; the unit scripts only exclude that pattern.
const suite = process.argv.includes('e2e.test') ? 'e2e' : 'unit';
const reporters = resultsDir
  ? ['default', ['json', { outputFile: join(resultsDir, `${basename(process.cwd())}-${suite}.json`) }]]
  : ['default'];

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
    // biome-ignore lint/suspicious/noExplicitAny: vitest's reporter tuple type is not exported.
    reporters: reporters as any,
  },
});
