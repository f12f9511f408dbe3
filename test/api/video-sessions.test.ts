/**
 * The video session endpoints (SPEC.md "Video sessions") on the real addon, the tiny bundle
 * with its tracker modules, and real ffmpeg videos: starting from base64, a path and a
 * multipart upload; admission (ids, MAX_CONCURRENT_SESSIONS); the prompt -> propagate ->
 * status -> remove -> reset -> close cycle with the tracker's memory back to baseline; busy
 * sessions; unknown ids; schema errors; idle reaping; and the lifecycle when video is disabled
 * or the bundle has no tracker modules.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Ajv2020 from 'ajv/dist/2020';
import { repoPath } from '../helpers/repo';
import {
  VideoApi,
  expectApiError,
  expectJson,
  exportTinyBundle,
  startTestServer,
  type StreamMessage,
  type TestServer,
  type TrackedObjectBody,
  type VideoInfoBody,
  waitFor,
} from '../helpers/server';
import { makeTempDir, removeDir, writeVideo, type SyntheticVideo } from '../helpers/videos';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const FRAMES = 8;
const VIDEO_INFO: VideoInfoBody = {
  total_frames: FRAMES,
  fps: 10,
  resolution: { width: 64, height: 48 },
  duration_seconds: 0.8,
};

interface PromptBody {
  frame_index: number;
  obj_id: number[];
  masks: { size: [number, number]; counts: string }[];
  boxes: number[][];
  scores: number[];
  present: boolean[];
  status: string;
}

interface StatusBody {
  session_id: string;
  status: string;
  current_objects: number[];
  concepts: unknown[];
  frames_processed: number;
  total_frames: number;
  gpu_memory_used_mb: number;
}

function frameOrder(messages: StreamMessage[]): number[] {
  return messages.flatMap((m) => (m.type === 'frame' ? [m.frame_index] : []));
}

function assertObjects(objects: TrackedObjectBody[], ids: number[], where: string): void {
  assert.deepEqual(
    objects.map((o) => o.id),
    ids,
    `${where}: object ids`,
  );
  for (const object of objects) {
    assert.deepEqual(Object.keys(object), ['id', 'mask', 'box', 'score', 'present'], where);
    assert.deepEqual(object.mask.size, [48, 64], `${where}: mask at the video size`);
    assert.ok(object.mask.counts.length > 0, where);
    assert.equal(object.box.length, 4, where);
    assert.ok(object.score >= 0 && object.score <= 1, `${where}: score ${object.score}`);
  }
}

describe('video sessions over HTTP', () => {
  let work: string;
  let uploads: string;
  let videos: string;
  let video: SyntheticVideo;
  let longVideo: SyntheticVideo;
  let server: TestServer;
  let api: VideoApi;

  const uploadsLeft = (): Promise<string[]> => readdir(uploads);
  const liveBytes = (): number => server.models.liveTrackerBytes();

  before(async () => {
    work = await makeTempDir('sam3-video-sessions-');
    uploads = path.join(work, 'uploads');
    videos = path.join(work, 'videos');
    await mkdir(uploads);
    await mkdir(videos);
    video = await writeVideo(videos, 'mp4-x264rgb', { frames: FRAMES }, 'clip');
    longVideo = await writeVideo(videos, 'mp4-x264rgb', { frames: 24 }, 'long');
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: {
        RATE_LIMIT_ENABLED: 'false',
        UPLOAD_DIR: uploads,
        VIDEO_PATH_ROOTS: videos,
        MAX_CONCURRENT_SESSIONS: '3',
        VIDEO_MAX_OBJECTS: '2',
      },
    });
    assert.equal(server.engineState.videoStatus, 'ready');
    api = new VideoApi(server.url);
  });

  after(async () => {
    await server?.close();
    await removeDir(work);
  });

  it('starts sessions from base64, a path and a multipart upload with the probed video_info', async () => {
    const bytes = await readFile(video.file);
    const fromBase64 = await expectJson<{ session_id: string }>(
      await api.start({ video_base64: bytes.toString('base64') }),
    );
    assert.match(fromBase64.session_id, UUID);
    assert.deepEqual(fromBase64, {
      session_id: fromBase64.session_id,
      video_info: VIDEO_INFO,
      status: 'ready',
    });

    assert.deepEqual(
      await expectJson(await api.start({ video_path: video.file, session_id: 'from-path_1' })),
      { session_id: 'from-path_1', video_info: VIDEO_INFO, status: 'ready' },
    );

    const form = new FormData();
    form.append('session_id', 'uploaded');
    form.append('gpu_ids', '["cpu"]');
    form.append('video', new Blob([bytes]), 'clip.mp4');
    const uploaded = await fetch(`${server.url}/api/v1/video/session/start`, {
      method: 'POST',
      body: form,
    });
    assert.deepEqual(await expectJson(uploaded), {
      session_id: 'uploaded',
      video_info: VIDEO_INFO,
      status: 'ready',
    });

    // The base64 and uploaded videos are the sessions' own files; the path is only read.
    assert.equal((await uploadsLeft()).length, 2);
    const listed = await expectJson<{
      sessions: Record<string, unknown>[];
      total_sessions: number;
    }>(await api.list());
    assert.equal(listed.total_sessions, 3);
    const ids = [fromBase64.session_id, 'from-path_1', 'uploaded'];
    assert.deepEqual(listed.sessions.map((s) => s.session_id).sort(), [...ids].sort());
    for (const entry of listed.sessions) {
      assert.deepEqual(Object.keys(entry), [
        'session_id',
        'type',
        'created_at',
        'status',
        'objects_count',
      ]);
      assert.equal(entry.type, 'video');
      assert.equal(entry.status, 'ready');
      assert.equal(entry.objects_count, 0);
      const created = entry.created_at as string;
      assert.equal(new Date(created).toISOString(), created);
      assert.ok(Math.abs(Date.now() - Date.parse(created)) < 120_000);
    }
    const health = await expectJson<{ sessions: number }>(await fetch(`${server.url}/health`));
    assert.equal(health.sessions, 3);

    for (const id of ids) {
      const closed = await expectJson<Record<string, unknown>>(await api.close(id));
      assert.deepEqual(Object.keys(closed), ['session_id', 'status', 'memory_freed_mb']);
      assert.equal(closed.status, 'closed');
    }
    assert.deepEqual(await uploadsLeft(), [], 'closing removes the sessions own files');
    assert.equal(liveBytes(), 0);
    assert.equal((await readdir(videos)).length, 2, 'a video_path file stays');
  });

  it('refuses a taken session_id (409) and sessions beyond MAX_CONCURRENT_SESSIONS (429)', async () => {
    await api.startPath(video.file, 'dup');
    await expectApiError(
      await api.start({ video_path: video.file, session_id: 'dup' }),
      409,
      'session_exists',
      /dup/,
    );
    const others = [await api.startPath(video.file), await api.startPath(video.file)];
    const refused = await api.start({ video_path: video.file });
    assert.equal(refused.headers.get('retry-after'), '5');
    await expectApiError(refused, 429, 'too_many_sessions', /MAX_CONCURRENT_SESSIONS/);

    // An upload is refused before it is written.
    const form = new FormData();
    form.append('video', new Blob([await readFile(video.file)]), 'clip.mp4');
    const upload = await fetch(`${server.url}/api/v1/video/session/start`, {
      method: 'POST',
      body: form,
    });
    assert.equal(upload.headers.get('retry-after'), '5');
    await expectApiError(upload, 429, 'too_many_sessions');
    assert.deepEqual(await uploadsLeft(), []);

    for (const id of ['dup', ...others]) await expectJson(await api.close(id));
    // Sessions still starting count: of 4 concurrent starts, 3 get a slot.
    const concurrent = await Promise.all(
      Array.from({ length: 4 }, () => api.start({ video_path: video.file })),
    );
    assert.deepEqual(concurrent.map((r) => r.status).sort(), [200, 200, 200, 429]);
    for (const response of concurrent) {
      if (response.status !== 200) {
        await expectApiError(response, 429, 'too_many_sessions');
        continue;
      }
      const { session_id } = await expectJson<{ session_id: string }>(response);
      await expectJson(await api.close(session_id));
    }
    assert.equal(liveBytes(), 0);
  });

  it('prompts, propagates, reports status, removes, resets and closes; memory returns', async () => {
    const baseline = liveBytes();
    const id = await api.startPath(video.file, 'cycle');

    const first = await expectJson<PromptBody>(
      await api.prompt(id, {
        frame_index: 0,
        prompts: [{ type: 'point', points: [[0.3, 0.4]], point_labels: [1] }],
        obj_id: null,
      }),
    );
    assert.deepEqual(Object.keys(first), [
      'frame_index',
      'obj_id',
      'masks',
      'boxes',
      'scores',
      'present',
      'status',
    ]);
    assert.equal(first.frame_index, 0);
    assert.deepEqual(first.obj_id, [1]);
    assert.equal(first.status, 'prompt_added');
    assert.deepEqual(first.masks[0].size, [48, 64]);
    assert.equal(first.boxes[0].length, 4);
    assert.equal(typeof first.present[0], 'boolean');

    // A box is a second object's prompt; the answer holds every object on the frame.
    const second = await expectJson<PromptBody>(
      await api.prompt(id, {
        frame_index: 0,
        prompts: [{ type: 'box', box: [0.7, 0.6, 0.3, 0.4] }],
        obj_id: null,
      }),
    );
    assert.deepEqual(second.obj_id, [1, 2]);
    assert.equal(second.masks.length, 2);
    assert.equal(second.scores.length, 2);
    assert.equal(second.present.length, 2);
    await expectApiError(
      await api.prompt(id, {
        frame_index: 0,
        prompts: [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1] }],
        obj_id: 7,
      }),
      409,
      'too_many_objects',
      /VIDEO_MAX_OBJECTS/,
    );
    // Refining a known object: two clicks replace its clicks on the frame.
    const refined = await expectJson<PromptBody>(
      await api.prompt(id, {
        frame_index: 0,
        prompts: [
          {
            type: 'point',
            points: [
              [0.3, 0.4],
              [0.9, 0.1],
            ],
            point_labels: [1, 0],
          },
        ],
        obj_id: 1,
      }),
    );
    assert.deepEqual(refined.obj_id, [1, 2]);

    // Forward from the first prompted frame to the end.
    const forward = await expectJson<{
      session_id: string;
      results: Record<string, { frame_index: number; objects: TrackedObjectBody[] }>;
      total_frames: number;
      processing_time_ms: number;
    }>(await api.propagate(id, {}));
    assert.deepEqual(Object.keys(forward), [
      'session_id',
      'results',
      'total_frames',
      'processing_time_ms',
    ]);
    assert.equal(forward.session_id, id);
    assert.equal(forward.total_frames, FRAMES);
    assert.deepEqual(Object.keys(forward.results), ['0', '1', '2', '3', '4', '5', '6', '7']);
    for (const [key, frame] of Object.entries(forward.results)) {
      assert.equal(frame.frame_index, Number(key));
      assertObjects(frame.objects, [1, 2], `frame ${key}`);
    }
    assert.ok(forward.processing_time_ms > 0);

    const status = await expectJson<StatusBody>(await api.status(id));
    const held = liveBytes() - baseline;
    assert.ok(held > 0, 'the tracker holds memory');
    assert.ok(status.gpu_memory_used_mb * 1024 * 1024 >= held, 'status counts the tracker');
    assert.deepEqual(status, {
      session_id: id,
      status: 'ready',
      current_objects: [1, 2],
      concepts: [],
      frames_processed: FRAMES,
      total_frames: FRAMES,
      gpu_memory_used_mb: status.gpu_memory_used_mb,
    });

    // Both directions: forward from the start, then backward from start - 1, max_frames each.
    const both = await api.stream(id, { direction: 'both', start_frame_index: 4, max_frames: 2 });
    assert.deepEqual(frameOrder(both), [4, 5, 3, 2]);
    assert.deepEqual(both.at(-1), { type: 'complete', total_frames: 4 });

    assert.deepEqual(await expectJson(await api.removeObject(id, 2)), {
      session_id: id,
      obj_id: 2,
      status: 'removed',
    });
    await expectApiError(await api.removeObject(id, 2), 404, 'not_found', /object 2/);
    assert.deepEqual((await expectJson<StatusBody>(await api.status(id))).current_objects, [1]);

    assert.deepEqual(await expectJson(await api.reset(id)), {
      session_id: id,
      status: 'reset',
      objects_cleared: 1,
    });
    const cleared = await expectJson<StatusBody>(await api.status(id));
    assert.deepEqual(cleared.current_objects, []);
    assert.equal(cleared.frames_processed, 0);
    await expectApiError(await api.propagate(id, {}), 400, 'invalid_prompt', /no objects/);

    // The default start is the first prompted frame; backward goes down to frame 0.
    assert.deepEqual((await api.click(id, 3, 0.5, 0.5)).obj_id, [1]);
    const backward = await api.stream(id, { direction: 'backward' });
    assert.deepEqual(frameOrder(backward), [3, 2, 1, 0]);
    assert.deepEqual(backward.at(-1), { type: 'complete', total_frames: 4 });

    const before = await expectJson<StatusBody>(await api.status(id));
    const trackerBytes = liveBytes() - baseline;
    const closed = await expectJson<{ memory_freed_mb: number }>(await api.close(id));
    assert.deepEqual(closed, {
      session_id: id,
      status: 'closed',
      memory_freed_mb: before.gpu_memory_used_mb,
    });
    assert.ok(closed.memory_freed_mb * 1024 * 1024 >= trackerBytes);
    assert.equal(liveBytes(), baseline, 'the tracker memory is back to baseline');
    await expectApiError(await api.status(id), 404, 'not_found');
    await expectApiError(await api.close(id), 404, 'not_found');
  });

  it('answers 409 session_busy while a propagation runs; a close cancels it', async () => {
    const id = await api.startPath(longVideo.file);
    await api.click(id, 0, 0.5, 0.5);
    const running = api.propagate(id, {});
    await waitFor(
      async () => (await expectJson<StatusBody>(await api.status(id))).status === 'propagating',
      30_000,
      'the propagation to start',
    );
    await expectApiError(await api.propagate(id, {}), 409, 'session_busy', /propagating/);
    await expectApiError(
      await api.prompt(id, {
        frame_index: 1,
        prompts: [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1] }],
      }),
      409,
      'session_busy',
    );
    await expectApiError(await api.reset(id), 409, 'session_busy');
    await expectApiError(await api.removeObject(id, 1), 409, 'session_busy');
    const still = await expectJson<StatusBody>(await api.status(id));
    assert.equal(still.status, 'propagating', 'every refusal came while it ran');
    // Closing it cancels the propagation, which answers that the session is gone.
    const closed = await expectJson<{ status: string }>(await api.close(id));
    assert.equal(closed.status, 'closed');
    await expectApiError(await running, 404, 'not_found', /closed during the propagation/);
    assert.equal(liveBytes(), 0);
  });

  it('answers 404 not_found for unknown sessions and objects on every route', async () => {
    const prompt = {
      frame_index: 0,
      prompts: [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1] }],
    };
    for (const id of ['no-such-session', 'bad%20id', 'x'.repeat(65)]) {
      await expectApiError(await api.status(id), 404, 'not_found');
      await expectApiError(await api.prompt(id, prompt), 404, 'not_found');
      await expectApiError(await api.propagate(id, {}), 404, 'not_found');
      await expectApiError(await api.reset(id), 404, 'not_found');
      await expectApiError(await api.removeObject(id, 1), 404, 'not_found');
      await expectApiError(await api.close(id), 404, 'not_found');
    }
    const id = await api.startPath(video.file);
    await expectApiError(await api.removeObject(id, 1), 404, 'not_found', /no object 1/);
    await expectApiError(await api.removeObject(id, 0), 400, 'invalid_request', /obj_id/);
    await expectApiError(await api.removeObject(id, 'one'), 400, 'invalid_request', /obj_id/);
    await expectJson(await api.close(id));
  });

  it('refuses malformed requests with 400 (415 for other media) in the SPEC error shape', async () => {
    const source = { video_path: video.file };
    const refuse = async (body: unknown, code: string, pattern: RegExp): Promise<void> => {
      await expectApiError(await api.start(body), 400, code, pattern);
    };
    await refuse({ ...source, extra: 1 }, 'invalid_request', /unknown field "extra"/);
    await refuse(
      { video_path: video.file, video_base64: 'AAAA' },
      'invalid_request',
      /exactly one of video_url, video_base64, video_path.*video_base64 and video_path/,
    );
    await refuse({}, 'invalid_request', /exactly one of/);
    await refuse({ ...source, session_id: 'bad id!' }, 'invalid_request', /\/session_id/);
    await refuse({ ...source, session_id: 'x'.repeat(65) }, 'invalid_request', /\/session_id/);
    await refuse({ ...source, session_id: '' }, 'invalid_request', /\/session_id/);
    await refuse({ ...source, gpu_ids: ['gpu0'] }, 'invalid_request', /\/gpu_ids\/0/);
    await refuse({ ...source, gpu_ids: [0] }, 'invalid_device', /cuda:0.*configured: cpu/);
    await refuse({ video_url: 'x'.repeat(3000) }, 'invalid_request', /\/video_url/);
    await expectApiError(
      await fetch(`${server.url}/api/v1/video/session/start`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain' },
        body: 'video',
      }),
      415,
      'unsupported_media',
    );
    assert.equal(server.models.sessionCount(), 0);

    const id = await api.startPath(video.file);
    const click = [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1] }];
    const refusePrompt = async (body: unknown, code: string, pattern: RegExp) =>
      expectApiError(await api.prompt(id, body), 400, code, pattern);
    await refusePrompt({ frame_index: FRAMES, prompts: click }, 'invalid_request', /out of range/);
    await refusePrompt({ frame_index: -1, prompts: click }, 'invalid_request', /frame_index/);
    await refusePrompt({ frame_index: 0, prompts: click, obj_id: 0 }, 'invalid_request', /obj_id/);
    await refusePrompt({ frame_index: 0, prompts: [] }, 'invalid_request', /\/prompts/);
    await refusePrompt(
      { frame_index: 0, prompts: [{ type: 'text', text: 'person' }, ...click] },
      'invalid_prompt',
      /a text prompt takes exemplar boxes but no clicks/,
    );
    await refusePrompt(
      {
        frame_index: 0,
        prompts: [
          { type: 'box', box: [0.5, 0.5, 0.2, 0.2] },
          { type: 'box', box: [0.2, 0.2, 0.1, 0.1] },
        ],
      },
      'invalid_prompt',
      /at most one box/,
    );
    await refusePrompt(
      { frame_index: 0, prompts: [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1, 0] }] },
      'invalid_prompt',
      /one label per point/,
    );
    await api.click(id, 0, 0.5, 0.5);
    const refusePropagate = async (body: unknown, pattern: RegExp) =>
      expectApiError(await api.propagate(id, body), 400, 'invalid_request', pattern);
    await refusePropagate({ direction: 'sideways' }, /\/direction/);
    await refusePropagate({ max_frames: 0 }, /\/max_frames/);
    await refusePropagate({ hotstart_delay: -1 }, /\/hotstart_delay/);
    await refusePropagate({ start_frame_index: FRAMES }, /out of range/);
    await refusePropagate({ stream: 'yes' }, /\/stream/);
    // hotstart_delay is accepted (it only concerns text-prompted tracking).
    const one = await expectJson<{ total_frames: number }>(
      await api.propagate(id, { hotstart_delay: 3, max_frames: 1 }),
    );
    assert.equal(one.total_frames, 1);
    await expectJson(await api.close(id));
  });

  it('publishes the video endpoints and their schemas in /openapi.json (what /docs renders)', async () => {
    const doc = await expectJson<{
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: Record<string, Record<string, unknown>> };
    }>(await fetch(`${server.url}/openapi.json`));
    const operations = Object.entries(doc.paths)
      .filter(([route]) => route.includes('video') || route.startsWith('/ws/'))
      .flatMap(([route, item]) => Object.keys(item).map((method) => `${method} ${route}`))
      .sort();
    assert.deepEqual(operations, [
      'delete /api/v1/video/session/{session_id}',
      'delete /api/v1/video/session/{session_id}/concept/{concept_id}',
      'delete /api/v1/video/session/{session_id}/object/{obj_id}',
      'get /api/v1/video/session/{session_id}/status',
      'get /api/v1/video/sessions',
      'get /ws/propagate/{session_id}',
      'post /api/v1/video/session/start',
      'post /api/v1/video/session/{session_id}/prompt',
      'post /api/v1/video/session/{session_id}/propagate',
      'post /api/v1/video/session/{session_id}/reset',
    ]);
    const ajv = new Ajv2020({ strict: true, discriminator: true });
    const start = ajv.compile(doc.components.schemas.StartSessionRequest);
    assert.equal(start({ video_path: 'a.mp4', session_id: 'ok-1', gpu_ids: ['cpu'] }), true);
    assert.equal(start({ video_path: 'a.mp4', video_url: 'http://example.com/a.mp4' }), false);
    assert.equal(start({ video_path: 'a.mp4', session_id: 'not ok' }), false);
    const propagate = ajv.compile(doc.components.schemas.PropagateRequest);
    assert.equal(propagate({ direction: 'both', max_frames: 3, stream: true }), true);
    assert.equal(propagate({ direction: 'up' }), false);
    // /docs (Swagger UI) renders this document: what it shows is what the document holds.
    assert.ok(doc.paths['/api/v1/video/session/{session_id}/propagate'], 'propagate');
    assert.ok(doc.paths['/ws/propagate/{session_id}'], 'the WebSocket');
    const text = JSON.stringify(doc);
    assert.match(text, /hotstart_delay/);
    assert.match(text, /too_many_sessions/);
  });

  describe('with a short SESSION_TIMEOUT_SECONDS', () => {
    let idle: TestServer;
    before(async () => {
      idle = await startTestServer({
        bundleDir: await exportTinyBundle(),
        env: {
          RATE_LIMIT_ENABLED: 'false',
          UPLOAD_DIR: uploads,
          VIDEO_PATH_ROOTS: videos,
          SESSION_TIMEOUT_SECONDS: '1',
        },
      });
    });
    after(async () => {
      await idle?.close();
    });

    it('closes idle sessions (never while they propagate) and frees their memory and files', async () => {
      const idleApi = new VideoApi(idle.url);
      const bytes = await readFile(video.file);
      const id = (
        await expectJson<{ session_id: string }>(
          await idleApi.start({ video_base64: bytes.toString('base64') }),
        )
      ).session_id;
      // A propagation longer than the timeout runs to its end.
      const busy = await idleApi.startPath(longVideo.file);
      await idleApi.click(busy, 0, 0.5, 0.5);
      const started = Date.now();
      const done = await expectJson<{ total_frames: number }>(await idleApi.propagate(busy, {}));
      assert.equal(done.total_frames, 24);
      assert.ok(Date.now() - started > 1000, 'the propagation outlasted the timeout');
      await expectJson(await idleApi.status(busy));

      await waitFor(async () => idle.models.sessionCount() === 0, 10_000, 'the reaper');
      await expectApiError(await idleApi.status(id), 404, 'not_found');
      await expectApiError(await idleApi.status(busy), 404, 'not_found');
      assert.deepEqual(await uploadsLeft(), []);
      assert.equal(idle.models.liveTrackerBytes(), 0);
    });
  });

  it('answers 503 video_disabled on every video route with VIDEO_MODEL_ENABLED=false', async () => {
    const disabled = await startTestServer({ env: { VIDEO_MODEL_ENABLED: 'false' } });
    try {
      const off = new VideoApi(disabled.url);
      const responses = [
        await off.start({ video_path: video.file }),
        await off.prompt('a', {}),
        await off.propagate('a', {}),
        await off.status('a'),
        await off.removeObject('a', 1),
        await off.reset('a'),
        await off.close('a'),
        await off.list(),
      ];
      for (const response of responses) {
        await expectApiError(response, 503, 'video_disabled', /VIDEO_MODEL_ENABLED=false/);
      }
    } finally {
      await disabled.close();
    }
  });

  describe('a bundle without tracker modules', () => {
    let imageOnly: string;
    before(async () => {
      // The tiny bundle without its video blocks: the same image modules, no tracker.
      const bundle = await exportTinyBundle();
      imageOnly = path.join(work, 'image-only-bundle');
      await mkdir(imageOnly);
      const manifest = JSON.parse(await readFile(path.join(bundle, 'manifest.json'), 'utf8'));
      delete manifest.tracker;
      delete manifest.concept;
      for (const name of [
        'memory_attention',
        'tracker_decoder',
        'tracker_decoder_multimask',
        'memory_encoder',
        'tracker_mask_decoder',
      ]) {
        delete manifest.modules[name];
      }
      for (const entry of await readdir(bundle)) {
        if (entry !== 'manifest.json') {
          await symlink(path.join(bundle, entry), path.join(imageOnly, entry));
        }
      }
      await writeFile(path.join(imageOnly, 'manifest.json'), JSON.stringify(manifest));
    });

    it('serves images, answers 503 not_ready on video routes and reports video unavailable', async () => {
      const server1 = await startTestServer({ bundleDir: imageOnly });
      try {
        assert.equal(server1.engineState.status, 'ready');
        const health = await expectJson<{ status: string; devices: unknown[] }>(
          await fetch(`${server1.url}/health`),
        );
        assert.equal(health.status, 'ok');
        assert.deepEqual(health.devices, [
          { device: 'cpu', role: 'image', status: 'ready' },
          { device: 'cpu', role: 'video', status: 'unavailable' },
        ]);
        await expectApiError(
          await new VideoApi(server1.url).start({ video_path: video.file }),
          503,
          'not_ready',
          /no video tracker modules \(bundle format version 4\)/,
        );
      } finally {
        await server1.close();
      }
    });

    it('stops start-up with exit code 1 when VIDEO_MODEL_REQUIRED is true', async () => {
      const child = spawn(process.execPath, [repoPath('dist', 'src', 'main.js')], {
        cwd: work,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          SERVER_HOST: '127.0.0.1',
          SERVER_PORT: '0',
          SAM3_CHECKPOINT: imageOnly,
          IMAGE_MODEL_RESOLUTION: '224',
          VIDEO_MODEL_REQUIRED: 'true',
          UPLOAD_DIR: uploads,
          NODE_ENV: 'production',
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      assert.equal(code, 1, stderr);
      assert.match(
        stderr,
        /fatal: VIDEO_MODEL_REQUIRED is true but video sessions cannot be served: the model bundle has no video tracker modules/,
      );
    });
  });
});
