// Peak RSS of one flatten: node --conditions=@ocipull/source bench/rss.ts <layer.tar.gz> <destination>
import { createReadStream } from 'node:fs';
import { flattenLayers } from '../src/index.ts';

const [layer, destination] = process.argv.slice(2) as [string, string];
const start = performance.now();
const result = await flattenLayers(
  [{ open: () => createReadStream(layer, { highWaterMark: 1024 * 1024 }) }],
  { destination },
);
console.log(
  `${(result.bytes / 1e6).toFixed(0)} MB uncompressed, ${result.entries} entries, ${(performance.now() - start).toFixed(0)} ms, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`,
);
