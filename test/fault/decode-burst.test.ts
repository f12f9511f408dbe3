/**
 * A burst of decompression bombs (tiny PNGs that decode to MAX_IMAGE_PIXELS of RGB): memory
 * stays within a bound derived from the configuration (MAX_CONCURRENT_REQUESTS decodes at a
 * time), not from the number of clients. Its own test file, so the process's peak RSS
 * (resourceUsage().maxRSS) is this burst's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { exportTinyBundle, postJson, startTestServer, type TestServer } from '../helpers/server';

const SIDE = 4000;
const PIXELS = SIDE * SIDE;
const RUNNING = 2;
const QUEUED = 2;
const CLIENTS = 30;
const MB = 1024 * 1024;

describe('a burst of decompression bombs', () => {
  let server: TestServer;
  let bomb: string;

  before(async () => {
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: {
        RATE_LIMIT_ENABLED: 'false',
        MAX_IMAGE_PIXELS: String(PIXELS),
        MAX_CONCURRENT_REQUESTS: String(RUNNING),
        MAX_QUEUED_REQUESTS: String(QUEUED),
        ENABLE_FEATURE_CACHE: 'false',
      },
    });
    const png = await sharp({
      create: { width: SIDE, height: SIDE, channels: 3, background: '#000000' },
    })
      .png({ compressionLevel: 9 })
      .toBuffer();
    bomb = png.toString('base64');
  });

  after(async () => {
    await server?.close();
  });

  it('keeps peak memory within what the admission limits allow', async () => {
    const body = { image: bomb, prompts: [{ type: 'text', text: 'object' }] };
    // One bomb first: what one decode costs, and the baseline with the model warm.
    const warm = await postJson(`${server.url}/api/v1/image/segment`, body);
    assert.equal(warm.status, 200);
    await warm.text();
    const baseline = process.resourceUsage().maxRSS * 1024;
    const responses = await Promise.all(
      Array.from({ length: CLIENTS }, () =>
        postJson(`${server.url}/api/v1/image/segment`, body).then(async (r) => {
          await r.text();
          return r.status;
        }),
      ),
    );
    const peak = process.resourceUsage().maxRSS * 1024;
    const served = responses.filter((s) => s === 200).length;
    const refused = responses.filter((s) => s === 429).length;
    // RUNNING requests hold a decoded image each (3 bytes a pixel) plus the decoder's and the
    // preprocessing's working copies: allow 8 bytes a pixel each, on top of the baseline.
    const bound = RUNNING * PIXELS * 8;
    console.log(
      `baseline ${(baseline / MB).toFixed(0)} MB, peak ${(peak / MB).toFixed(0)} MB, ` +
        `growth ${((peak - baseline) / MB).toFixed(0)} MB, bound ${(bound / MB).toFixed(0)} MB, ` +
        `served ${served}, refused ${refused}`,
    );
    assert.equal(served + refused, CLIENTS, `only 200 and 429: ${responses.join(',')}`);
    assert.ok(served >= RUNNING + QUEUED, `the admitted ones were served (${served})`);
    assert.ok(refused >= CLIENTS / 2, `most of the burst was refused (${refused})`);
    assert.ok(peak - baseline <= bound, `peak RSS grew ${(peak - baseline) / MB} MB`);
  });
});
