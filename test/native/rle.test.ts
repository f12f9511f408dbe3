/**
 * The addon's COCO RLE encoder against pycocotools (tools/rle_reference.py): identical counts
 * strings for edge-case and random masks, and pycocotools decodes them back to the same mask.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loadAddon } from '../../src/native/addon';
import { NativeError } from '../../src/native/errors';
import { repoRoot, venvPython } from '../helpers/repo';

const root = repoRoot();
const python = venvPython();
const referenceScript = path.join(root, 'tools', 'rle_reference.py');

interface Mask {
  name: string;
  height: number;
  width: number;
  data: Uint8Array; // row-major, 0 or 1
}

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mask(
  name: string,
  height: number,
  width: number,
  pixel: (y: number, x: number) => boolean,
): Mask {
  const data = new Uint8Array(height * width);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data[y * width + x] = pixel(y, x) ? 1 : 0;
  }
  return { name, height, width, data };
}

function cases(): Mask[] {
  const list: Mask[] = [
    mask('empty 7x5', 7, 5, () => false),
    mask('full 7x5', 7, 5, () => true),
    mask('zero height', 0, 5, () => false),
    mask('zero width', 5, 0, () => false),
    mask('single pixel 1x1 on', 1, 1, () => true),
    mask('single pixel 1x1 off', 1, 1, () => false),
    mask('first pixel', 9, 11, (y, x) => y === 0 && x === 0),
    mask('last pixel', 9, 11, (y, x) => y === 8 && x === 10),
    mask('middle pixel', 9, 11, (y, x) => y === 4 && x === 5),
    mask('checkerboard', 16, 13, (y, x) => (y + x) % 2 === 0),
    mask('row', 1, 300, (_y, x) => x % 7 < 3),
    mask('column', 300, 1, (y) => y % 5 < 2),
    mask('stripes across columns', 40, 40, (y) => y < 20),
    mask('stripes along columns', 40, 40, (_y, x) => x < 20),
    // Long runs need several 6-bit digits; the delta against counts[i-2] can be negative.
    mask('full 1000x1000', 1000, 1000, () => true),
    mask('rectangle in 600x800', 600, 800, (y, x) => y >= 100 && y < 420 && x >= 37 && x < 700),
    mask('growing runs', 64, 64, (y, x) => y < (x * 7) % 64),
    mask('shrinking runs', 64, 64, (y, x) => y < 64 - ((x * 5) % 64)),
  ];
  for (const [seed, density, height, width] of [
    [1, 0.5, 23, 31],
    [2, 0.05, 50, 70],
    [3, 0.95, 50, 70],
    [4, 0.5, 120, 97],
  ] as const) {
    const next = random(seed);
    list.push(
      mask(`random ${height}x${width} p=${density}`, height, width, () => next() < density),
    );
  }
  // Blobs: runs of many lengths in one mask.
  const next = random(5);
  const circles = Array.from({ length: 12 }, () => [next() * 480, next() * 640, 10 + next() * 90]);
  list.push(
    mask('blobs 480x640', 480, 640, (y, x) =>
      circles.some(([cy, cx, r]) => (y - cy) ** 2 + (x - cx) ** 2 < r * r),
    ),
  );
  return list;
}

function runReference(command: 'encode' | 'decode', file: string): string[] {
  const output = execFileSync(python, [referenceScript, command, file], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  return JSON.parse(output) as string[];
}

describe('encodeRle (COCO RLE)', () => {
  let workDir = '';
  before(() => {
    workDir = mkdtempSync(path.join(tmpdir(), 'sam3-rle-'));
  });
  after(() => {
    rmSync(workDir, { recursive: true, force: true });
  });

  test('equals pycocotools mask.encode for edge-case and random masks', () => {
    const addon = loadAddon();
    const masks = cases();
    const file = path.join(workDir, 'masks.json');
    writeFileSync(
      file,
      JSON.stringify(
        masks.map((m) => ({
          height: m.height,
          width: m.width,
          data: Buffer.from(m.data).toString('base64'),
        })),
      ),
    );
    const expected = runReference('encode', file);
    assert.equal(expected.length, masks.length);
    masks.forEach((m, i) => {
      assert.equal(addon.encodeRle(m.data, m.height, m.width), expected[i], m.name);
    });
  });

  test('pycocotools decodes the native counts back to the original mask', () => {
    const addon = loadAddon();
    const masks = cases();
    const file = path.join(workDir, 'rles.json');
    writeFileSync(
      file,
      JSON.stringify(
        masks.map((m) => ({
          size: [m.height, m.width],
          counts: addon.encodeRle(m.data, m.height, m.width),
        })),
      ),
    );
    const decoded = runReference('decode', file);
    masks.forEach((m, i) => {
      assert.deepEqual(new Uint8Array(Buffer.from(decoded[i], 'base64')), m.data, m.name);
    });
  });

  test('treats any nonzero byte as foreground', () => {
    const addon = loadAddon();
    const binary = mask('binary', 6, 4, (y, x) => (y * 4 + x) % 3 === 0);
    const bytes = binary.data.map((v, i) => (v ? 1 + (i % 255) : 0));
    assert.equal(addon.encodeRle(bytes, 6, 4), addon.encodeRle(binary.data, 6, 4));
  });

  test('rejects a mask whose length is not height * width with BAD_INPUT', () => {
    const addon = loadAddon();
    assert.throws(
      () => addon.encodeRle(new Uint8Array(11), 3, 4),
      (error: unknown) => error instanceof NativeError && error.code === 'BAD_INPUT',
    );
  });
});
