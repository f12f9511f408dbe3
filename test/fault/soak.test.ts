/**
 * Soak (SECURITY.md, "Load and faults"): rounds of mixed load for a bounded time (image
 * requests, some with visualizations, one whose client hangs up; a video session started
 * from a video_base64 upload, clicked, propagated and closed). After the warm-up round, open
 * files, sessions, uploads and the model's native memory come back to their level after every
 * round, and resident memory stays flat.
 */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { syntheticPngBase64 } from '../helpers/images';
import {
  exportTinyBundle,
  postJson,
  startTestServer,
  VideoApi,
  type TestServer,
} from '../helpers/server';
import { makeTempDir, removeDir, writeVideo } from '../helpers/videos';

const ROUNDS = 8;
const MB = 1024 * 1024;

async function openFiles(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

describe('soak: mixed load comes back to its level', () => {
  let server: TestServer;
  let dir: string;
  let uploadDir: string;
  let videoBase64: string;
  const images: string[] = [];

  before(async () => {
    dir = await makeTempDir();
    uploadDir = path.join(dir, 'uploads');
    const video = await writeVideo(dir, 'mp4-x264rgb', { width: 64, height: 48, frames: 6 });
    videoBase64 = (await readFile(video.file)).toString('base64');
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: {
        RATE_LIMIT_ENABLED: 'false',
        UPLOAD_DIR: uploadDir,
        MAX_CONCURRENT_REQUESTS: '2',
        MAX_QUEUED_REQUESTS: '8',
      },
    });
    for (let seed = 0; seed < 4; seed += 1) images.push(await syntheticPngBase64(96, 72, seed));
  });

  after(async () => {
    await server?.close();
    await removeDir(dir);
  });

  async function round(n: number): Promise<void> {
    const url = `${server.url}/api/v1/image/segment`;
    const gone = new AbortController();
    const hungUp = fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ image: images[n % 4], prompts: [{ type: 'text', text: 'x' }] }),
      signal: gone.signal,
    }).catch(() => null);
    setTimeout(() => gone.abort(), 5);
    const served = await Promise.all(
      images.map((image, i) =>
        postJson(url, {
          image,
          prompts: [{ type: 'text', text: `object ${n % 3}` }],
          return_visualization: i === 0,
        }).then(async (response) => {
          await response.arrayBuffer();
          return response.status;
        }),
      ),
    );
    assert.deepEqual(served, [200, 200, 200, 200]);
    await hungUp;

    const api = new VideoApi(server.url);
    const started = await api.start({ video_base64: videoBase64 });
    assert.equal(started.status, 200);
    const { session_id: id } = (await started.json()) as { session_id: string };
    await api.click(id, 0, 0.5, 0.5);
    const propagated = await api.propagate(id, { max_frames: 3 });
    assert.equal(propagated.status, 200);
    await propagated.arrayBuffer();
    const closed = await api.close(id);
    assert.equal(closed.status, 200);
    await closed.arrayBuffer();
  }

  it(`keeps files, sessions, uploads and memory level over ${ROUNDS} rounds`, async () => {
    await round(0); // warm-up: caches, lazily loaded code, the video engine
    const level = {
      files: await openFiles(),
      trackers: server.models.nativeMemory()?.trackers,
    };
    const rssAfterWarmUp = process.memoryUsage().rss;
    let rss = rssAfterWarmUp;
    for (let n = 1; n < ROUNDS; n += 1) {
      await round(n);
      assert.equal(server.models.sessionCount(), 0, `round ${n}: no session left`);
      assert.deepEqual(await readdir(uploadDir), [], `round ${n}: no upload left`);
      assert.equal(server.models.nativeMemory()?.trackers, level.trackers, `round ${n}: trackers`);
      assert.equal(server.engineState.admission().running, 0, `round ${n}: nothing running`);
      // A few descriptors come and go with keep-alive sockets and libuv's pool.
      const files = await openFiles();
      assert.ok(files <= level.files + 8, `round ${n}: ${files} open files (${level.files})`);
      rss = process.memoryUsage().rss;
    }
    const growth = (rss - rssAfterWarmUp) / MB;
    console.log(
      `rss after warm-up ${(rssAfterWarmUp / MB).toFixed(0)} MB, growth ${growth.toFixed(1)} MB`,
    );
    assert.ok(
      growth < 96,
      `resident memory grew ${growth.toFixed(1)} MB over ${ROUNDS - 1} rounds`,
    );
  });
});
