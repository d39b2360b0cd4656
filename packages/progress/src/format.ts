import type { Digest, Platform } from '@ocipull/core';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** `0 B`, `512 B`, `1.5 KiB`, `3.4 MiB`: binary units, one decimal above bytes. */
export function formatBytes(bytes: number): string {
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** `340 ms`, `2.3s`, `1m05s`. */
export function formatDuration(milliseconds: number): string {
  const ms = Math.max(0, Math.round(milliseconds));
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
}

/** Bytes per second from a byte count and elapsed milliseconds, or undefined before time has passed. */
export function formatRate(bytes: number, elapsedMs: number): string | undefined {
  if (elapsedMs <= 0) return undefined;
  return `${formatBytes((bytes * 1000) / elapsedMs)}/s`;
}

/** `sha256:` and the first 12 hex characters: enough to tell layers apart, short enough for a bar. */
export function shortDigest(digest: Digest | string): string {
  const colon = digest.indexOf(':');
  return colon < 0 ? clean(digest.slice(0, 12)) : clean(digest.slice(0, colon + 13));
}

/** `linux/arm64/v8`. */
export function formatPlatform(platform: Platform): string {
  return clean([platform.os, platform.architecture, platform.variant].filter(Boolean).join('/'));
}

/**
 * Replaces control characters (C0, DEL, C1) with `?`: event strings such as a registry's error reason
 * must not move the cursor, recolour the terminal or break a CI log line.
 */
export function clean(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}
