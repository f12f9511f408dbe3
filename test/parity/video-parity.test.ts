/**
 * Video parity through the HTTP API: the server's click and box tracking against transformers'
 * Sam3TrackerVideoModel (tools/video_reference.py) loaded from the same random checkpoint, on
 * a synthetic lossless video (both sides decode exactly the frames written), on two configs.
 *
 * One script per config covers the cases of the issue in order, each op on the server mirrored
 * by the same op on the reference: a click on frame 0 then forward; a correction click mid-video
 * after that propagation, then forward from there; a second object, then forward; removing it,
 * then forward again; reset, a box on a middle frame, then backward and both.
 * Per frame and object: the same ids, equal presence, mask IoU >= 0.99; every propagation
 * compares non-empty masks on most of its frames.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { exportRandomBundle, tempDir } from '../helpers/reference';
import { postJson, startTestServer, type TestServer } from '../helpers/server';
import {
  assertSameFrame,
  runVideoReference,
  type FrameComparison,
  type ReferenceFrame,
  type ReferenceOp,
  type VideoObject,
} from '../helpers/video-reference';
import { movingShapesFrames, writeLosslessVideo } from '../helpers/videos';

const WIDTH = 96;
const HEIGHT = 72;
const FRAMES = 10;

/**
 * The cases, as reference ops; the server gets the same ops through its API. Shapes of
 * movingShapesFrames at 96 x 72: the red disc starts at (0.1, 0.33) and moves right, the blue
 * rectangle starts at (0.75, 0.1) and moves down (at frame 5 it spans y 0.17-0.36).
 */
const SCRIPT: ReferenceOp[] = [
  // A click on the disc on frame 0, then forward over the whole video.
  { op: 'prompt', frame: 0, obj_id: 1, points: [[0.1, 0.33]], point_labels: [1], box: null },
  { op: 'propagate', direction: 'forward', start: null, max_frames: null },
  // A correction on a tracked frame (two clicks: positive and negative), then forward from it.
  {
    op: 'prompt',
    frame: 4,
    obj_id: 1,
    points: [
      [0.23, 0.33],
      [0.9, 0.9],
    ],
    point_labels: [1, 0],
    box: null,
  },
  { op: 'propagate', direction: 'forward', start: 4, max_frames: null },
  // A second object (the rectangle) clicked on frame 3, where the first object is recomputed
  // from memory: the memory encoder's batch then binarizes both masks (the reference's
  // any(is_mask_from_pts) quirk); both objects forward from the next frame.
  { op: 'prompt', frame: 3, obj_id: 2, points: [[0.75, 0.17]], point_labels: [1], box: null },
  { op: 'propagate', direction: 'forward', start: 4, max_frames: 4 },
  // Removing it leaves the first object's tracking as the reference's.
  { op: 'remove', obj_id: 2 },
  { op: 'propagate', direction: 'forward', start: 0, max_frames: null },
  // A box on a middle frame, then backward, then both directions.
  { op: 'reset' },
  {
    op: 'prompt',
    frame: 5,
    obj_id: 1,
    points: [],
    point_labels: [],
    box: [0.75, 0.26, 0.22, 0.25],
  },
  { op: 'propagate', direction: 'backward', start: 5, max_frames: null },
  { op: 'propagate', direction: 'both', start: 5, max_frames: null },
];

interface ApiObject {
  id: number;
  present: boolean;
  score: number;
  box: number[];
  mask: { size: [number, number]; counts: string };
}

async function json<T>(response: Response, where: string): Promise<T> {
  const text = await response.text();
  assert.equal(response.status, 200, `${where}: ${text}`);
  return JSON.parse(text) as T;
}

/** Runs one op on the server's session; returns the frames it produced, in frame order. */
async function runOnServer(
  server: TestServer,
  sessionId: string,
  op: ReferenceOp,
): Promise<ReferenceFrame[] | null> {
  const base = `${server.url}/api/v1/video/session/${sessionId}`;
  switch (op.op) {
    case 'prompt': {
      const prompts: unknown[] = [];
      if (op.box !== null) prompts.push({ type: 'box', box: op.box, label: true });
      if (op.points.length > 0) {
        prompts.push({ type: 'point', points: op.points, point_labels: op.point_labels });
      }
      const body = await json<{
        frame_index: number;
        obj_id: number[];
        masks: ApiObject['mask'][];
        boxes: number[][];
        scores: number[];
        present: boolean[];
      }>(
        await postJson(`${base}/prompt`, { frame_index: op.frame, prompts, obj_id: op.obj_id }),
        'prompt',
      );
      const objects: VideoObject[] = body.obj_id.map((id, i) => ({
        id,
        present: body.present[i],
        score: body.scores[i],
        box: body.boxes[i],
        mask: body.masks[i],
      }));
      return [{ frame: body.frame_index, objects }];
    }
    case 'propagate': {
      const request: Record<string, unknown> = { direction: op.direction };
      if (op.start !== null) request.start_frame_index = op.start;
      if (op.max_frames !== null) request.max_frames = op.max_frames;
      const body = await json<{
        results: Record<string, { frame_index: number; objects: ApiObject[] }>;
        total_frames: number;
      }>(await postJson(`${base}/propagate`, request), 'propagate');
      const frames = Object.values(body.results).map((entry) => ({
        frame: entry.frame_index,
        objects: entry.objects,
      }));
      assert.equal(body.total_frames, frames.length, 'total_frames counts the frames returned');
      return frames.sort((a, b) => a.frame - b.frame);
    }
    case 'remove': {
      const response = await fetch(`${base}/object/${op.obj_id}`, { method: 'DELETE' });
      assert.equal((await json<{ status: string }>(response, 'remove')).status, 'removed');
      return null;
    }
    case 'reset': {
      await json(await postJson(`${base}/reset`, {}), 'reset');
      return null;
    }
  }
}

/** The reference's frames of one op result, in frame order (null for remove/reset). */
function referenceFrames(result: unknown): ReferenceFrame[] | null {
  const value = result as { frames?: ReferenceFrame[]; frame?: number; objects?: VideoObject[] };
  if (value.frames !== undefined) return [...value.frames].sort((a, b) => a.frame - b.frame);
  if (value.objects !== undefined && value.frame !== undefined) {
    return [{ frame: value.frame, objects: value.objects }];
  }
  return null;
}

for (const [preset, seed] of [
  ['tiny', 0],
  ['tiny-b', 1],
] as const) {
  describe(`video parity with transformers' tracker through HTTP (${preset})`, () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let server: TestServer;
    let video: string;
    let bundle: string;

    before(async () => {
      work = await tempDir(`sam3-video-parity-${preset}-`);
      bundle = path.join(work.dir, 'bundle');
      await exportRandomBundle(bundle, preset, seed);
      video = path.join(work.dir, 'shapes.mp4');
      await writeLosslessVideo(video, movingShapesFrames(WIDTH, HEIGHT, FRAMES), WIDTH, HEIGHT);
      server = await startTestServer({
        bundleDir: bundle,
        env: { RATE_LIMIT_ENABLED: 'false', UPLOAD_DIR: work.dir },
      });
    });

    after(async () => {
      await server?.close();
      await work?.cleanup();
    });

    it('tracks clicks, corrections, two objects, removal and a box as the reference does', async () => {
      const reference = await runVideoReference(bundle, video, SCRIPT);
      assert.deepEqual(reference.video_info, { frames: FRAMES, width: WIDTH, height: HEIGHT });

      const started = await json<{ session_id: string; video_info: { total_frames: number } }>(
        await postJson(`${server.url}/api/v1/video/session/start`, { video_path: video }),
        'start',
      );
      assert.equal(started.video_info.total_frames, FRAMES);

      for (const [index, op] of SCRIPT.entries()) {
        const where = `${preset} op ${index} (${op.op}${'direction' in op ? ` ${op.direction}` : ''})`;
        const ours = await runOnServer(server, started.session_id, op);
        const expected = referenceFrames(reference.results[index]);
        if (expected === null) {
          assert.equal(ours, null, where);
          continue;
        }
        assert.ok(ours !== null, where);
        assert.deepEqual(
          ours.map((f) => f.frame),
          expected.map((f) => f.frame),
          `${where}: frames`,
        );
        const tally: FrameComparison = { frames: 0, objects: 0, nonEmptyMasks: 0 };
        ours.forEach((frame, i) =>
          assertSameFrame(
            `${where} / frame ${frame.frame}`,
            frame.objects,
            expected[i].objects,
            tally,
          ),
        );
        // What is compared must be non-empty: most masks of every op hold pixels.
        assert.ok(tally.objects > 0, `${where}: no objects compared`);
        assert.ok(
          tally.nonEmptyMasks * 2 > tally.objects,
          `${where}: only ${tally.nonEmptyMasks} of ${tally.objects} compared masks are non-empty`,
        );
      }
    });
  });
}
