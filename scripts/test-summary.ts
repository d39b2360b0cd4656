/**
 * Totals the vitest JSON reports the `ci` script collected (OCIPULL_TEST_RESULTS) and prints one
 * closing line, `ci: N passed, N failed`, so a log reader sees the whole suite's count at the end.
 * Exits non-zero when any test failed or no test ran at all.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] ?? process.env.OCIPULL_TEST_RESULTS;
if (!dir) throw new Error('usage: test-summary.ts DIR');
let passed = 0;
let failed = 0;
let skipped = 0;
const lines: string[] = [];
for (const name of readdirSync(dir)
  .filter((file) => file.endsWith('.json'))
  .sort()) {
  const report = JSON.parse(readFileSync(join(dir, name), 'utf8')) as {
    numPassedTests: number;
    numFailedTests: number;
    numPendingTests: number;
    numTodoTests: number;
  };
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
  lines.push(
    `  ${name.replace(/\.json$/, '').padEnd(28)} ${report.numPassedTests} passed, ${report.numFailedTests} failed`,
  );
}
console.log(`\ntest suites:\n${lines.join('\n')}`);
console.log(`ci: ${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
