/**
 * The native engine on a real tiny random-weight bundle exported by tools/export_sam3.py:
 * loading, the encode/detect pipeline's contracts, error codes, and closing.
 * Numeric parity with the Python reference is proven elsewhere (test/parity).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { BundleManifest } from '../../src/engine/bundle-manifest';
import { loadAddon } from '../../src/native/addon';
import { NativeError } from '../../src/native/errors';
import type {
  ConceptInstances,
  ConceptQuery,
  ImageMapName,
  NativeEngine,
  NativeTextEmbedding,
} from '../../src/native/types';
import { collectGarbage, expectCode } from '../helpers/native';
import { repoRoot, venvPython } from '../helpers/repo';

const root = repoRoot();
const python = venvPython();

interface TensorSpec {
  name: string;
  shape: (number | string)[];
  dtype: string;
}

/** The manifest fields these tests read beyond those the server validates. */
interface Manifest extends BundleManifest {
  patch_size: number;
  feature_size: number;
  mask_size: number;
  hidden_size: number;
  versions: { torch: string; transformers: string };
  modules: Record<string, { file: string; inputs: TensorSpec[]; outputs: TensorSpec[] }>;
}

const BYTES_PER_ELEMENT: Record<string, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int64: 8,
};

function specBytes(spec: TensorSpec, symbols: Record<string, number>): number {
  const elements = spec.shape.reduce<number>(
    (product, dim) => product * (typeof dim === 'number' ? dim : symbols[dim]),
    1,
  );
  return elements * BYTES_PER_ELEMENT[spec.dtype];
}

/** Deterministic RGB noise with some structure (gradients), width * height * 3 bytes. */
function image(width: number, height: number, seed = 1): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  let state = seed;
  for (let i = 0; i < rgb.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const pixel = Math.floor(i / 3);
    const gradient = ((pixel % width) * 255) / width;
    rgb[i] = (gradient + (state >>> 24)) % 256;
  }
  return rgb;
}

/** Decodes COCO RLE counts with pycocotools; returns the foreground pixel count of each. */
function decodedAreas(masks: string[], height: number, width: number, workDir: string): number[] {
  const file = path.join(workDir, `rles-${masks.length}-${height}x${width}.json`);
  writeFileSync(file, JSON.stringify(masks.map((counts) => ({ size: [height, width], counts }))));
  const output = execFileSync(
    python,
    [path.join(root, 'tools', 'rle_reference.py'), 'decode', file],
    {
      encoding: 'utf8',
      maxBuffer: 256 << 20,
    },
  );
  return (JSON.parse(output) as string[]).map((encoded) => {
    const bytes = Buffer.from(encoded, 'base64');
    assert.equal(bytes.length, height * width, 'decoded mask size');
    return bytes.reduce((sum, v) => sum + v, 0);
  });
}

describe('native engine on a tiny random bundle', () => {
  const addon = loadAddon();
  let workDir = '';
  let bundleDir = '';
  let manifest: Manifest;
  let engine: NativeEngine;
  let joinedDir: string;

  /** Bytes of one batch row of each output of a module. */
  function outputBytes(module: string): number {
    return manifest.modules[module].outputs.reduce(
      (sum, spec) => sum + specBytes(spec, { B: 1 }),
      0,
    );
  }

  /** Token rows for prompts given as id lists: bos ... eos, padded with the pad id. */
  function tokens(prompts: number[][]): { ids: Int32Array; mask: Int32Array } {
    const L = manifest.text.context_length;
    const ids = new Int32Array(prompts.length * L).fill(manifest.text.pad_id);
    const mask = new Int32Array(prompts.length * L);
    prompts.forEach((prompt, row) => {
      const full = [manifest.text.bos_id, ...prompt, manifest.text.eos_id];
      full.forEach((id, i) => {
        ids[row * L + i] = id;
        mask[row * L + i] = 1;
      });
    });
    return { ids, mask };
  }

  async function textEmbeddings(prompts: number[][]): Promise<NativeTextEmbedding[]> {
    const { ids, mask } = tokens(prompts);
    return engine.encodeText(ids, mask, prompts.length);
  }

  function textOnly(text: NativeTextEmbedding): ConceptQuery {
    return { text, boxes: new Float32Array(0), boxLabels: new Int32Array(0) };
  }

  before(async () => {
    workDir = mkdtempSync(path.join(tmpdir(), 'sam3-native-'));
    bundleDir = path.join(workDir, 'bundle');
    execFileSync(
      python,
      [
        path.join(root, 'tools', 'export_sam3.py'),
        '--tiny-random',
        '--seed',
        '0',
        '--out',
        bundleDir,
      ],
      { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], timeout: 600_000 },
    );
    manifest = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as Manifest;
    engine = await addon.Engine.load({ bundleDir, device: 'cpu' });
    // The same graphs in the format-3 layout: one vision encoder module.
    joinedDir = path.join(workDir, 'format-3-bundle');
    execFileSync(
      python,
      [path.join(root, 'tools', 'join_vision_encoder.py'), bundleDir, joinedDir],
      {
        cwd: root,
        stdio: ['ignore', 'ignore', 'pipe'],
        timeout: 600_000,
      },
    );
  });

  after(async () => {
    await engine?.close();
    rmSync(workDir, { recursive: true, force: true });
  });

  test('info mirrors the manifest and the device is normalized', () => {
    assert.deepEqual(
      { ...engine.info },
      {
        modelId: manifest.model.id,
        randomWeights: manifest.model.random_weights,
        seed: manifest.model.seed,
        checksum: manifest.model.checksum,
        formatVersion: manifest.format_version,
        dtype: manifest.dtype,
        resolution: manifest.resolution,
        patchSize: manifest.patch_size,
        featureSize: manifest.feature_size,
        maskSize: manifest.mask_size,
        hiddenSize: manifest.hidden_size,
        numQueries: manifest.num_queries,
        contextLength: manifest.text.context_length,
        vocabSize: manifest.text.vocab_size,
        bosId: manifest.text.bos_id,
        eosId: manifest.text.eos_id,
        padId: manifest.text.pad_id,
        vocabFile: manifest.text.vocab_file,
        torchVersion: manifest.versions.torch,
        transformersVersion: manifest.versions.transformers,
        videoAvailable: true, // the exporter writes the tracker modules
        conceptAvailable: true, // and concept tracking's (format 3)
        visionParts: true, // and the vision encoder as trunk and necks (format 4)
        compiled: false, // loaded without `compiled` (test/native/compiled.test.ts)
      },
    );
    assert.ok(Object.isFrozen(engine.info));
    assert.equal(engine.device, 'cpu');
  });

  test('runtimeInfo reports the linked LibTorch', () => {
    const runtime = addon.runtimeInfo();
    assert.equal(runtime.torchVersion, manifest.versions.torch.split('+')[0]);
    assert.equal(typeof runtime.cudaAvailable, 'boolean');
    assert.equal(runtime.cudaDeviceCount >= 0, true);
  });

  test('encodeImage holds exactly the bytes of the maps asked for', async () => {
    const rgb = image(97, 61);
    const embedding = await engine.encodeImage(rgb, 97, 61);
    assert.equal(embedding.width, 97);
    assert.equal(embedding.height, 61);
    assert.deepEqual(embedding.maps, ['detector', 'tracker']);
    assert.ok(Object.isFrozen(embedding.maps));
    assert.equal(embedding.byteSize, outputBytes('detector_neck') + outputBytes('tracker_neck'));
    const times = engine.lastStageTimes();
    assert.ok(times.preprocess >= 0 && times.vision_encoder > 0, JSON.stringify(times));

    const asked: [ImageMapName[], ImageMapName[], number][] = [
      [['trunk'], ['trunk'], outputBytes('vision_trunk')],
      [['tracker'], ['tracker'], outputBytes('tracker_neck')],
      [
        ['trunk', 'detector'],
        ['detector', 'trunk'],
        outputBytes('vision_trunk') + outputBytes('detector_neck'),
      ],
    ];
    for (const [maps, held, bytes] of asked) {
      const part = await engine.encodeImage(rgb, 97, 61, undefined, maps);
      assert.deepEqual([part.maps, part.byteSize], [held, bytes], maps.join());
    }
    await assert.rejects(engine.encodeImage(rgb, 97, 61, undefined, []), expectCode('BAD_INPUT'));
    await assert.rejects(
      engine.encodeImage(rgb, 97, 61, undefined, ['neck' as ImageMapName]),
      /maps\[0\] must be "detector", "tracker" or "trunk"/,
    );
  });

  test('maps derived from the trunk output equal maps encoded with the pixels', async () => {
    const rgb = image(64, 48, 5);
    const whole = await engine.encodeImage(rgb, 64, 48);
    const trunk = await engine.encodeImage(rgb, 64, 48, undefined, ['trunk']);
    const detector = await engine.deriveImage(trunk, ['detector']);
    const tracker = await engine.deriveImage(trunk, ['tracker']);
    assert.ok(engine.lastStageTimes().vision_neck > 0, JSON.stringify(engine.lastStageTimes()));
    assert.deepEqual(
      [detector.maps, detector.byteSize],
      [['detector'], outputBytes('detector_neck')],
    );
    assert.deepEqual([tracker.maps, tracker.byteSize], [['tracker'], outputBytes('tracker_neck')]);
    assert.equal(detector.width, 64);
    assert.equal(detector.height, 48);

    const [text] = await textEmbeddings([[320, 321]]);
    const detected = await engine.detect(detector, [textOnly(text)], { threshold: 0 });
    assert.equal(detected[0].scores.length, manifest.num_queries);
    assert.deepEqual(detected, await engine.detect(whole, [textOnly(text)], { threshold: 0 }));
    const click = {
      points: new Float32Array([0.4, 0.6]),
      pointLabels: new Int32Array([1]),
      box: new Float32Array(0),
    };
    assert.deepEqual(
      await engine.segmentPoints(tracker, [click]),
      await engine.segmentPoints(whole, [click]),
    );

    // Each call needs its own maps; a neck's maps cannot make the other's.
    await assert.rejects(engine.segmentPoints(detector, [click]), /holds no tracker maps/);
    await assert.rejects(
      engine.detect(tracker, [textOnly(text)], { threshold: 0 }),
      /holds no detector maps/,
    );
    await assert.rejects(engine.deriveImage(detector, ['tracker']), /encode the image again/);
    await assert.rejects(engine.deriveImage(trunk, []), expectCode('BAD_INPUT'));
    // Held maps are shared, not computed again: same results, the trunk kept when asked.
    const both = await engine.deriveImage(detector, ['detector']);
    assert.deepEqual(both.maps, ['detector']);
    const kept = await engine.deriveImage(trunk, ['tracker', 'trunk']);
    assert.deepEqual(
      [kept.maps, kept.byteSize],
      [['tracker', 'trunk'], outputBytes('tracker_neck') + outputBytes('vision_trunk')],
    );
  });

  test('a format-3 bundle (one vision encoder) gives the same results', async () => {
    const joined = await addon.Engine.load({ bundleDir: joinedDir, device: 'cpu' });
    try {
      assert.deepEqual([joined.info.formatVersion, joined.info.visionParts], [3, false]);
      const rgb = image(50, 70, 7);
      // Its one module computes both necks' maps, whatever is asked; there is no trunk output.
      const older = await joined.encodeImage(rgb, 50, 70, undefined, ['trunk']);
      assert.deepEqual(older.maps, ['detector', 'tracker']);
      assert.equal(older.byteSize, outputBytes('detector_neck') + outputBytes('tracker_neck'));
      await assert.rejects(joined.deriveImage(older, ['trunk']), /encode the image again/);
      assert.deepEqual((await joined.deriveImage(older, ['tracker'])).maps, ['tracker']);

      const newer = await engine.encodeImage(rgb, 50, 70);
      const L = manifest.text.context_length;
      const { ids, mask } = tokens([[330, 331]]);
      const [oldText] = await joined.encodeText(ids, mask, 1);
      const [newText] = await engine.encodeText(ids.slice(0, L), mask.slice(0, L), 1);
      assert.deepEqual(
        await joined.detect(older, [textOnly(oldText)], { threshold: 0 }),
        await engine.detect(newer, [textOnly(newText)], { threshold: 0 }),
      );
      const click = {
        points: new Float32Array([0.5, 0.3, 0.2, 0.8]),
        pointLabels: new Int32Array([1, 0]),
        box: new Float32Array(0),
      };
      assert.deepEqual(
        await joined.segmentPoints(older, [click]),
        await engine.segmentPoints(newer, [click]),
      );
    } finally {
      await joined.close();
    }
  });

  test('encodeText returns one embedding per row, each owning one row of features', async () => {
    const embeddings = await textEmbeddings([[320], [321, 322], [323, 324, 325]]);
    assert.equal(embeddings.length, 3);
    const L = manifest.text.context_length;
    const features = manifest.modules.text_encoder.outputs[0];
    const rowBytes = specBytes(features, { B: 1 }) + L * 8; // + the int64 attention mask row
    for (const embedding of embeddings) assert.equal(embedding.byteSize, rowBytes);
  });

  test('detect returns every instance at threshold 0, sorted, with decodable masks', async () => {
    const width = 83;
    const height = 57;
    const embedding = await engine.encodeImage(image(width, height, 7), width, height);
    const [cat, dog, car] = await textEmbeddings([[2368], [1929], [1615]]);
    const queries: ConceptQuery[] = [
      textOnly(cat),
      { text: dog, boxes: new Float32Array([0.5, 0.5, 0.4, 0.3]), boxLabels: new Int32Array([1]) },
      {
        text: car,
        boxes: new Float32Array([0.3, 0.4, 0.2, 0.2, 0.7, 0.6, 0.3, 0.5]),
        boxLabels: new Int32Array([1, 0]),
      },
    ];
    const results = await engine.detect(embedding, queries, { threshold: 0 });
    assert.equal(results.length, 3);
    for (const result of results) {
      const count = manifest.num_queries;
      assert.equal(result.scores.length, count);
      assert.equal(result.boxes.length, 4 * count);
      assert.equal(result.masks.length, count);
      result.scores.forEach((score, i) => {
        assert.ok(score > 0 && score < 1, `score ${score}`);
        if (i > 0) assert.ok(result.scores[i - 1] >= score, 'sorted by score, highest first');
      });
      assert.ok(result.boxes.every((v) => Number.isFinite(v)));
      const areas = decodedAreas(result.masks, height, width, workDir);
      assert.equal(areas.length, count);
    }
    // Different prompts and boxes give different scores.
    assert.notDeepEqual(results[0].scores, results[1].scores);
    const times = engine.lastStageTimes();
    for (const stage of ['detector', 'postprocess', 'rle']) {
      assert.equal(typeof times[stage], 'number', stage);
    }
  });

  test('a threshold keeps exactly the instances scoring above it, in the same order', async () => {
    const embedding = await engine.encodeImage(image(64, 48, 3), 64, 48);
    const [text] = await textEmbeddings([[2368, 530]]);
    const [all] = await engine.detect(embedding, [textOnly(text)], { threshold: 0 });
    const threshold = all.scores[Math.floor(all.scores.length / 2)];
    const [kept] = await engine.detect(embedding, [textOnly(text)], { threshold });
    const count = all.scores.findIndex((score) => !(score > threshold));
    assert.ok(count > 0 && count < all.scores.length, 'the threshold splits the instances');
    const prefix = (r: ConceptInstances, n: number) => ({
      scores: Array.from(r.scores.subarray(0, n)),
      boxes: Array.from(r.boxes.subarray(0, 4 * n)),
      masks: r.masks.slice(0, n),
    });
    assert.deepEqual(prefix(kept, kept.scores.length), prefix(all, count));
    const [none] = await engine.detect(embedding, [textOnly(text)], { threshold: 1 });
    assert.deepEqual(
      { scores: none.scores.length, boxes: none.boxes.length, masks: none.masks },
      { scores: 0, boxes: 0, masks: [] },
    );
  });

  test('more queries than one detector call holds come back in order, as if run alone', async () => {
    const embedding = await engine.encodeImage(image(40, 30, 11), 40, 30);
    const prompts = Array.from({ length: 20 }, (_, i) => [400 + i]);
    const texts = await textEmbeddings(prompts);
    const batched = await engine.detect(embedding, texts.map(textOnly), { threshold: 0 });
    assert.equal(batched.length, 20);
    for (const index of [0, 15, 16, 19]) {
      const [alone] = await engine.detect(embedding, [textOnly(texts[index])], { threshold: 0 });
      assert.equal(alone.scores.length, batched[index].scores.length);
      alone.scores.forEach((score, i) => {
        assert.ok(Math.abs(score - batched[index].scores[i]) < 1e-5, `query ${index} score ${i}`);
      });
    }
  });

  test('no queries give no results without running the detector', async () => {
    const embedding = await engine.encodeImage(image(8, 8), 8, 8);
    assert.deepEqual(await engine.detect(embedding, [], { threshold: 0.5 }), []);
  });

  test('bad inputs reject with BAD_INPUT and the engine keeps working', async () => {
    const L = manifest.text.context_length;
    await assert.rejects(engine.encodeImage(image(10, 10), 10, 11), expectCode('BAD_INPUT'));
    await assert.rejects(engine.encodeImage(Buffer.alloc(0), 0, 0), expectCode('BAD_INPUT'));
    await assert.rejects(engine.encodeImage(image(4, 4), 4.5, 4), expectCode('BAD_INPUT'));
    await assert.rejects(
      engine.encodeImage('pixels' as unknown as Buffer, 1, 1),
      expectCode('BAD_INPUT'),
    );
    const { ids, mask } = tokens([[320]]);
    await assert.rejects(engine.encodeText(ids, mask, 2), expectCode('BAD_INPUT'));
    await assert.rejects(engine.encodeText(ids, mask, 0), expectCode('BAD_INPUT'));
    await assert.rejects(
      engine.encodeText(new Int32Array(L).fill(manifest.text.vocab_size), mask, 1),
      expectCode('BAD_INPUT'),
    );
    await assert.rejects(
      engine.encodeText(ids, new Int32Array(L).fill(2), 1),
      expectCode('BAD_INPUT'),
    );

    const embedding = await engine.encodeImage(image(16, 12), 16, 12);
    const [text] = await engine.encodeText(ids, mask, 1);
    const badQueries: ConceptQuery[] = [
      { text, boxes: new Float32Array(3), boxLabels: new Int32Array(1) },
      { text, boxes: new Float32Array(4), boxLabels: new Int32Array([2]) },
      { text, boxes: new Float32Array([NaN, 0.5, 0.1, 0.1]), boxLabels: new Int32Array([1]) },
      {
        text: embedding as unknown as NativeTextEmbedding,
        boxes: new Float32Array(0),
        boxLabels: new Int32Array(0),
      },
    ];
    for (const query of badQueries) {
      await assert.rejects(
        engine.detect(embedding, [query], { threshold: 0.5 }),
        expectCode('BAD_INPUT'),
      );
    }
    await assert.rejects(
      engine.detect(embedding, [textOnly(text)], { threshold: NaN }),
      expectCode('BAD_INPUT'),
    );
    await assert.rejects(
      engine.detect(text as never, [textOnly(text)], { threshold: 0.5 }),
      expectCode('BAD_INPUT'),
    );

    const [result] = await engine.detect(embedding, [textOnly(text)], { threshold: 0 });
    assert.equal(result.scores.length, manifest.num_queries);
  });

  test('embeddings of one engine are refused by another', async () => {
    const other = await addon.Engine.load({ bundleDir, device: 'cpu' });
    try {
      const embedding = await engine.encodeImage(image(8, 8), 8, 8);
      const [text] = await textEmbeddings([[320]]);
      await assert.rejects(
        other.detect(embedding, [textOnly(text)], { threshold: 0.5 }),
        expectCode('BAD_INPUT'),
      );
    } finally {
      await other.close();
    }
  });

  test('embeddings are freed when JS lets go of them', async () => {
    const rgb = image(32, 24);
    const count = 40;
    await collectGarbage();
    const before = addon.runtimeInfo().liveEmbeddingBytes;
    const byteSize = await (async () => {
      const embeddings = [];
      for (let i = 0; i < count; i++) embeddings.push(await engine.encodeImage(rgb, 32, 24));
      embeddings.push(...(await textEmbeddings([[320], [321]])));
      const total = embeddings.reduce((sum, e) => sum + e.byteSize, 0);
      assert.equal(addon.runtimeInfo().liveEmbeddingBytes - before, total);
      return total;
    })();
    assert.ok(byteSize > 0);
    await collectGarbage();
    assert.equal(addon.runtimeInfo().liveEmbeddingBytes, before);
  });

  test('errors carry the calling stack', async () => {
    const error = await engine.encodeImage(Buffer.alloc(5), 1, 1).catch((e: unknown) => e);
    assert.ok(error instanceof NativeError);
    assert.match(String(error.stack), /engine\.test\.js/);
    assert.match(String(error.stack), /^NativeError \[BAD_INPUT\]: /);
  });

  test('a missing bundle directory rejects with MODEL_LOAD without revealing its path', async () => {
    const missing = path.join(workDir, 'no-such-bundle');
    const error = await addon.Engine.load({ bundleDir: missing, device: 'cpu' }).catch(
      (e: unknown) => e,
    );
    expectCode('MODEL_LOAD')(error);
    assert.match((error as Error).message, /no-such-bundle/);
    assert.ok(!(error as Error).message.includes(workDir), (error as Error).message);
  });

  test('an invalid manifest rejects with MODEL_LOAD naming the field', async () => {
    const broken = path.join(workDir, 'broken-bundle');
    mkdirSync(broken);
    for (const file of [
      'vision_trunk.pt',
      'detector_neck.pt',
      'tracker_neck.pt',
      'text_encoder.pt',
      'detector.pt',
    ]) {
      copyFileSync(path.join(bundleDir, file), path.join(broken, file));
    }
    const write = (value: unknown) =>
      writeFileSync(path.join(broken, 'manifest.json'), JSON.stringify(value));

    write({ ...manifest, format_version: 5 });
    await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), (error) => {
      expectCode('MODEL_LOAD')(error);
      assert.match(
        (error as Error).message,
        /format_version: unsupported version 5 \(this build reads 1 to 4\)/,
      );
      return true;
    });

    // Format 4's vision parts: the trunk's output feeds both necks, each neck makes its maps.
    const { vision_trunk: trunk, detector_neck: detectorNeck } = manifest.modules;
    const features = trunk.outputs[0];
    const badParts: [Record<string, unknown>, RegExp][] = [
      [
        { vision_trunk: { ...trunk, outputs: [{ ...features, name: 'hidden' }] } },
        /modules\.vision_trunk\.outputs: expected exactly \[vision_features\]/,
      ],
      [
        {
          vision_trunk: {
            ...trunk,
            outputs: [{ ...features, shape: ['B', 7, features.shape[2]] }],
          },
        },
        /modules\.vision_trunk\.outputs: vision_features dimension 1 is 7, expected/,
      ],
      [
        { detector_neck: { ...detectorNeck, inputs: [{ ...features, dtype: 'bfloat16' }] } },
        /modules\.detector_neck\.inputs: vision_features must match modules\.vision_trunk\.outputs/,
      ],
      [
        { detector_neck: { ...detectorNeck, outputs: detectorNeck.outputs.slice(1) } },
        /modules\.detector_neck\.outputs: missing fpn_0/,
      ],
    ];
    for (const [modules, message] of badParts) {
      write({ ...manifest, modules: { ...manifest.modules, ...modules } });
      await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), message);
    }
    const withoutNeck = { ...manifest.modules };
    delete withoutNeck.tracker_neck;
    write({ ...manifest, modules: withoutNeck });
    await assert.rejects(
      addon.Engine.load({ bundleDir: broken, device: 'cpu' }),
      /modules\.tracker_neck: missing/,
    );

    // The concept block: every field required and checked, the error naming it.
    const concept = (manifest as unknown as { concept: Record<string, unknown> }).concept;
    const badConcepts: [Record<string, unknown>, RegExp][] = [
      [
        { ...concept, hotstart_delay: -1 },
        /concept\.hotstart_delay: expected a non-negative integer/,
      ],
      [{ ...concept, hotstart_delay: 1.5 }, /concept\.hotstart_delay: expected an integer/],
      [{ ...concept, new_det_thresh: 'high' }, /concept\.new_det_thresh: expected a finite number/],
      [{ ...concept, new_det_thresh: null }, /concept\.new_det_thresh: expected a finite number/],
      [
        { ...concept, recondition_on_trk_masks: 1 },
        /concept\.recondition_on_trk_masks: expected a boolean/,
      ],
      [
        { ...concept, low_res_mask_size: 288 },
        /concept\.low_res_mask_size: is 288, expected 4 x feature_size/,
      ],
      [
        Object.fromEntries(Object.entries(concept).filter(([key]) => key !== 'fill_hole_area')),
        /concept\.fill_hole_area: missing/,
      ],
    ];
    for (const [block, message] of badConcepts) {
      write({ ...manifest, concept: block });
      await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), (error) => {
        expectCode('MODEL_LOAD')(error);
        assert.match((error as Error).message, message);
        return true;
      });
    }
    const withoutMaskDecoder = { ...manifest.modules };
    delete withoutMaskDecoder.tracker_mask_decoder;
    write({ ...manifest, modules: withoutMaskDecoder });
    await assert.rejects(
      addon.Engine.load({ bundleDir: broken, device: 'cpu' }),
      /modules\.tracker_mask_decoder: missing/,
    );
    const withoutTracker: Record<string, unknown> = { ...manifest };
    delete withoutTracker.tracker;
    write(withoutTracker);
    await assert.rejects(
      addon.Engine.load({ bundleDir: broken, device: 'cpu' }),
      /concept: requires the tracker block/,
    );

    const detector = manifest.modules.detector;
    write({
      ...manifest,
      modules: { ...manifest.modules, detector: { ...detector, inputs: detector.inputs.slice(1) } },
    });
    await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), (error) => {
      expectCode('MODEL_LOAD')(error);
      assert.match((error as Error).message, /modules\.detector\.inputs/);
      return true;
    });

    // Traced on another device type: refused at load, with the command that fixes it.
    write({ ...manifest, device_type: 'cuda' });
    await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), (error) => {
      expectCode('MODEL_LOAD')(error);
      assert.match(
        (error as Error).message,
        /exported for cuda and cannot run on cpu: export it again with tools\/export_sam3\.py --device cpu/,
      );
      return true;
    });
    write({ ...manifest, device_type: 'tpu' });
    await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), /device_type/);

    writeFileSync(path.join(broken, 'manifest.json'), '{"format": "sam3-bundle",}');
    await assert.rejects(addon.Engine.load({ bundleDir: broken, device: 'cpu' }), (error) => {
      expectCode('MODEL_LOAD')(error);
      assert.match((error as Error).message, /line 1, column 26/);
      return true;
    });
  });

  test('a format-2 bundle (no concept block) serves video without concept tracking', async () => {
    const formatTwo = path.join(workDir, 'format-2-bundle');
    mkdirSync(formatTwo);
    const joined = JSON.parse(
      readFileSync(path.join(joinedDir, 'manifest.json'), 'utf8'),
    ) as Manifest;
    const names = Object.keys(joined.modules).filter((name) => name !== 'tracker_mask_decoder');
    for (const name of names) {
      const file = joined.modules[name].file;
      copyFileSync(path.join(joinedDir, file), path.join(formatTwo, file));
    }
    const rest = Object.fromEntries(Object.entries(joined).filter(([key]) => key !== 'concept'));
    writeFileSync(
      path.join(formatTwo, 'manifest.json'),
      JSON.stringify({
        ...rest,
        format_version: 2,
        modules: Object.fromEntries(names.map((name) => [name, joined.modules[name]])),
      }),
    );
    const older = await addon.Engine.load({ bundleDir: formatTwo, device: 'cpu' });
    try {
      assert.equal(older.info.formatVersion, 2);
      assert.equal(older.info.videoAvailable, true);
      assert.equal(older.info.conceptAvailable, false);
    } finally {
      await older.close();
    }
  });

  test('devices: malformed names are BAD_INPUT, absent GPUs DEVICE_UNAVAILABLE', async () => {
    await assert.rejects(
      addon.Engine.load({ bundleDir, device: 'quantum:0' }),
      expectCode('BAD_INPUT'),
    );
    const gpus = addon.runtimeInfo().cudaDeviceCount;
    await assert.rejects(
      addon.Engine.load({ bundleDir, device: `cuda:${gpus}` }),
      expectCode('DEVICE_UNAVAILABLE'),
    );
  });

  test('a call cancelled while queued rejects with CANCELLED without running', async () => {
    const embedding = await engine.encodeImage(image(40, 30, 3), 40, 30);
    const [text] = await textEmbeddings([[2368]]);
    const { ids, mask } = tokens([[1929]]);
    const point = {
      points: new Float32Array([0.5, 0.5]),
      pointLabels: new Int32Array([1]),
      box: new Float32Array(0),
    };
    const before = engine.tasksRun();
    // The executor runs one task at a time: everything after the first call waits behind it,
    // and is cancelled (in this same turn of the event loop) before its turn comes.
    const running = engine.encodeImage(image(640, 480, 4), 640, 480);
    const tokens4 = [0, 1, 2, 3].map(() => engine.createCancelToken());
    const dropped = [
      engine.encodeImage(image(40, 30, 5), 40, 30, tokens4[0]),
      engine.encodeText(ids, mask, 1, tokens4[1]),
      engine.detect(embedding, [textOnly(text)], { threshold: 0 }, tokens4[2]),
      engine.segmentPoints(embedding, [point], tokens4[3]),
    ];
    const kept = engine.createCancelToken();
    const notCancelled = engine.detect(embedding, [textOnly(text)], { threshold: 0 }, kept);
    for (const token of tokens4) token.cancel();
    assert.deepEqual(
      tokens4.map((token) => token.cancelled),
      [true, true, true, true],
    );
    for (const call of dropped) {
      await assert.rejects(call, expectCode('CANCELLED', /cancelled before it ran/));
    }
    assert.equal((await running).width, 640);
    const [instances] = await notCancelled;
    assert.ok(instances.scores.length > 0);
    // Cancelling after the call ran changes nothing.
    kept.cancel();
    // Only the two calls that ran were tasks.
    assert.equal(engine.tasksRun() - before, 2);
    await assert.rejects(
      engine.encodeImage(image(8, 8), 8, 8, {} as never),
      expectCode('BAD_INPUT', /^cancel must be a CancelToken$/),
    );
  });

  test('close runs queued work first; later calls reject with ENGINE_CLOSED', async () => {
    const closing = await addon.Engine.load({ bundleDir, device: 'cpu' });
    const queued = closing.encodeImage(image(32, 32), 32, 32);
    const closed = closing.close();
    const embedding = await queued;
    assert.equal(embedding.width, 32);
    await closed;
    await assert.rejects(closing.encodeImage(image(8, 8), 8, 8), expectCode('ENGINE_CLOSED'));
    const { ids, mask } = tokens([[320]]);
    await assert.rejects(closing.encodeText(ids, mask, 1), expectCode('ENGINE_CLOSED'));
    await assert.rejects(
      closing.detect(embedding, [], { threshold: 0.5 }),
      expectCode('ENGINE_CLOSED'),
    );
    await closing.close();
  });
});
