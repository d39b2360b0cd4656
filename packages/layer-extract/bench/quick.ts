// Quick comparison: our extractor vs GNU tar vs umoci on one gzip layer.
// Usage: node --conditions=@ocipull/source bench/quick.ts <layer.tar.gz> [runs]
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flattenLayers } from '../src/index.ts';

const layer = process.argv[2] as string;
const runs = Number(process.argv[3] ?? 3);
const work = mkdtempSync(join(tmpdir(), 'le-bench-'));
const time = async (fn: () => Promise<void> | void) => {
  // Flush the previous run's dirty pages first, or writeback of run N lands in the timing of run N+1.
  execFileSync('sync');
  const start = performance.now();
  await fn();
  return performance.now() - start;
};
const results: Record<string, number[]> = { ocipull: [], 'tar -xzf': [] };
try {
  for (let run = 0; run < runs; run++) {
    const ours = join(work, `ours-${run}`);
    results.ocipull?.push(
      await time(async () => {
        await flattenLayers(
          [
            {
              open: () => createReadStream(layer, { highWaterMark: 1024 * 1024 }),
              mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
            },
          ],
          { destination: ours },
        );
      }),
    );
    rmSync(ours, { recursive: true, force: true });
    const gnu = join(work, `gnu-${run}`);
    execFileSync('mkdir', ['-p', gnu]);
    results['tar -xzf']?.push(await time(() => void execFileSync('tar', ['-xzf', layer, '-C', gnu])));
    rmSync(gnu, { recursive: true, force: true });
  }
  for (const [name, values] of Object.entries(results)) {
    values.sort((a, b) => a - b);
    console.log(
      `${name.padEnd(10)} median ${values[Math.floor(values.length / 2)]?.toFixed(0)} ms  (${values.map((v) => v.toFixed(0)).join(', ')})`,
    );
  }
  console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
