import type { ImageConfig } from '@ocipull/core';

/** The parts of an image config a runtime needs, with absent fields normalised. */
export interface ImageSummary {
  os: string;
  architecture: string;
  variant?: string;
  env: string[];
  cmd: string[];
  entrypoint: string[];
  user: string;
  workingDir: string;
  exposedPorts: string[];
  volumes: string[];
  labels: Record<string, string>;
  stopSignal?: string;
  created?: string;
}

/** Reads the runtime-relevant fields of an image config (config.md), normalising absent ones. */
export function summarizeConfig(config: ImageConfig): ImageSummary {
  const runtime = config.config ?? {};
  return {
    os: config.os,
    architecture: config.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
    env: runtime.Env ?? [],
    cmd: runtime.Cmd ?? [],
    entrypoint: runtime.Entrypoint ?? [],
    user: runtime.User ?? '',
    workingDir: runtime.WorkingDir ?? '',
    exposedPorts: Object.keys(runtime.ExposedPorts ?? {}).sort(),
    volumes: Object.keys(runtime.Volumes ?? {}).sort(),
    labels: runtime.Labels ?? {},
    ...(runtime.StopSignal ? { stopSignal: runtime.StopSignal } : {}),
    ...(config.created ? { created: config.created } : {}),
  };
}
