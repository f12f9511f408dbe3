/**
 * IMAGE_MODEL_BATCH_SIZE through the API (tiny bundle, real sockets): concurrent image
 * requests share vision encoder calls, their answers equal those of a server that encodes each
 * image alone (masks IoU >= 0.999, scores within 1e-5), and the metrics listener counts the
 * batches. (A bundle that cannot batch: test/api/main.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { syntheticPngBase64 } from '../helpers/images';
import { decodeRle, maskIou } from '../helpers/rle';
import {
  exportTinyBundle,
  postJson,
  sample,
  scrape,
  startTestServer,
  type SegmentResponse,
  type TestServer,
} from '../helpers/server';

const SEGMENT = '/api/v1/image/segment';
const MIN_IOU = 0.999;
const MAX_SCORE_DIFFERENCE = 1e-5;

describe('image requests batched across clients (IMAGE_MODEL_BATCH_SIZE)', () => {
  let batched: TestServer;
  let alone: TestServer;
  const bodies: Record<string, unknown>[] = [];

  before(async () => {
    const bundleDir = await exportTinyBundle();
    const env = { RATE_LIMIT_ENABLED: 'false', ENABLE_FEATURE_CACHE: 'false' };
    // A long window: the four requests of a test reach the encoder well within it.
    batched = await startTestServer({
      bundleDir,
      env: { ...env, IMAGE_MODEL_BATCH_SIZE: '4', IMAGE_MODEL_BATCH_WAIT_MS: '1000' },
      metrics: true,
    });
    alone = await startTestServer({ bundleDir, env, metrics: true });
    const sizes = [
      [96, 64],
      [64, 48],
      [120, 90],
      [50, 70],
    ];
    for (const [seed, [width, height]] of sizes.entries()) {
      const image = await syntheticPngBase64(width, height, seed);
      // Clicks for two, text for the other two: both paths read the batched features.
      bodies.push(
        seed % 2 === 0
          ? { image, prompts: [{ type: 'point', points: [[0.3, 0.6]], point_labels: [1] }] }
          : { image, prompts: [{ type: 'text', text: 'object' }], confidence_threshold: 0 },
      );
    }
  });

  after(async () => {
    await batched?.close();
    await alone?.close();
  });

  async function segmentAll(server: TestServer): Promise<SegmentResponse[]> {
    const responses = await Promise.all(
      bodies.map((body) => postJson(`${server.url}${SEGMENT}`, body)),
    );
    return Promise.all(
      responses.map(async (response) => {
        const text = await response.text();
        assert.equal(response.status, 200, text);
        return JSON.parse(text) as SegmentResponse;
      }),
    );
  }

  it('four concurrent requests share one encoder call and answer as if alone', async () => {
    const results = await segmentAll(batched);
    const references = await segmentAll(alone);
    for (const [i, result] of results.entries()) {
      const reference = references[i];
      assert.ok(reference.num_masks > 0, 'the comparison is not empty');
      assert.equal(result.num_masks, reference.num_masks);
      assert.deepEqual(result.labels, reference.labels);
      result.scores.forEach((score, k) => {
        const difference = Math.abs(score - reference.scores[k]);
        assert.ok(difference <= MAX_SCORE_DIFFERENCE, `request ${i} mask ${k}: ${difference}`);
      });
      result.masks.forEach((mask, k) => {
        const iou = maskIou(decodeRle(mask), decodeRle(reference.masks[k]));
        assert.ok(iou >= MIN_IOU, `request ${i} mask ${k}: IoU ${iou}`);
      });
    }

    const series = (size: number): string =>
      `sam3_image_batches_total{device="cpu",size="${size}"}`;
    const batchedMetrics = await scrape(batched);
    assert.equal(sample(batchedMetrics, series(4)), 1);
    assert.ok(Number.isNaN(sample(batchedMetrics, series(1))), 'no image went alone');
    assert.equal(sample(await scrape(alone), series(1)), 4);
    assert.deepEqual(batched.engineState.segmenter?.stats().imageBatches, { '4': 1 });
  });
});
