/**
 * SECURITY.md rows 1-6 and 10-13 against the video API over real sockets: video_url SSRF
 * (a canary server on loopback must never see a request), redirects, URL parser tricks,
 * schemes and playlists, unbounded downloads, path traversal, hostile videos, WebSocket
 * message limits and slow consumers, session exhaustion; plus malformed multipart uploads and
 * the API key / rate limit on the video routes. After every refusal: the exact status and
 * code, no session left, no file left in UPLOAD_DIR, no tracker memory held.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, symlink } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  VideoApi,
  expectApiError,
  expectJson,
  exportTinyBundle,
  startTestServer,
  type TestServer,
} from '../helpers/server';
import {
  makeTempDir,
  removeDir,
  writeBrokenMoovMp4,
  writeFrameCountLieAvi,
  writeGarbage,
  writeHlsPlaylist,
  writeHugeDeclaredMkv,
  writeLongDeclaredMkv,
  writeMoovlessMp4,
  writeStreamlessMp4,
  writeUnknownCodecAvi,
  writeVideo,
  writeZeroFrameAvi,
  type SyntheticVideo,
} from '../helpers/videos';

/** An HTTP server on an ephemeral port of `host`. */
async function listenOn(
  handler: http.RequestListener,
  host = '127.0.0.1',
): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  return { server, port: (server.address() as AddressInfo).port };
}

function closeServer(server: http.Server | undefined): Promise<void> {
  if (server === undefined) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('video API security (SECURITY.md rows 1-6, 10-13)', () => {
  let work: string;
  let uploads: string;
  let root: string;
  let clip: SyntheticVideo;
  let server: TestServer;
  let api: VideoApi;
  let canary: http.Server;
  let canaryPort: number;
  const canaryHits: string[] = [];
  let host: http.Server;
  let hostPort: number;
  const slowTimers = new Set<NodeJS.Timeout>();

  /** Nothing left behind: no session, no file, no tracker memory, no canary request. */
  async function assertClean(where: string): Promise<void> {
    assert.equal(server.models.sessionCount(), 0, `${where}: no session left`);
    assert.deepEqual(await readdir(uploads), [], `${where}: no file left in UPLOAD_DIR`);
    assert.equal(server.models.liveTrackerBytes(), 0, `${where}: no tracker memory held`);
    assert.deepEqual(canaryHits, [], `${where}: the canary saw no connection`);
  }

  before(async () => {
    work = await makeTempDir('sam3-video-security-');
    uploads = path.join(work, 'uploads');
    root = path.join(work, 'root');
    await mkdir(uploads);
    await mkdir(root);
    clip = await writeVideo(root, 'mp4-x264rgb', { frames: 4 }, 'clip');
    // The canary listens on every address (IPv6 and IPv4-mapped spellings of loopback reach
    // it too) and counts connections, not just requests.
    const onRequest: http.RequestListener = (_req, res) => res.end('canary');
    ({ server: canary, port: canaryPort } = await listenOn(onRequest, '::').catch(() =>
      listenOn(onRequest, '0.0.0.0'),
    ));
    canary.on('connection', (socket) => canaryHits.push(`connection from ${socket.remoteAddress}`));
    // The canary does see what reaches it.
    await (await fetch(`http://127.0.0.1:${canaryPort}/`)).text();
    assert.equal(canaryHits.length, 1);
    canaryHits.length = 0;
    const playlist = await readFile(await writeHlsPlaylist(work));
    const clipBytes = await readFile(clip.file);
    ({ server: host, port: hostPort } = await listenOn((req, res) => {
      const redirect = (location: string): void => {
        res.writeHead(302, { location }).end();
      };
      switch (req.url) {
        case '/clip.mp4':
          res.writeHead(200, { 'content-type': 'video/mp4' }).end(clipBytes);
          return;
        case '/to-canary':
          return redirect(`http://127.0.0.1:${canaryPort}/stolen`);
        case '/to-metadata':
          return redirect('http://169.254.169.254/latest/meta-data/');
        case '/to-file':
          return redirect('file:///etc/passwd');
        case '/loop':
          return redirect('/loop');
        case '/playlist.m3u8':
          res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl' }).end(playlist);
          return;
        case '/endless': {
          res.writeHead(200, { 'content-type': 'video/mp4' });
          const chunk = Buffer.alloc(64 * 1024, 7);
          const pump = (): void => {
            while (res.write(chunk));
            res.once('drain', pump);
          };
          pump();
          res.on('close', () => res.removeAllListeners('drain'));
          return;
        }
        case '/huge-length':
          res.writeHead(200, { 'content-length': String(10 ** 12) });
          res.write(Buffer.alloc(1024));
          return;
        case '/slow': {
          res.writeHead(200, { 'content-type': 'video/mp4' });
          const timer = setInterval(() => res.write('x'), 1000);
          slowTimers.add(timer);
          res.on('close', () => clearInterval(timer));
          return;
        }
        default:
          res.writeHead(500).end();
      }
    }));
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: {
        RATE_LIMIT_ENABLED: 'false',
        UPLOAD_DIR: uploads,
        VIDEO_PATH_ROOTS: root,
        MAX_UPLOAD_SIZE_MB: '1',
        MAX_CONCURRENT_SESSIONS: '2',
        VIDEO_URL_TIMEOUT_SECONDS: '2',
        VIDEO_URL_MAX_REDIRECTS: '2',
        VIDEO_URL_ALLOWED_ADDRESSES: `127.0.0.1:${hostPort}`,
        WS_MAX_BUFFERED_MB: '0.25',
      },
    });
    api = new VideoApi(server.url);
  });

  after(async () => {
    for (const timer of slowTimers) clearInterval(timer);
    await server?.close();
    await closeServer(canary);
    await closeServer(host);
    await removeDir(work);
  });

  it('downloads a video from an allowed host and owns the file until the close', async () => {
    const started = await expectJson<{ session_id: string; video_info: { total_frames: number } }>(
      await api.start({ video_url: `http://127.0.0.1:${hostPort}/clip.mp4` }),
    );
    assert.equal(started.video_info.total_frames, 4);
    assert.equal((await readdir(uploads)).length, 1);
    await expectJson(await api.close(started.session_id));
    await assertClean('download');
  });

  it('row 1: refuses loopback, private, link-local and metadata addresses (400 url_not_allowed)', async () => {
    for (const url of [
      'http://169.254.169.254/latest/meta-data/',
      `http://127.0.0.1:${canaryPort}/`,
      `http://127.1:${canaryPort}/`,
      `http://0x7f.1:${canaryPort}/`,
      `http://2130706433:${canaryPort}/`,
      `http://[::ffff:127.0.0.1]:${canaryPort}/`,
      `http://[::1]:${canaryPort}/`,
      'http://[fe80::1]/',
      `http://localhost:${canaryPort}/`,
      'http://10.0.0.1/',
      'http://172.16.0.1/',
      'http://192.168.1.1/',
      'http://100.64.0.1/',
      'http://0.0.0.0/',
    ]) {
      await expectApiError(await api.start({ video_url: url }), 400, 'url_not_allowed', /./);
    }
    await assertClean('row 1');
  });

  it('row 2: re-validates every redirect hop and bounds the redirects', async () => {
    const hop = (route: string) => api.start({ video_url: `http://127.0.0.1:${hostPort}${route}` });
    await expectApiError(await hop('/to-canary'), 400, 'url_not_allowed', /not allowed/);
    await expectApiError(await hop('/to-metadata'), 400, 'url_not_allowed', /not allowed/);
    await expectApiError(await hop('/to-file'), 400, 'unsupported_scheme', /file:/);
    await expectApiError(await hop('/loop'), 400, 'url_not_allowed', /redirects more than 2/);
    await assertClean('row 2');
  });

  it('row 3: refuses URL parser tricks (400)', async () => {
    for (const url of [
      `http://127.0.0.1:${canaryPort}\\@example.com/`,
      `http://user:secret@127.0.0.1:${hostPort}/clip.mp4`,
      `http://example.com@127.0.0.1:${canaryPort}/`,
      // Trailing dot (an IPv4 literal; names are judged by the addresses they resolve to).
      `http://127.0.0.1.:${canaryPort}/`,
      'http://exa mple.com/',
      '//example.com/clip.mp4',
    ]) {
      await expectApiError(await api.start({ video_url: url }), 400, 'url_not_allowed');
    }
    await assertClean('row 3');
  });

  it('row 4: refuses other schemes (400 unsupported_scheme) and playlists (422)', async () => {
    for (const url of [
      'file:///etc/passwd',
      'ftp://example.com/clip.mp4',
      'gopher://example.com/',
      'data:video/mp4;base64,AAAA',
      'concat:/etc/passwd|/etc/hosts',
      'javascript:alert(1)',
    ]) {
      await expectApiError(await api.start({ video_url: url }), 400, 'unsupported_scheme');
    }
    await expectApiError(
      await api.start({ video_url: `http://127.0.0.1:${hostPort}/playlist.m3u8` }),
      422,
      'invalid_video',
      /container format hls is not accepted/,
    );
    const playlist = await readFile(await writeHlsPlaylist(work, 'file:///etc/passwd', 'p2.m3u8'));
    await expectApiError(
      await api.start({ video_base64: playlist.toString('base64') }),
      422,
      'invalid_video',
      /hls is not accepted/,
    );
    await assertClean('row 4');
  });

  it('row 5: stops unbounded downloads (413 at MAX_UPLOAD_SIZE_MB, 504 at the deadline)', async () => {
    const from = (route: string) =>
      api.start({ video_url: `http://127.0.0.1:${hostPort}${route}` });
    await expectApiError(await from('/endless'), 413, 'payload_too_large', /MAX_UPLOAD_SIZE_MB/);
    await expectApiError(await from('/huge-length'), 413, 'payload_too_large');
    const started = Date.now();
    await expectApiError(await from('/slow'), 504, 'download_timeout', /within 2 s/);
    assert.ok(Date.now() - started < 10_000);
    await assertClean('row 5');
  });

  it('row 6: refuses video_path traversal and escapes (403 path_not_allowed)', async () => {
    await symlink('/etc', path.join(root, 'escape'));
    await symlink('/etc/passwd', path.join(root, 'passwd.mp4'));
    for (const videoPath of [
      '../../etc/passwd',
      `${root}/../../../etc/passwd`,
      '/etc/passwd',
      '%2e%2e/%2e%2e/etc/passwd',
      `${root}/%2e%2e/clip.mp4`,
      `${clip.file}\u0000.txt`,
      path.join(root, 'escape', 'passwd'),
      path.join(root, 'passwd.mp4'),
      root,
    ]) {
      const message = await expectApiError(
        await api.start({ video_path: videoPath }),
        403,
        'path_not_allowed',
      );
      assert.ok(!message.includes('/etc'), `no path in "${message}"`);
    }
    // Inside the root: relative to it, or absolute.
    const relative = await expectJson<{ session_id: string }>(
      await api.start({ video_path: 'clip.mp4' }),
    );
    await expectJson(await api.close(relative.session_id));
    await assertClean('row 6');
  });

  it('row 10: refuses hostile videos before any device work (422)', async () => {
    const tasksBefore = Object.values(server.models.videoSessions?.tasksRun() ?? {});
    const cases: [string, string, RegExp][] = [
      [await writeZeroFrameAvi(work), 'no_decodable_frames', /no frames/],
      [await writeStreamlessMp4(work), 'no_decodable_frames', /no video stream/],
      [await writeFrameCountLieAvi(work, 2 ** 31), 'video_limits_exceeded', /2147483648 frames/],
      [await writeHugeDeclaredMkv(work, 16384), 'video_limits_exceeded', /16384x16384/],
      [await writeLongDeclaredMkv(work, 3 * 3600), 'video_limits_exceeded', /10801 s/],
      [await writeMoovlessMp4(work), 'invalid_video', /not a video this server can read/],
      [await writeBrokenMoovMp4(work), 'no_decodable_frames', /no video stream/],
      [await writeUnknownCodecAvi(work), 'no_decodable_frames', /codec/],
      [await writeGarbage(work), 'invalid_video', /not a video/],
    ];
    for (const [file, code, pattern] of cases) {
      const bytes = await readFile(file);
      await expectApiError(
        await api.start({ video_base64: bytes.toString('base64') }),
        422,
        code,
        pattern,
      );
    }
    await expectApiError(await api.start({ video_base64: 'not base64!' }), 400, 'invalid_base64');
    assert.deepEqual(
      Object.values(server.models.videoSessions?.tasksRun() ?? {}),
      tasksBefore,
      'no model work ran',
    );
    await assertClean('row 10');

    // A 1-frame video is a video.
    const one = await writeVideo(root, 'mkv-ffv1', { frames: 1 }, 'one');
    const id = await api.startPath(one.file);
    await api.click(id, 0, 0.5, 0.5);
    const single = await expectJson<{ total_frames: number }>(await api.propagate(id, {}));
    assert.equal(single.total_frames, 1);
    await expectJson(await api.close(id));
    await assertClean('row 10, one frame');
  });

  it('rows 7 and 19 for uploads: malformed (400), too large (413), too many fields (400)', async () => {
    const post = (body: FormData | string, headers: Record<string, string> = {}) =>
      fetch(`${server.url}/api/v1/video/session/start`, { method: 'POST', body, headers });
    const big = new FormData();
    big.append('video', new Blob([Buffer.alloc(1024 * 1024 + 1)]), 'big.mp4');
    await expectApiError(await post(big), 413, 'payload_too_large', /1 MB/);
    await expectApiError(
      await post('--x\r\nContent-Disposition: form-data; name="video"; filename="a"\r\n\r\nabc', {
        'content-type': 'multipart/form-data; boundary=x',
      }),
      400,
      'invalid_request',
      /malformed/,
    );
    await expectApiError(
      await post('garbage', { 'content-type': 'multipart/form-data' }),
      400,
      'invalid_request',
      /malformed/,
    );
    const fields = new FormData();
    for (let i = 0; i < 10_000; i += 1) fields.append(`f${i}`, 'x');
    await expectApiError(await post(fields), 400, 'invalid_request', /too many form fields/);
    const wrongField = new FormData();
    wrongField.append('file', new Blob([await readFile(clip.file)]), 'clip.mp4');
    await expectApiError(await post(wrongField), 400, 'invalid_request', /"video" field/);
    const unknownField = new FormData();
    unknownField.append('video_url', 'http://example.com/');
    unknownField.append('video', new Blob([await readFile(clip.file)]), 'clip.mp4');
    await expectApiError(await post(unknownField), 400, 'invalid_request', /unknown field/);
    const noFile = new FormData();
    noFile.append('session_id', 'abc');
    await expectApiError(await post(noFile), 400, 'invalid_request', /video file is required/);
    const badGpus = new FormData();
    badGpus.append('gpu_ids', '[0');
    badGpus.append('video', new Blob([await readFile(clip.file)]), 'clip.mp4');
    await expectApiError(await post(badGpus), 400, 'invalid_request', /gpu_ids/);
    const hostile = new FormData();
    hostile.append('video', new Blob([await readFile(await writeGarbage(work))]), 'x.mp4');
    await expectApiError(await post(hostile), 422, 'invalid_video');
    const jsonTooBig = await api.start({ video_base64: 'A'.repeat(2 * 1024 * 1024) });
    await expectApiError(jsonTooBig, 413, 'payload_too_large');
    await assertClean('uploads');
  });

  it('row 11: closes a WebSocket with 1009 on a 200 KB message', async () => {
    const id = await api.startPath(clip.file);
    const ws = new WebSocket(`${server.wsUrl}/ws/propagate/${id}`, { perMessageDeflate: false });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const closed = new Promise<number>((resolve) => ws.once('close', resolve));
    ws.send(Buffer.alloc(200 * 1024, 0x20).toString());
    assert.equal(await closed, 1009);
    await expectJson(await api.close(id));
    await assertClean('row 11');
  });

  it('row 12: a WebSocket client that stops reading is terminated; memory stays flat', async () => {
    const wide = await writeVideo(root, 'mkv-ffv1', { width: 16384, height: 64, frames: 16 }, 'w');
    const id = await api.startPath(wide.file);
    await api.click(id, 0, 0.5, 0.5);
    const rss = process.memoryUsage().rss;
    const ws = new WebSocket(`${server.wsUrl}/ws/propagate/${id}`, { perMessageDeflate: false });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const closed = new Promise<number>((resolve) => ws.once('close', resolve));
    ws.send('{}');
    ws.pause();
    const deadline = Date.now() + 120_000;
    for (;;) {
      const status = await expectJson<{ status: string; frames_processed: number }>(
        await api.status(id),
      );
      if (status.status === 'ready' && status.frames_processed > 1) {
        assert.ok(status.frames_processed < 16, 'terminated before the end of the video');
        break;
      }
      assert.ok(Date.now() < deadline, 'the propagation ended');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const growth = process.memoryUsage().rss - rss;
    assert.ok(growth < 256 * 1024 * 1024, `RSS grew by ${growth} bytes`);
    ws.resume();
    assert.equal(await closed, 1006);
    await expectJson(await api.close(id));
    await assertClean('row 12');
  });

  it('row 13: 429 at MAX_CONCURRENT_SESSIONS in a start loop; memory back to baseline', async () => {
    const ids: string[] = [];
    let refused = 0;
    for (let i = 0; i < 6; i += 1) {
      const response = await api.start({ video_path: clip.file });
      if (response.status === 200) {
        ids.push(((await response.json()) as { session_id: string }).session_id);
      } else {
        assert.equal(response.headers.get('retry-after'), '5');
        await expectApiError(response, 429, 'too_many_sessions');
        refused += 1;
      }
    }
    assert.equal(ids.length, 2);
    assert.equal(refused, 4);
    for (const id of ids) await api.click(id, 0, 0.5, 0.5);
    assert.ok(server.models.liveTrackerBytes() > 0);
    for (const id of ids) await expectJson(await api.close(id));
    await assertClean('row 13');
  });
});

describe('API key and rate limit on the video routes (rows 14, 15)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      env: { REQUIRE_API_KEY: 'true', API_KEYS: 'video-key', RATE_LIMIT_REQUESTS_PER_MINUTE: '12' },
    });
  });
  after(async () => {
    await server?.close();
  });

  it('answers 401 without a key and 429 past the limit, before any video work', async () => {
    const anonymous = new VideoApi(server.url);
    const responses = [
      await anonymous.start({ video_path: '/etc/passwd' }),
      await anonymous.prompt('a', {}),
      await anonymous.propagate('a', {}),
      await anonymous.status('a'),
      await anonymous.removeObject('a', 1),
      await anonymous.reset('a'),
      await anonymous.close('a'),
      await anonymous.list(),
    ];
    for (const response of responses) {
      assert.equal(response.headers.get('www-authenticate'), 'ApiKey');
      await expectApiError(response, 401, 'unauthorized', /missing API key/);
    }
    const keyed = new VideoApi(server.url, { 'X-API-Key': 'video-key' });
    // The model is still loading on this server: with the key, the video routes say so.
    await expectApiError(await keyed.list(), 503, 'not_ready', /loading/);
    let last: Response | undefined;
    for (let i = 0; i < 12; i += 1) last = await keyed.list();
    assert.ok(last !== undefined);
    assert.ok(Number(last.headers.get('retry-after')) > 0);
    await expectApiError(last, 429, 'rate_limited');
  });
});
