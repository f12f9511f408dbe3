/**
 * Concept-tracking parity through the HTTP API: text prompts in video against transformers'
 * Sam3VideoModel (tools/video_concept_reference.py, with the patches docs/video-concepts.md
 * lists) loaded from the same random checkpoint, on a synthetic lossless video where shapes
 * enter, leave and cross, on two configs.
 *
 * The script is built while the server runs it (a refinement clicks inside an object the
 * detector created; a removal takes an object that exists), then the oracle runs the same
 * script. Per op: the same frames in emission order; per frame the same object ids with the
 * same concepts, mask IoU >= 0.99, scores and tracker scores within 1e-4, boxes the masks'
 * bounds. Asserted coverage: most compared frames hold objects, and objects appear mid-video.
 * A third run compares the official post-processing (mask NMS, hole filling, sprinkle
 * removal) with the oracle running the pure-Python twins of tools/sam3_tools/mask_postprocess.py.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tempDir } from '../helpers/reference';
import { decodeRle } from '../helpers/rle';
import { cachedRandomBundle, postJson, startTestServer, type TestServer } from '../helpers/server';
import {
  assertSameFrames,
  newTally,
  referenceFrames,
  runConceptOpOnServer,
  runConceptReference,
  type ConceptFrame,
  type ConceptOp,
  type OpFrames,
} from '../helpers/video-concept-reference';
import { conceptShapesFrames, writeLosslessVideo } from '../helpers/videos';

const WIDTH = 112;
const HEIGHT = 84;
const FRAMES = 14;

async function startSession(server: TestServer, video: string): Promise<string> {
  const response = await postJson(`${server.url}/api/v1/video/session/start`, {
    video_path: video,
  });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return (JSON.parse(text) as { session_id: string }).session_id;
}

/** A pixel inside the largest object of a frame, normalized; and that object's id. */
function clickInside(frame: ConceptFrame): { objId: number; point: [number, number] } {
  let best: { objId: number; point: [number, number]; area: number } | null = null;
  for (const object of frame.objects) {
    const [height, width] = object.mask.size;
    const mask = decodeRle(object.mask);
    let area = 0;
    let sumX = 0;
    let sumY = 0;
    mask.forEach((value, i) => {
      if (value === 0) return;
      area += 1;
      // decodeRle is row-major (y * width + x).
      sumX += i % width;
      sumY += Math.floor(i / width);
    });
    if (area === 0 || (best !== null && area <= best.area)) continue;
    // The mask pixel nearest to the centroid.
    const cx = sumX / area;
    const cy = sumY / area;
    let pick = 0;
    let nearest = Infinity;
    mask.forEach((value, i) => {
      if (value === 0) return;
      const d = ((i % width) - cx) ** 2 + (Math.floor(i / width) - cy) ** 2;
      if (d < nearest) {
        nearest = d;
        pick = i;
      }
    });
    best = {
      objId: object.id,
      point: [((pick % width) + 0.5) / width, (Math.floor(pick / width) + 0.5) / height],
      area,
    };
  }
  assert.ok(best !== null, `frame ${frame.frame} has no object to click`);
  return { objId: best.objId, point: best.point };
}

/** Runs the script on the server, building its later ops from earlier results. */
async function runScript(
  server: TestServer,
  sessionId: string,
): Promise<{ ops: ConceptOp[]; frames: OpFrames[] }> {
  const ops: ConceptOp[] = [];
  const frames: OpFrames[] = [];
  const run = async (op: ConceptOp): Promise<OpFrames> => {
    ops.push(op);
    const result = await runConceptOpOnServer(server.url, sessionId, op);
    frames.push(result);
    return result;
  };
  const forward: ConceptOp = {
    op: 'propagate',
    direction: 'forward',
    start: null,
    max_frames: null,
    hotstart_delay: null,
  };
  // A concept on frame 0, tracked forward with the default hotstart delay.
  await run({ op: 'concept', frame: 0, texts: ['object'] });
  const tracked = (await run(forward)) as ConceptFrame[];
  // A click inside a detector-created object on a tracked frame (the one with objects
  // nearest the middle) refines it; forward from there with a short delay.
  const withObjects = tracked.filter((f) => f.frame > 0 && f.objects.length > 0);
  assert.ok(withObjects.length > 0, 'some tracked frame after the first holds objects');
  const middle = withObjects.reduce((best, f) =>
    Math.abs(f.frame - FRAMES / 2) < Math.abs(best.frame - FRAMES / 2) ? f : best,
  );
  const target = clickInside(middle);
  await run({
    op: 'refine',
    frame: middle.frame,
    obj_id: target.objId,
    points: [target.point],
    point_labels: [1],
    box: null,
  });
  await run({ ...forward, start: middle.frame, max_frames: 5, hotstart_delay: 3 } as ConceptOp);
  // Removing it: the detector may find the instance again, as a new object.
  await run({ op: 'remove', obj_id: target.objId });
  await run({ ...forward, start: 0, hotstart_delay: 0 } as ConceptOp);
  // Two concepts prompted on a middle frame, the second with exemplar boxes there (a positive
  // one around the green square of conceptShapesFrames, a negative one on the background),
  // then both directions.
  await run({ op: 'reset' });
  await run({
    op: 'concept',
    frame: 7,
    texts: ['object', 'shape'],
    exemplars: [
      {
        text: 'shape',
        boxes: [
          [0.5, 0.75, 0.2, 0.25],
          [0.9, 0.1, 0.1, 0.1],
        ],
        box_labels: [1, 0],
      },
    ],
  });
  await run({ ...forward, direction: 'both', start: 7, hotstart_delay: 4 } as ConceptOp);
  // Removing the second concept; backward over what is left.
  await run({ op: 'remove_concept', concept_id: 2 });
  await run({
    op: 'propagate',
    direction: 'backward',
    start: 10,
    max_frames: 6,
    hotstart_delay: null,
  });
  return { ops, frames };
}

function compare(
  where: string,
  ops: readonly ConceptOp[],
  ours: readonly OpFrames[],
  results: Record<string, unknown>[],
): ReturnType<typeof newTally> {
  const tally = newTally();
  const known = new Set<number>();
  let appearedLater = 0;
  ops.forEach((op, index) => {
    const expected = referenceFrames(results[index]);
    const at = `${where} op ${index} (${op.op})`;
    if (expected === null) {
      assert.equal(ours[index], null, at);
      return;
    }
    const actual = ours[index];
    assert.ok(actual !== null, at);
    assertSameFrames(at, actual, expected, tally);
    for (const frame of expected) {
      for (const object of frame.objects) {
        if (op.op === 'propagate' && !known.has(object.id)) appearedLater += 1;
        known.add(object.id);
      }
    }
  });
  assert.ok(tally.frames > 0, `${where}: no frames compared`);
  assert.ok(
    tally.framesWithObjects * 4 > tally.frames * 3,
    `${where}: only ${tally.framesWithObjects} of ${tally.frames} frames hold objects`,
  );
  assert.ok(appearedLater > 0, `${where}: no object appeared during a propagation`);
  return tally;
}

for (const [preset, seed] of [
  ['tiny', 0],
  ['tiny-b', 1],
] as const) {
  describe(`concept-tracking parity with transformers' Sam3VideoModel through HTTP (${preset})`, () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let server: TestServer;
    let video: string;
    let bundle: string;

    before(async () => {
      work = await tempDir(`sam3-concept-parity-${preset}-`);
      bundle = await cachedRandomBundle(preset, seed);
      video = path.join(work.dir, 'shapes.mp4');
      await writeLosslessVideo(video, conceptShapesFrames(WIDTH, HEIGHT, FRAMES), WIDTH, HEIGHT);
      server = await startTestServer({
        bundleDir: bundle,
        env: {
          RATE_LIMIT_ENABLED: 'false',
          UPLOAD_DIR: work.dir,
          VIDEO_OFFICIAL_POSTPROCESS: 'false',
        },
      });
    });

    after(async () => {
      await server?.close();
      await work?.cleanup();
    });

    it('finds, tracks, refines and removes objects of text concepts as the reference does', async () => {
      const sessionId = await startSession(server, video);
      const { ops, frames } = await runScript(server, sessionId);
      const reference = await runConceptReference(bundle, video, ops);
      assert.deepEqual(reference.video_info, { frames: FRAMES, width: WIDTH, height: HEIGHT });
      const tally = compare(preset, ops, frames, reference.results);
      assert.ok(tally.ids.size >= 3, `${preset}: only ${tally.ids.size} objects compared`);
    });
  });
}

describe('concept-tracking parity with the official post-processing (tiny)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let server: TestServer;
  let video: string;
  let bundle: string;

  before(async () => {
    work = await tempDir('sam3-concept-parity-official-');
    bundle = await cachedRandomBundle('tiny', 0);
    video = path.join(work.dir, 'shapes.mp4');
    await writeLosslessVideo(video, conceptShapesFrames(WIDTH, HEIGHT, FRAMES), WIDTH, HEIGHT);
    server = await startTestServer({
      bundleDir: bundle,
      env: { RATE_LIMIT_ENABLED: 'false', UPLOAD_DIR: work.dir },
    });
  });

  after(async () => {
    await server?.close();
    await work?.cleanup();
  });

  it('mask NMS, hole filling and sprinkle removal as the oracle with the twins', async () => {
    const sessionId = await startSession(server, video);
    const ops: ConceptOp[] = [
      { op: 'concept', frame: 0, texts: ['object'] },
      { op: 'propagate', direction: 'forward', start: null, max_frames: null, hotstart_delay: 5 },
    ];
    const frames: OpFrames[] = [];
    for (const op of ops) frames.push(await runConceptOpOnServer(server.url, sessionId, op));
    const reference = await runConceptReference(bundle, video, ops, { officialPostprocess: true });
    compare('official post-processing', ops, frames, reference.results);
  });
});
