/**
 * Splits a tar entry name into clean components. Leading `/` and `./` are dropped (absolute names
 * are normalised to relative, as Docker's and GNU tar's extractors do); `.` and empty components
 * vanish; `..` pops a component. Returns undefined when a `..` would climb above the root.
 */
export function splitEntryPath(name: string): string[] | undefined {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
      continue;
    }
    parts.push(part);
  }
  return parts;
}

/** The parts of a symlink target resolved inside the root: absolute targets start at the root, `..` stops there. */
export function resolveLinkInside(base: string[], target: string): string[] {
  const parts = target.startsWith('/') ? [] : [...base];
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts;
}
