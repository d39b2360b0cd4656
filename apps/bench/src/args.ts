import { parseArgs } from 'node:util';

/** The benches, in the order they run. */
export const BENCH_NAMES = [
  'pull-debian',
  'pull-five',
  'pull-forty',
  'pull-big',
  'stream',
  'ingest',
  'cache-open',
  'extract',
  'extract-1g',
  'slow-link',
] as const;

/** One bench. */
export type BenchName = (typeof BENCH_NAMES)[number];

/** Parsed command line. */
export interface BenchArgs {
  runs: number;
  quick: boolean;
  benches: BenchName[];
  keep: boolean;
  help: boolean;
}

/** Usage text. */
export const USAGE = `Usage: pnpm bench [--runs N] [--quick] [--only NAME[,NAME...]] [--keep]

  --runs N     runs per measurement; the table shows medians (default 3)
  --quick      smaller images (and no 1 GiB extraction) for a fast look
  --only NAME  benches whose name contains NAME (comma-separated; repeatable):
               ${BENCH_NAMES.join(', ')}
  --keep       keep the work directory under /tmp
`;

/** Parses `argv` (without node and the script). */
export function parseBenchArgs(argv: string[]): BenchArgs {
  const { values } = parseArgs({
    args: argv.filter((argument) => argument !== '--'),
    options: {
      runs: { type: 'string', default: '3' },
      quick: { type: 'boolean', default: false },
      only: { type: 'string', multiple: true },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1 || runs > 50) {
    throw new Error(`--runs takes a whole number from 1 to 50, not ${JSON.stringify(values.runs)}`);
  }
  const filters = (values.only ?? []).flatMap((value) => value.split(',')).filter((value) => value !== '');
  let benches: BenchName[] =
    filters.length === 0
      ? [...BENCH_NAMES]
      : BENCH_NAMES.filter((name) => filters.some((filter) => name.includes(filter)));
  if (filters.length > 0 && benches.length === 0) {
    throw new Error(`--only ${filters.join(',')} matches no bench (${BENCH_NAMES.join(', ')})`);
  }
  if (values.quick) benches = benches.filter((name) => name !== 'extract-1g');
  return { runs, quick: values.quick, benches, keep: values.keep, help: values.help };
}
