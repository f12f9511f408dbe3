/**
 * End-to-end parity through HTTP: POST /api/v1/image/segment against transformers' SAM3
 * (tools/reference.py) on random-weight bundles of two configurations, real photos of different
 * sizes and several text prompts. Criteria (ARCHITECTURE.md): the same instances above the
 * threshold, mask IoU >= 0.99, scores within 1e-4 (boxes too).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  SCORE_TOLERANCE,
  aboveThreshold,
  assertSameInstances,
  decodedPixelsPng,
  exportRandomBundle,
  runReference,
  tempDir,
  thresholdInWidestGap,
  writePhotos,
  type Photo,
} from '../helpers/reference';
import {
  postJson,
  startTestServer,
  type SegmentResponse,
  type TestServer,
} from '../helpers/server';

const PROMPTS = ['person', 'a cup of coffee', 'cat', 'rocket ship on the launch pad!', 'cat'];

for (const { preset, seed } of [
  { preset: 'tiny', seed: 0 },
  { preset: 'tiny-b', seed: 1 },
]) {
  describe(`text prompts on the '${preset}' random bundle match the reference`, () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let server: TestServer;
    let photos: Photo[];
    let reference: Awaited<ReturnType<typeof runReference>>;

    before(async () => {
      work = await tempDir(`sam3-parity-${preset}-`);
      const bundle = path.join(work.dir, 'bundle');
      await exportRandomBundle(bundle, preset, seed);
      photos = (await writePhotos(work.dir)).slice(0, 3);
      const cases = await Promise.all(
        photos.map(async (photo) => ({
          image: await decodedPixelsPng(photo.file, path.join(work.dir, `${photo.name}.ref.png`)),
          threshold: -1, // every query; the test picks thresholds from these scores
          prompts: PROMPTS.map((text) => ({ text })),
        })),
      );
      reference = await runReference(bundle, cases);
      server = await startTestServer({ bundleDir: bundle, env: { RATE_LIMIT_ENABLED: 'false' } });
    });

    after(async () => {
      await server?.close();
      await work?.cleanup();
    });

    test('every photo: same instances, masks IoU >= 0.99, scores and boxes within 1e-4', async () => {
      assert.equal(photos.length, 3);
      assert.equal(new Set(photos.map((p) => `${p.width}x${p.height}`)).size, 3);
      for (const [index, photo] of photos.entries()) {
        const expected = reference.results[index];
        assert.deepEqual(expected.image_size, { width: photo.width, height: photo.height });
        const { threshold, gap } = thresholdInWidestGap(expected.prompts.map((p) => p.all_scores));
        // Every score is more than the tolerance away from the threshold, so a score within
        // tolerance of the reference cannot fall on the other side of it.
        assert.ok(gap > 2 * SCORE_TOLERANCE, `${photo.name}: widest score gap ${gap}`);

        const image = (await readFile(photo.file)).toString('base64');
        const response = await postJson(`${server.url}/api/v1/image/segment`, {
          image,
          prompts: PROMPTS.map((text) => ({ type: 'text', text })),
          confidence_threshold: threshold,
        });
        assert.equal(response.status, 200, await response.clone().text());
        const body = (await response.json()) as SegmentResponse;
        assert.deepEqual(body.image_size, { width: photo.width, height: photo.height });

        // The response concatenates prompts in request order; split it back per prompt.
        let offset = 0;
        for (const [promptIndex, text] of PROMPTS.entries()) {
          const want = aboveThreshold(expected.prompts[promptIndex], threshold);
          const keep = want.scores.length;
          const labels = body.labels.slice(offset, offset + keep);
          assert.deepEqual(labels, new Array(keep).fill(text), `${photo.name} / ${text}: labels`);
          const got = {
            masks: body.masks.slice(offset, offset + keep),
            boxes: body.boxes.slice(offset, offset + keep),
            scores: body.scores.slice(offset, offset + keep),
          };
          assertSameInstances(`${photo.name} / ${text}`, got, want);
          offset += keep;
        }
        assert.equal(offset, body.num_masks, `${photo.name}: instances beyond the reference's`);
        assert.equal(body.masks.length, body.num_masks);
      }
    });
  });
}
