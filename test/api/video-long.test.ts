/**
 * A long video (thousands of small frames) propagates with flat memory: the session's
 * measured bytes (tracker tensors plus decoded frames, from status) stop growing once the
 * configured windows are full, and the process's resident memory over the last three quarters
 * of the video grows by far less than what keeping every frame's outputs would take (what the
 * reference does).
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  VideoApi,
  exportTinyBundle,
  expectJson,
  startTestServer,
  type TestServer,
} from '../helpers/server';
import { makeTempDir, movingShapesFrames, removeDir, writeLosslessVideo } from '../helpers/videos';

const FRAMES = 2000;
const WIDTH = 32;
const HEIGHT = 24;
const FRAME_WINDOW = 8;
const MEMORY_FRAMES = 16;
const MIB = 2 ** 20;

interface StatusBody {
  status: string;
  frames_processed: number;
  gpu_memory_used_mb: number;
}

describe('a long video', () => {
  let work: string;
  let server: TestServer;
  let api: VideoApi;
  let video: string;

  before(async () => {
    work = await makeTempDir('sam3-video-long-');
    const videos = path.join(work, 'videos');
    await mkdir(videos);
    video = path.join(videos, 'long.mp4');
    await writeLosslessVideo(video, movingShapesFrames(WIDTH, HEIGHT, FRAMES), WIDTH, HEIGHT, 25);
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: {
        RATE_LIMIT_ENABLED: 'false',
        UPLOAD_DIR: work,
        VIDEO_PATH_ROOTS: videos,
        VIDEO_FRAME_WINDOW: String(FRAME_WINDOW),
        VIDEO_MEMORY_FRAMES: String(MEMORY_FRAMES),
      },
    });
    api = new VideoApi(server.url);
  });

  after(async () => {
    await server?.close();
    await removeDir(work);
  });

  it(`propagates ${FRAMES} frames with flat session and resident memory`, async () => {
    const id = await api.startPath(video);
    await api.click(id, 0, 0.15, 0.33);
    const status = async (): Promise<StatusBody> => expectJson<StatusBody>(await api.status(id));

    // The NDJSON stream is read line by line; status and RSS are sampled along the way.
    const response = await api.propagate(id, { direction: 'forward', stream: true });
    assert.equal(response.status, 200);
    assert.ok(response.body !== null);
    const decoder = new TextDecoder();
    let pending = '';
    let frames = 0;
    let present = 0;
    const sessionBytes = new Map<number, number>();
    let rssAtQuarter = 0;
    let peakRssAfterQuarter = 0;
    const checkpoints = new Set([FRAMES / 4, FRAMES / 2, FRAMES - 2]);
    for await (const chunk of response.body) {
      pending += decoder.decode(chunk as Uint8Array, { stream: true });
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const message = JSON.parse(pending.slice(0, newline)) as {
          type: string;
          objects?: { present: boolean }[];
          total_frames?: number;
        };
        pending = pending.slice(newline + 1);
        if (message.type === 'complete') {
          assert.equal(message.total_frames, FRAMES);
          continue;
        }
        assert.equal(message.type, 'frame');
        frames += 1;
        if (message.objects?.[0]?.present === true) present += 1;
        const rss = process.memoryUsage().rss;
        if (frames === FRAMES / 4) rssAtQuarter = rss;
        if (frames > FRAMES / 4) peakRssAfterQuarter = Math.max(peakRssAfterQuarter, rss);
        if (checkpoints.has(frames)) {
          const body = await status();
          assert.equal(body.status, 'propagating');
          sessionBytes.set(frames, body.gpu_memory_used_mb * MIB);
        }
      }
    }
    assert.equal(frames, FRAMES);
    assert.ok(present > FRAMES / 2, `the object is tracked (${present} frames present)`);

    // Session memory: the windows are full by a quarter of the video and stay exactly so.
    const [quarter, half, end] = [...checkpoints].map((k) => sessionBytes.get(k) ?? NaN);
    assert.ok(quarter > 0);
    assert.equal(half, quarter, 'session bytes at half the video equal those at a quarter');
    assert.equal(end, quarter, 'session bytes at the end equal those at a quarter');
    // Decoded frames held are bounded by the window (one frame is WIDTH * HEIGHT * 3 bytes):
    // what the session holds is far below what every frame's RGB alone would take.
    assert.ok(quarter < FRAMES * WIDTH * HEIGHT * 3, `session holds ${quarter} bytes`);

    // Resident memory over the last three quarters: keeping one 224 x 224 float mask per frame
    // (as the reference's outputs do, besides memories) would add 1500 * 196 KiB = 287 MiB.
    const growth = peakRssAfterQuarter - rssAtQuarter;
    assert.ok(growth < 48 * MIB, `RSS grew by ${(growth / MIB).toFixed(1)} MiB`);

    const finished = await status();
    assert.equal(finished.status, 'ready');
    const closed = await expectJson<{ memory_freed_mb: number }>(
      await fetch(api.session(id), { method: 'DELETE' }),
    );
    assert.equal(closed.memory_freed_mb, finished.gpu_memory_used_mb);
    assert.equal(server.models.liveTrackerBytes(), 0);
  });
});
