/**
 * The compiled vision trunk (tools/export_sam3.py --compile, an AOTInductor package) through the
 * native engine: an engine loaded `compiled` runs it and computes what the TorchScript trunk
 * computes, alone and batched; a bundle without a package, a package that does not load or was
 * compiled for instruction sets this CPU lacks, and a malformed manifest are refused at load with
 * MODEL_LOAD naming the file or field.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loadAddon } from '../../src/native/addon';
import type {
  ConceptInstances,
  NativeEngine,
  PointInstance,
  PointQuery,
} from '../../src/native/types';
import { expectCode } from '../helpers/native';
import { tempDir } from '../helpers/reference';
import { decodeRle, maskIou } from '../helpers/rle';
import {
  compiledTinyBundle,
  editedBundle,
  exportTinyBundle,
  type EditableManifest,
} from '../helpers/server';

const WIDTH = 96;
const BOS = 49406;
const EOS = 49407;
const HEIGHT = 72;

/** Deterministic RGB noise over a gradient. */
function image(seed: number): Buffer {
  const rgb = Buffer.alloc(WIDTH * HEIGHT * 3);
  let state = seed;
  for (let i = 0; i < rgb.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    rgb[i] = ((((i / 3) % WIDTH) * 255) / WIDTH + (state >>> 24)) % 256;
  }
  return rgb;
}

function iou(a: string, b: string): number {
  const size: [number, number] = [HEIGHT, WIDTH];
  return maskIou(decodeRle({ size, counts: a }), decodeRle({ size, counts: b }));
}

/** Same instances up to the rounding of other kernels: scores and boxes within 1e-4, masks IoU >= 0.99. */
function assertClose(actual: ConceptInstances, expected: ConceptInstances): void {
  assert.equal(actual.scores.length, expected.scores.length);
  assert.ok(expected.scores.length > 0);
  actual.scores.forEach((score, i) => assert.ok(Math.abs(score - expected.scores[i]) < 1e-4));
  actual.boxes.forEach((value, i) => assert.ok(Math.abs(value - expected.boxes[i]) < 1e-4));
  actual.masks.forEach((mask, i) => assert.ok(iou(mask, expected.masks[i]) >= 0.99, `mask ${i}`));
}

function assertSamePoint(actual: PointInstance, expected: PointInstance): void {
  assert.ok(Math.abs(actual.score - expected.score) < 1e-4);
  assert.ok(iou(actual.mask, expected.mask) >= 0.99);
}

describe('the compiled vision trunk', () => {
  const addon = loadAddon();
  let work: Awaited<ReturnType<typeof tempDir>>;
  let compiledDir = '';
  let plain: NativeEngine;
  let compiled: NativeEngine;
  let batched: NativeEngine;

  /** The compiled bundle again (its files linked) with a manifest that `edit` rewrote. */
  const variant = (name: string, edit: (modules: EditableManifest['modules']) => void) =>
    editedBundle(compiledDir, path.join(work.dir, name), (manifest) => edit(manifest.modules));

  before(async () => {
    work = await tempDir('sam3-compiled-');
    // The tiny test bundle's weights again, with the AOTInductor package of its trunk.
    compiledDir = await compiledTinyBundle();
    plain = await addon.Engine.load({ bundleDir: compiledDir, device: 'cpu' });
    compiled = await addon.Engine.load({ bundleDir: compiledDir, device: 'cpu', compiled: true });
    batched = await addon.Engine.load({
      bundleDir: compiledDir,
      device: 'cpu',
      compiled: true,
      imageBatch: { maxSize: 3, waitMs: 1000 },
    });
  });

  after(async () => {
    await Promise.all([plain, compiled, batched].map((engine) => engine?.close()));
    await work?.cleanup();
  });

  test('the manifest names the package, and info says which trunk runs', () => {
    const manifest = JSON.parse(readFileSync(path.join(compiledDir, 'manifest.json'), 'utf8'));
    assert.equal(manifest.modules.vision_trunk.compiled, 'vision_trunk.pt2');
    assert.equal(manifest.versions.exporter, 8);
    // The exporting machine's instruction sets, which this machine (the same one) has.
    const flags: string[] = manifest.modules.vision_trunk.compiled_cpu_flags;
    const host = new Set(
      /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1].split(/\s+/),
    );
    assert.ok(flags.includes('avx2'), flags.join(' '));
    assert.deepEqual(
      flags.filter((flag) => !host.has(flag)),
      [],
    );
    assert.equal(plain.info.compiled, false);
    assert.equal(compiled.info.compiled, true);
  });

  test('detections and clicks equal the TorchScript trunk, alone and in a batch of 3', async () => {
    // One prompt: bos, two tokens, eos, padded.
    const L = plain.info.contextLength;
    const ids = new Int32Array(L).fill(EOS);
    const mask = new Int32Array(L);
    [BOS, 320, 321, EOS].forEach((id, i) => {
      ids[i] = id;
      mask[i] = 1;
    });
    const click: PointQuery = {
      points: new Float32Array([0.4, 0.6]),
      pointLabels: new Int32Array([1]),
      box: new Float32Array(0),
    };
    const images = [image(1), image(2), image(3)];
    const results = async (engine: NativeEngine, rgb: Buffer) => {
      const [text] = await engine.encodeText(ids, mask, 1);
      const query = { text, boxes: new Float32Array(0), boxLabels: new Int32Array(0) };
      const embedding = await engine.encodeImage(rgb, WIDTH, HEIGHT);
      try {
        const [detected] = await engine.detect(embedding, [query], { threshold: 0 });
        const [point] = await engine.segmentPoints(embedding, [click]);
        return { detected, point };
      } finally {
        embedding.release();
      }
    };
    const before = batched.imageBatchCounts();
    const [expected, alone, together] = await Promise.all([
      Promise.all(images.map((rgb) => results(plain, rgb))),
      Promise.all(images.map((rgb) => results(compiled, rgb))),
      Promise.all(images.map((rgb) => results(batched, rgb))),
    ]);
    assert.equal((batched.imageBatchCounts()['3'] ?? 0) - (before['3'] ?? 0), 1);
    // The package alone computes the trunk: without the TorchScript trunk the results stay.
    const packageOnly = await variant(
      'package-only',
      (modules) => (modules.vision_trunk.file = 'absent.pt'),
    );
    await assert.rejects(
      addon.Engine.load({ bundleDir: packageOnly, device: 'cpu' }),
      expectCode('MODEL_LOAD', /absent\.pt \(vision_trunk\) is missing/),
    );
    const onlyCompiled = await addon.Engine.load({
      bundleDir: packageOnly,
      device: 'cpu',
      compiled: true,
    });
    const withoutTrunk = await Promise.all(images.map((rgb) => results(onlyCompiled, rgb)));
    await onlyCompiled.close();
    for (const outcome of [alone, together, withoutTrunk]) {
      outcome.forEach((result, i) => {
        assertClose(result.detected, expected[i].detected);
        assertSamePoint(result.point, expected[i].point);
      });
    }
  });

  test('a bundle without a package, or with a broken one, is refused at load', async () => {
    const refused = (bundleDir: string, message: RegExp, compiled = true) =>
      assert.rejects(
        addon.Engine.load({ bundleDir, device: 'cpu', compiled }),
        expectCode('MODEL_LOAD', message),
      );
    await refused(
      await exportTinyBundle(),
      /has no compiled vision_trunk: export it with .*--compile/,
    );
    await refused(
      await variant('missing', (modules) => (modules.vision_trunk.compiled = 'absent.pt2')),
      /absent\.pt2 \(compiled vision_trunk\) is missing/,
    );
    await refused(
      await variant('not-a-package', (modules) => (modules.vision_trunk.compiled = 'detector.pt')),
      /detector\.pt is not a loadable AOTInductor package/,
    );
    // Compiled on a CPU with an instruction set this one lacks: refused before its code loads.
    await refused(
      await variant('other-cpu', (modules) => {
        modules.vision_trunk.compiled_cpu_flags?.push('avx2', 'sam3_absent_isa', 'sam3_other_isa');
      }),
      /vision_trunk\.pt2 was compiled on a CPU with instructions this one lacks \(sam3_absent_isa sam3_other_isa\): compile it on this machine/,
    );
    // The manifest is checked whether or not the engine runs the package.
    await refused(
      await variant('no-flags', (modules) => delete modules.vision_trunk.compiled_cpu_flags),
      /modules\.vision_trunk\.compiled_cpu_flags: missing/,
      false,
    );
    await refused(
      await variant('flags-alone', (modules) => delete modules.vision_trunk.compiled),
      /modules\.vision_trunk\.compiled_cpu_flags: given without compiled/,
      false,
    );
    // Only the trunk has a compiled form: elsewhere the field is refused, compiled or not.
    await refused(
      await variant('elsewhere', (modules) => (modules.detector.compiled = 'detector.pt2')),
      /modules\.detector\.compiled: only vision_trunk is compiled/,
      false,
    );
    await assert.rejects(
      addon.Engine.load({ bundleDir: compiledDir, device: 'cpu', compiled: 'yes' as never }),
      expectCode('BAD_INPUT', /compiled must be a boolean/),
    );
  });
});
