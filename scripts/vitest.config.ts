import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

const resultsDir = process.env.OCIPULL_TEST_RESULTS;

export default defineConfig({
  test: {
    include: ['*.test.ts'],
    reporters: resultsDir
      ? ['default', ['json', { outputFile: join(resultsDir, 'repo-unit.json') }]]
      : ['default'],
  },
});
