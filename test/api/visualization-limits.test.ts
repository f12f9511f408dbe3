/**
 * Bounded memory and disk through the real server and engine (tiny random bundle): a
 * visualization over OUTPUT_MAX_FILE_BYTES is not stored and the response says why, and the
 * sizes the feature cache reserves for computations in flight (from the bundle's module
 * signatures) are exactly the sizes of the features the engine then returns.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { readBundleManifest } from '../../src/engine/bundle-manifest';
import { expectedFeatureSizes } from '../../src/engine/segmenter';
import { VISUALIZATION_SKIPPED_HEADER } from '../../src/server/routes/image';
import { syntheticPngBase64 } from '../helpers/images';
import {
  exportTinyBundle,
  postJson,
  startTestServer,
  type SegmentResponse,
  type TestServer,
} from '../helpers/server';

const MAX_FILE_BYTES = 1000;

describe('visualization and feature cache limits', () => {
  let server: TestServer;
  let bundleDir: string;

  before(async () => {
    bundleDir = await exportTinyBundle();
    server = await startTestServer({
      bundleDir,
      env: {
        RATE_LIMIT_ENABLED: 'false',
        OUTPUT_MAX_BYTES: '100000',
        OUTPUT_MAX_FILE_BYTES: String(MAX_FILE_BYTES),
      },
    });
  });
  after(async () => {
    await server?.close();
  });

  async function segment(
    image: string,
  ): Promise<{ body: SegmentResponse; skipped: string | null }> {
    const response = await postJson(`${server.url}/api/v1/image/segment`, {
      image,
      prompts: [{ type: 'text', text: 'cat' }],
      confidence_threshold: 0,
      return_visualization: true,
    });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    return {
      body: JSON.parse(text) as SegmentResponse,
      skipped: response.headers.get(VISUALIZATION_SKIPPED_HEADER),
    };
  }

  const pngs = async (): Promise<string[]> =>
    (await readdir(server.config.outputDir)).filter((name) => name.endsWith('.png'));

  it('answers a visualization over OUTPUT_MAX_FILE_BYTES with a null URL and the reason', async () => {
    // Noise does not compress: the 64x48 overlay PNG is several kB.
    const { body, skipped } = await segment(await syntheticPngBase64(64, 48, 11));
    assert.equal(body.visualization_url, null);
    assert.ok(body.num_masks > 0, 'the segmentation itself is answered');
    assert.match(
      String(skipped),
      /^the visualization PNG is \d+\.\d kB, over the limit of 1\.0 kB per file \(OUTPUT_MAX_FILE_BYTES\); it was not stored$/,
    );
    assert.deepEqual(await pngs(), [], 'nothing written');
  });

  it('stores a visualization within the limit, without the header', async () => {
    const { body, skipped } = await segment(await syntheticPngBase64(8, 6, 12));
    assert.equal(skipped, null);
    assert.match(String(body.visualization_url), /^\/api\/v1\/visualizations\/[0-9a-f]{32}\.png$/);
    const names = await pngs();
    assert.equal(names.length, 1);
    assert.equal(`/api/v1/visualizations/${names[0]}`, body.visualization_url);
  });

  it("reserves exactly the engine's feature sizes for computations in flight", async () => {
    const expected = expectedFeatureSizes(await readBundleManifest(bundleDir));
    assert.ok(
      [expected.trunk, expected.detector, expected.text].every((bytes) => bytes > 0),
      JSON.stringify(expected),
    );
    assert.equal(expected.image, expected.detector + expected.tracker);
    const segmenter = server.engineState.segmenter;
    assert.ok(segmenter);
    const before = segmenter.stats().cache;
    const response = await postJson(`${server.url}/api/v1/image/cached-features`, {
      image: await syntheticPngBase64(40, 30, 13),
      text_prompts: ['a never seen text'],
    });
    assert.equal(response.status, 200, await response.text());
    const after = segmenter.stats().cache;
    // One new image's trunk output and detector maps (a text prompt needs no tracker maps)
    // and one new text were computed and cached at their real sizes.
    assert.equal(after.bytes - before.bytes, expected.trunk + expected.detector + expected.text);
    assert.deepEqual([after.inFlightBytes, after.leasedBytes, after.uncountedBytes], [0, 0, 0]);
  });
});
