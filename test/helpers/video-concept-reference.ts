/**
 * The concept-tracking oracle (tools/video_concept_reference.py: transformers' Sam3VideoModel
 * with the documented patches) on a script of operations, the same operations on the server's
 * API, and the comparison of their per-frame objects (docs/video-concepts.md).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { maskBox } from './native';
import { SCORE_TOLERANCE, tempDir } from './reference';
import { repoPath, venvPython } from './repo';
import { decodeRle, type CocoRle } from './rle';
import { postJson } from './server';
import { assertSameMask } from './video-reference';

const execFileAsync = promisify(execFile);

export type ConceptOp =
  | { op: 'concept'; frame: number; texts: string[]; exemplars?: ConceptExemplars[] }
  | {
      op: 'propagate';
      direction: 'forward' | 'backward' | 'both';
      start: number | null;
      max_frames: number | null;
      hotstart_delay: number | null;
    }
  | {
      op: 'refine';
      frame: number;
      obj_id: number;
      points: number[][];
      point_labels: number[];
      box: number[] | null;
    }
  | { op: 'remove'; obj_id: number }
  | { op: 'remove_concept'; concept_id: number }
  | { op: 'reset' };

/** Exemplar boxes (normalized cx, cy, w, h; labels 1 / 0) of one text of a concept op. */
export interface ConceptExemplars {
  text: string;
  boxes: number[][];
  box_labels: number[];
}

export interface ConceptObject {
  id: number;
  concept_id: number;
  score: number;
  tracker_score: number;
  box: number[];
  mask: CocoRle;
}

export interface ConceptFrame {
  frame: number;
  objects: ConceptObject[];
}

/** What one op gives: frames in emission order, or null (remove, reset). */
export type OpFrames = ConceptFrame[] | null;

export interface ConceptReferenceOutput {
  video_info: { frames: number; width: number; height: number };
  results: Record<string, unknown>[];
  timing: { load_ms: number; per_op_ms: number[]; frames_per_second: (number | null)[] };
}

/** Runs the oracle on one video and script (one process, the model loaded once). */
export async function runConceptReference(
  bundleDir: string,
  video: string,
  ops: readonly ConceptOp[],
  /** threads: torch's intra-op threads (default 1: tests share a small machine; 0: torch's). */
  options: { officialPostprocess?: boolean; threads?: number; maxObjects?: number } = {},
): Promise<ConceptReferenceOutput> {
  const { dir, cleanup } = await tempDir('sam3-cref-');
  try {
    const input = path.join(dir, 'script.json');
    await writeFile(input, JSON.stringify({ video, ops }));
    const flag =
      ` --threads ${options.threads ?? 1}` +
      (options.maxObjects !== undefined ? ` --max-objects ${options.maxObjects}` : '') +
      (options.officialPostprocess === true ? ' --official-postprocess' : '');
    const { stdout } = await execFileAsync(
      'bash',
      [
        '-c',
        `"$0" "$1" --bundle "$2"${flag} < "${input}"`,
        venvPython(),
        repoPath('tools', 'video_concept_reference.py'),
        bundleDir,
      ],
      { cwd: repoPath(), maxBuffer: 512 * 1024 * 1024 },
    );
    return JSON.parse(stdout) as ConceptReferenceOutput;
  } finally {
    await cleanup();
  }
}

/** The frames of one oracle result, in emission order (null for ops without frames). */
export function referenceFrames(result: Record<string, unknown>): OpFrames {
  if ('error' in result) throw new Error(`the oracle refused an op: ${String(result.error)}`);
  if (Array.isArray(result.frames)) return result.frames as ConceptFrame[];
  if (Array.isArray(result.objects)) {
    return [{ frame: result.frame as number, objects: result.objects as ConceptObject[] }];
  }
  return null;
}

interface ApiObject {
  id: number;
  concept_id?: number;
  score: number;
  tracker_score?: number;
  box: number[];
  mask: CocoRle;
}

async function json<T>(response: Response, where: string): Promise<T> {
  const text = await response.text();
  assert.equal(response.status, 200, `${where}: ${text}`);
  return JSON.parse(text) as T;
}

function conceptObject(o: ApiObject, where: string): ConceptObject {
  assert.ok(
    o.concept_id !== undefined && o.tracker_score !== undefined,
    `${where}: concept fields`,
  );
  return {
    id: o.id,
    concept_id: o.concept_id,
    score: o.score,
    tracker_score: o.tracker_score,
    box: o.box,
    mask: o.mask,
  };
}

/** A prompt in a concept session: its answer's aligned arrays as the frame's objects. */
async function promptFrame(base: string, request: unknown): Promise<ConceptFrame[]> {
  const body = await json<{
    frame_index: number;
    obj_id: number[];
    masks: CocoRle[];
    boxes: number[][];
    scores: number[];
    concept_ids: number[];
    tracker_scores: number[];
  }>(await postJson(`${base}/prompt`, request), 'prompt');
  const objects = body.obj_id.map((id, i) => ({
    id,
    concept_id: body.concept_ids[i],
    score: body.scores[i],
    tracker_score: body.tracker_scores[i],
    box: body.boxes[i],
    mask: body.masks[i],
  }));
  return [{ frame: body.frame_index, objects }];
}

/**
 * One op on the server's session through the HTTP API. Propagations are read as NDJSON, so
 * their frames come in emission order.
 */
export async function runConceptOpOnServer(
  baseUrl: string,
  sessionId: string,
  op: ConceptOp,
): Promise<OpFrames> {
  const base = `${baseUrl}/api/v1/video/session/${sessionId}`;
  switch (op.op) {
    case 'concept':
      return promptFrame(base, {
        frame_index: op.frame,
        // Each text followed by its exemplar boxes (a box belongs to the text before it).
        prompts: op.texts.flatMap((text) => {
          const exemplars = op.exemplars?.find((e) => e.text === text);
          return [
            { type: 'text', text },
            ...(exemplars?.boxes ?? []).map((box, i) => ({
              type: 'box',
              box,
              label: exemplars?.box_labels[i] === 1,
            })),
          ];
        }),
        obj_id: null,
      });
    case 'refine': {
      const prompts: unknown[] = [];
      if (op.box !== null) prompts.push({ type: 'box', box: op.box, label: true });
      if (op.points.length > 0) {
        prompts.push({ type: 'point', points: op.points, point_labels: op.point_labels });
      }
      return promptFrame(base, { frame_index: op.frame, prompts, obj_id: op.obj_id });
    }
    case 'propagate': {
      const request: Record<string, unknown> = { direction: op.direction, stream: true };
      if (op.start !== null) request.start_frame_index = op.start;
      if (op.max_frames !== null) request.max_frames = op.max_frames;
      if (op.hotstart_delay !== null) request.hotstart_delay = op.hotstart_delay;
      const response = await postJson(`${base}/propagate`, request);
      const text = await response.text();
      assert.equal(response.status, 200, `propagate: ${text}`);
      const messages = text
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      const last = messages.pop();
      assert.equal(last?.type, 'complete', `propagate ends with complete: ${JSON.stringify(last)}`);
      return messages.map((message) => {
        assert.equal(message.type, 'frame');
        const frame = message.frame_index as number;
        return {
          frame,
          objects: (message.objects as ApiObject[]).map((o) => conceptObject(o, `frame ${frame}`)),
        };
      });
    }
    case 'remove': {
      const response = await fetch(`${base}/object/${op.obj_id}`, { method: 'DELETE' });
      assert.equal((await json<{ status: string }>(response, 'remove')).status, 'removed');
      return null;
    }
    case 'remove_concept': {
      const response = await fetch(`${base}/concept/${op.concept_id}`, { method: 'DELETE' });
      assert.equal((await json<{ status: string }>(response, 'remove concept')).status, 'removed');
      return null;
    }
    case 'reset': {
      await json(await postJson(`${base}/reset`, {}), 'reset');
      return null;
    }
  }
}

/** Counts of what comparisons covered, so a caller can assert they proved something. */
export interface ConceptTally {
  frames: number;
  framesWithObjects: number;
  objects: number;
  /** Every object id compared. */
  ids: Set<number>;
}

export function newTally(): ConceptTally {
  return { frames: 0, framesWithObjects: 0, objects: 0, ids: new Set() };
}

/**
 * The server's frames of one op equal the oracle's: the same frames in the same order, per
 * frame the same object ids (by id) with the same concepts, mask IoU >= 0.99, scores and
 * tracker scores within SCORE_TOLERANCE, and each box the bounds of its mask.
 */
export function assertSameFrames(
  where: string,
  ours: ConceptFrame[],
  expected: ConceptFrame[],
  tally: ConceptTally,
): void {
  assert.deepEqual(
    ours.map((f) => f.frame),
    expected.map((f) => f.frame),
    `${where}: frames in emission order`,
  );
  expected.forEach((reference, f) => {
    const frame = ours[f];
    const at = `${where} / frame ${reference.frame}`;
    assert.deepEqual(
      frame.objects.map((o) => o.id),
      reference.objects.map((o) => o.id),
      `${at}: object ids`,
    );
    tally.frames += 1;
    if (reference.objects.length > 0) tally.framesWithObjects += 1;
    reference.objects.forEach((expectedObject, i) => {
      const object = frame.objects[i];
      const on = `${at} / object ${expectedObject.id}`;
      assert.equal(object.concept_id, expectedObject.concept_id, `${on}: concept`);
      assert.ok(
        Math.abs(object.score - expectedObject.score) <= SCORE_TOLERANCE,
        `${on}: score ${object.score} vs ${expectedObject.score}`,
      );
      assert.ok(
        Math.abs(object.tracker_score - expectedObject.tracker_score) <= SCORE_TOLERANCE,
        `${on}: tracker score ${object.tracker_score} vs ${expectedObject.tracker_score}`,
      );
      const mask = decodeRle(object.mask);
      assertSameMask(mask, decodeRle(expectedObject.mask), on);
      const [height, width] = object.mask.size;
      assert.deepEqual(object.box, maskBox(mask, height, width), `${on}: box = mask bounds`);
      tally.objects += 1;
      tally.ids.add(object.id);
    });
  });
}
