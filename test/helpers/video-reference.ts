/**
 * The video oracle (tools/video_reference.py: transformers' Sam3TrackerVideoModel) on a script
 * of operations, and the comparison of its per-frame objects with the server's.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { maskBox } from './native';
import { SCORE_TOLERANCE, tempDir } from './reference';
import { repoPath, venvPython } from './repo';
import { decodeRle, maskIou, type CocoRle } from './rle';

const execFileAsync = promisify(execFile);

export type ReferenceOp =
  | {
      op: 'prompt';
      frame: number;
      obj_id: number;
      points: number[][];
      point_labels: number[];
      box: number[] | null;
    }
  | {
      op: 'propagate';
      direction: 'forward' | 'backward' | 'both';
      start: number | null;
      max_frames: number | null;
    }
  | { op: 'remove'; obj_id: number }
  | { op: 'reset' };

export interface VideoObject {
  id: number;
  present: boolean;
  score: number | null;
  box: number[];
  mask: CocoRle;
}

export interface ReferenceFrame {
  frame: number;
  objects: VideoObject[];
}

export interface VideoReferenceOutput {
  video_info: { frames: number; width: number; height: number };
  results: (ReferenceFrame | { frames: ReferenceFrame[] } | Record<string, unknown>)[];
  timing: { load_ms: number; per_op_ms: number[]; frames_per_second: (number | null)[] };
  peak_rss_mb: number;
}

/** Runs tools/video_reference.py on one video and script (one process, the model loaded once). */
export async function runVideoReference(
  bundleDir: string,
  video: string,
  ops: ReferenceOp[],
): Promise<VideoReferenceOutput> {
  const { dir, cleanup } = await tempDir('sam3-vref-');
  try {
    const input = path.join(dir, 'script.json');
    await writeFile(input, JSON.stringify({ video, ops }));
    const { stdout } = await execFileAsync(
      'bash',
      [
        '-c',
        `"$0" "$1" --bundle "$2" < "${input}"`,
        venvPython(),
        repoPath('tools', 'video_reference.py'),
        bundleDir,
      ],
      { cwd: repoPath(), maxBuffer: 512 * 1024 * 1024 },
    );
    return JSON.parse(stdout) as VideoReferenceOutput;
  } finally {
    await cleanup();
  }
}

/** Video parity criterion of ARCHITECTURE.md: per frame and object, mask IoU >= 0.99. */
export const MIN_VIDEO_MASK_IOU = 0.99;

/**
 * Asserts the parity criterion for two masks of one object: IoU >= MIN_VIDEO_MASK_IOU, or,
 * for a mask under 100 pixels (where one pixel already costs more than 1% IoU), at most one
 * pixel differing: a pixel whose logit sits on the threshold flips with float rounding.
 */
export function assertSameMask(ours: Uint8Array, reference: Uint8Array, at: string): void {
  const iou = maskIou(ours, reference);
  let differing = 0;
  let area = 0;
  for (let i = 0; i < ours.length; i += 1) {
    if (ours[i] !== reference[i]) differing += 1;
    area += reference[i];
  }
  assert.ok(
    iou >= MIN_VIDEO_MASK_IOU || (area < 100 && differing <= 1),
    `${at}: mask IoU ${iou.toFixed(4)} (${differing} of ${area} pixels differ)`,
  );
}

/** Counts of what a comparison covered, so a caller can assert it proved something. */
export interface FrameComparison {
  frames: number;
  objects: number;
  nonEmptyMasks: number;
}

function nonEmpty(mask: CocoRle): boolean {
  return decodeRle(mask).some((v) => v !== 0);
}

/**
 * Asserts that the server's objects on one frame equal the reference's: the same ids in the
 * same order, equal presence, mask IoU >= MIN_VIDEO_MASK_IOU at the same size, the score (the
 * predicted IoU) within SCORE_TOLERANCE, and the box equal to the bounds of the mask.
 */
export function assertSameFrame(
  where: string,
  actual: VideoObject[],
  expected: VideoObject[],
  tally: FrameComparison,
): void {
  assert.deepEqual(
    actual.map((o) => o.id),
    expected.map((o) => o.id),
    `${where}: object ids`,
  );
  tally.frames += 1;
  expected.forEach((reference, i) => {
    const ours = actual[i];
    const at = `${where} / object ${reference.id}`;
    assert.equal(ours.present, reference.present, `${at}: presence`);
    assert.deepEqual(ours.mask.size, reference.mask.size, `${at}: mask size`);
    const mask = decodeRle(ours.mask);
    assertSameMask(mask, decodeRle(reference.mask), at);
    assert.ok(reference.score !== null && ours.score !== null, `${at}: a side has no score`);
    assert.ok(
      Math.abs(ours.score - reference.score) <= SCORE_TOLERANCE,
      `${at}: score ${ours.score} vs ${reference.score}`,
    );
    const [height, width] = ours.mask.size;
    assert.deepEqual(ours.box, maskBox(mask, height, width), `${at}: box = mask bounds`);
    tally.objects += 1;
    if (nonEmpty(reference.mask)) tally.nonEmptyMasks += 1;
  });
}
