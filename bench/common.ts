/** Shared pieces of the benchmarks: bundles, photos and Server-Timing parsing. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { exportRandomBundle } from '../test/helpers/reference';
import { repoPath } from '../test/helpers/repo';

/** --full: the full-size random bundle (weights/bench-full, exported on first use). */
export async function benchBundle(full: boolean, workDir: string): Promise<string> {
  if (!full) {
    const bundle = path.join(workDir, 'bundle');
    await exportRandomBundle(bundle, 'tiny', 0);
    return bundle;
  }
  const bundle = repoPath('weights', 'bench-full');
  if (!existsSync(path.join(bundle, 'manifest.json'))) {
    console.log(`exporting the full-size random bundle to ${bundle} (minutes, 7 GB) ...`);
    await exportRandomBundle(bundle, 'full', 0);
  }
  return bundle;
}

/** Parses `Server-Timing: a;dur=1.5, b;dur=2` into {a: 1.5, b: 2}. */
export function serverTiming(header: string | null): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of (header ?? '').split(',')) {
    const [name, ...params] = part.trim().split(';');
    const dur = params.find((p) => p.trim().startsWith('dur='));
    if (name && dur) out[name] = Number(dur.trim().slice(4));
  }
  return out;
}

export function addInto(
  into: Record<string, number>,
  from: Record<string, number>,
  scale = 1,
): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v * scale;
}

export function row(label: string, value: number | undefined, unit = 'ms'): string {
  const text = value === undefined ? '-' : value.toFixed(1);
  return `  ${label.padEnd(30)} ${text.padStart(10)} ${unit}`;
}

export function flag(argv: string[], name: string): boolean {
  return argv.includes(name);
}

export function numberOption(argv: string[], name: string, fallback: number): number {
  const at = argv.indexOf(name);
  const value = at >= 0 ? Number(argv[at + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} N, N >= 1`);
  return value;
}
