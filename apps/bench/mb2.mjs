import { openCache } from '@ocipull/blob-cache';
import { createRegistryClient } from '@ocipull/registry-client';
import { mkdir } from 'node:fs/promises';
const mode = process.argv[2];
const ref = `127.0.0.1:5056/${process.argv[3] ?? 'forty'}:bench`;
const client = createRegistryClient({ dockerConfig: false });
const resolved = await client.resolve(ref);
const layers = resolved.manifest.layers;
const dir = `/tmp/t/junk/mb-${process.pid}`;
await mkdir(dir, { recursive: true });
const cache = await openCache({ root: dir });
const source = client.blobSource(ref);
// warm up: one blob each way
await cache.ingest(resolved.manifest.config, source);
const c0 = process.cpuUsage(); const t0 = performance.now();
const elu0 = performance.eventLoopUtilization();
let next = 0;
async function worker() {
  while (next < layers.length) {
    const l = layers[next++];
    if (mode === 'ingest') await cache.ingest(l, source);
    else { const chunks = []; await client.fetchBlobInto(ref, l, (c) => { chunks.push(Buffer.from(c)); }); }
  }
}
await Promise.all(Array.from({ length: 16 }, worker));
const elu = performance.eventLoopUtilization(elu0);
const c = process.cpuUsage(c0);
console.log(mode, 'wall', (performance.now() - t0).toFixed(0), 'cpu user', (c.user / 1e3).toFixed(0), 'sys', (c.system / 1e3).toFixed(0), 'main busy ms', (elu.active).toFixed(0));
await client.close();
