/**
 * A bf16 bundle (tools/export_sam3.py --dtype bfloat16) served end to end, against the fp32
 * bundle of the same weights served alike: the server reports the bundle's precision, and its
 * answers to clicks, text prompts and click tracking through a video agree with fp32 within
 * bf16's rounding. Bars (README, "Reduced precision"): click masks IoU >= 0.95 and scores within
 * 0.02; every text instance of either server matched by one of the other with IoU >= 0.9 and a
 * score within 0.1, except instances within 0.1 of the threshold, which rounding may move
 * across it; tracked masks IoU >= 0.9 on every frame, the same presence. The module-level
 * measures (logit error, IoU of confident pixels) are tools/tests/test_precision.py's.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { exportAtDtype, tempDir, writePhotos, type Photo } from '../helpers/reference';
import { decodeRle, maskIou } from '../helpers/rle';
import {
  expectJson,
  exportTinyBundle,
  postJson,
  startTestServer,
  VideoApi,
  type SegmentResponse,
  type TestServer,
  type TrackedObjectBody,
} from '../helpers/server';
import { writeVideo, type SyntheticVideo } from '../helpers/videos';

const DTYPES = ['float32', 'bfloat16'] as const;
const THRESHOLD = 0.5;
const MARGIN = 0.1;

type Instance = { mask: Uint8Array; score: number };

function instances(body: SegmentResponse): Instance[] {
  return body.masks.map((mask, i) => ({ mask: decodeRle(mask), score: body.scores[i] }));
}

/** Every instance of `ours` not near the threshold has a counterpart in `theirs`. */
function assertMatched(ours: Instance[], theirs: Instance[], where: string): number {
  let matched = 0;
  for (const [i, instance] of ours.entries()) {
    if (Math.abs(instance.score - THRESHOLD) < MARGIN) continue;
    const ious = theirs.map((other) => maskIou(instance.mask, other.mask));
    const best = Math.max(0, ...ious);
    assert.ok(best >= 0.9, `${where}: instance ${i} (score ${instance.score}) best IoU ${best}`);
    const partner = theirs[ious.indexOf(best)];
    assert.ok(
      Math.abs(partner.score - instance.score) <= 0.1,
      `${where}: instance ${i} score ${instance.score} against ${partner.score}`,
    );
    matched += 1;
  }
  return matched;
}

describe('a bf16 bundle serves what its fp32 bundle serves, within bf16 rounding', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let photos: Photo[];
  let video: SyntheticVideo;
  const servers: TestServer[] = [];

  before(async () => {
    work = await tempDir('sam3-bf16-');
    const bf16 = path.join(work.dir, 'bf16');
    const fp32 = await exportTinyBundle();
    await exportAtDtype(fp32, 'bfloat16', bf16);
    photos = (await writePhotos(work.dir)).slice(0, 3);
    video = await writeVideo(work.dir, 'mp4-x264rgb', { frames: 8 }, 'clip');
    for (const bundleDir of [fp32, bf16]) {
      servers.push(
        await startTestServer({
          bundleDir,
          env: { RATE_LIMIT_ENABLED: 'false', VIDEO_PATH_ROOTS: work.dir },
        }),
      );
    }
  });

  after(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await work?.cleanup();
  });

  const both = <T>(call: (server: TestServer) => Promise<T>) => Promise.all(servers.map(call));
  const segment = (body: unknown) =>
    both(async (server) =>
      expectJson<SegmentResponse>(await postJson(`${server.url}/api/v1/image/segment`, body)),
    );

  test('the server reports the precision of its bundle', async () => {
    const infos = await both(async (server) =>
      expectJson<{ model: { dtype: string; checksum: string } }>(await fetch(`${server.url}/`)),
    );
    assert.deepEqual(
      infos.map((info) => info.model.dtype),
      [...DTYPES],
    );
    assert.equal(infos[1].model.checksum, infos[0].model.checksum);
  });

  test('clicks give the same masks and scores', async () => {
    for (const photo of photos) {
      const image = (await readFile(photo.file)).toString('base64');
      for (const point of [
        [0.5, 0.45],
        [0.3, 0.7],
      ]) {
        const [fp32, bf16] = await segment({
          image,
          prompts: [{ type: 'point', points: [point], point_labels: [1] }],
        });
        assert.equal(fp32.num_masks, 1);
        assert.equal(bf16.num_masks, 1);
        const where = `${photo.name} at ${point.join(',')}`;
        const iou = maskIou(decodeRle(fp32.masks[0]), decodeRle(bf16.masks[0]));
        assert.ok(iou >= 0.95, `${where}: IoU ${iou}`);
        assert.ok(Math.abs(fp32.scores[0] - bf16.scores[0]) <= 0.02, `${where}: scores`);
      }
    }
  });

  test('text prompts find the same instances', async () => {
    let matched = 0;
    for (const photo of photos) {
      const image = (await readFile(photo.file)).toString('base64');
      for (const text of ['person', 'cat', 'object']) {
        const [fp32, bf16] = (
          await segment({
            image,
            prompts: [{ type: 'text', text }],
            confidence_threshold: THRESHOLD,
          })
        ).map(instances);
        const where = `${photo.name} '${text}'`;
        matched += assertMatched(fp32, bf16, `${where} fp32`);
        assertMatched(bf16, fp32, `${where} bf16`);
      }
    }
    assert.ok(matched >= 5, `only ${matched} instances compared`);
  });

  test('a clicked object is tracked alike through a video', async () => {
    const tracks = await both(async (server) => {
      const api = new VideoApi(server.url);
      const id = await api.startPath(video.file);
      assert.deepEqual((await api.click(id, 0, 0.3, 0.5)).obj_id, [1]);
      const body = await expectJson<{
        results: Record<string, { frame_index: number; objects: TrackedObjectBody[] }>;
      }>(await api.propagate(id, {}));
      await api.close(id);
      return Object.values(body.results);
    });
    assert.equal(tracks[0].length, video.frames.length);
    assert.equal(tracks[1].length, video.frames.length);
    let present = 0;
    for (const [i, frame] of tracks[0].entries()) {
      const [ours, theirs] = [frame.objects[0], tracks[1][i].objects[0]];
      assert.equal(theirs.present, ours.present, `frame ${i}: presence`);
      const iou = maskIou(decodeRle(ours.mask), decodeRle(theirs.mask));
      assert.ok(iou >= 0.9, `frame ${i}: IoU ${iou}`);
      present += Number(ours.present);
    }
    assert.ok(present >= 4, `the object is present on ${present} frames only`);
  });
});
