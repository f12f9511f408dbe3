/**
 * WS /ws/propagate/{id} on real sockets, the real addon and the tiny bundle's tracker: the
 * stream equals the HTTP propagation frame for frame; closing the socket stops the
 * propagation (counted in native executor tasks); a client that stops reading is terminated
 * with the server's buffer bounded; refusals (API key, rate limit) come before the 101;
 * oversized and over-fragmented messages close the socket; shutdown closes with 1001.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  VideoApi,
  expectJson,
  exportTinyBundle,
  startTestServer,
  type StreamMessage,
  type TestServer,
  type TrackedObjectBody,
  waitFor,
} from '../helpers/server';
import { repoPath } from '../helpers/repo';
import { makeTempDir, removeDir, writeVideo, type SyntheticVideo } from '../helpers/videos';

interface Closed {
  code: number;
  reason: string;
}

/** Every message of a socket until it closes, and how it closed. */
const RECORDS = new WeakMap<WebSocket, Promise<{ messages: StreamMessage[]; closed: Closed }>>();

/**
 * Opens a socket and resolves once it is open (or rejects with the refusal). Its messages are
 * recorded from the start (a server may write one right behind the 101); see collect().
 */
function connect(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    const messages: StreamMessage[] = [];
    ws.on('message', (data) => messages.push(JSON.parse(String(data)) as StreamMessage));
    RECORDS.set(
      ws,
      new Promise((done) =>
        ws.once('close', (code, reason) =>
          done({ messages, closed: { code, reason: reason.toString() } }),
        ),
      ),
    );
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) =>
      reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })),
    );
    ws.once('error', reject);
  });
}

/** The messages of a socket opened by connect(), once it has closed. */
function collect(ws: WebSocket): Promise<{ messages: StreamMessage[]; closed: Closed }> {
  return RECORDS.get(ws) as Promise<{ messages: StreamMessage[]; closed: Closed }>;
}

/** A raw HTTP upgrade request; resolves with everything the server wrote before it closed. */
function rawUpgrade(port: number, target: string, headers: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk) => (received += chunk.toString('utf8')));
    socket.on('close', () => resolve(received));
    socket.on('error', reject);
    socket.write(
      [
        `GET ${target} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version: 13',
        ...headers,
        '',
        '',
      ].join('\r\n'),
    );
  });
}

function tasksRun(server: TestServer): number {
  return Object.values(server.models.videoSessions?.tasksRun() ?? {}).reduce((a, b) => a + b, 0);
}

describe('WebSocket propagation', () => {
  let work: string;
  let clip: SyntheticVideo;
  let long: SyntheticVideo;
  let wide: SyntheticVideo;
  let server: TestServer;
  let api: VideoApi;
  let closed = false;
  const logs = new PassThrough();
  const logLines: Record<string, unknown>[] = [];
  logs.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.startsWith('{')) logLines.push(JSON.parse(line) as Record<string, unknown>);
    }
  });

  const idle = async (id: string): Promise<boolean> =>
    (await expectJson<{ status: string }>(await api.status(id))).status === 'ready';

  before(async () => {
    work = await makeTempDir('sam3-video-ws-');
    const videos = path.join(work, 'videos');
    await mkdir(videos);
    clip = await writeVideo(videos, 'mp4-x264rgb', { frames: 6 }, 'clip');
    long = await writeVideo(videos, 'mp4-x264rgb', { frames: 24 }, 'long');
    // Wide frames make big messages (about 0.6 MB of mask RLE per frame) at little model cost.
    wide = await writeVideo(videos, 'mkv-ffv1', { width: 16384, height: 64, frames: 16 }, 'wide');
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      logStream: logs,
      env: {
        RATE_LIMIT_ENABLED: 'false',
        UPLOAD_DIR: path.join(work, 'uploads'),
        VIDEO_PATH_ROOTS: videos,
        WS_MAX_BUFFERED_MB: '0.25',
        LOG_LEVEL: 'INFO',
      },
    });
    api = new VideoApi(server.url);
  });

  after(async () => {
    if (!closed) await server?.close();
    await removeDir(work);
  });

  it('streams the same frames as the HTTP propagation, in processing order', async () => {
    const id = await api.startPath(clip.file);
    await api.click(id, 0, 0.4, 0.5);
    await api.prompt(id, {
      frame_index: 0,
      prompts: [{ type: 'box', box: [0.7, 0.5, 0.3, 0.4] }],
      obj_id: null,
    });
    const http = await expectJson<{
      results: Record<string, { frame_index: number; objects: TrackedObjectBody[] }>;
    }>(await api.propagate(id, { direction: 'forward' }));
    const ndjson = await api.stream(id, { direction: 'forward' });

    const ws = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const done = collect(ws);
    ws.send(JSON.stringify({ direction: 'forward' }));
    const { messages, closed: how } = await done;
    assert.deepEqual(how, { code: 1000, reason: 'complete' });
    assert.deepEqual(messages.at(-1), { type: 'complete', total_frames: 6 });
    const frames = messages.slice(0, -1);
    assert.deepEqual(
      frames.map((m) => (m.type === 'frame' ? m.frame_index : -1)),
      [0, 1, 2, 3, 4, 5],
    );
    for (const message of frames) {
      assert.ok(message.type === 'frame');
      assert.deepEqual(Object.keys(message), ['type', 'frame_index', 'objects']);
      assert.deepEqual(
        message.objects.map((o) => o.id),
        [1, 2],
      );
      assert.deepEqual(message, { type: 'frame', ...http.results[String(message.frame_index)] });
    }
    assert.deepEqual(messages, ndjson, 'the NDJSON stream sends the same messages');

    // Backward from a later frame, over the socket too.
    const back = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const backDone = collect(back);
    back.send(JSON.stringify({ direction: 'backward', start_frame_index: 3, max_frames: 2 }));
    const backward = await backDone;
    assert.deepEqual(
      backward.messages.map((m) => (m.type === 'frame' ? m.frame_index : m.type)),
      [3, 2, 'complete'],
    );
    await expectJson(await api.close(id));
  });

  it('stops computing frames once the client closes the socket', async () => {
    const id = await api.startPath(long.file);
    await api.click(id, 0, 0.5, 0.5);
    const ws = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const firstFrame = new Promise<void>((resolve) =>
      ws.once('message', () => {
        ws.close(1000, 'enough');
        resolve();
      }),
    );
    ws.send(JSON.stringify({ direction: 'forward' }));
    await firstFrame;
    await collect(ws);
    // The server has seen the close: at most the frame in flight is still computed.
    const tasksAtClose = tasksRun(server);
    await waitFor(() => idle(id), 30_000, 'the propagation to stop');
    const computedAfter = tasksRun(server) - tasksAtClose;
    assert.ok(computedAfter <= 1, `${computedAfter} frames computed after the close`);
    const status = await expectJson<{ frames_processed: number }>(await api.status(id));
    assert.ok(status.frames_processed <= 3, `${status.frames_processed} of 24 frames processed`);
    await expectJson(await api.close(id));
  });

  it('stops computing frames once an HTTP client disconnects (JSON and NDJSON)', async () => {
    const id = await api.startPath(long.file);
    await api.click(id, 0, 0.5, 0.5);
    for (const stream of [false, true]) {
      const controller = new AbortController();
      const request = fetch(api.session(id, '/propagate'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ stream }),
        signal: controller.signal,
      });
      request.catch(() => undefined);
      const before = tasksRun(server);
      await waitFor(async () => tasksRun(server) >= before + 2, 30_000, 'two frames');
      controller.abort();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const tasksAtClose = tasksRun(server);
      await waitFor(() => idle(id), 30_000, 'the propagation to stop');
      const computedAfter = tasksRun(server) - tasksAtClose;
      assert.ok(computedAfter <= 1, `stream ${stream}: ${computedAfter} frames after the close`);
      assert.ok(tasksRun(server) - before < 12, `stream ${stream}: stopped early`);
    }
    await expectJson(await api.close(id));
  });

  it('terminates a client that stops reading, with the unsent bytes bounded', async () => {
    const id = await api.startPath(wide.file);
    await api.click(id, 0, 0.5, 0.5);
    const rssBefore = process.memoryUsage().rss;
    const tasksBefore = tasksRun(server);
    const ws = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const closedPromise = new Promise<number>((resolve) => ws.once('close', resolve));
    ws.send(JSON.stringify({ direction: 'forward' }));
    ws.pause();
    await waitFor(
      async () => logLines.some((l) => /not reading; terminating/.test(String(l.message))),
      120_000,
      'the server to give up on the client',
    );
    await waitFor(() => idle(id), 30_000, 'the propagation to stop');
    const computed = tasksRun(server) - tasksBefore;
    assert.ok(computed < 16, `the propagation stopped early (${computed} of 16 frames)`);
    const entry = logLines.find((l) => /not reading; terminating/.test(String(l.message)));
    const buffered = Number(entry?.bufferedBytes);
    const limit = 0.25 * 1024 * 1024;
    // What was queued when it gave up: over the limit by less than one frame's message.
    assert.ok(buffered > limit && buffered < limit + 1024 * 1024, `buffered ${buffered}`);
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    assert.ok(rssGrowth < 256 * 1024 * 1024, `RSS grew by ${rssGrowth} bytes`);
    ws.resume();
    assert.equal(await closedPromise, 1006, 'the client sees an abnormal close (terminated)');
    await expectJson(await api.close(id));
  });

  it('closes with 1009 on a message over 64 KiB and 1008 on too many fragments', async () => {
    const id = await api.startPath(clip.file);
    const big = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const bigDone = collect(big);
    big.send('x'.repeat(200 * 1024));
    assert.equal((await bigDone).closed.code, 1009);

    const fragmented = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const fragmentedDone = collect(fragmented);
    for (let i = 0; i < 100; i += 1) fragmented.send(' ', { fin: false });
    assert.equal((await fragmentedDone).closed.code, 1008);
    assert.ok(await idle(id));
    await expectJson(await api.close(id));
  });

  it('selects the sam3.v1 subprotocol when offered, never echoing a key subprotocol', async () => {
    const keyProtocol = `sam3.key.${Buffer.from('a key').toString('base64url')}`;
    const ws = new WebSocket(`${server.wsUrl}/ws/propagate/no-such-session`, [
      'sam3.v1',
      keyProtocol,
    ]);
    const selected = await new Promise<string>((resolve, reject) => {
      ws.once('upgrade', (response) => resolve(String(response.headers['sec-websocket-protocol'])));
      ws.once('error', reject);
    });
    assert.equal(selected, 'sam3.v1');
    assert.equal(ws.protocol, 'sam3.v1');
    ws.close();
    // A client offering no subprotocol gets none (as before).
    const plain = await connect(`${server.wsUrl}/ws/propagate/no-such-session`);
    assert.equal(plain.protocol, '');
    await collect(plain);
  });

  it('answers bad requests with an error message, then closes', async () => {
    const unknown = await connect(`${server.wsUrl}/ws/propagate/no-such-session`);
    const unknownDone = await collect(unknown);
    assert.deepEqual(unknownDone.closed, { code: 1008, reason: 'not_found' });
    assert.deepEqual(unknownDone.messages, [
      { type: 'error', error: { code: 'not_found', message: 'no video session no-such-session' } },
    ]);

    const id = await api.startPath(clip.file);
    const cases: [string, string, RegExp][] = [
      ['not json', 'invalid_json', /not valid JSON/],
      [JSON.stringify({ direction: 'forward', stream: true }), 'invalid_request', /"stream"/],
      [JSON.stringify({ max_frames: 0 }), 'invalid_request', /\/max_frames/],
      [JSON.stringify({}), 'invalid_prompt', /no objects/],
    ];
    for (const [message, code, pattern] of cases) {
      const ws = await connect(`${server.wsUrl}/ws/propagate/${id}`);
      const done = collect(ws);
      ws.send(message);
      const { messages, closed: how } = await done;
      assert.equal(messages.length, 1, message);
      const [error] = messages;
      assert.ok(error.type === 'error');
      assert.equal(error.error.code, code);
      assert.match(error.error.message, pattern);
      assert.deepEqual(how, { code: 1008, reason: code });
    }
    // A busy session: the error says so and the socket closes with 1013 (try again later).
    await api.click(id, 0, 0.5, 0.5);
    const running = api.propagate(id, {});
    await waitFor(async () => !(await idle(id)), 30_000, 'the propagation to start');
    const busy = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const busyDone = collect(busy);
    busy.send('{}');
    const busyResult = await busyDone;
    assert.equal(busyResult.closed.code, 1013);
    assert.equal(
      busyResult.messages[0]?.type === 'error' && busyResult.messages[0].error.code,
      'session_busy',
    );
    await expectJson(await running);
    await expectJson(await api.close(id));
  });

  describe('access control before the 101', () => {
    let guarded: TestServer;
    before(async () => {
      guarded = await startTestServer({
        env: {
          REQUIRE_API_KEY: 'true',
          API_KEYS: 'test-key-1',
          RATE_LIMIT_REQUESTS_PER_MINUTE: '6',
        },
      });
    });
    after(async () => {
      await guarded?.close();
    });

    it('refuses an upgrade without a valid key with HTTP 401, then closes the socket', async () => {
      const port = Number(new URL(guarded.url).port);
      for (const [target, headers, message] of [
        ['/ws/propagate/abc', [], /missing API key/],
        ['/ws/propagate/abc', ['X-API-Key: wrong'], /invalid API key/],
        ['/ws/propagate/abc?api_key=test-key-1', [], /not accepted in the query string/],
      ] as const) {
        const answer = await rawUpgrade(port, target, [...headers]);
        const [head, body] = answer.split('\r\n\r\n');
        assert.match(head, /^HTTP\/1\.1 401 Unauthorized\r\n/, target);
        assert.doesNotMatch(head, /^HTTP\/1\.1 101|Sec-WebSocket-Accept/im);
        assert.match(head, /\r\nWWW-Authenticate: ApiKey/i);
        assert.match(head, /\r\nX-Request-Id: /i);
        const parsed = JSON.parse(body) as { error: { code: string; message: string } };
        assert.equal(parsed.error.code, 'unauthorized');
        assert.match(parsed.error.message, message);
      }
      await assert.rejects(connect(`${guarded.wsUrl}/ws/propagate/abc`), { statusCode: 401 });
      // With the key, the upgrade gets past the gate (video is still loading here: 503).
      await assert.rejects(
        connect(`${guarded.wsUrl}/ws/propagate/abc`, { 'X-API-Key': 'test-key-1' }),
        { statusCode: 503 },
      );
    });

    it('takes the key from a sam3.key. subprotocol, as a browser can send it', async () => {
      const port = Number(new URL(guarded.url).port);
      const offer = (key: string): string =>
        `Sec-WebSocket-Protocol: sam3.v1, sam3.key.${Buffer.from(key).toString('base64url')}`;
      const past = await rawUpgrade(port, '/ws/propagate/abc', [offer('test-key-1')]);
      assert.match(past, /^HTTP\/1\.1 503 /, 'past the key check');
      const wrong = await rawUpgrade(port, '/ws/propagate/abc', [offer('test-key-2')]);
      assert.match(wrong, /^HTTP\/1\.1 401 /);
      assert.match(wrong, /invalid API key/);
      // Not the canonical base64url of anything: refused, not decoded leniently.
      const garbled = await rawUpgrade(port, '/ws/propagate/abc', [
        'Sec-WebSocket-Protocol: sam3.v1, sam3.key.dGVzdC1rZXktMQ==',
      ]);
      assert.match(garbled, /^HTTP\/1\.1 401 /);
    });

    it('refuses an upgrade request with a body (400) without waiting for it', async () => {
      const port = Number(new URL(guarded.url).port);
      const answer = await rawUpgrade(port, '/ws/propagate/abc', [
        'X-API-Key: test-key-1',
        'Content-Length: 5',
      ]);
      assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.match(answer, /"code":"invalid_request"/);
    });

    it('refuses upgrades over the rate limit with 429 and Retry-After', async () => {
      const port = Number(new URL(guarded.url).port);
      let answer = '';
      for (let i = 0; i < 8 && !answer.startsWith('HTTP/1.1 429'); i += 1) {
        answer = await rawUpgrade(port, '/ws/propagate/abc');
      }
      assert.match(answer, /^HTTP\/1\.1 429 Too Many Requests\r\n/);
      assert.match(answer, /\r\nRetry-After: \d+\r\n/i);
      assert.match(answer, /"code":"rate_limited"/);
    });
  });

  it('SIGTERM closes sockets with 1001, closes every session and removes its files', async () => {
    const uploads = path.join(work, 'main-uploads');
    await mkdir(uploads);
    const child = spawn(process.execPath, [repoPath('dist', 'src', 'main.js')], {
      cwd: work,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        SERVER_HOST: '127.0.0.1',
        SERVER_PORT: '0',
        SAM3_CHECKPOINT: await exportTinyBundle(),
        IMAGE_MODEL_RESOLUTION: '224',
        UPLOAD_DIR: uploads,
        NODE_ENV: 'production',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    try {
      let url = '';
      await waitFor(
        async () => {
          url = /listening on (http:\/\/[^"\s]+)/.exec(stdout)?.[1] ?? '';
          return url !== '' && (await fetch(`${url}/health`)).status === 200;
        },
        60_000,
        'the server to be ready',
      );
      const remote = new VideoApi(url);
      const started = await expectJson<{ session_id: string }>(
        await remote.start({ video_base64: (await readFile(long.file)).toString('base64') }),
      );
      await remote.click(started.session_id, 0, 0.5, 0.5);
      assert.equal((await readdir(uploads)).length, 1);
      const ws = await connect(`${url.replace('http', 'ws')}/ws/propagate/${started.session_id}`);
      const first = new Promise((resolve) => ws.once('message', resolve));
      ws.send(JSON.stringify({ direction: 'forward' }));
      await first;
      child.kill('SIGTERM');
      const { closed: how } = await collect(ws);
      assert.deepEqual(how, { code: 1001, reason: 'server shutting down' });
      assert.equal(await exited, 0);
      assert.deepEqual(await readdir(uploads), [], 'the session file is removed');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('on shutdown closes sockets with 1001 and every session', async () => {
    const id = await api.startPath(long.file);
    await api.click(id, 0, 0.5, 0.5);
    const ws = await connect(`${server.wsUrl}/ws/propagate/${id}`);
    const done = collect(ws);
    const first = new Promise((resolve) => ws.once('message', resolve));
    ws.send(JSON.stringify({ direction: 'forward' }));
    await first;
    closed = true;
    await server.close();
    const { closed: how } = await done;
    assert.deepEqual(how, { code: 1001, reason: 'server shutting down' });
    assert.equal(server.models.sessionCount(), 0);
    assert.equal(server.models.liveTrackerBytes(), 0);
  });
});
