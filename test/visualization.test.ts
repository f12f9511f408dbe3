/**
 * Segmentation overlays: COCO RLE decoding against pycocotools, the PNG drawn by
 * VisualizationStore (real sharp, real files), its clean-up by age and count, and the route
 * that serves it over a real socket.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import sharp from 'sharp';
import { decodeRle, parseRleCounts, RleDecodeError, type CocoRle } from '../src/engine/coco-rle';
import { decodeImageBytes, type DecodedImage } from '../src/engine/image-decoder';
import {
  encodeVisualizationPng,
  labelText,
  renderVisualizationPng,
  MASK_ALPHA,
  VISUALIZATION_FILE_NAME,
  VISUALIZATION_PALETTE,
  VisualizationStore,
  type RenderedVisualization,
  type VisualizationInput,
} from '../src/engine/visualization';
import { createLogger, type Logger } from '../src/logging';
import { errorHandler, notFound } from '../src/server/error-handler';
import { requestContext } from '../src/server/request-context';
import { visualizationRoutes } from '../src/server/routes/visualizations';
import { venvPython } from './helpers/repo';
import { expectApiError } from './helpers/server';

const silentLogger = createLogger({ level: 'DEBUG', format: 'json', silent: true });
/** Byte limits far above what these tests write, where a test is not about them. */
const LIMITS = { maxBytes: 1024 ** 3, maxFileBytes: 64 * 1024 ** 2 };

/** The name of the file render() stored (failing the test when it stored none). */
async function storedName(result: Promise<RenderedVisualization>): Promise<string> {
  const rendered = await result;
  assert.ok(rendered.stored, 'the visualization was stored');
  return rendered.fileName;
}

/** A logger whose JSON lines are kept, to assert what was (not) warned about. */
function capturingLogger(): { logger: Logger; lines: { level: string; message: string }[] } {
  const lines: { level: string; message: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as { level: string; message: string });
      done();
    },
  });
  return { logger: createLogger({ level: 'DEBUG', format: 'json', stream }), lines };
}

/** Row-major 0/1 mask -> COCO compressed RLE, as pycocotools mask.encode + rleToString. */
function encodeRle(mask: Uint8Array, height: number, width: number): CocoRle {
  const runs: number[] = [];
  let current = 0;
  let length = 0;
  for (let x = 0; x < width; x += 1) {
    for (let y = 0; y < height; y += 1) {
      const value = mask[y * width + x];
      if (value !== current) {
        runs.push(length);
        current = value;
        length = 0;
      }
      length += 1;
    }
  }
  runs.push(length);
  let counts = '';
  runs.forEach((run, index) => {
    let value = index > 2 ? run - runs[index - 2] : run;
    let more = true;
    while (more) {
      let chunk = value & 0x1f;
      value >>= 5;
      more = (chunk & 0x10) !== 0 ? value !== -1 : value !== 0;
      if (more) chunk |= 0x20;
      counts += String.fromCharCode(chunk + 48);
    }
  });
  return { size: [height, width], counts };
}

function maskOf(
  height: number,
  width: number,
  inside: (x: number, y: number) => boolean,
): Uint8Array {
  const mask = new Uint8Array(height * width);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) mask[y * width + x] = inside(x, y) ? 1 : 0;
  }
  return mask;
}

/** Normalized [cx, cy, w, h] of a mask's pixel extent (box edges on pixel edges). */
function boxOf(mask: Uint8Array, height: number, width: number): number[] {
  let [left, top, right, bottom] = [width, height, -1, -1];
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      if (mask[y * width + x] === 0) continue;
      left = Math.min(left, x);
      right = Math.max(right, x);
      top = Math.min(top, y);
      bottom = Math.max(bottom, y);
    }
  }
  const [x0, x1, y0, y1] = [left / width, (right + 1) / width, top / height, (bottom + 1) / height];
  return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0];
}

/** A real PNG (gradient + noise) made with sharp and decoded by the server's own decoder. */
async function testImage(width: number, height: number): Promise<DecodedImage> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const offset = 3 * (y * width + x);
      pixels[offset] = Math.floor((x * 255) / width);
      pixels[offset + 1] = Math.floor((y * 255) / height);
      pixels[offset + 2] = (x * 7 + y * 13) % 256;
    }
  }
  const png = await sharp(pixels, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
  return decodeImageBytes(png, { maxPixels: 1_000_000 });
}

async function readRgb(file: string): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 3, 'the PNG is RGB');
  return { data, width: info.width, height: info.height };
}

function pixelAt(image: { data: Buffer; width: number }, x: number, y: number): number[] {
  const offset = 3 * (y * image.width + x);
  return [image.data[offset], image.data[offset + 1], image.data[offset + 2]];
}

function tinted(input: number[], colour: readonly number[]): number[] {
  return input.map((value, channel) =>
    Math.round(value * (1 - MASK_ALPHA) + colour[channel] * MASK_ALPHA),
  );
}

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'sam3-visualization-test-'));
}

/** Sets a file's modification time `ageMs` in the past. */
async function age(file: string, ageMs: number): Promise<void> {
  const when = new Date(Date.now() - ageMs);
  await utimes(file, when, when);
}

async function pngNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => VISUALIZATION_FILE_NAME.test(name)).sort();
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return condition();
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

describe('COCO RLE decoding (src/engine/coco-rle.ts)', () => {
  interface ReferenceCase {
    size: [number, number];
    counts: string;
    mask: number[];
  }
  let cases: ReferenceCase[];

  before(() => {
    // pycocotools is the definition of the format: encode masks there, decode them here.
    const script = `
import json, numpy as np
from pycocotools import mask as coco
rng = np.random.default_rng(7)
cases = []
for h, w in [(1, 1), (3, 5), (7, 4), (37, 53), (300, 400)]:
    yy, xx = np.mgrid[0:h, 0:w]
    masks = [np.zeros((h, w)), np.ones((h, w)), rng.random((h, w)) < 0.5,
             (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 3) ** 2]
    for m in masks:
        rle = coco.encode(np.asfortranarray(m.astype(np.uint8)))
        cases.append({'size': rle['size'], 'counts': rle['counts'].decode('ascii'),
                      'mask': m.astype(np.uint8).reshape(-1).tolist()})
print(json.dumps(cases))
`;
    const output = execFileSync(venvPython(), ['-c', script], { maxBuffer: 64 * 1024 * 1024 });
    cases = JSON.parse(output.toString('utf8')) as ReferenceCase[];
    assert.equal(cases.length, 20);
  });

  it('decodes pycocotools-encoded masks to the same row-major pixels', () => {
    for (const reference of cases) {
      const decoded = decodeRle({ size: reference.size, counts: reference.counts });
      assert.deepEqual(Array.from(decoded), reference.mask, `${reference.size.join('x')}`);
    }
  });

  it("the tests' encoder writes the same counts strings as pycocotools", () => {
    for (const reference of cases) {
      const [height, width] = reference.size;
      const encoded = encodeRle(Uint8Array.from(reference.mask), height, width);
      assert.equal(encoded.counts, reference.counts, `${height}x${width}`);
    }
  });

  it('parses runs, differences from the fourth run on, and negative differences', () => {
    // 4x4 mask: runs 2 zeros, 3 ones, 1 zero, 10 ones (the 4th run stored as 10 - 3 = 7).
    const mask = new Uint8Array(16);
    const columnMajorOnes = [2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    for (const index of columnMajorOnes) mask[(index % 4) * 4 + Math.floor(index / 4)] = 1;
    const rle = encodeRle(mask, 4, 4);
    assert.deepEqual(parseRleCounts(rle.counts), [2, 3, 1, 10]);
    assert.deepEqual(decodeRle(rle), mask);
    // A run shorter than the one two places before is stored as a negative difference.
    assert.deepEqual(
      parseRleCounts(encodeRle(Uint8Array.from([0, 1, 1, 1, 1, 0, 1, 0, 1]), 9, 1).counts),
      [1, 4, 1, 1, 1, 1],
    );
  });

  it('refuses malformed RLE instead of drawing garbage', () => {
    const bad: [CocoRle, RegExp][] = [
      [{ size: [2, 2], counts: '3' }, /do not cover/],
      [{ size: [2, 2], counts: '5' }, /exceed/],
      [{ size: [2, 2], counts: '0 4' }, /invalid character/],
      [{ size: [2, 2], counts: 'P' }, /truncated/],
      [{ size: [2, 2], counts: 'oooooo1' }, /too large/],
      [{ size: [2, 2], counts: '121M' }, /negative/],
      [{ size: [-1, 2], counts: '' }, /not \[height, width\]/],
      [{ size: [1.5, 2], counts: '' }, /not \[height, width\]/],
    ];
    for (const [rle, message] of bad) {
      assert.throws(
        () => decodeRle(rle),
        (error: unknown) => error instanceof RleDecodeError && message.test(error.message),
        JSON.stringify(rle),
      );
    }
  });
});

describe('VisualizationStore.render', () => {
  const width = 160;
  const height = 120;
  let dir: string;
  let store: VisualizationStore;
  let image: DecodedImage;
  let input: VisualizationInput;
  let masks: Uint8Array[];

  before(async () => {
    dir = path.join(await tempDir(), 'outputs');
    store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 3_600_000,
      ...LIMITS,
      logger: silentLogger,
    });
    await store.init();
    image = await testImage(width, height);
    masks = [
      maskOf(height, width, (x, y) => x >= 20 && x < 60 && y >= 40 && y < 80),
      maskOf(height, width, (x, y) => (x - 115) ** 2 + (y - 60) ** 2 < 18 ** 2),
    ];
    input = {
      masks: masks.map((mask) => encodeRle(mask, height, width)),
      boxes: masks.map((mask) => boxOf(mask, height, width)),
      labels: ['cat', 'dog'],
      scores: [0.934, 0.5],
    };
  });

  after(async () => {
    store.close();
    await rm(path.dirname(dir), { recursive: true, force: true });
  });

  it('creates the output directory with mode 0700', async () => {
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
  });

  it('writes a PNG of the image size: masks tinted, boxes outlined, far pixels untouched', async () => {
    const original = Buffer.from(image.data);
    const rendered = await store.render(image, input);
    assert.ok(rendered.stored);
    const { fileName, urlPath } = rendered;
    assert.match(fileName, /^[0-9a-f]{32}\.png$/);
    assert.equal(urlPath, `/api/v1/visualizations/${fileName}`);
    assert.deepEqual(image.data, original, "the caller's pixels are not modified");

    const file = path.join(dir, fileName);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const metadata = await sharp(file).metadata();
    assert.equal(metadata.format, 'png');
    const drawn = await readRgb(file);
    assert.equal(drawn.width, width);
    assert.equal(drawn.height, height);

    // Mask interiors (away from box lines and tags) carry the exact tint of their colour.
    const [red, green] = VISUALIZATION_PALETTE;
    for (const [x, y, colour] of [
      [40, 60, red],
      [25, 75, red],
      [115, 60, green],
      [110, 70, green],
    ] as const) {
      assert.deepEqual(pixelAt(drawn, x, y), tinted(pixelAt(image, x, y), colour), `(${x},${y})`);
      assert.notDeepEqual(pixelAt(drawn, x, y), pixelAt(image, x, y));
    }
    // Every mask pixel differs from the input.
    masks.forEach((mask, index) => {
      for (let offset = 0; offset < mask.length; offset += 1) {
        if (mask[offset] === 0) continue;
        const [x, y] = [offset % width, Math.floor(offset / width)];
        assert.notDeepEqual(
          pixelAt(drawn, x, y),
          pixelAt(image, x, y),
          `mask ${index} (${x},${y})`,
        );
      }
    });
    // Box outlines are 2 px of the opaque colour: box 0 spans x 20..59, y 40..79.
    for (const [x, y] of [
      [20, 50],
      [21, 50],
      [59, 50],
      [58, 50],
      [40, 40],
      [40, 41],
      [40, 79],
      [40, 78],
    ]) {
      assert.deepEqual(pixelAt(drawn, x, y), [...red], `outline (${x},${y})`);
    }
    assert.deepEqual(pixelAt(drawn, 22, 50), tinted(pixelAt(image, 22, 50), red), 'inside line');

    // Pixels outside every box and its tag (above the box's top-left) are exactly the input.
    const boxes = [
      { left: 20, right: 59, top: 40, bottom: 79 },
      { left: 98, right: 132, top: 43, bottom: 77 },
    ];
    const nearSomething = (x: number, y: number): boolean =>
      boxes.some(
        (box) =>
          (x >= box.left - 1 && x <= box.right + 1 && y >= box.top - 1 && y <= box.bottom + 1) ||
          (x >= box.left - 1 && x <= box.left + 80 && y >= box.top - 20 && y <= box.top + 20),
      );
    let untouched = 0;
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        if (nearSomething(x, y)) continue;
        assert.deepEqual(pixelAt(drawn, x, y), pixelAt(image, x, y), `far pixel (${x},${y})`);
        untouched += 1;
      }
    }
    assert.ok(untouched > width * height * 0.5, `${untouched} far pixels checked`);
  });

  it('tags each box with "<label> <score>" at its top-left, text drawn on the colour', async (t) => {
    const fileName = await storedName(store.render(image, input));
    const drawn = await readRgb(path.join(dir, fileName));
    // Box 0's top edge is y 40; the tag (font 10 px + 2 px padding each side) sits above it.
    const [red] = VISUALIZATION_PALETTE;
    assert.deepEqual(pixelAt(drawn, 20, 27), [...red], 'tag background at the top-left');
    let background = 0;
    let text = 0;
    for (let y = 26; y < 40; y += 1) {
      for (let x = 20; x < 60; x += 1) {
        const [r, g, b] = pixelAt(drawn, x, y);
        if (r === red[0] && g === red[1] && b === red[2]) background += 1;
        else if (r > 200 && g > 200 && b > 200) text += 1;
      }
    }
    assert.ok(background > 100, `${background} tag background pixels`);
    if (!(await fontsAvailable())) {
      t.skip('no fonts on this machine: tags are drawn without text');
      return;
    }
    assert.ok(text > 10, `${text} white text pixels in the tag`);
  });

  it('names every file with 128 fresh random bits', async () => {
    const names = new Set<string>();
    for (let index = 0; index < 8; index += 1) {
      const fileName = await storedName(store.render(image, input));
      assert.match(fileName, VISUALIZATION_FILE_NAME);
      names.add(fileName);
    }
    assert.equal(names.size, 8);
  });

  it('draws an image without instances unchanged, and refuses masks of another size', async () => {
    const empty = await storedName(
      store.render(image, { masks: [], boxes: [], labels: [], scores: [] }),
    );
    assert.deepEqual((await readRgb(path.join(dir, empty))).data, image.data);
    await assert.rejects(
      store.render(image, {
        ...input,
        masks: [encodeRle(new Uint8Array(4), 2, 2), input.masks[1]],
      }),
      /mask 0 is 2x2, the image 160x120/,
    );
    await assert.rejects(store.render(image, { ...input, labels: ['cat'] }), /lengths differ/);
  });

  it('keeps hostile label text inside the tag (escaped, controls removed, shortened)', async () => {
    assert.equal(labelText('cat', 0.934), 'cat 0.93');
    assert.equal(labelText('a\u0000b\nc\ud800', 1), 'a b c 1.00');
    assert.equal(labelText('x'.repeat(60), 0.5), `${'x'.repeat(47)}\u2026 0.50`);
    const { logger, lines } = capturingLogger();
    const hostileStore = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 3_600_000,
      ...LIMITS,
      logger,
    });
    await hostileStore.init();
    hostileStore.close();
    const fileName = await storedName(
      hostileStore.render(image, {
        ...input,
        labels: ['</text><image href="file:///etc/passwd"/><text>', '&amp; \u0007 "\'<'],
      }),
    );
    assert.equal((await sharp(path.join(dir, fileName)).metadata()).width, width);
    // A tag that failed to parse would have been dropped with a warning.
    assert.deepEqual(
      lines.filter((line) => line.level === 'warn'),
      [],
    );
  });

  it('writes the overlay without labels when they cannot be rendered', async () => {
    const { logger, lines } = capturingLogger();
    const pixels = Buffer.from(image.data);
    const png = await encodeVisualizationPng(
      pixels,
      width,
      height,
      [{ input: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><text>'), left: 0, top: 0 }],
      logger,
    );
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.width, width);
    assert.deepEqual(data, pixels);
    assert.equal(lines.filter((line) => line.level === 'warn').length, 1);
    assert.match(lines[0].message, /labels could not be rendered/);
  });
});

/** Whether this machine's sharp draws SVG text at all (fonts present). */
async function fontsAvailable(): Promise<boolean> {
  const svg =
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">' +
    '<text x="2" y="15" font-family="sans-serif" font-size="14" fill="#fff">Hg</text></svg>';
  const { data } = await sharp(Buffer.from(svg)).raw().toBuffer({ resolveWithObject: true });
  return data.some((value, index) => index % 4 === 3 && value > 0);
}

describe('VisualizationStore clean-up', () => {
  let root: string;
  let image: DecodedImage;
  const input: VisualizationInput = { masks: [], boxes: [], labels: [], scores: [] };

  before(async () => {
    root = await tempDir();
    image = await testImage(16, 12);
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('keeps at most maxFiles after each write, deleting the oldest first', async () => {
    const dir = path.join(root, 'count');
    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 3,
      maxAgeMs: 3_600_000,
      ...LIMITS,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    const written: string[] = [];
    for (let index = 0; index < 5; index += 1) {
      written.push(await storedName(store.render(image, input)));
      assert.deepEqual(await pngNames(dir), written.slice(-3).sort(), `after write ${index + 1}`);
    }
  });

  /** Sizes of this store's PNGs on disk, by name. */
  async function pngSizes(dir: string): Promise<Map<string, number>> {
    const names = await pngNames(dir);
    const sizes = await Promise.all(
      names.map(async (name) => (await stat(path.join(dir, name))).size),
    );
    return new Map(names.map((name, index) => [name, sizes[index]]));
  }

  const total = (sizes: Map<string, number>): number =>
    [...sizes.values()].reduce((sum, size) => sum + size, 0);

  it('keeps the PNGs within maxBytes, deleting the oldest first to make room', async () => {
    // The same image always encodes to the same PNG; a larger one of another image.
    const small = (await renderVisualizationPng(image, input, silentLogger)).length;
    const largeImage = await testImage(64, 48);
    const large = (await renderVisualizationPng(largeImage, input, silentLogger)).length;
    assert.ok(large >= 2 * small, `${large} vs ${small} bytes`);
    // Room for three small files, or for the large one and one small one.
    const maxBytes = large + small + Math.floor(small / 2);
    const dir = path.join(root, 'bytes');
    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 3_600_000,
      maxBytes,
      maxFileBytes: large,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    const smalls: string[] = [];
    for (let index = 0; index < 5; index += 1) {
      smalls.push(await storedName(store.render(image, input)));
      const sizes = await pngSizes(dir);
      const kept = smalls.slice(-Math.min(smalls.length, Math.floor(maxBytes / small)));
      assert.deepEqual([...sizes.keys()], [...kept].sort(), `after small write ${index + 1}`);
      assert.ok(total(sizes) <= maxBytes);
      assert.deepEqual(store.usage().bytes, total(sizes));
    }
    const big = await storedName(store.render(largeImage, input));
    const sizes = await pngSizes(dir);
    assert.deepEqual([...sizes.keys()], [smalls[4], big].sort(), 'the two oldest made room');
    assert.equal(total(sizes), large + small);
    assert.deepEqual(store.usage(), {
      files: 2,
      bytes: large + small,
      maxBytes,
      maxFileBytes: large,
    });
  });

  it('does not store a PNG larger than maxFileBytes, says why, and deletes nothing for it', async () => {
    const small = (await renderVisualizationPng(image, input, silentLogger)).length;
    const dir = path.join(root, 'too-large');
    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 3_600_000,
      maxBytes: 10 * small,
      maxFileBytes: small,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    const kept = await storedName(store.render(image, input)); // exactly at the limit: stored
    const refused = await store.render(await testImage(64, 48), input);
    assert.equal(refused.stored, false);
    // The message gives sizes as a person reads them: here kB for the PNG, bytes for the limit.
    assert.ok(small < 1000 && refused.bytes >= 1000, `${small} and ${refused.bytes} bytes`);
    assert.equal(
      refused.reason,
      `the visualization PNG is ${(refused.bytes / 1000).toFixed(1)} kB, over the limit of ` +
        `${small} bytes per file (OUTPUT_MAX_FILE_BYTES); it was not stored`,
    );
    assert.deepEqual(await pngNames(dir), [kept]);
    assert.deepEqual(store.usage().bytes, small);
  });

  it('refuses a per-file limit above the byte budget', () => {
    assert.throws(
      () =>
        new VisualizationStore({
          outputDir: path.join(root, 'unused'),
          maxFiles: 1,
          maxAgeMs: 1000,
          maxBytes: 100,
          maxFileBytes: 101,
          logger: silentLogger,
        }),
      /maxFileBytes must be an integer from 1 to maxBytes \(100\), got 101/,
    );
  });

  it('init() deletes the oldest files of earlier runs beyond maxBytes', async () => {
    const dir = path.join(root, 'init-bytes');
    await mkdir(dir);
    const names = ['c', 'b', 'a'].map((digit) => `${digit.repeat(32)}.png`);
    for (const [index, name] of names.entries()) {
      await writeFile(path.join(dir, name), Buffer.alloc(100));
      await age(path.join(dir, name), 30_000 - index * 10_000); // c oldest, a newest
    }
    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 3_600_000,
      maxBytes: 250,
      maxFileBytes: 250,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    assert.deepEqual(await pngNames(dir), [names[2], names[1]].sort());
    assert.equal(store.usage().bytes, 200);
  });

  it('deletes files older than maxAgeMs on a sweep, and no longer opens them before it', async () => {
    const dir = path.join(root, 'age');
    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 60_000,
      ...LIMITS,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    const old = await storedName(store.render(image, input));
    const fresh = await storedName(store.render(image, input));
    await age(path.join(dir, old), 120_000);
    assert.equal(await store.open(old), null, 'expired files are not served');
    const opened = await store.open(fresh);
    assert.ok(opened !== null);
    await opened.handle.close();

    await store.sweep();
    assert.deepEqual(await pngNames(dir), [fresh]);
  });

  it('sweeps on a timer until close()', async () => {
    const dir = path.join(root, 'timer');
    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 100,
      maxAgeMs: 60_000,
      ...LIMITS,
      logger: silentLogger,
      sweepIntervalMs: 20,
    });
    await store.init();
    const first = await storedName(store.render(image, input));
    await age(path.join(dir, first), 120_000);
    assert.ok(await waitFor(async () => !(await exists(path.join(dir, first))), 2_000));

    store.close();
    const second = await storedName(store.render(image, input));
    await age(path.join(dir, second), 120_000);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.ok(await exists(path.join(dir, second)), 'no sweep after close()');
  });

  it('init() removes stale visualizations of earlier runs and leaves other files alone', async () => {
    const dir = path.join(root, 'init');
    await mkdir(dir);
    const hex = (digit: string): string => digit.repeat(32);
    // Name order is the reverse of age order, so only modification times can pick the victims.
    const staleFiles = [`${hex('f')}.png`, `${hex('e')}.png`];
    const overCount = `${hex('d')}.png`;
    const keptFiles = [`${hex('b')}.png`, `${hex('a')}.png`];
    const unrelated = [
      'notes.txt',
      `${hex('A')}.png`,
      `${hex('a')}.png.bak`,
      `${hex('a').slice(1)}.png`,
      `${hex('f')}.jpg`,
    ];
    for (const name of [...staleFiles, overCount, ...keptFiles, ...unrelated]) {
      await writeFile(path.join(dir, name), 'x');
      await age(path.join(dir, name), 120_000);
    }
    for (const name of staleFiles) await age(path.join(dir, name), 7_200_000);
    await age(path.join(dir, overCount), 30_000);
    await age(path.join(dir, keptFiles[0]), 20_000);
    await age(path.join(dir, keptFiles[1]), 10_000);

    const store = new VisualizationStore({
      outputDir: dir,
      maxFiles: 2,
      maxAgeMs: 3_600_000,
      ...LIMITS,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    assert.deepEqual((await readdir(dir)).sort(), [...keptFiles, ...unrelated].sort());
  });
});

describe('GET /api/v1/visualizations/:name', () => {
  let root: string;
  let store: VisualizationStore;
  let server: Server;
  let baseUrl: string;
  let fileName: string;

  before(async () => {
    root = await tempDir();
    store = new VisualizationStore({
      outputDir: path.join(root, 'outputs'),
      maxFiles: 100,
      maxAgeMs: 3_600_000,
      ...LIMITS,
      logger: silentLogger,
    });
    await store.init();
    store.close();
    fileName = await storedName(
      store.render(await testImage(32, 24), { masks: [], boxes: [], labels: [], scores: [] }),
    );

    const app = express();
    app.use(requestContext(silentLogger));
    app.use(visualizationRoutes({ store }));
    app.use(notFound);
    app.use(errorHandler(silentLogger));
    server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(root, { recursive: true, force: true });
  });

  it('serves a written PNG byte for byte, private and not sniffable', async () => {
    const response = await fetch(`${baseUrl}/api/v1/visualizations/${fileName}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'image/png');
    assert.equal(response.headers.get('cache-control'), 'private, max-age=3600');
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    const expected = await readFile(path.join(store.outputDir, fileName));
    assert.equal(response.headers.get('content-length'), String(expected.length));
    assert.deepEqual(Buffer.from(await response.arrayBuffer()), expected);
  });

  it('answers HEAD with the headers only', async () => {
    const response = await fetch(`${baseUrl}/api/v1/visualizations/${fileName}`, {
      method: 'HEAD',
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'image/png');
    assert.equal((await response.arrayBuffer()).byteLength, 0);
  });

  it('answers 404 not_found for names that are not ours, missing files and traversal', async () => {
    const names = [
      '..%2f..%2fetc%2fpasswd',
      '..%2F..%2Fetc%2Fpasswd',
      '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      'x.png',
      fileName.toUpperCase(),
      fileName.replace('.png', '.PNG'),
      `${fileName}%00`,
      `${fileName}.png`,
      `${'0'.repeat(32)}.png`,
      '%2e%2e',
      '%zz',
      `${fileName}/`,
      `a/${fileName}`,
      '',
    ];
    for (const name of names) {
      const response = await fetch(`${baseUrl}/api/v1/visualizations/${name}`);
      await expectApiError(response, 404, 'not_found');
    }
  });

  it('answers other methods with the 404 of unknown routes', async () => {
    const response = await fetch(`${baseUrl}/api/v1/visualizations/${fileName}`, {
      method: 'DELETE',
    });
    await expectApiError(response, 404, 'not_found', /no route for DELETE/);
    assert.ok(await exists(path.join(store.outputDir, fileName)));
  });

  it('does not follow a symlink planted under a valid name', async () => {
    const secret = path.join(root, 'secret.png');
    await writeFile(secret, 'not for clients');
    const planted = `${'1'.repeat(32)}.png`;
    await symlink(secret, path.join(store.outputDir, planted));
    const response = await fetch(`${baseUrl}/api/v1/visualizations/${planted}`);
    await expectApiError(response, 404, 'not_found');
  });
});
