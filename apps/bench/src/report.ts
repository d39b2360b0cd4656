/** One line of the results table. */
export interface Row {
  /** What is measured (`pull debian`, `registry-client`, ...). */
  section: string;
  metric: string;
  /** The median (or the single value), in `unit`. */
  value: number;
  unit: 's' | 'ms' | 'MB' | 'MB/s' | '×';
  /** `<= 0.5`, `>= 0.8`, `< 120` ...; no target means informational. */
  target?: string;
  status?: 'PASS' | 'MISS' | 'ERROR';
  /** Every sample behind the median, in `unit`. */
  samples?: number[];
  note?: string;
}

/** Checks `value` against a target such as `<= 0.5`; returns the status. */
export function judge(value: number, target: string): 'PASS' | 'MISS' {
  const match = /^(<=|>=|<|>)\s*([\d.]+)/.exec(target);
  if (!match) throw new Error(`bad target ${target}`);
  const limit = Number(match[2]);
  const ok =
    match[1] === '<='
      ? value <= limit
      : match[1] === '>='
        ? value >= limit
        : match[1] === '<'
          ? value < limit
          : value > limit;
  return ok ? 'PASS' : 'MISS';
}

/** A row with a target, judged. */
export function targeted(row: Omit<Row, 'status'> & { target: string }): Row {
  return { ...row, status: Number.isFinite(row.value) ? judge(row.value, row.target) : 'ERROR' };
}

/** A row standing for a bench that failed. */
export function errorRow(section: string, metric: string, error: unknown): Row {
  const err = error as { code?: string; message?: string };
  const message = `${err.code ? `${err.code}: ` : ''}${err.message ?? String(error)}`.replace(/\s+/g, ' ');
  return { section, metric, value: Number.NaN, unit: 's', status: 'ERROR', note: message.slice(0, 300) };
}

/** Formats a value in its unit. */
export function formatValue(value: number, unit: Row['unit']): string {
  if (!Number.isFinite(value)) return '—';
  switch (unit) {
    case 's':
      return `${value < 10 ? value.toFixed(3) : value.toFixed(2)} s`;
    case 'ms':
      return `${value.toFixed(1)} ms`;
    case 'MB':
      return `${value.toFixed(0)} MB`;
    case 'MB/s':
      return `${value.toFixed(0)} MB/s`;
    case '×':
      return `${value.toFixed(2)}×`;
  }
}

const HEADERS = ['section', 'metric', 'median', 'target', 'result', 'note'];

function cells(row: Row): string[] {
  return [
    row.section,
    row.metric,
    formatValue(row.value, row.unit),
    row.target ?? '',
    row.status ?? '',
    row.note ?? '',
  ];
}

/** The rows as a fixed-width text table. */
export function textTable(rows: readonly Row[]): string {
  const table = [HEADERS, ...rows.map(cells)];
  const widths = HEADERS.map((_, column) =>
    Math.max(...table.map((line) => (column === 5 ? 0 : (line[column] ?? '').length))),
  );
  return table
    .map((line, index) => {
      const text = line
        .map((cell, column) => (column === 5 ? cell : cell.padEnd(widths[column] ?? 0)))
        .join('  ')
        .trimEnd();
      return index === 0 ? `${text}\n${'-'.repeat(text.length)}` : text;
    })
    .join('\n');
}

/** The rows as a Markdown table. */
export function markdownTable(rows: readonly Row[]): string {
  const escapeCell = (cell: string) => cell.replaceAll('|', '\\|');
  return [
    `| ${HEADERS.join(' | ')} |`,
    `| ${HEADERS.map(() => '---').join(' | ')} |`,
    ...rows.map((row) => `| ${cells(row).map(escapeCell).join(' | ')} |`),
  ].join('\n');
}
