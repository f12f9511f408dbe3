/** Shared pieces of the benchmarks: bundles, photos and Server-Timing parsing. */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { activeAllocator } from '../src/allocator';
import { readBundleManifest } from '../src/engine/bundle-manifest';
import { exportAtDtype, exportRandomBundle, joinVisionEncoder } from '../test/helpers/reference';
import { repoPath, venvPython } from '../test/helpers/repo';
import { exporterFingerprint } from '../test/helpers/server';

const execFileAsync = promisify(execFile);

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

export const DTYPES = ['float32', 'bfloat16', 'float16'] as const;
export type Dtype = (typeof DTYPES)[number];

/** --dtype D (float32 unless given). */
export function dtypeOption(argv: string[]): Dtype {
  const at = argv.indexOf('--dtype');
  if (at < 0) return 'float32';
  const value = argv[at + 1] as Dtype;
  if (!DTYPES.includes(value)) throw new Error(`--dtype ${DTYPES.join(' | ')}`);
  return value;
}

/** What a benchmark's server runs, from its flags --dtype D, --format3 and --compile. */
export interface Served {
  dtype: Dtype;
  /** The format-3 layout: one vision encoder running both necks for every image and frame. */
  format3: boolean;
  /** The vision trunk compiled by AOTInductor (IMAGE_MODEL_COMPILE / VIDEO_MODEL_COMPILE). */
  compile: boolean;
}

export function servedOption(argv: string[]): Served {
  const served = {
    dtype: dtypeOption(argv),
    format3: flag(argv, '--format3'),
    compile: flag(argv, '--compile'),
  };
  if (served.format3 && served.compile) {
    throw new Error('--format3 has no vision trunk to compile: choose one of --format3, --compile');
  }
  return served;
}

/** e.g. "dtype=bfloat16 (compiled trunk)", for a benchmark's heading. */
export function servedLabel(served: Served): string {
  const layout = served.format3 ? ' (format-3 layout)' : served.compile ? ' (compiled trunk)' : '';
  return `dtype=${served.dtype}${layout}`;
}

/** The server's configuration for `served` (the compiled trunk is opt-in). */
export function servedEnv(served: Served): Record<string, string> {
  return served.compile ? { IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_COMPILE: 'true' } : {};
}

/**
 * The bundles of a benchmark: the fp32 one the reference runs (benchBundle) and the one the
 * server runs, the same random weights exported at `served.dtype` (tools/export_sam3.py
 * --from-bundle --dtype, and --compile for a compiled trunk): beside the fp32 bundle
 * (weights/bench-full-<dtype>[-compiled] for --full), exported on first use and again whenever
 * its checksum is not the fp32 bundle's or the exporter's sources changed since.
 */
export async function benchBundles(
  full: boolean,
  workDir: string,
  served: Served,
): Promise<{ reference: string; served: string }> {
  const reference = await benchBundle(full, workDir);
  const { dtype, format3, compile } = served;
  if (format3) {
    const plain = await benchBundles(full, workDir, { ...served, format3: false });
    // The format-3 layout runs both necks for every image and frame: what the split saves.
    const joined = await joinVisionEncoder(plain.served, path.join(workDir, 'format-3-bundle'));
    return { reference, served: joined };
  }
  if (dtype === 'float32' && !compile) return { reference, served: reference };
  const out = `${reference}-${dtype}${compile ? '-compiled' : ''}`;
  const checksum = async (bundle: string): Promise<string | null> =>
    existsSync(path.join(bundle, 'manifest.json'))
      ? (await readBundleManifest(bundle)).model.checksum
      : null;
  // The exporter's sources it was written by: a changed exporter (freezing, say) writes it anew.
  const stamp = path.join(out, '.exporter-fingerprint');
  const fingerprint = await exporterFingerprint();
  const written = existsSync(stamp) ? await readFile(stamp, 'utf8') : null;
  if ((await checksum(out)) !== (await checksum(reference)) || written !== fingerprint) {
    console.log(`exporting the ${servedLabel(served)} bundle of the same weights to ${out} ...`);
    await exportAtDtype(reference, dtype, out, compile);
    await writeFile(stamp, fingerprint);
  }
  return { reference, served: out };
}

/** tools/precision_report.py: the served bundle's accuracy against the fp32 one. */
export async function precisionReport(reference: string, served: string): Promise<string> {
  const { stdout } = await execFileAsync(
    venvPython(),
    [repoPath('tools', 'precision_report.py'), '--reference', reference, '--candidate', served],
    { cwd: repoPath(), maxBuffer: 64 * 1024 * 1024 },
  );
  return stdout;
}

/** The allocator this process (and the reference processes it starts) runs on. */
export function allocatorLine(): string {
  const { name } = activeAllocator();
  return `allocator=${name} (this process and those it starts; MEMORY_ALLOCATOR, scripts/with-allocator.sh)`;
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

export function numberOption(argv: string[], name: string, fallback: number, min = 1): number {
  const at = argv.indexOf(name);
  const value = at >= 0 ? Number(argv[at + 1]) : fallback;
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} N, N >= ${min}`);
  return value;
}
