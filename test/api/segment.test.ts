/**
 * POST /api/v1/image/segment end to end: a tiny random-weight bundle exported during the test
 * (tools/export_sam3.py), loaded by the real addon, served over real sockets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { decodeRle, parseRleCounts } from '../../src/engine/coco-rle';
import { readBundleManifest, type BundleManifest } from '../../src/engine/bundle-manifest';
import {
  expectApiError,
  exportTinyBundle,
  postJson,
  startTestServer,
  type SegmentResponse,
  type TestServer,
} from '../helpers/server';

const SEGMENT = '/api/v1/image/segment';

/** A gradient image with some structure (random weights do not care, the decoder does). */
async function testImage(width: number, height: number): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const offset = 3 * (y * width + x);
      pixels[offset] = (x * 255) / width;
      pixels[offset + 1] = (y * 255) / height;
      pixels[offset + 2] = x > width / 3 && x < (2 * width) / 3 ? 220 : 30;
    }
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const typed = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(typed));
  return Buffer.concat([length, typed, crc]);
}

/** A tiny, well-formed PNG whose header declares width x height (a pixel flood). */
function pngDeclaring(width: number, height: number): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.writeUInt8(8, 8); // bit depth
  header.writeUInt8(2, 9); // colour type RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', deflateSync(Buffer.alloc(64))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A real small JPEG with its SOF0 frame size rewritten to width x height. */
async function jpegDeclaring(width: number, height: number): Promise<Buffer> {
  const jpeg = Buffer.from(
    await sharp(Buffer.alloc(16 * 16 * 3, 128), { raw: { width: 16, height: 16, channels: 3 } })
      .jpeg({ mozjpeg: false })
      .toBuffer(),
  );
  for (let i = 2; i < jpeg.length - 9; i++) {
    if (jpeg[i] === 0xff && jpeg[i + 1] === 0xc0) {
      jpeg.writeUInt16BE(height, i + 5);
      jpeg.writeUInt16BE(width, i + 7);
      return jpeg;
    }
  }
  throw new Error('no SOF0 marker');
}

describe('POST /api/v1/image/segment with the tiny random bundle', () => {
  let server: TestServer;
  let manifest: BundleManifest;
  let image64: string;
  const width = 96;
  const height = 64;

  before(async () => {
    const bundleDir = await exportTinyBundle();
    manifest = await readBundleManifest(bundleDir);
    server = await startTestServer({ bundleDir });
    assert.equal(server.engineState.status, 'ready', 'the model loaded');
    image64 = (await testImage(width, height)).toString('base64');
  });
  after(async () => {
    await server?.close();
  });

  async function segment(payload: Record<string, unknown>): Promise<SegmentResponse> {
    const response = await postJson(`${server.url}${SEGMENT}`, payload);
    const text = await response.text();
    assert.equal(response.status, 200, text);
    assert.ok(response.headers.get('x-request-id'));
    return JSON.parse(text) as SegmentResponse;
  }

  function assertWellFormed(
    result: SegmentResponse,
    imageWidth: number,
    imageHeight: number,
  ): void {
    assert.deepEqual(Object.keys(result), [
      'masks',
      'boxes',
      'scores',
      'labels',
      'num_masks',
      'image_size',
      'visualization_url',
      'inference_time_ms',
    ]);
    assert.equal(result.masks.length, result.num_masks);
    assert.equal(result.scores.length, result.num_masks);
    assert.equal(result.boxes.length, result.num_masks);
    assert.equal(result.labels.length, result.num_masks);
    assert.deepEqual(result.image_size, { width: imageWidth, height: imageHeight });
    assert.equal(result.visualization_url, null);
    assert.ok(result.inference_time_ms >= 0);
    for (const mask of result.masks) {
      assert.deepEqual(mask.size, [imageHeight, imageWidth]);
      const runs = parseRleCounts(mask.counts);
      assert.equal(
        runs.reduce((sum, run) => sum + run, 0),
        imageWidth * imageHeight,
      );
      assert.ok(runs.every((run) => run >= 0));
    }
    for (const box of result.boxes) {
      assert.equal(box.length, 4);
      assert.ok(
        box.every((value) => Number.isFinite(value) && value >= 0 && value <= 1),
        `${box}`,
      );
    }
    for (const score of result.scores) assert.ok(score >= 0 && score <= 1);
  }

  it('GET /health answers 200 "ok" with the model', async () => {
    const response = await fetch(`${server.url}/health`);
    assert.equal(response.status, 200);
    const health = (await response.json()) as Record<string, unknown>;
    assert.equal(health.status, 'ok');
    assert.deepEqual(health.model, {
      id: manifest.model.id,
      checksum: manifest.model.checksum,
      random_weights: true,
      bundle_format_version: 4,
      resolution: manifest.resolution,
      dtype: 'float32',
    });
    assert.deepEqual(health.devices, [
      { device: 'cpu', role: 'image', status: 'ready' },
      { device: 'cpu', role: 'video', status: 'ready' },
    ]);
    assert.equal(health.sessions, 0);
    assert.equal(health.random_weights, true);
    assert.match(String(health.warning), /RANDOM-WEIGHT/);
  });

  it('GET / says loudly that the weights are random', async () => {
    const info = (await (await fetch(`${server.url}/`)).json()) as Record<string, unknown>;
    assert.equal(info.status, 'ok');
    assert.equal(info.random_weights, true);
    assert.match(String(info.warning), /RANDOM-WEIGHT/);
    assert.equal((info.model as Record<string, unknown>).id, manifest.model.id);
  });

  it('returns instances at threshold 0 in the SPEC shape, per prompt sorted by score', async () => {
    const result = await segment({
      image: image64,
      prompts: [
        { type: 'text', text: 'person' },
        { type: 'text', text: 'a red car' },
      ],
      confidence_threshold: 0,
    });
    assertWellFormed(result, width, height);
    assert.ok(result.num_masks > 0, 'threshold 0 keeps instances');
    const firstCar = result.labels.indexOf('a red car');
    assert.ok(firstCar > 0, 'both prompts answered');
    assert.deepEqual(
      result.labels,
      [...Array(firstCar).fill('person'), ...Array(result.num_masks - firstCar).fill('a red car')],
      'labels in prompt order',
    );
    for (const [start, end] of [
      [0, firstCar],
      [firstCar, result.num_masks],
    ]) {
      const scores = result.scores.slice(start, end);
      assert.deepEqual(
        scores,
        [...scores].sort((a, b) => b - a),
      );
      assert.ok(scores.length <= manifest.num_queries);
    }
  });

  it('return_visualization writes a PNG overlay that the server serves', async () => {
    const result = (await (
      await postJson(`${server.url}${SEGMENT}`, {
        image: image64,
        prompts: [{ type: 'text', text: 'person' }],
        confidence_threshold: 0,
        return_visualization: true,
      })
    ).json()) as SegmentResponse;
    assert.ok(result.num_masks > 0);
    assert.match(
      String(result.visualization_url),
      /^\/api\/v1\/visualizations\/[0-9a-f]{32}\.png$/,
    );
    const response = await fetch(`${server.url}${result.visualization_url}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'image/png');
    const png = Buffer.from(await response.arrayBuffer());
    const drawn = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual([drawn.info.width, drawn.info.height], [width, height]);
    const input = await sharp(Buffer.from(image64, 'base64')).removeAlpha().raw().toBuffer();
    const mask = decodeRle(result.masks[0]);
    let changedInMask = 0;
    mask.forEach((inside, pixel) => {
      if (inside && drawn.data[3 * pixel] !== input[3 * pixel]) changedInMask += 1;
    });
    assert.ok(changedInMask > 0, 'pixels under the first mask are tinted');
  });

  it('keeps exactly the instances above a higher threshold', async () => {
    const all = await segment({
      image: image64,
      prompts: [{ type: 'text', text: 'person' }],
      confidence_threshold: 0,
    });
    const sorted = [...all.scores].sort((a, b) => b - a);
    const threshold = (sorted[Math.floor(sorted.length / 2)] + sorted[sorted.length - 1]) / 2;
    const some = await segment({
      image: image64,
      prompts: [{ type: 'text', text: 'person' }],
      confidence_threshold: threshold,
    });
    const expected = all.scores
      .map((score, index) => ({ score, index }))
      .filter((entry) => entry.score > threshold);
    assert.ok(expected.length > 0 && expected.length < all.num_masks, 'a strict subset');
    assert.deepEqual(
      some.scores,
      expected.map((entry) => entry.score),
    );
    assert.deepEqual(
      some.masks,
      expected.map((entry) => all.masks[entry.index]),
    );
    assert.deepEqual(
      some.boxes,
      expected.map((entry) => all.boxes[entry.index]),
    );
    const none = await segment({
      image: image64,
      prompts: [{ type: 'text', text: 'person' }],
      confidence_threshold: 1,
    });
    assertWellFormed(none, width, height);
    assert.equal(none.num_masks, 0);
  });

  it('uses IMAGE_MODEL_CONFIDENCE_THRESHOLD (0.5) when no threshold is sent', async () => {
    const all = await segment({
      image: image64,
      prompts: [{ type: 'text', text: 'person' }],
      confidence_threshold: 0,
    });
    const defaulted = await segment({
      image: image64,
      prompts: [{ type: 'text', text: 'person' }],
    });
    assert.deepEqual(
      defaulted.scores,
      all.scores.filter((score) => score > 0.5),
    );
  });

  it('answers repeated prompts identically and accepts a data: URL', async () => {
    const result = await segment({
      image: `data:image/png;base64,${image64}`,
      prompts: [
        { type: 'text', text: 'dog' },
        { type: 'text', text: 'dog' },
      ],
      confidence_threshold: 0,
    });
    const half = result.num_masks / 2;
    assert.ok(Number.isInteger(half) && half > 0);
    assert.deepEqual(result.scores.slice(0, half), result.scores.slice(half));
    assert.deepEqual(result.masks.slice(0, half), result.masks.slice(half));
    const single = await segment({
      image: image64,
      prompts: [{ type: 'text', text: 'dog' }],
      confidence_threshold: 0,
    });
    // A batch of one and a batch of two take different matmul paths: equal up to rounding.
    assert.equal(single.scores.length, half);
    single.scores.forEach((score, i) =>
      assert.ok(
        Math.abs(score - result.scores[i]) <= 1e-5,
        `score ${i}: ${score} vs ${result.scores[i]}`,
      ),
    );
  });

  it('serves concurrent requests with identical results', async () => {
    const payload = {
      image: image64,
      prompts: [{ type: 'text', text: 'tree' }],
      confidence_threshold: 0,
    };
    const results = await Promise.all(Array.from({ length: 4 }, () => segment(payload)));
    for (const result of results.slice(1)) {
      assert.deepEqual(result.scores, results[0].scores);
      assert.deepEqual(result.masks, results[0].masks);
    }
  });

  describe('odd but valid images', () => {
    const cases: [string, () => Promise<Buffer>, number, number][] = [
      [
        'an EXIF-rotated JPEG (orientation 6: width and height swap)',
        () =>
          sharp(Buffer.alloc(40 * 20 * 3, 90), { raw: { width: 40, height: 20, channels: 3 } })
            .jpeg()
            .withMetadata({ orientation: 6 })
            .toBuffer(),
        20,
        40,
      ],
      [
        'a 16-bit PNG',
        () =>
          sharp(Buffer.alloc(30 * 10 * 3, 200), { raw: { width: 30, height: 10, channels: 3 } })
            .toColourspace('rgb16')
            .png()
            .toBuffer(),
        30,
        10,
      ],
      [
        'a CMYK JPEG',
        () =>
          sharp(Buffer.alloc(24 * 12 * 3, 120), { raw: { width: 24, height: 12, channels: 3 } })
            .toColourspace('cmyk')
            .jpeg()
            .toBuffer(),
        24,
        12,
      ],
      [
        'a PNG with alpha',
        () =>
          sharp(Buffer.alloc(17 * 9 * 4, 77), { raw: { width: 17, height: 9, channels: 4 } })
            .png()
            .toBuffer(),
        17,
        9,
      ],
      [
        'a greyscale PNG',
        () =>
          sharp(Buffer.alloc(13 * 7, 33), { raw: { width: 13, height: 7, channels: 1 } })
            .png()
            .toBuffer(),
        13,
        7,
      ],
      [
        'a WebP',
        () =>
          sharp(Buffer.alloc(20 * 20 * 3, 150), { raw: { width: 20, height: 20, channels: 3 } })
            .webp()
            .toBuffer(),
        20,
        20,
      ],
    ];
    for (const [name, make, expectedWidth, expectedHeight] of cases) {
      it(`segments ${name} at its displayed size`, async () => {
        const result = await segment({
          image: (await make()).toString('base64'),
          prompts: [{ type: 'text', text: 'thing' }],
          confidence_threshold: 0,
        });
        assertWellFormed(result, expectedWidth, expectedHeight);
        assert.ok(result.num_masks > 0);
      });
    }
  });

  describe('bad images', () => {
    const post = (image: string): Promise<Response> =>
      postJson(`${server.url}${SEGMENT}`, { image, prompts: [{ type: 'text', text: 'a' }] });

    for (const [name, image] of [
      ['a character outside the alphabet', 'iVBOR$w0KGgo='],
      ['whitespace', 'iVBO Rw0K'],
      ['a length that is not a multiple of 4', 'iVBORw0KG'],
      ['base64url characters', 'iVBO-w0_'],
      ['padding in the middle', 'iV==Rw0K'],
      ['an empty data: URL', 'data:image/png;base64,'],
      ['a data: URL without ;base64', 'data:image/png,iVBORw0K'],
    ]) {
      it(`answers base64 with ${name} with 400 invalid_base64`, async () => {
        await expectApiError(await post(image), 400, 'invalid_base64');
      });
    }

    it('answers a non-image data: URL with 415', async () => {
      await expectApiError(
        await post(`data:text/plain;base64,${image64}`),
        415,
        'unsupported_media',
      );
    });

    it('answers bytes that are no image with 422 invalid_image', async () => {
      const noise = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37 + 11) % 256));
      await expectApiError(await post(noise.toString('base64')), 422, 'invalid_image');
    });

    it('answers a truncated PNG and a truncated JPEG with 422 invalid_image', async () => {
      const png = await testImage(64, 64);
      await expectApiError(
        await post(png.subarray(0, png.length / 2).toString('base64')),
        422,
        'invalid_image',
      );
      const jpeg = await sharp(png).jpeg().toBuffer();
      await expectApiError(
        await post(jpeg.subarray(0, jpeg.length / 2).toString('base64')),
        422,
        'invalid_image',
      );
      await expectApiError(
        await post(png.subarray(0, 12).toString('base64')),
        422,
        'invalid_image',
      );
    });

    it('answers GIF, TIFF and SVG with 415 unsupported_media', async () => {
      const raw = sharp(Buffer.alloc(8 * 8 * 3, 10), { raw: { width: 8, height: 8, channels: 3 } });
      const gif = await raw.clone().gif().toBuffer();
      await expectApiError(await post(gif.toString('base64')), 415, 'unsupported_media', /GIF/);
      const tiff = await raw.clone().tiff().toBuffer();
      await expectApiError(await post(tiff.toString('base64')), 415, 'unsupported_media', /TIFF/);
      const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>');
      await expectApiError(await post(svg.toString('base64')), 415, 'unsupported_media', /SVG/);
    });

    it('answers a PNG header declaring 20000x20000 with 413 image_too_large', async () => {
      const flood = pngDeclaring(20_000, 20_000);
      assert.ok(flood.length < 200);
      await expectApiError(
        await post(flood.toString('base64')),
        413,
        'image_too_large',
        /20000x20000/,
      );
    });

    it('answers a JPEG header declaring 65500x65500 with 413 image_too_large', async () => {
      const flood = await jpegDeclaring(65_500, 65_500);
      await expectApiError(
        await post(flood.toString('base64')),
        413,
        'image_too_large',
        /65500x65500/,
      );
    });

    it('still serves after every bad image', async () => {
      const result = await segment({
        image: image64,
        prompts: [{ type: 'text', text: 'a' }],
        confidence_threshold: 0,
      });
      assertWellFormed(result, width, height);
    });
  });
});

describe('model loading failures', () => {
  it('marks the model failed (health 503 "degraded") on a resolution mismatch', async () => {
    const bundleDir = await exportTinyBundle();
    const server = await startTestServer({ bundleDir, env: { IMAGE_MODEL_RESOLUTION: '1008' } });
    try {
      assert.equal(server.engineState.status, 'failed');
      const response = await fetch(`${server.url}/health`);
      assert.equal(response.status, 503);
      const health = (await response.json()) as Record<string, unknown>;
      assert.equal(health.status, 'degraded');
      assert.deepEqual(health.devices, [
        { device: 'cpu', role: 'image', status: 'failed' },
        { device: 'cpu', role: 'video', status: 'ready' },
      ]);
      await expectApiError(
        await postJson(`${server.url}${SEGMENT}`, {
          image: 'AAAA',
          prompts: [{ type: 'text', text: 'a' }],
        }),
        503,
        'not_ready',
        /failed to load/,
      );
    } finally {
      await server.close();
    }
  });
});
