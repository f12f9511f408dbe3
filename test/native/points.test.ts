/**
 * Interactive (click/box) segmentation through the native engine's point decoders on a real
 * tiny random-weight bundle: the returned instance's contract (score, mask, box = the mask's
 * bounds), the SAM decoder rule, parity with transformers' Sam3TrackerModel (tools/reference.py)
 * on real photos, input validation, and releasing embeddings before garbage collection.
 */
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { decodeImageBytes } from '../../src/engine/image-decoder';
import { loadAddon } from '../../src/native/addon';
import type {
  NativeEngine,
  NativeImageEmbedding,
  NativeTextEmbedding,
  PointInstance,
  PointQuery,
} from '../../src/native/types';
import {
  decodedPixelsPng,
  exportRandomBundle,
  runReference,
  tempDir,
  writePhotos,
  assertSameInstances,
  type ReferenceCase,
  type ReferenceInstances,
  type ReferencePrompt,
} from '../helpers/reference';
import { collectGarbage, expectCode, maskBox } from '../helpers/native';
import { decodeRle } from '../helpers/rle';

/** Deterministic RGB noise over a horizontal gradient, width * height * 3 bytes. */
function noiseImage(width: number, height: number, seed = 1): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  let state = seed;
  for (let i = 0; i < rgb.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const gradient = ((Math.floor(i / 3) % width) * 255) / width;
    rgb[i] = (gradient + (state >>> 24)) % 256;
  }
  return rgb;
}

/** A query from plain numbers: clicks as [x, y] pairs (normalized), an optional cx, cy, w, h. */
function pointQuery(clicks: number[][], labels: number[], box: number[] = []): PointQuery {
  return {
    points: new Float32Array(clicks.flat()),
    pointLabels: new Int32Array(labels),
    box: new Float32Array(box),
  };
}

/**
 * The query as tools/reference.py reads it: the float32 values the engine receives, so both
 * sides start from the same numbers.
 */
function referencePrompt(query: PointQuery): ReferencePrompt {
  const points: number[][] = [];
  for (let i = 0; i < query.points.length; i += 2) {
    points.push([query.points[i], query.points[i + 1]]);
  }
  const prompt: ReferencePrompt = {
    points,
    point_labels: Array.from(query.pointLabels),
  };
  if (query.box.length > 0) prompt.box = Array.from(query.box);
  return prompt;
}

function decodedMask(instance: PointInstance, height: number, width: number): Uint8Array {
  const mask = decodeRle({ size: [height, width], counts: instance.mask });
  assert.equal(mask.length, height * width);
  return mask;
}

describe('segmentPoints on a tiny random bundle', () => {
  const addon = loadAddon();
  let work: Awaited<ReturnType<typeof tempDir>>;
  let bundleDir = '';
  let engine: NativeEngine;

  before(async () => {
    work = await tempDir('sam3-points-');
    bundleDir = path.join(work.dir, 'bundle');
    await exportRandomBundle(bundleDir, 'tiny', 0);
    engine = await addon.Engine.load({ bundleDir, device: 'cpu' });
  });

  after(async () => {
    await engine?.close();
    await work?.cleanup();
  });

  async function textEmbedding(): Promise<NativeTextEmbedding> {
    const { contextLength: L, bosId, eosId, padId } = engine.info;
    const ids = new Int32Array(L).fill(padId);
    const mask = new Int32Array(L);
    [bosId, 320, eosId].forEach((id, i) => {
      ids[i] = id;
      mask[i] = 1;
    });
    const [text] = await engine.encodeText(ids, mask, 1);
    return text;
  }

  test('each query gives one instance, in order, with its mask bounds as the box', async () => {
    // Small images: the random decoder's speckled masks then miss some border rows or columns,
    // so the boxes are not all the whole image (and foreground runs wrap across columns).
    const sizes = [
      [1, 5],
      [2, 3],
      [6, 3],
      [4, 6],
      [97, 61],
    ];
    const queries = [
      pointQuery([[0.5, 0.5]], [1]),
      pointQuery(
        [
          [0.2, 0.3],
          [0.8, 0.8],
        ],
        [1, 0],
      ),
      pointQuery([[0.4, 0.6]], [1], [0.4, 0.55, 0.5, 0.6]),
      pointQuery([], [], [0.5, 0.5, 0.25, 0.5]),
    ];
    let partialBoxes = 0;
    for (const [width, height] of sizes) {
      const image = await engine.encodeImage(noiseImage(width, height), width, height);
      const instances = await engine.segmentPoints(image, queries);
      assert.equal(instances.length, queries.length);
      for (const [index, instance] of instances.entries()) {
        const where = `${width}x${height} query ${index}`;
        assert.equal(typeof instance.score, 'number');
        assert.ok(instance.score >= 0 && instance.score <= 1, `${where}: score ${instance.score}`);
        assert.ok(instance.box instanceof Float32Array && instance.box.length === 4, where);
        const mask = decodedMask(instance, height, width);
        assert.deepEqual(Array.from(instance.box), maskBox(mask, height, width), where);
        if (instance.box[2] < 1 || instance.box[3] < 1) partialBoxes += 1;
      }
      // Query order: each result is the one that query gives alone.
      const [alone] = await engine.segmentPoints(image, [queries[2]]);
      assert.deepEqual(alone, instances[2]);
    }
    assert.ok(partialBoxes > 0, 'some masks do not span the whole image');
    const times = engine.lastStageTimes();
    for (const stage of ['point_decoder', 'postprocess', 'rle']) {
      assert.equal(typeof times[stage], 'number', stage);
    }
    assert.ok(times.point_decoder > 0);
  });

  test('a manifest without valid point decoders rejects with MODEL_LOAD naming the field', async () => {
    interface Spec {
      name: string;
      shape: (number | string)[];
      dtype: string;
    }
    type Modules = Record<string, { inputs: Spec[]; outputs: Spec[] }>;
    const manifest = JSON.parse(await readFile(path.join(bundleDir, 'manifest.json'), 'utf8')) as {
      modules: Modules;
    };
    const broken = path.join(work.dir, 'broken-points');
    await mkdir(broken);
    // The manifest is validated before any module file is opened.
    async function expectRefused(modules: Modules, field: RegExp): Promise<void> {
      await writeFile(path.join(broken, 'manifest.json'), JSON.stringify({ ...manifest, modules }));
      await assert.rejects(
        addon.Engine.load({ bundleDir: broken, device: 'cpu' }),
        expectCode('MODEL_LOAD', field),
      );
    }
    const withSpec = (module: string, role: 'inputs' | 'outputs', spec: Spec): Modules => {
      const copy = structuredClone(manifest.modules);
      copy[module][role] = copy[module][role].map((s) => (s.name === spec.name ? spec : s));
      return copy;
    };

    const { point_decoder: _dropped, ...withoutDecoder } = manifest.modules;
    assert.ok(_dropped !== undefined);
    await expectRefused(withoutDecoder, /modules\.point_decoder: missing/);
    await expectRefused(
      withSpec('point_decoder_multimask', 'outputs', {
        name: 'iou_scores',
        shape: ['B', 1, 1],
        dtype: 'float32',
      }),
      /modules\.point_decoder_multimask\.outputs: iou_scores dimension 2 is 1, expected 3/,
    );
    await expectRefused(
      withSpec('point_decoder', 'inputs', {
        name: 'point_labels',
        shape: ['B', 1, 'N'],
        dtype: 'float32',
      }),
      /modules\.point_decoder\.inputs: point_labels must be int64/,
    );
    await expectRefused(
      withSpec('point_decoder', 'inputs', {
        name: 'tracker_fpn_2',
        shape: [1, 3, 16, 16],
        dtype: 'float32',
      }),
      /modules\.point_decoder\.inputs: tracker_fpn_2 dimension 1/,
    );
  });

  test('no queries give no instances', async () => {
    const image = await engine.encodeImage(noiseImage(8, 8), 8, 8);
    assert.deepEqual(await engine.segmentPoints(image, []), []);
  });

  describe('parity with transformers (tools/reference.py) on real photos', () => {
    // all_scores: the predicted IoU of every mask the decoder made (3 for an ambiguous click).
    type ClickReference = ReferenceInstances;
    const click = pointQuery([[0.31, 0.42]], [1]);
    const queries = [
      click,
      // The same click plus a far negative one: the single-mask decoder.
      pointQuery(
        [
          [0.31, 0.42],
          [0.9, 0.92],
        ],
        [1, 0],
      ),
      pointQuery([[0.31, 0.42]], [1], [0.35, 0.45, 0.3, 0.4]),
      pointQuery([[0.7, 0.2]], [1]),
    ];
    const photos: { pixels: string; width: number; height: number }[] = [];
    let expected: ClickReference[][] = [];

    before(async () => {
      const all = await writePhotos(work.dir);
      for (const name of ['astronaut', 'chelsea']) {
        const photo = all.find((p) => p.name === name);
        assert.ok(photo !== undefined, name);
        const pixels = await decodedPixelsPng(photo.file, path.join(work.dir, `${name}.ref.png`));
        photos.push({ pixels, width: photo.width, height: photo.height });
      }
      const cases: ReferenceCase[] = photos.map((photo) => ({
        image: photo.pixels,
        threshold: 0.5,
        prompts: queries.map(referencePrompt),
      }));
      const output = await runReference(bundleDir, cases);
      expected = output.results.map((result) => result.prompts);
    });

    test('masks IoU >= 0.99, scores and boxes within 1e-4, the SAM decoder rule', async () => {
      assert.equal(expected.length, photos.length);
      for (const [p, photo] of photos.entries()) {
        const decoded = await decodeImageBytes(await readFile(photo.pixels), {
          maxPixels: 100_000_000,
        });
        assert.deepEqual([decoded.width, decoded.height], [photo.width, photo.height]);
        const image = await engine.encodeImage(decoded.data, decoded.width, decoded.height);
        const instances = await engine.segmentPoints(image, queries);
        for (const [q, instance] of instances.entries()) {
          const where = `photo ${p} query ${q}`;
          const reference = expected[p][q];
          // One click, no box: three candidate masks, the best predicted IoU wins.
          const candidates = queries[q].pointLabels.length === 1 && !queries[q].box.length ? 3 : 1;
          assert.equal(reference.all_scores.length, candidates, where);
          assert.equal(reference.scores[0], Math.max(...reference.all_scores), where);

          const actual = {
            masks: [
              { size: [photo.height, photo.width] as [number, number], counts: instance.mask },
            ],
            boxes: [Array.from(instance.box)],
            scores: [instance.score],
          };
          assertSameInstances(where, actual, reference);
        }
        // The single click went through the multimask decoder: adding a negative click (the
        // single-mask decoder) gives another prediction.
        assert.notEqual(instances[0].score, instances[1].score);
      }
    });
  });

  test('bad inputs reject with BAD_INPUT and the engine keeps working', async () => {
    const image = await engine.encodeImage(noiseImage(16, 12), 16, 12);
    const tooMany = Array.from({ length: 65 }, (_, i) => [i / 65, 0.5]);
    const badQueries: [PointQuery, RegExp][] = [
      [pointQuery([], [1]), /2 numbers \(x, y\) per point label/],
      [{ ...pointQuery([[0.5, 0.5]], [1]), points: new Float32Array(3) }, /2 numbers/],
      [pointQuery([[0.5, 0.5]], [2]), /point labels must be 1 \(positive\) or 0/],
      [pointQuery([[0.5, 0.5]], [-1]), /point labels/],
      [pointQuery([[NaN, 0.5]], [1]), /point coordinates must be finite/],
      [pointQuery([[0.5, Infinity]], [1]), /point coordinates must be finite/],
      [pointQuery([[0.5, 0.5]], [1], [0.5, 0.5, 0.2]), /box must be empty or 4 numbers/],
      [pointQuery([], [], [0.5, NaN, 0.2, 0.2]), /box coordinates must be finite/],
      [pointQuery([], []), /at least one click or a box/],
      [pointQuery(tooMany, new Array<number>(65).fill(1)), /at most 64 clicks/],
    ];
    for (const [query, message] of badQueries) {
      await assert.rejects(
        engine.segmentPoints(image, [pointQuery([[0.5, 0.5]], [1]), query]),
        expectCode('BAD_INPUT', message),
      );
    }
    // Argument types, checked by the binding.
    const typed = pointQuery([[0.5, 0.5]], [1]);
    const badArguments: [unknown, unknown][] = [
      [image, 'clicks'],
      [image, [null]],
      [image, [{ ...typed, points: [0.5, 0.5] }]],
      [image, [{ ...typed, pointLabels: new Float32Array([1]) }]],
      [image, [{ points: typed.points, pointLabels: typed.pointLabels }]],
      [{ width: 16, height: 12 }, [typed]],
      [await textEmbedding(), [typed]],
    ];
    for (const [badImage, badQueriesArgument] of badArguments) {
      await assert.rejects(
        engine.segmentPoints(
          badImage as NativeImageEmbedding,
          badQueriesArgument as unknown as PointQuery[],
        ),
        expectCode('BAD_INPUT'),
      );
    }
    const limit = Array.from({ length: 64 }, (_, i) => [i / 64, 0.5]);
    const [atLimit, plain] = await engine.segmentPoints(image, [
      pointQuery(limit, new Array<number>(64).fill(1)),
      typed,
    ]);
    assert.ok(atLimit.mask.length > 0 && plain.mask.length > 0);
  });

  test('release() frees an embedding at once; a released one is refused', async () => {
    const image = await engine.encodeImage(noiseImage(32, 24), 32, 24);
    const text = await textEmbedding();
    await collectGarbage();
    const held = addon.runtimeInfo().liveEmbeddingBytes;

    image.release();
    assert.equal(addon.runtimeInfo().liveEmbeddingBytes, held - image.byteSize);
    text.release();
    assert.equal(addon.runtimeInfo().liveEmbeddingBytes, held - image.byteSize - text.byteSize);
    assert.ok(image.byteSize > 0 && text.byteSize > 0, 'byteSize stays readable');
    image.release();
    text.release();
    assert.equal(addon.runtimeInfo().liveEmbeddingBytes, held - image.byteSize - text.byteSize);

    const released = /embedding was released/;
    await assert.rejects(
      engine.segmentPoints(image, [pointQuery([[0.5, 0.5]], [1])]),
      expectCode('BAD_INPUT', released),
    );
    await assert.rejects(
      engine.detect(image, [], { threshold: 0.5 }),
      expectCode('BAD_INPUT', released),
    );
    const live = await engine.encodeImage(noiseImage(32, 24), 32, 24);
    await assert.rejects(
      engine.detect(live, [{ text, boxes: new Float32Array(0), boxLabels: new Int32Array(0) }], {
        threshold: 0.5,
      }),
      expectCode('BAD_INPUT', released),
    );
  });

  test('a call queued before release() completes; the memory is freed when it ends', async () => {
    const busy = await engine.encodeImage(noiseImage(20, 20, 3), 20, 20);
    const image = await engine.encodeImage(noiseImage(40, 30, 5), 40, 30);
    const text = await textEmbedding();
    await collectGarbage();
    const held = addon.runtimeInfo().liveEmbeddingBytes;
    const click = pointQuery([[0.5, 0.5]], [1]);
    const [expected] = await engine.segmentPoints(image, [click]);

    // The executor is busy with the first call while the second and third wait in its queue.
    const first = engine.segmentPoints(busy, [click, click]);
    const queued = engine.segmentPoints(image, [click]);
    const queuedDetect = engine.detect(
      image,
      [{ text, boxes: new Float32Array(0), boxLabels: new Int32Array(0) }],
      { threshold: 0 },
    );
    image.release();
    text.release();
    // The queued calls still hold the tensors.
    assert.equal(addon.runtimeInfo().liveEmbeddingBytes, held);
    await first;
    assert.deepEqual(await queued, [expected]);
    const [detected] = await queuedDetect;
    assert.equal(detected.scores.length, engine.info.numQueries);
    // Each call lets go of its inputs before its promise settles.
    assert.equal(addon.runtimeInfo().liveEmbeddingBytes, held - image.byteSize - text.byteSize);
  });
});
