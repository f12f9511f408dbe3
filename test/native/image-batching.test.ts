/**
 * Cross-request batching in the native engine (Engine.load's imageBatch): concurrent
 * encodeImage calls share vision encoder calls, each image's result equals the image encoded
 * alone, and a batch keeps every per-call contract: cancellation, bad input failing alone,
 * device out of memory retried one image at a time, closing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loadAddon } from '../../src/native/addon';
import type {
  NativeEngine,
  NativeImageEmbedding,
  NativeTextEmbedding,
  PointInstance,
  ConceptInstances,
} from '../../src/native/types';
import { expectCode } from '../helpers/native';
import { decodeRle, maskIou } from '../helpers/rle';
import { exportTinyBundle, singleImageBundle } from '../helpers/server';

/** The bar batched results are held to against each image alone (issue 9). */
const MIN_IOU = 0.999;
const MAX_SCORE_DIFFERENCE = 1e-5;

/** Deterministic RGB noise over a gradient, width * height * 3 bytes. */
function image(width: number, height: number, seed: number): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  let state = seed;
  for (let i = 0; i < rgb.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    rgb[i] = ((Math.floor(i / 3) % width) * 3 + (state >>> 25)) % 256;
  }
  return rgb;
}

interface Picture {
  rgb: Buffer;
  width: number;
  height: number;
}

/** Images of different sizes: a batch mixes them (each is resized to the model input). */
const PICTURES: Picture[] = [
  [97, 61],
  [40, 30],
  [200, 150],
  [64, 64],
].map(([width, height], seed) => ({ rgb: image(width, height, seed + 1), width, height }));

/** What an embedding answers: detect at threshold 0 and one click. */
interface Answers {
  concepts: ConceptInstances;
  click: PointInstance;
}

function assertSameAnswers(batched: Answers, alone: Answers, picture: Picture): void {
  const { width, height } = picture;
  const pairs: [number[], number[], string[], string[]][] = [
    [
      [...batched.concepts.scores],
      [...alone.concepts.scores],
      batched.concepts.masks,
      alone.concepts.masks,
    ],
    [[batched.click.score], [alone.click.score], [batched.click.mask], [alone.click.mask]],
  ];
  for (const [scoresA, scoresB, masksA, masksB] of pairs) {
    assert.ok(scoresB.length > 0, 'the comparison is not empty');
    assert.equal(scoresA.length, scoresB.length);
    scoresA.forEach((score, i) => {
      assert.ok(Math.abs(score - scoresB[i]) <= MAX_SCORE_DIFFERENCE, `${score} vs ${scoresB[i]}`);
    });
    masksA.forEach((counts, i) => {
      const iou = maskIou(
        decodeRle({ size: [height, width], counts }),
        decodeRle({ size: [height, width], counts: masksB[i] }),
      );
      assert.ok(iou >= MIN_IOU, `mask ${i}: IoU ${iou}`);
    });
  }
}

describe('cross-request image batching on the tiny random bundle', () => {
  const addon = loadAddon();
  let bundleDir = '';
  let workDir = '';
  let alone: NativeEngine;
  let batched: NativeEngine;
  let text: NativeTextEmbedding;
  let batchedText: NativeTextEmbedding;

  async function answers(
    engine: NativeEngine,
    embedding: NativeImageEmbedding,
    prompt: NativeTextEmbedding,
  ): Promise<Answers> {
    const [concepts] = await engine.detect(
      embedding,
      [{ text: prompt, boxes: new Float32Array(0), boxLabels: new Int32Array(0) }],
      { threshold: 0 },
    );
    const [click] = await engine.segmentPoints(embedding, [
      {
        points: new Float32Array([0.4, 0.6]),
        pointLabels: new Int32Array([1]),
        box: new Float32Array(0),
      },
    ]);
    return { concepts, click };
  }

  async function textOf(engine: NativeEngine): Promise<NativeTextEmbedding> {
    const {
      context_length: L,
      pad_id,
      bos_id,
      eos_id,
    } = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')).text as {
      context_length: number;
      pad_id: number;
      bos_id: number;
      eos_id: number;
    };
    const ids = new Int32Array(L).fill(pad_id);
    const mask = new Int32Array(L);
    [bos_id, 320, 321, eos_id].forEach((id, i) => {
      ids[i] = id;
      mask[i] = 1;
    });
    const [embedding] = await engine.encodeText(ids, mask, 1);
    return embedding;
  }

  function encode(
    engine: NativeEngine,
    picture: Picture,
    cancel?: ReturnType<NativeEngine['createCancelToken']>,
  ) {
    return engine.encodeImage(picture.rgb, picture.width, picture.height, cancel);
  }

  before(async () => {
    bundleDir = await exportTinyBundle();
    workDir = mkdtempSync(path.join(tmpdir(), 'sam3-batching-'));
    alone = await addon.Engine.load({ bundleDir, device: 'cpu' });
    // A long window: the calls of one test arrive well within it, so what forms a batch is
    // decided by the batch size alone.
    batched = await addon.Engine.load({
      bundleDir,
      device: 'cpu',
      imageBatch: { maxSize: 4, waitMs: 1000 },
    });
    text = await textOf(alone);
    batchedText = await textOf(batched);
  });

  after(async () => {
    await alone?.close();
    await batched?.close();
    rmSync(workDir, { recursive: true, force: true });
  });

  test('four concurrent images are one encoder call, each equal to the image alone', async () => {
    const tasksBefore = batched.tasksRun();
    const embeddings = await Promise.all(PICTURES.map((picture) => encode(batched, picture)));
    assert.deepEqual(batched.imageBatchCounts(), { '4': 1 });
    assert.equal(batched.tasksRun() - tasksBefore, 4, 'each image counts as a task');
    for (const [i, picture] of PICTURES.entries()) {
      const embedding = embeddings[i];
      assert.deepEqual([embedding.width, embedding.height], [picture.width, picture.height]);
      const reference = await encode(alone, picture);
      assert.equal(embedding.byteSize, reference.byteSize, 'each owns only its own rows');
      assertSameAnswers(
        await answers(batched, embedding, batchedText),
        await answers(alone, reference, text),
        picture,
      );
    }
  });

  test('a cancelled image is dropped and a bad one fails alone; the rest share a call', async () => {
    const before = batched.imageBatchCounts();
    const tasksBefore = batched.tasksRun();
    // Cancelled before it is queued: a token cancelled after the fourth call could lose the
    // race with the executor, which takes a full batch at once. It is still checked at the
    // batch, not at the call.
    const token = batched.createCancelToken();
    token.cancel();
    const calls = [
      encode(batched, PICTURES[0]),
      encode(batched, PICTURES[1], token),
      // 3 bytes short of 64 x 64 pixels.
      batched.encodeImage(PICTURES[3].rgb.subarray(3), 64, 64),
      encode(batched, PICTURES[2]),
    ];
    const settled = await Promise.allSettled(calls);
    assert.equal(settled[0].status, 'fulfilled');
    assert.equal(settled[3].status, 'fulfilled');
    await assert.rejects(calls[1], expectCode('CANCELLED', /cancelled before it ran/));
    await assert.rejects(
      calls[2],
      expectCode('BAD_INPUT', /expected 12288 \(width \* height \* 3\)/),
    );
    assert.deepEqual(batched.imageBatchCounts(), { ...before, '2': (before['2'] ?? 0) + 1 });
    assert.equal(batched.tasksRun() - tasksBefore, 3, 'the cancelled call did not run');
  });

  test('a batch out of device memory is encoded again one image at a time', async () => {
    const before = batched.imageBatchCounts();
    // The batch call fails, then the first image alone; the other three succeed alone.
    batched.injectDeviceOutOfMemory(2);
    const calls = PICTURES.map((picture) => encode(batched, picture));
    await assert.rejects(calls[0], expectCode('DEVICE_OOM', /injected/));
    const rest = await Promise.all(calls.slice(1));
    assert.deepEqual(batched.imageBatchCounts(), { ...before, '1': (before['1'] ?? 0) + 3 });
    for (const [i, embedding] of rest.entries()) {
      const picture = PICTURES[i + 1];
      assertSameAnswers(
        await answers(batched, embedding, batchedText),
        await answers(alone, await encode(alone, picture), text),
        picture,
      );
    }
  });

  test('a lone image waits for the window, then runs by itself', async () => {
    const windowMs = 150;
    const engine = await addon.Engine.load({
      bundleDir,
      device: 'cpu',
      imageBatch: { maxSize: 4, waitMs: windowMs },
    });
    try {
      const started = performance.now();
      const embedding = await encode(engine, PICTURES[1]);
      assert.ok(performance.now() - started >= windowMs - 1, 'it waited for company');
      assert.equal(embedding.width, PICTURES[1].width);
      assert.deepEqual(engine.imageBatchCounts(), { '1': 1 });
    } finally {
      await engine.close();
    }
  });

  test('close runs the images waiting for a batch; later ones reject ENGINE_CLOSED', async () => {
    const engine = await addon.Engine.load({
      bundleDir,
      device: 'cpu',
      imageBatch: { maxSize: 4, waitMs: 1000 },
    });
    const waiting = [encode(engine, PICTURES[0]), encode(engine, PICTURES[1])];
    const closed = engine.close();
    const embeddings = await Promise.all(waiting);
    assert.deepEqual(
      embeddings.map((e) => e.width),
      [PICTURES[0].width, PICTURES[1].width],
    );
    await closed;
    await assert.rejects(encode(engine, PICTURES[2]), expectCode('ENGINE_CLOSED'));
    assert.deepEqual(engine.imageBatchCounts(), { '2': 1 });
  });

  test('batching limits and bundles that cannot batch are refused at load', async () => {
    for (const [imageBatch, message] of [
      [{ maxSize: 65, waitMs: 2 }, /^image batch size must be between 1 and 64 \(got 65\)$/],
      [{ maxSize: 0, waitMs: 2 }, /^image batch size must be between 1 and 64 \(got 0\)$/],
      [{ maxSize: 4, waitMs: 1001 }, /^image batch wait must be between 0 and 1000 ms/],
    ] as const) {
      await assert.rejects(
        addon.Engine.load({ bundleDir, device: 'cpu', imageBatch }),
        expectCode('BAD_INPUT', message),
      );
    }
    await assert.rejects(
      addon.Engine.load({ bundleDir, device: 'cpu', imageBatch: { maxSize: '4' } as never }),
      expectCode('BAD_INPUT', /^imageBatch\.maxSize must be a number$/),
    );

    // A bundle exported before version 5: its vision encoder says batch 1.
    const single = await singleImageBundle(path.join(workDir, 'single-image'));
    await assert.rejects(
      addon.Engine.load({
        bundleDir: single,
        device: 'cpu',
        imageBatch: { maxSize: 2, waitMs: 2 },
      }),
      expectCode('MODEL_LOAD', /image batching needs a bundle whose vision encoder takes a batch/),
    );
    // Without batching the same bundle serves images.
    const engine = await addon.Engine.load({ bundleDir: single, device: 'cpu' });
    try {
      assert.equal((await encode(engine, PICTURES[0])).width, PICTURES[0].width);
      assert.deepEqual(engine.imageBatchCounts(), { '1': 1 });
    } finally {
      await engine.close();
    }
  });
});
