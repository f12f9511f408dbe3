/**
 * Test fixtures built during the run: random-weight bundles, real photos from scikit-image,
 * and the transformers reference (tools/reference.py) on exactly the pixels the server decoded.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { decodeImageBytes } from '../../src/engine/image-decoder';
import { decodeRle, maskIou, type CocoRle } from './rle';
import { repoPath, venvPython } from './repo';

const execFileAsync = promisify(execFile);
const BIG_OUTPUT = 256 * 1024 * 1024;

/** A temporary directory removed when the process exits (or by the returned cleanup). */
export async function tempDir(
  prefix: string,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** tools/export_sam3.py with `args`. */
export async function runExporter(args: readonly string[]): Promise<void> {
  await execFileAsync(venvPython(), [repoPath('tools', 'export_sam3.py'), ...args], {
    cwd: repoPath(),
    maxBuffer: BIG_OUTPUT,
  });
}

/** tools/export_sam3.py --tiny-random into `out`. */
export function exportRandomBundle(out: string, preset: string, seed: number): Promise<void> {
  return runExporter(['--tiny-random', '--preset', preset, '--seed', String(seed), '--out', out]);
}

/**
 * A format-4 `bundle` written again at `out` in the format-3 layout: one vision encoder that
 * runs both necks for every image and frame (tools/join_vision_encoder.py).
 */
export async function joinVisionEncoder(bundle: string, out: string): Promise<string> {
  await execFileAsync(venvPython(), [repoPath('tools', 'join_vision_encoder.py'), bundle, out], {
    cwd: repoPath(),
    maxBuffer: BIG_OUTPUT,
  });
  return out;
}

/**
 * The random bundle `from` exported again at `dtype` into `out` (export_sam3.py --from-bundle),
 * with its vision trunk also compiled by AOTInductor when `compile` (--compile).
 */
export function exportAtDtype(
  from: string,
  dtype: string,
  out: string,
  compile = false,
): Promise<void> {
  const args = ['--from-bundle', from, '--dtype', dtype, '--out', out];
  return runExporter(compile ? [...args, '--compile'] : args);
}

export interface Photo {
  name: string;
  file: string;
  width: number;
  height: number;
}

/**
 * Real photos shipped with scikit-image, written as PNG or JPEG (to exercise both decoders).
 * Sizes: astronaut 512x512, coffee 600x400, chelsea 451x300, rocket 640x427.
 */
export async function writePhotos(dir: string): Promise<Photo[]> {
  const script = `
import json, sys
from PIL import Image
from skimage import data
out = []
for name, fmt in [("astronaut", "png"), ("coffee", "jpeg"), ("chelsea", "png"), ("rocket", "jpeg")]:
    pixels = getattr(data, name)()
    path = f"{sys.argv[1]}/{name}.{'jpg' if fmt == 'jpeg' else fmt}"
    Image.fromarray(pixels).save(path, quality=90) if fmt == "jpeg" else Image.fromarray(pixels).save(path)
    out.append({"name": name, "file": path, "width": pixels.shape[1], "height": pixels.shape[0]})
print(json.dumps(out))
`;
  const { stdout } = await execFileAsync(venvPython(), ['-c', script, dir], {
    maxBuffer: BIG_OUTPUT,
  });
  return JSON.parse(stdout) as Photo[];
}

/**
 * Decodes an image file with the server's own decoder and writes the pixels as a lossless
 * PNG, so the reference starts from exactly the RGB data the server segments.
 */
export async function decodedPixelsPng(file: string, out: string): Promise<string> {
  const image = await decodeImageBytes(await readFile(file), { maxPixels: 100_000_000 });
  await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .png()
    .toFile(out);
  return out;
}

/** A concept (text and/or exemplar boxes) or, with `points`, an interactive query. */
export interface ReferencePrompt {
  text?: string;
  boxes?: number[][];
  box_labels?: boolean[];
  points?: number[][];
  point_labels?: number[];
  /** Region hint of an interactive query: normalized cx, cy, w, h. */
  box?: number[];
}

export interface ReferenceCase {
  image: string;
  threshold: number;
  prompts: ReferencePrompt[];
}

export interface ReferenceInstances {
  scores: number[];
  boxes: number[][];
  masks: CocoRle[];
  /** Scores of every query before the threshold, in query order. */
  all_scores: number[];
}

export interface ReferenceOutput {
  results: { image_size: { width: number; height: number }; prompts: ReferenceInstances[] }[];
  stage_ms: Record<string, number>;
  load_ms: number;
}

/** Runs tools/reference.py on the cases (one process, the model loaded once). */
export async function runReference(
  bundleDir: string,
  cases: ReferenceCase[],
  extraArgs: string[] = [],
): Promise<ReferenceOutput> {
  const { dir, cleanup } = await tempDir('sam3-ref-');
  try {
    const input = path.join(dir, 'cases.json');
    await writeFile(input, JSON.stringify({ cases }));
    const { stdout } = await execFileAsync(
      'bash',
      [
        '-c',
        `"$0" "$1" --bundle "$2" "\${@:3}" < "${input}"`,
        venvPython(),
        repoPath('tools', 'reference.py'),
        bundleDir,
        ...extraArgs,
      ],
      { cwd: repoPath(), maxBuffer: BIG_OUTPUT },
    );
    return JSON.parse(stdout) as ReferenceOutput;
  } finally {
    await cleanup();
  }
}

/**
 * A threshold that splits the reference scores with a wide margin: the midpoint of the widest
 * gap between consecutive scores above the lower quartile and below every prompt's best score
 * (so every prompt keeps at least one instance). Returns the threshold and the gap width.
 */
export function thresholdInWidestGap(perPrompt: number[][]): { threshold: number; gap: number } {
  const all = perPrompt.flat().sort((a, b) => a - b);
  const ceiling = Math.min(...perPrompt.map((scores) => Math.max(...scores)));
  const floor = all[Math.floor(all.length / 4)];
  let best = { threshold: NaN, gap: -1 };
  for (let i = 1; i < all.length; i += 1) {
    const gap = all[i] - all[i - 1];
    const mid = (all[i] + all[i - 1]) / 2;
    if (all[i - 1] >= floor && all[i] <= ceiling && gap > best.gap) best = { threshold: mid, gap };
  }
  return best;
}

/** Parity criteria of ARCHITECTURE.md: scores (and boxes) within 1e-4, mask IoU >= 0.99. */
export const SCORE_TOLERANCE = 1e-4;
export const MIN_MASK_IOU = 0.99;

export interface InstancesLike {
  masks: CocoRle[];
  boxes: number[][];
  scores: number[];
}

/**
 * Asserts that `actual` holds the same instances as `expected`, in the same order: equal count
 * (and at least one, so the comparison proves something), each score and box coordinate within
 * SCORE_TOLERANCE, each mask of the same size with IoU >= MIN_MASK_IOU.
 */
export function assertSameInstances(
  where: string,
  actual: InstancesLike,
  expected: InstancesLike,
): void {
  assert.ok(expected.scores.length > 0, `${where}: the reference keeps nothing`);
  assert.equal(actual.scores.length, expected.scores.length, `${where}: instance count`);
  for (let i = 0; i < expected.scores.length; i += 1) {
    const at = `${where} / instance ${i}`;
    const diff = Math.abs(actual.scores[i] - expected.scores[i]);
    assert.ok(diff <= SCORE_TOLERANCE, `${at}: score ${actual.scores[i]} vs ${expected.scores[i]}`);
    actual.boxes[i].forEach((v, k) =>
      assert.ok(Math.abs(v - expected.boxes[i][k]) <= SCORE_TOLERANCE, `${at}: box ${k}`),
    );
    assert.deepEqual(actual.masks[i].size, expected.masks[i].size, `${at}: mask size`);
    const iou = maskIou(decodeRle(actual.masks[i]), decodeRle(expected.masks[i]));
    assert.ok(iou >= MIN_MASK_IOU, `${at}: mask IoU ${iou}`);
  }
}

/** The reference instances of one prompt whose score is above `threshold` (sorted already). */
export function aboveThreshold(instances: ReferenceInstances, threshold: number): InstancesLike {
  const keep = instances.scores.filter((score) => score > threshold).length;
  return {
    masks: instances.masks.slice(0, keep),
    boxes: instances.boxes.slice(0, keep),
    scores: instances.scores.slice(0, keep),
  };
}
