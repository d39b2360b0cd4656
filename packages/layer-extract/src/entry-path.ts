/**
 * Splits a tar entry name into clean components: `.` and empty components vanish, `..` pops a
 * component. Returns undefined for an absolute name (refused rather than normalised: no image
 * builder writes them, and a host path in a layer is a red flag) and when a `..` would climb above
 * the root.
 */
export function splitEntryPath(name: string): string[] | undefined {
  if (name.startsWith('/')) return undefined;
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

/**
 * The parts of a symlink target resolved inside the root: absolute targets start at the root (as
 * they would inside the container). Returns undefined when the target climbs above the root with
 * `..`: such a link only makes sense on the host, so it is refused rather than clamped.
 */
export function resolveLinkInside(base: string[], target: string): string[] | undefined {
  const parts = target.startsWith('/') ? [] : [...base];
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
    } else parts.push(part);
  }
  return parts;
}
