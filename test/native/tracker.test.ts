/**
 * The native video tracker (native/core/tracker.cpp behind the addon's Tracker) on a tiny
 * random-weight bundle exported during the run (whose memory paths the exporter scales so
 * that wrong memory bookkeeping changes masks): parity with transformers'
 * Sam3TrackerVideoModel (tools/video_reference.py) on a lossless synthetic video, the exact
 * bytes its memory bank holds, one executor task per call in submission order, input
 * validation, and release.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loadAddon } from '../../src/native/addon';
import type {
  NativeEngine,
  NativeTracker,
  TrackerFrame,
  TrackerPrompt,
} from '../../src/native/types';
import { expectCode, maskBox } from '../helpers/native';
import { exportRandomBundle, SCORE_TOLERANCE, MIN_MASK_IOU, tempDir } from '../helpers/reference';
import { decodeRle, maskIou } from '../helpers/rle';
import {
  runVideoReference,
  type ReferenceFrame,
  type ReferenceOp,
  type VideoReferenceOutput,
} from '../helpers/video-reference';
import { decodeAll, writeLosslessVideo } from '../helpers/videos';

/** One frame of a clicked-object propagation (the tracker's step emits exactly that frame). */
async function stepOne(
  tracker: NativeTracker,
  rgb: Buffer,
  frameIndex: number,
  reverse: boolean,
): Promise<TrackerFrame> {
  const frames = await tracker.step(rgb, {
    frameIndex,
    reverse,
    hotstartDelay: null,
    runStart: false,
    runEnd: false,
  });
  assert.equal(frames.length, 1);
  return frames[0];
}

const WIDTH = 96;
const HEIGHT = 72;
const FRAMES = 8;
const FRAME_BYTES = WIDTH * HEIGHT * 3;

/**
 * Frame t of the synthetic video: a textured background, a red disc moving right and a green
 * square moving left (WIDTH x HEIGHT RGB24).
 */
function syntheticFrame(t: number): Buffer {
  const rgb = Buffer.alloc(FRAME_BYTES);
  for (let y = 0; y < HEIGHT; y++) {
    for (let x = 0; x < WIDTH; x++) {
      const i = 3 * (y * WIDTH + x);
      const disc = (x - 22 - 4 * t) ** 2 + (y - 30) ** 2 < 14 ** 2;
      const square = Math.abs(x - 72 + 3 * t) < 11 && Math.abs(y - 44) < 13;
      if (disc) {
        rgb.set([220, 40 + t, 35], i);
      } else if (square) {
        rgb.set([30, 190, 60 + 2 * t], i);
      } else {
        rgb.set([(x * 5 + y * 3) % 90, 70 + ((x ^ y) & 31), (x * 2 + y * 7) % 256], i);
      }
    }
  }
  return rgb;
}

function click(frame: number, objId: number, x: number, y: number): ReferenceOp {
  return { op: 'prompt', frame, obj_id: objId, points: [[x, y]], point_labels: [1], box: null };
}

function nativePrompt(op: Extract<ReferenceOp, { op: 'prompt' }>): TrackerPrompt {
  return {
    frameIndex: op.frame,
    objId: op.obj_id,
    points: op.points.flat(),
    pointLabels: op.point_labels,
    box: op.box,
    clearOld: true,
  };
}

/** The frames (and direction) a propagate op visits, as tools/video_reference.py runs them. */
function propagationOrder(
  op: Extract<ReferenceOp, { op: 'propagate' }>,
  tracker: NativeTracker,
): [number, boolean][] {
  const start = op.start ?? Math.min(...tracker.promptFrames());
  const count = op.max_frames ?? FRAMES;
  const forward: [number, boolean][] = [];
  for (let f = start; f < Math.min(FRAMES, start + count); f++) forward.push([f, false]);
  const backwardFrom = (from: number): [number, boolean][] => {
    const frames: [number, boolean][] = [];
    for (let f = from; f >= Math.max(0, from - count + 1); f--) frames.push([f, true]);
    return frames;
  };
  if (op.direction === 'forward') return forward;
  if (op.direction === 'backward') return backwardFrom(start);
  return start > 0 ? [...forward, ...backwardFrom(start - 1)] : forward;
}

function decodedMask(counts: string): Uint8Array {
  return decodeRle({ size: [HEIGHT, WIDTH], counts });
}

/** Per object: same id and order, presence, score within 1e-4, mask IoU >= 0.99 (non-empty). */
function assertSameFrame(where: string, actual: TrackerFrame, expected: ReferenceFrame): void {
  assert.equal(actual.frameIndex, expected.frame, `${where}: frame index`);
  assert.deepEqual(
    actual.objects.map((o) => o.objId),
    expected.objects.map((o) => o.id),
    `${where}: objects`,
  );
  expected.objects.forEach((reference, i) => {
    const object = actual.objects[i];
    const at = `${where} / object ${reference.id}`;
    assert.deepEqual(reference.mask.size, [HEIGHT, WIDTH], `${at}: reference mask size`);
    const expectedMask = decodeRle(reference.mask);
    assert.ok(
      expectedMask.some((v) => v !== 0),
      `${at}: the reference mask is empty`,
    );
    const mask = decodedMask(object.mask);
    assert.equal(object.present, reference.present, `${at}: presence`);
    assert.ok(reference.score !== null, `${at}: the reference has no score`);
    assert.ok(
      Math.abs(object.score - reference.score) <= SCORE_TOLERANCE,
      `${at}: score ${object.score} vs ${reference.score}`,
    );
    const iou = maskIou(mask, expectedMask);
    assert.ok(iou >= MIN_MASK_IOU, `${at}: mask IoU ${iou}`);
    assert.deepEqual(object.box, maskBox(mask, HEIGHT, WIDTH), `${at}: box = mask bounds`);
  });
}

interface TensorSpec {
  name: string;
  shape: (number | string)[];
  dtype: string;
}

interface Manifest {
  format_version: number;
  feature_size: number;
  tracker: { mem_dim: number };
  modules: Record<string, { file: string; inputs: TensorSpec[]; outputs: TensorSpec[] }>;
}

const BYTES_PER_ELEMENT: Record<string, number> = { float32: 4, bfloat16: 2, int64: 8 };

/** Bytes of a tensor of that spec with every symbolic dimension 1. */
function specBytes(spec: TensorSpec): number {
  const elements = spec.shape.reduce<number>(
    (product, dim) => product * (typeof dim === 'number' ? dim : 1),
    1,
  );
  return elements * BYTES_PER_ELEMENT[spec.dtype];
}

/**
 * A copy of the bundle (its files linked) whose manifest fixes memory_attention's slot
 * dimensions at their capacities (tracker.memory_slots, tracker.pointer_slots), as bundles that
 * predate symbolic slots declare them: every call then pads to the full bank.
 */
function withFixedSlots(bundleDir: string, out: string): string {
  mkdirSync(out);
  for (const entry of readdirSync(bundleDir)) {
    if (entry !== 'manifest.json') symlinkSync(path.join(bundleDir, entry), path.join(out, entry));
  }
  const manifest = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as {
    tracker: { memory_slots: number; pointer_slots: number };
    modules: Record<string, { inputs: TensorSpec[] }>;
  };
  const { memory_slots: slots, pointer_slots: pointerSlots } = manifest.tracker;
  const fixed: Record<string, number> = {
    memory: slots,
    memory_tpos: slots,
    memory_valid: slots,
    pointers: pointerSlots,
    pointer_offsets: pointerSlots,
    pointer_valid: pointerSlots,
  };
  for (const input of manifest.modules.memory_attention.inputs) {
    if (input.name in fixed) {
      assert.equal(input.shape[1], input.name.startsWith('memory') ? 'NS' : 'NP', input.name);
      input.shape[1] = fixed[input.name];
    }
  }
  writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest));
  return out;
}

function specNamed(specs: TensorSpec[], name: string): TensorSpec {
  const spec = specs.find((s) => s.name === name);
  assert.ok(spec, `no spec ${name}`);
  return spec;
}

describe('video tracker on a tiny random bundle', () => {
  const addon = loadAddon();
  let work: Awaited<ReturnType<typeof tempDir>>;
  let bundleDir = '';
  let videoFile = '';
  let manifest: Manifest;
  let engine: NativeEngine;
  // The exported bundle's memory_attention takes any slot counts (NS, NP): each call passes
  // only the slots its objects use. The same bundle with the slots fixed pads every call.
  let fixedSlotsEngine: NativeEngine;
  let frames: Buffer[] = [];

  const options = { numFrames: FRAMES, width: WIDTH, height: HEIGHT, memoryFrames: 64 };
  const clickAt = (frameIndex: number, objId: number, x = 0.25, y = 0.42): TrackerPrompt => ({
    frameIndex,
    objId,
    points: [x, y],
    pointLabels: [1],
    box: null,
    clearOld: true,
  });

  before(async () => {
    work = await tempDir('sam3-tracker-');
    bundleDir = path.join(work.dir, 'bundle');
    await exportRandomBundle(bundleDir, 'tiny', 0);
    manifest = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as Manifest;
    const original = Array.from({ length: FRAMES }, (_, t) => syntheticFrame(t));
    videoFile = path.join(work.dir, 'video.mp4');
    await writeLosslessVideo(videoFile, original, WIDTH, HEIGHT);
    frames = await decodeAll(videoFile, WIDTH, HEIGHT);
    assert.equal(frames.length, FRAMES);
    frames.forEach((frame, t) => assert.ok(frame.equals(original[t]), `frame ${t} is lossless`));
    engine = await addon.Engine.load({ bundleDir, device: 'cpu' });
    fixedSlotsEngine = await addon.Engine.load({
      bundleDir: withFixedSlots(bundleDir, path.join(work.dir, 'fixed-slots')),
      device: 'cpu',
    });
  });

  after(async () => {
    await engine?.close();
    await fixedSlotsEngine?.close();
    await work?.cleanup();
  });

  test('matches transformers on clicks, a box, two objects, a correction and removal', async (t) => {
    const ops: ReferenceOp[] = [
      // A click on frame 0, then forward over four frames.
      click(0, 1, 0.25, 0.42),
      { op: 'propagate', direction: 'forward', start: null, max_frames: 4 },
      { op: 'reset' },
      // A box on a middle frame, then backward to frame 0.
      {
        op: 'prompt',
        frame: 5,
        obj_id: 1,
        points: [],
        point_labels: [],
        box: [0.53, 0.61, 0.3, 0.4],
      },
      { op: 'propagate', direction: 'backward', start: null, max_frames: null },
      { op: 'reset' },
      // Two objects: object 1 clicked on five frames (more than the four conditioning frames
      // a frame attends to: the closest are chosen, an unselected one can fill the recent-frame
      // window), object 2 given a box and a click (one mask, not three) on frame 3 and tracked
      // on the frames before it too.
      ...[0, 2, 4, 6, 7].map((frame) => click(frame, 1, 0.25 + 0.04 * frame, 0.42)),
      {
        op: 'prompt',
        frame: 3,
        obj_id: 2,
        points: [[0.64, 0.6]],
        point_labels: [1],
        box: [0.64, 0.6, 0.28, 0.4],
      },
      { op: 'propagate', direction: 'forward', start: null, max_frames: null },
      // A correcting click on a tracked frame, then both directions from it.
      click(5, 2, 0.6, 0.62),
      { op: 'propagate', direction: 'both', start: 5, max_frames: 2 },
      { op: 'remove', obj_id: 1 },
      { op: 'remove', obj_id: 7 },
      { op: 'propagate', direction: 'forward', start: 6, max_frames: 2 },
    ];
    const reference: VideoReferenceOutput = await runVideoReference(bundleDir, videoFile, ops);
    assert.deepEqual(reference.video_info, { frames: FRAMES, width: WIDTH, height: HEIGHT });

    const median = (values: number[]) => [...values].sort((x, y) => x - y)[values.length >> 1];
    const timings: string[] = [];
    for (const [name, native] of [
      ['slots trimmed per call', engine],
      ['fixed slots', fixedSlotsEngine],
    ] as const) {
      const tracker = native.createTracker(options);
      const stepMs: number[] = [];
      let compared = 0;
      for (const [index, op] of ops.entries()) {
        const expected = reference.results[index];
        const where = `${name}: op ${index} (${op.op})`;
        assert.ok(!('error' in expected), `${where}: reference error ${JSON.stringify(expected)}`);
        if (op.op === 'prompt') {
          const frame = await tracker.addPrompt(frames[op.frame], nativePrompt(op));
          assertSameFrame(where, frame, expected as ReferenceFrame);
          compared += 1;
        } else if (op.op === 'propagate') {
          const expectedFrames = (expected as { frames: ReferenceFrame[] }).frames;
          const order = propagationOrder(op, tracker);
          assert.equal(order.length, expectedFrames.length, `${where}: frames visited`);
          for (const [k, [frameIndex, reverse]] of order.entries()) {
            const started = performance.now();
            const frame = await stepOne(tracker, frames[frameIndex], frameIndex, reverse);
            stepMs.push(performance.now() - started);
            assertSameFrame(`${where} / frame ${frameIndex}`, frame, expectedFrames[k]);
            compared += 1;
          }
        } else if (op.op === 'remove') {
          assert.equal(
            await tracker.removeObject(op.obj_id),
            (expected as { removed: boolean }).removed,
          );
        } else {
          assert.equal(await tracker.reset(), (expected as { cleared: number }).cleared);
        }
      }
      // 9 prompts; propagations of 4, 6, 8, 4 and 2 frames.
      assert.equal(compared, 9 + 4 + 6 + 8 + 4 + 2);
      assert.deepEqual(tracker.objectIds(), [2]);
      assert.deepEqual(tracker.promptFrames(), [3]);
      tracker.release();
      timings.push(`${name} ${median(stepMs).toFixed(1)} ms`);
    }

    const referenceMs = reference.timing.frames_per_second
      .filter((v): v is number => v !== null)
      .map((v) => (1000 / v).toFixed(0));
    t.diagnostic(
      `median step: ${timings.join(', ')}; reference propagations: ${referenceMs.join(', ')} ms/frame`,
    );
  });

  test('byteSize counts the bank exactly; old frames are evicted; release frees it', async () => {
    const G = manifest.feature_size;
    const M = manifest.tracker.mem_dim;
    const vision = manifest.modules.tracker_neck.outputs;
    const decoder = manifest.modules.tracker_decoder.outputs;
    const C = specNamed(decoder, 'object_pointer').shape[1] as number;
    const features = ['tracker_fpn_0', 'tracker_fpn_1', 'tracker_fpn_2']
      .map((name) => specBytes(specNamed(vision, name)))
      .reduce((a, b) => a + b);
    const frameMemory = G * G * M * 2 + C * 4; // bf16 memory + float32 pointer
    const promptFrame = frameMemory + specBytes(specNamed(decoder, 'low_res_masks'));

    const live = addon.liveTrackerBytes();
    const tracker = engine.createTracker({ ...options, memoryFrames: 2 });
    assert.equal(tracker.byteSize(), 0);
    await tracker.addPrompt(frames[0], clickAt(0, 1));
    assert.equal(tracker.byteSize(), features + promptFrame);
    await stepOne(tracker, frames[1], 1, false);
    assert.equal(tracker.byteSize(), features + promptFrame + frameMemory);
    for (let f = 2; f <= 4; f++) await stepOne(tracker, frames[f], f, false);
    // memoryFrames = 2: frames 3 and 4 stay, the prompt frame stays for the session's life.
    assert.equal(tracker.byteSize(), features + promptFrame + 2 * frameMemory);
    // A second object prompted on frame 4: object 1's output there is recomputed in place.
    await tracker.addPrompt(frames[4], clickAt(4, 2, 0.7, 0.6));
    assert.equal(tracker.byteSize(), features + 2 * promptFrame + 2 * frameMemory);
    await stepOne(tracker, frames[5], 5, false);
    assert.equal(tracker.byteSize(), features + 2 * promptFrame + 3 * frameMemory);
    assert.equal(addon.liveTrackerBytes() - live, tracker.byteSize());

    tracker.release();
    assert.equal(tracker.byteSize(), 0);
    assert.equal(addon.liveTrackerBytes(), live);
    tracker.release();
    assert.equal(addon.liveTrackerBytes(), live);
  });

  test('objects keep creation order; promptFrames, removeObject and reset', async () => {
    const tracker = engine.createTracker(options);
    const first = await tracker.addPrompt(frames[3], clickAt(3, 5));
    assert.deepEqual(
      first.objects.map((o) => o.objId),
      [5],
    );
    const second = await tracker.addPrompt(frames[1], clickAt(1, 2, 0.7, 0.6));
    assert.equal(second.frameIndex, 1);
    assert.deepEqual(
      second.objects.map((o) => o.objId),
      [5, 2],
    );
    assert.deepEqual(tracker.objectIds(), [5, 2]);
    assert.deepEqual(tracker.promptFrames(), [1, 3]);
    assert.equal(await tracker.removeObject(9), false);
    assert.equal(await tracker.removeObject(5), true);
    assert.deepEqual(tracker.objectIds(), [2]);
    assert.deepEqual(tracker.promptFrames(), [1]);
    const frame = await stepOne(tracker, frames[2], 2, false);
    assert.deepEqual(
      frame.objects.map((o) => o.objId),
      [2],
    );
    assert.equal(await tracker.reset(), 1);
    assert.deepEqual(tracker.objectIds(), []);
    assert.deepEqual(tracker.promptFrames(), []);
    assert.deepEqual(await stepOne(tracker, frames[2], 2, false), {
      frameIndex: 2,
      objects: [],
      objectsDropped: 0,
    });
    tracker.release();
  });

  test('each call is one executor task, and a tracker runs its tasks in submission order', async () => {
    const before = engine.tasksRun();
    const sequential = engine.createTracker(options);
    const expected: TrackerFrame[] = [await sequential.addPrompt(frames[0], clickAt(0, 1))];
    for (let f = 1; f <= 3; f++) expected.push(await stepOne(sequential, frames[f], f, false));
    // Frame 0 holds the prompt's output: reused without a model call, still one task.
    expected.push(await stepOne(sequential, frames[0], 0, true));
    assert.equal(await sequential.reset(), 1);
    assert.equal(engine.tasksRun() - before, 6);
    sequential.release();

    const queued = engine.createTracker(options);
    const pending = [
      queued.addPrompt(frames[0], clickAt(0, 1)),
      ...[1, 2, 3].map((f) => stepOne(queued, frames[f], f, false)),
      stepOne(queued, frames[0], 0, true),
    ];
    assert.deepEqual(await Promise.all(pending), expected);
    assert.equal(engine.tasksRun() - before, 11);
    queued.release();
  });

  test('bad input rejects with BAD_INPUT naming the field', async () => {
    const tracker = engine.createTracker(options);
    const bad = (prompt: Partial<TrackerPrompt>, message: RegExp, rgb = frames[0]) =>
      assert.rejects(
        tracker.addPrompt(rgb, { ...clickAt(0, 1), ...prompt }),
        expectCode('BAD_INPUT', message),
      );
    await bad({ frameIndex: FRAMES }, /frameIndex/);
    await bad({ frameIndex: -1 }, /frameIndex/);
    await bad({ pointLabels: [2] }, /pointLabels/);
    await bad({ points: [Number.NaN, 0.5] }, /points/);
    await bad({ points: [0.5] }, /points/);
    await bad({ box: [0.5, 0.5, Number.POSITIVE_INFINITY, 0.2] }, /box/);
    await bad({ box: [0.5, 0.5, 0.2] }, /box/);
    await bad({ box: [0.5, 0.5, 0.2, 0.2], clearOld: false }, /clearOld/);
    await bad({ points: [], pointLabels: [], box: null }, /click or a box/);
    await bad(
      { points: new Array<number>(130).fill(0.5), pointLabels: new Array<number>(65).fill(1) },
      /at most 64 clicks/,
    );
    await bad({}, /rgb/, frames[0].subarray(3));
    await bad({ objId: 1.5 }, /objId/);
    await assert.rejects(
      stepOne(tracker, frames[0], FRAMES, false),
      expectCode('BAD_INPUT', /frameIndex/),
    );
    await assert.rejects(
      stepOne(tracker, frames[0], 0, 'no' as unknown as boolean),
      expectCode('BAD_INPUT', /reverse/),
    );
    // Nothing was added by the refused prompts.
    assert.deepEqual(tracker.objectIds(), []);
    assert.equal(tracker.byteSize(), 0);
    tracker.release();

    assert.throws(
      () => engine.createTracker({ ...options, numFrames: 0 }),
      expectCode('BAD_INPUT', /numFrames/),
    );
    assert.throws(
      () => engine.createTracker({ ...options, width: 0 }),
      expectCode('BAD_INPUT', /width/),
    );
    assert.throws(
      () => engine.createTracker({ ...options, memoryFrames: 0 }),
      expectCode('BAD_INPUT', /memoryFrames/),
    );
  });

  test('after release every call rejects with SESSION_CLOSED, queued calls included', async () => {
    const tracker = engine.createTracker(options);
    await tracker.addPrompt(frames[0], clickAt(0, 1));
    // The executor is busy with the image while the step waits behind it.
    const busy = engine.encodeImage(frames[5], WIDTH, HEIGHT);
    const queued = stepOne(tracker, frames[1], 1, false);
    tracker.release();
    await assert.rejects(queued, expectCode('SESSION_CLOSED'));
    (await busy).release();
    await assert.rejects(tracker.addPrompt(frames[0], clickAt(0, 1)), expectCode('SESSION_CLOSED'));
    await assert.rejects(stepOne(tracker, frames[1], 1, false), expectCode('SESSION_CLOSED'));
    await assert.rejects(tracker.removeObject(1), expectCode('SESSION_CLOSED'));
    await assert.rejects(tracker.reset(), expectCode('SESSION_CLOSED'));
    assert.deepEqual(tracker.objectIds(), []);
    assert.deepEqual(tracker.promptFrames(), []);
    assert.equal(tracker.byteSize(), 0);
  });

  test('a bundle without tracker modules serves images and refuses trackers', async () => {
    assert.equal(engine.info.videoAvailable, true);
    const imageOnly = path.join(work.dir, 'image-only');
    mkdirSync(imageOnly);
    const kept = [
      'vision_trunk',
      'detector_neck',
      'tracker_neck',
      'text_encoder',
      'detector',
      'point_decoder',
      'point_decoder_multimask',
    ];
    for (const name of kept) {
      const file = manifest.modules[name].file;
      symlinkSync(path.join(bundleDir, file), path.join(imageOnly, file));
    }
    const full = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as Record<
      string,
      unknown
    > & { modules: Record<string, unknown> };
    delete full.tracker;
    delete full.concept;
    const modules = Object.fromEntries(kept.map((name) => [name, full.modules[name]]));
    writeFileSync(path.join(imageOnly, 'manifest.json'), JSON.stringify({ ...full, modules }));
    const images = await addon.Engine.load({ bundleDir: imageOnly, device: 'cpu' });
    try {
      assert.equal(images.info.videoAvailable, false);
      assert.equal(images.info.formatVersion, 4);
      const embedding = await images.encodeImage(frames[0], WIDTH, HEIGHT);
      assert.equal(embedding.width, WIDTH);
      embedding.release();
      assert.throws(
        () => images.createTracker(options),
        expectCode('BAD_INPUT', /tracker modules/),
      );
    } finally {
      await images.close();
    }
  });
});
