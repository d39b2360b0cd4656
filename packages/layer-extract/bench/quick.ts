// Quick comparison on one gzip layer: our flattenLayers vs GNU `tar -xzf` vs `umoci unpack`.
// Usage (from packages/layer-extract): `pnpm bench [layer.tar.gz] [runs]`, or
//   npx pnpm@10.34.8 exec node --conditions=@ocipull/source bench/quick.ts [layer.tar.gz] [runs]
// Build a Debian-sized layer with e.g. `tar -C / -czf layer.tar.gz usr/share/perl usr/lib/python3.11`.
// Set TMPDIR=/dev/shm to take the disk out of the comparison.
import { execFileSync } from 'node:child_process';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { createHasher } from '@ocipull/digest';
import { flattenLayers } from '../src/index.ts';
import { writeOneLayerLayout } from '../src/testing/oci-layout.ts';

// pnpm passes a literal `--` through; an empty layer argument means "build the default layer".
const args = process.argv.slice(2).filter((arg) => arg !== '--');
const runs = Number(args[1] ?? 3);
const work = mkdtempSync(join(tmpdir(), 'le-bench-'));
const layer = args[0] ? args[0] : defaultLayer();

/** Without an argument: a Debian-sized layer (~10k entries, ~150 MB) tarred from this machine's /usr. */
function defaultLayer(): string {
  const candidates = [
    'usr/share/perl',
    'usr/share/vim',
    'usr/share/i18n',
    'usr/share/zoneinfo',
    'usr/share/cmake-3.25',
    'usr/lib/python3.11',
    'usr/include',
  ];
  const present = candidates.filter((path) => existsSync(join('/', path)));
  const path = join(work, 'layer.tar.gz');
  execFileSync('tar', ['-C', '/', '-czf', path, ...present]);
  return path;
}

/** A one-layer OCI layout around the gzip blob, as umoci reads it. */
async function writeLayout(dir: string): Promise<void> {
  const hasher = createHasher();
  for await (const chunk of createReadStream(layer).pipe(createGunzip())) hasher.update(chunk as Buffer);
  writeOneLayerLayout(dir, readFileSync(layer), hasher.digest(), 'bench');
}

async function time(fn: () => Promise<void> | void): Promise<number> {
  // Flush the previous run's dirty pages first, or writeback of run N lands in the timing of run N+1.
  execFileSync('sync');
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

const results: Record<string, number[]> = { ocipull: [], 'tar -xzf': [], 'umoci unpack': [] };
try {
  const layout = join(work, 'layout');
  await writeLayout(layout);
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
    mkdirSync(gnu);
    results['tar -xzf']?.push(await time(() => void execFileSync('tar', ['-xzf', layer, '-C', gnu])));
    rmSync(gnu, { recursive: true, force: true });
    const bundle = join(work, `umoci-${run}`);
    results['umoci unpack']?.push(
      await time(() => void execFileSync('umoci', ['unpack', '--image', `${layout}:bench`, bundle])),
    );
    rmSync(bundle, { recursive: true, force: true });
  }
  console.log(`layer ${(statSync(layer).size / 1e6).toFixed(1)} MB gzip, ${runs} runs, TMPDIR=${tmpdir()}`);
  for (const [name, values] of Object.entries(results)) {
    values.sort((a, b) => a - b);
    console.log(
      `${name.padEnd(13)} median ${values[Math.floor(values.length / 2)]?.toFixed(0)} ms  (${values.map((v) => v.toFixed(0)).join(', ')})`,
    );
  }
  console.log(`ocipull process peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
