/**
 * The TypeScript client (clients/typescript) against the real server: real sockets, the real
 * addon and the tiny random-weight bundle, with REQUIRE_API_KEY on (the client sends the key
 * as X-API-Key over HTTP and as the sam3.key.<base64url> subprotocol over the WebSocket, as a
 * browser must). Every method answers exactly what a raw fetch of its endpoint answers; the
 * WebSocket stream equals the HTTP propagation frame for frame; aborting and leaving the loop
 * close the socket and stop the server; errors are Sam3ApiError with the API's code; the RLE
 * decoder agrees with the server's encoder and decoder.
 */
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  RleDecodeError,
  Sam3ApiError,
  Sam3Client,
  decodeRle,
  toBase64,
  type PropagateFrame,
  type PropagateResponse,
  type SegmentRequest,
  type VideoPromptRequest,
  type WebSocketLike,
} from '../../clients/typescript/src';
import { base64UrlOfText } from '../../clients/typescript/src/base64';
import { decodeRle as serverDecodeRle } from '../../src/engine/coco-rle';
import { loadAddon } from '../../src/native/addon';
import { syntheticPng } from '../helpers/images';
import { exportTinyBundle, startTestServer, type TestServer, waitFor } from '../helpers/server';
import { makeTempDir, removeDir, writeVideo, type SyntheticVideo } from '../helpers/videos';

/** A key whose standard base64 has "+" and "/" (base64url must replace them). */
const API_KEY = 'client>>>key???';
const OTHER_KEY = 'another-key';

interface RawAnswer {
  status: number;
  body: Record<string, unknown>;
}

/** Deletes the wall-time fields, which differ between two runs of the same request. */
function untimed<T>(body: T): T {
  const copy = { ...(body as Record<string, unknown>) };
  delete copy.inference_time_ms;
  delete copy.processing_time_ms;
  return copy as T;
}

/** `body` without session_id (two sessions given the same requests answer the same). */
function sessionless<T>(body: T): Omit<T, 'session_id'> {
  const copy = { ...(body as Record<string, unknown>) };
  delete copy.session_id;
  return copy as Omit<T, 'session_id'>;
}

/** The WebSocket class of `ws` that remembers every socket it made (to see how they closed). */
function recordingWebSocket(): {
  WebSocket: WebSocketLike;
  sockets: { socket: WebSocket; closed: Promise<number> }[];
} {
  const sockets: { socket: WebSocket; closed: Promise<number> }[] = [];
  class Recording extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      const closed = new Promise<number>((resolve) => this.once('close', resolve));
      sockets.push({ socket: this, closed });
    }
  }
  return { WebSocket: Recording, sockets };
}

describe('TypeScript client (@sam3/client)', () => {
  let work: string;
  let videos: string;
  let clip: SyntheticVideo;
  let long: SyntheticVideo;
  let server: TestServer;
  let client: Sam3Client;
  let sockets: ReturnType<typeof recordingWebSocket>['sockets'];
  let image: string;
  let serverClosed = false;

  /** A fetch of `path` with the API key, the way the README's curl examples do it. */
  async function raw(method: string, urlPath: string, body?: unknown): Promise<RawAnswer> {
    const headers: Record<string, string> = { 'x-api-key': API_KEY };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(`${server.url}${urlPath}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: JSON.parse(text) as Record<string, unknown> };
  }

  async function rawOk(method: string, urlPath: string, body?: unknown): Promise<unknown> {
    const answer = await raw(method, urlPath, body);
    assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 300));
    return answer.body;
  }

  const session = (id: string, suffix = ''): string => `/api/v1/video/session/${id}${suffix}`;
  const idle = async (id: string): Promise<boolean> =>
    (await client.sessionStatus(id)).status === 'ready';
  const click = (x: number, y: number, objId: number | null = null): VideoPromptRequest => ({
    frame_index: 0,
    prompts: [{ type: 'point', points: [[x, y]], point_labels: [1] }],
    obj_id: objId,
  });

  before(async () => {
    work = await makeTempDir('sam3-ts-client-');
    videos = path.join(work, 'videos');
    await mkdir(videos);
    clip = await writeVideo(videos, 'mp4-x264rgb', { frames: 6 }, 'clip');
    long = await writeVideo(videos, 'mp4-x264rgb', { frames: 24 }, 'long');
    image = (await syntheticPng(96, 64, 3)).toString('base64');
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: {
        RATE_LIMIT_ENABLED: 'false',
        REQUIRE_API_KEY: 'true',
        API_KEYS: `${API_KEY},${OTHER_KEY}`,
        UPLOAD_DIR: path.join(work, 'uploads'),
        VIDEO_PATH_ROOTS: videos,
        LOG_LEVEL: 'INFO',
      },
    });
    const recording = recordingWebSocket();
    sockets = recording.sockets;
    client = new Sam3Client({
      baseUrl: `${server.url}/`,
      apiKey: API_KEY,
      WebSocket: recording.WebSocket,
    });
  });

  after(async () => {
    if (!serverClosed) await server?.close();
    if (work !== undefined) await removeDir(work);
  });

  it('info, health and openApi answer what GET /, /health and /openapi.json answer', async () => {
    assert.deepEqual(await client.info(), await rawOk('GET', '/'));
    const health = await client.health();
    assert.equal(health.status, 'ok');
    assert.deepEqual(health, await rawOk('GET', '/health'));
    const document = await client.openApi();
    assert.deepEqual(document, await rawOk('GET', '/openapi.json'));
    assert.equal(document.openapi, '3.1.0');
  });

  it('segment and cachedFeatures answer what the raw endpoints answer; masks decode', async () => {
    const request: SegmentRequest = {
      image,
      prompts: [
        { type: 'text', text: 'object' },
        { type: 'box', box: [0.5, 0.5, 0.4, 0.4] },
        { type: 'text', text: 'shape' },
      ],
      confidence_threshold: 0,
    };
    const expected = await rawOk('POST', '/api/v1/image/segment', request);
    const segmented = await client.segment(request);
    assert.deepEqual(untimed(segmented), untimed(expected));
    assert.ok(segmented.num_masks > 0, 'threshold 0: every query is an instance');
    assert.equal(typeof segmented.inference_time_ms, 'number');
    for (const mask of segmented.masks) {
      const bitmap = decodeRle(mask);
      assert.equal(bitmap.width, 96);
      assert.equal(bitmap.height, 64);
      assert.deepEqual(bitmap.data, serverDecodeRle(mask));
    }
    // Points select one object (label "point").
    const points = await client.segment({
      image,
      prompts: [{ type: 'point', points: [[0.3, 0.6]], point_labels: [1] }],
    });
    assert.deepEqual(points.labels, ['point']);

    // The features of this image are cached by now: both answers are cache hits.
    const cachedRequest = { image, text_prompts: ['object', 'shape'], confidence_threshold: 0 };
    const cachedExpected = await rawOk('POST', '/api/v1/image/cached-features', cachedRequest);
    const cached = await client.cachedFeatures(cachedRequest);
    assert.deepEqual(untimed(cached), untimed(cachedExpected));
    assert.equal(cached.cache_hit, true);
    assert.deepEqual(
      cached.results.map((r) => r.prompt),
      ['object', 'shape'],
    );
  });

  it('throws Sam3ApiError with the code, message, status and request id of the answer', async () => {
    const bad = { image, prompts: [] };
    const expected = await raw('POST', '/api/v1/image/segment', bad);
    const error = await client.segment(bad as unknown as SegmentRequest).then(
      () => assert.fail('a 400 resolved'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof Sam3ApiError);
    assert.equal(error.name, 'Sam3ApiError');
    assert.equal(error.status, 400);
    assert.equal(error.code, 'invalid_request');
    assert.deepEqual(
      { error: { code: error.code, message: error.message } },
      { error: (expected.body as { error: unknown }).error },
    );
    assert.match(String(error.requestId), /^[0-9a-f-]{36}$/);
    assert.equal(error.retryAfterSeconds, null);

    await assert.rejects(
      client.segment({ image: 'not base64!', prompts: [{ type: 'text', text: 'x' }] }),
      (e: unknown) => e instanceof Sam3ApiError && e.status === 400 && e.code === 'invalid_base64',
    );
    const missing = await raw('GET', session('no-such-session', '/status'));
    assert.equal(missing.status, 404);
    await assert.rejects(client.sessionStatus('no-such-session'), (e: unknown) => {
      assert.ok(e instanceof Sam3ApiError);
      assert.deepEqual(
        { status: e.status, error: { code: e.code, message: e.message } },
        { status: 404, error: (missing.body as { error: unknown }).error },
      );
      return true;
    });
    // Over the WebSocket, an {"type": "error"} message: its code, with the code's HTTP status.
    await assert.rejects(
      (async () => {
        for await (const frame of client.propagateStream('no-such-session')) {
          assert.fail(`a frame of no session: ${JSON.stringify(frame).slice(0, 100)}`);
        }
      })(),
      (e: unknown) => {
        assert.ok(e instanceof Sam3ApiError);
        assert.deepEqual(
          { status: e.status, code: e.code, message: e.message },
          { status: 404, code: 'not_found', message: 'no video session no-such-session' },
        );
        return true;
      },
    );
  });

  it('sends the API key: without it 401 unauthorized; a wrong key is refused over the WebSocket', async () => {
    const anonymous = new Sam3Client({ baseUrl: server.url, WebSocket });
    assert.equal((await anonymous.health()).status, 'ok', 'open routes need no key');
    await assert.rejects(
      anonymous.listSessions(),
      (e: unknown) => e instanceof Sam3ApiError && e.status === 401 && e.code === 'unauthorized',
    );
    const other = new Sam3Client({ baseUrl: server.url, apiKey: OTHER_KEY, WebSocket });
    assert.deepEqual(await other.listSessions(), await rawOk('GET', '/api/v1/video/sessions'));

    // The subprotocol carries base64url of the key's UTF-8 (with - and _, unpadded).
    assert.match(Buffer.from(API_KEY).toString('base64'), /[+/]/);
    assert.equal(base64UrlOfText(API_KEY), Buffer.from(API_KEY).toString('base64url'));
    assert.equal(base64UrlOfText('ключ ✓'), Buffer.from('ключ ✓').toString('base64url'));

    const wrong = new Sam3Client({ baseUrl: server.url, apiKey: 'wrong key', WebSocket });
    for (const refused of [wrong, anonymous]) {
      await assert.rejects(
        refused.propagateStream('no-such-session').next(),
        (e: unknown) =>
          e instanceof Sam3ApiError &&
          e.code === 'connection_failed' &&
          // `ws` reports the refusal's status (a browser's WebSocket would not: 0).
          e.status === 401 &&
          e.closeCode === 1006,
      );
    }
  });

  it('every video method answers what its endpoint answers', async () => {
    // Session A through the client, session B through raw fetches: the same requests.
    const started = await client.startSession({ video_path: clip.file });
    const rawStarted = (await rawOk('POST', '/api/v1/video/session/start', {
      video_path: clip.file,
    })) as { session_id: string };
    assert.deepEqual(sessionless(started), sessionless(rawStarted));
    assert.deepEqual(started.video_info, {
      total_frames: 6,
      fps: 10,
      resolution: { width: 64, height: 48 },
      duration_seconds: 0.6,
    });
    const a = started.session_id;
    const b = rawStarted.session_id;

    // A multipart upload of the same file: the same video.
    const uploaded = await client.startSession({
      video: new Blob([await readFile(clip.file)]),
      filename: 'clip.mp4',
      sessionId: 'uploaded-clip',
      gpuIds: server.config.videoDevices[0] === 'cpu' ? ['cpu'] : [0],
    });
    assert.deepEqual(uploaded, { ...started, session_id: 'uploaded-clip' });

    const listed = await client.listSessions();
    assert.deepEqual(listed, await rawOk('GET', '/api/v1/video/sessions'));
    assert.deepEqual(
      listed.sessions.map((s) => s.session_id).sort(),
      [a, b, 'uploaded-clip'].sort(),
    );
    const uploadedStatus = await client.sessionStatus('uploaded-clip');
    assert.deepEqual(await client.closeSession('uploaded-clip'), {
      session_id: 'uploaded-clip',
      status: 'closed',
      memory_freed_mb: uploadedStatus.gpu_memory_used_mb,
    });

    const prompted = await client.addPrompt(a, click(0.4, 0.5));
    assert.deepEqual(
      sessionless(prompted),
      sessionless(await rawOk('POST', session(b, '/prompt'), click(0.4, 0.5))),
    );
    assert.deepEqual(prompted.obj_id, [1]);
    const box = {
      frame_index: 0,
      prompts: [
        { type: 'box' as const, box: [0.7, 0.5, 0.3, 0.4] as [number, number, number, number] },
      ],
      obj_id: null,
    };
    assert.deepEqual(
      await client.addPrompt(a, box),
      await rawOk('POST', session(b, '/prompt'), box),
    );

    const propagated = await client.propagate(a, { direction: 'forward' });
    assert.deepEqual(
      untimed(propagated),
      untimed(await rawOk('POST', session(a, '/propagate'), { direction: 'forward' })),
    );
    assert.equal(propagated.total_frames, 6);
    assert.deepEqual(Object.keys(propagated.results), ['0', '1', '2', '3', '4', '5']);

    const status = await client.sessionStatus(a);
    assert.deepEqual(status, await rawOk('GET', session(a, '/status')));
    assert.deepEqual(status.current_objects, [1, 2]);
    assert.equal(status.frames_processed, 6);

    const removed = await client.removeObject(a, 2);
    assert.deepEqual(
      sessionless(removed),
      sessionless(await rawOk('DELETE', session(b, '/object/2'))),
    );
    assert.deepEqual(removed, { session_id: a, obj_id: 2, status: 'removed' });

    const reset = await client.resetSession(a);
    assert.deepEqual(sessionless(reset), sessionless(await rawOk('POST', session(b, '/reset'))));
    assert.deepEqual(reset, { session_id: a, status: 'reset', objects_cleared: 1 });

    // Text concepts, on fresh sessions C (client) and D (raw).
    const c = (await client.startSession({ video_path: clip.file })).session_id;
    const d = (await rawOk('POST', '/api/v1/video/session/start', { video_path: clip.file })) as {
      session_id: string;
    };
    const text = { frame_index: 0, prompts: [{ type: 'text' as const, text: 'object' }] };
    const concept = await client.addPrompt(c, text);
    assert.deepEqual(concept, await rawOk('POST', session(d.session_id, '/prompt'), text));
    assert.deepEqual(concept.concepts, [{ concept_id: 1, text: 'object' }]);
    const removedConcept = await client.removeConcept(c, 1);
    assert.deepEqual(
      sessionless(removedConcept),
      sessionless(await rawOk('DELETE', session(d.session_id, '/concept/1'))),
    );
    assert.equal(removedConcept.status, 'removed');
    assert.equal(removedConcept.concept_id, 1);

    for (const id of [a, b, c, d.session_id]) {
      const before = (await rawOk('GET', session(id, '/status'))) as { gpu_memory_used_mb: number };
      const closed =
        id === a || id === c ? await client.closeSession(id) : await rawOk('DELETE', session(id));
      assert.deepEqual(closed, {
        session_id: id,
        status: 'closed',
        memory_freed_mb: before.gpu_memory_used_mb,
      });
    }
    await assert.rejects(
      client.closeSession(a),
      (e: unknown) => e instanceof Sam3ApiError && e.status === 404 && e.code === 'not_found',
    );
  });

  it('propagateStream yields the HTTP propagation frame for frame, none lost to a slow reader', async () => {
    const id = (await client.startSession({ video_path: clip.file })).session_id;
    await client.addPrompt(id, click(0.4, 0.5));
    await client.addPrompt(id, click(0.7, 0.5));
    const http = (await rawOk('POST', session(id, '/propagate'), {})) as PropagateResponse;
    const socketsBefore = sockets.length;

    const frames: PropagateFrame[] = [];
    const stream = client.propagateStream(id, { direction: 'forward' });
    for (;;) {
      const next = await stream.next();
      if (next.done === true) {
        assert.deepEqual(next.value, { type: 'complete', total_frames: 6 });
        break;
      }
      frames.push(next.value);
      // A slow consumer: later frames queue up meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(
      frames.map((f) => f.frame_index),
      [0, 1, 2, 3, 4, 5],
    );
    for (const frame of frames) {
      assert.deepEqual(frame, { type: 'frame', ...http.results[String(frame.frame_index)] });
      for (const object of frame.objects) {
        assert.deepEqual(decodeRle(object.mask).data, serverDecodeRle(object.mask));
      }
    }
    // One socket, offered the key subprotocol; the server selected sam3.v1 and closed normally.
    assert.equal(sockets.length, socketsBefore + 1);
    const { socket, closed } = sockets[socketsBefore];
    assert.equal(socket.protocol, 'sam3.v1');
    assert.equal(await closed, 1000);

    // `stream` in the body is dropped (the socket is the stream; HTTP propagate never streams).
    const backward: number[] = [];
    for await (const frame of client.propagateStream(id, {
      direction: 'backward',
      start_frame_index: 3,
      max_frames: 2,
      stream: true,
    })) {
      backward.push(frame.frame_index);
    }
    assert.deepEqual(backward, [3, 2]);
    const plain = await client.propagate(id, { max_frames: 2, stream: true });
    assert.deepEqual(Object.keys(plain.results), ['0', '1']);

    // A session without objects: the server's error message, as Sam3ApiError.
    await client.resetSession(id);
    await assert.rejects(
      client.propagateStream(id).next(),
      (e: unknown) => e instanceof Sam3ApiError && e.status === 400 && e.code === 'invalid_prompt',
    );
    await client.closeSession(id);
  });

  it('an AbortSignal closes the socket, rejects with its reason and leaves the session usable', async () => {
    const id = (await client.startSession({ video_path: long.file })).session_id;
    await client.addPrompt(id, click(0.5, 0.5));
    const controller = new AbortController();
    const socketsBefore = sockets.length;
    const seen: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const frame of client.propagateStream(id, {}, { signal: controller.signal })) {
          seen.push(frame.frame_index);
          controller.abort();
        }
      })(),
      (e: unknown) => {
        assert.equal(e, controller.signal.reason);
        assert.equal((e as Error).name, 'AbortError');
        return true;
      },
    );
    assert.deepEqual(seen, [0]);
    assert.equal(await sockets[socketsBefore].closed, 1000);
    await waitFor(() => idle(id), 30_000, 'the propagation to stop');
    const stopped = await client.sessionStatus(id);
    assert.ok(stopped.frames_processed < 12, `${stopped.frames_processed} of 24 frames processed`);

    // The session goes on: a whole propagation afterwards.
    const after = await client.propagate(id);
    assert.equal(after.total_frames, 24);

    // Aborted before it starts: no socket at all. A custom reason is what is thrown.
    const reason = new Error('not wanted');
    const socketsNow = sockets.length;
    await assert.rejects(
      client.propagateStream(id, {}, { signal: AbortSignal.abort(reason) }).next(),
      (e: unknown) => e === reason,
    );
    assert.equal(sockets.length, socketsNow);

    // An aborted HTTP request rejects with the signal's reason (AbortError) as well.
    const httpController = new AbortController();
    const request = client.propagate(id, {}, { signal: httpController.signal });
    httpController.abort();
    await assert.rejects(request, (e: unknown) => (e as Error).name === 'AbortError');
    await waitFor(() => idle(id), 30_000, 'the HTTP propagation to stop');
    await client.closeSession(id);
  });

  it('leaving the loop early closes the socket, and the server stops', async () => {
    const id = (await client.startSession({ video_path: long.file })).session_id;
    await client.addPrompt(id, click(0.5, 0.5));
    const socketsBefore = sockets.length;
    let first: PropagateFrame | undefined;
    for await (const frame of client.propagateStream(id)) {
      first = frame;
      break;
    }
    assert.equal(first?.frame_index, 0);
    const { socket, closed } = sockets[socketsBefore];
    assert.equal(await closed, 1000);
    assert.equal(socket.readyState, WebSocket.CLOSED);
    await waitFor(() => idle(id), 30_000, 'the propagation to stop');
    const stopped = await client.sessionStatus(id);
    assert.ok(stopped.frames_processed < 12, `${stopped.frames_processed} of 24 frames processed`);
    await client.closeSession(id);
  });

  it("decodeRle inverts the server's encoder (random and edge-case masks)", () => {
    const addon = loadAddon();
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const cases: { height: number; width: number; data: Uint8Array }[] = [];
    const add = (height: number, width: number, fill: (i: number) => number): void => {
      cases.push({
        height,
        width,
        data: Uint8Array.from({ length: height * width }, (_, i) => fill(i)),
      });
    };
    add(1, 1, () => 0);
    add(1, 1, () => 1);
    add(7, 5, () => 0);
    add(7, 5, () => 1);
    add(5, 7, (i) => i % 2);
    add(3, 9, (i) => (i === 0 ? 1 : 0));
    add(3, 9, (i) => (i === 26 ? 1 : 0));
    // Runs over 2^5, 2^10, 2^15 and 2^20 pixels (several groups per number).
    add(1024, 1100, (i) => (i >= 40 && i < 40 + 2 ** 20 + 7 ? 1 : 0));
    for (let n = 0; n < 60; n += 1) {
      const height = 1 + Math.floor(random() * 40);
      const width = 1 + Math.floor(random() * 40);
      const density = random();
      const run = random() < 0.5;
      let value = 0;
      add(height, width, () => {
        if (!run) return random() < density ? 1 : 0;
        if (random() < 0.1) value = 1 - value;
        return value;
      });
    }
    for (const { height, width, data } of cases) {
      const rle = {
        size: [height, width] as [number, number],
        counts: addon.encodeRle(data, height, width),
      };
      const bitmap = decodeRle(rle);
      assert.equal(bitmap.width, width);
      assert.equal(bitmap.height, height);
      assert.ok(Buffer.from(bitmap.data).equals(Buffer.from(data)), `${height}x${width}`);
      assert.ok(Buffer.from(bitmap.data).equals(Buffer.from(serverDecodeRle(rle))));
    }
    // Malformed: runs short of the size, past it, a character outside the alphabet.
    for (const counts of ['1', '5', ' ', '`']) {
      assert.throws(() => decodeRle({ size: [2, 2], counts }), RleDecodeError, counts);
    }
  });

  it('toBase64 is standard base64 (padded), across its chunk size', () => {
    for (const length of [0, 1, 2, 3, 1000, 0x8000, 0x8000 * 3 + 1]) {
      const bytes = Uint8Array.from({ length }, (_, i) => (i * 7919) % 256);
      assert.equal(toBase64(bytes), Buffer.from(bytes).toString('base64'), `${length} bytes`);
    }
  });

  it('a loading server: health resolves with its 503 body; model routes throw not_ready', async () => {
    // No bundle: the server stays "loading".
    const loading = await startTestServer();
    try {
      const anonymous = new Sam3Client({ baseUrl: loading.url, WebSocket });
      const response = await fetch(`${loading.url}/health`);
      assert.equal(response.status, 503);
      const health = await anonymous.health();
      assert.equal(health.status, 'loading');
      assert.deepEqual(health, await response.json());
      const refused = await fetch(`${loading.url}/api/v1/image/segment`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ image, prompts: [{ type: 'text', text: 'x' }] }),
      });
      const refusal = (await refused.json()) as { error: { code: string; message: string } };
      await assert.rejects(
        anonymous.segment({ image, prompts: [{ type: 'text', text: 'x' }] }),
        (e: unknown) => {
          assert.ok(e instanceof Sam3ApiError);
          assert.deepEqual(
            {
              status: e.status,
              error: { code: e.code, message: e.message },
              retryAfter: e.retryAfterSeconds,
            },
            {
              status: refused.status,
              error: refusal.error,
              retryAfter: Number(refused.headers.get('retry-after')),
            },
          );
          assert.equal(e.code, 'not_ready');
          assert.equal(e.retryAfterSeconds, 5);
          return true;
        },
      );
    } finally {
      await loading.close();
    }
  });

  it('an unreachable server: connection_failed, status 0 (HTTP and WebSocket)', async () => {
    // A port nothing listens on: the loading server's, once closed.
    const gone = await startTestServer();
    await gone.close();
    const unreachable = new Sam3Client({ baseUrl: gone.url, WebSocket });
    await assert.rejects(
      unreachable.info(),
      (e: unknown) =>
        e instanceof Sam3ApiError &&
        e.code === 'connection_failed' &&
        e.status === 0 &&
        e.cause instanceof Error,
    );
    await assert.rejects(
      unreachable.propagateStream('any').next(),
      (e: unknown) => e instanceof Sam3ApiError && e.code === 'connection_failed' && e.status === 0,
    );
  });

  it('something in front of the server: http_error for its failure page, invalid_response for a non-JSON success', async () => {
    // A stand-in proxy: a 502 HTML page on /health, a 200 text body on /.
    const proxy = createServer((req, res) => {
      if (req.url === '/health') {
        res.writeHead(502, { 'content-type': 'text/html', 'x-request-id': 'proxy-1' });
        res.end('<html><body>Bad Gateway</body></html>');
      } else {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('hello');
      }
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const { port } = proxy.address() as AddressInfo;
    const behindProxy = new Sam3Client({ baseUrl: `http://127.0.0.1:${port}` });
    try {
      await assert.rejects(
        behindProxy.health(),
        (e: unknown) =>
          e instanceof Sam3ApiError &&
          e.code === 'http_error' &&
          e.status === 502 &&
          e.requestId === 'proxy-1',
      );
      await assert.rejects(
        behindProxy.info(),
        (e: unknown) =>
          e instanceof Sam3ApiError && e.code === 'invalid_response' && e.status === 200,
      );
    } finally {
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('a server shutting down mid-stream: connection_closed with the close code 1001', async () => {
    const id = (await client.startSession({ video_path: long.file })).session_id;
    await client.addPrompt(id, click(0.5, 0.5));
    const seen: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const frame of client.propagateStream(id)) {
          seen.push(frame.frame_index);
          if (seen.length === 1) {
            serverClosed = true;
            await server.close();
          }
        }
      })(),
      (e: unknown) =>
        e instanceof Sam3ApiError && e.code === 'connection_closed' && e.closeCode === 1001,
    );
    assert.ok(seen.length < 24, `${seen.length} frames before the shutdown`);
  });
});
