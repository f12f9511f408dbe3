/**
 * The server's log (issue 7, item 7): one JSON access line per request with its request id,
 * route, status and latency; and no secrets: no API key (header or query string), no image
 * data, no client file path (video_path, an upload's file name) in any line, whatever the
 * request's fate (200, 401, 403, 404, 422). File system errors are logged with their path
 * taken out. With the tiny random bundle and the real addon, so the paths really are resolved
 * and the video really is probed.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { createLogger } from '../../src/logging';
import { errorHandler } from '../../src/server/error-handler';
import { requestContext } from '../../src/server/request-context';
import { syntheticPngBase64 } from '../helpers/images';
import { GENERATED_REQUEST_ID, parseLogLines } from '../helpers/raw-http';
import {
  VideoApi,
  expectApiError,
  expectJson,
  exportTinyBundle,
  postJson,
  startTestServer,
  type TestServer,
} from '../helpers/server';
import { makeTempDir, removeDir, writeVideo } from '../helpers/videos';

const KEY = 'logging-test-key-SECRET-4f1c9a';
const WRONG_KEY = 'wrong-key-SECRET-77aa01';
const QUERY_SECRET = 'query-key-SECRET-b3d2';

describe('the log holds request facts and no secrets', () => {
  let work: string;
  let root: string;
  let uploads: string;
  let server: TestServer;
  let api: VideoApi;
  const logChunks: string[] = [];
  /** Strings that must appear in no log line. */
  const secrets: string[] = [KEY, WRONG_KEY, QUERY_SECRET];

  before(async () => {
    work = await makeTempDir('sam3-logging-');
    root = path.join(work, 'videos-of-SECRET-owner');
    uploads = path.join(work, 'uploads');
    await mkdir(root);
    await mkdir(uploads);
    const bundleDir = await exportTinyBundle();
    const logStream = new PassThrough();
    logStream.on('data', (chunk: Buffer) => logChunks.push(chunk.toString('utf8')));
    server = await startTestServer({
      bundleDir,
      env: {
        REQUIRE_API_KEY: 'true',
        API_KEYS: KEY,
        RATE_LIMIT_ENABLED: 'false',
        VIDEO_PATH_ROOTS: root,
        UPLOAD_DIR: uploads,
      },
      logStream,
    });
    assert.equal(server.engineState.status, 'ready', 'the model loaded');
    api = new VideoApi(server.url, { 'X-API-Key': KEY });
    secrets.push(root, 'videos-of-SECRET-owner');
  });
  after(async () => {
    await server?.close();
    await removeDir(work);
  });

  const logText = (): string => logChunks.join('');

  /** The access line of the response's request id (exactly one). */
  function accessLine(response: Response): Record<string, unknown> {
    const requestId = response.headers.get('x-request-id') ?? '';
    const lines = parseLogLines(logChunks).filter(
      (line) => line.requestId === requestId && typeof line.status === 'number',
    );
    assert.equal(lines.length, 1, `one access line for ${requestId}`);
    return lines[0];
  }

  it('writes one access line per request: request id, method, path, route, status, ms', async () => {
    const response = await fetch(`${server.url}/api/v1/video/session/nope-1/status?x=1`, {
      headers: { 'X-API-Key': KEY, 'X-Request-Id': 'client-chosen-id.1' },
    });
    await expectApiError(response, 404, 'not_found');
    assert.equal(response.headers.get('x-request-id'), 'client-chosen-id.1');
    const line = accessLine(response);
    assert.equal(line.level, 'info');
    assert.equal(line.method, 'GET');
    assert.equal(line.path, '/api/v1/video/session/nope-1/status');
    assert.equal(line.route, '/api/v1/video/session/:id/status');
    assert.equal(line.status, 404);
    assert.equal(typeof line.ms, 'number');
    assert.ok((line.ms as number) >= 0);
    assert.equal(typeof line.timestamp, 'string');

    const unknown = await fetch(`${server.url}/no/such/route`, { headers: { 'X-API-Key': KEY } });
    await expectApiError(unknown, 404, 'not_found');
    assert.match(unknown.headers.get('x-request-id') ?? '', GENERATED_REQUEST_ID);
    assert.equal(accessLine(unknown).route, null);
  });

  it('logs no API key: valid, wrong, or offered in the query string', async () => {
    const ok = await fetch(`${server.url}/api/v1/video/sessions`, {
      headers: { 'X-API-Key': KEY },
    });
    await expectJson(ok);
    assert.equal(accessLine(ok).status, 200);
    const wrong = await fetch(`${server.url}/api/v1/video/sessions`, {
      headers: { 'X-API-Key': WRONG_KEY },
    });
    await expectApiError(wrong, 401, 'unauthorized');
    const query = await fetch(
      `${server.url}/api/v1/video/sessions?api_key=${QUERY_SECRET}&key=${KEY}`,
    );
    await expectApiError(query, 401, 'unauthorized', /query string/);
    assert.equal(accessLine(query).path, '/api/v1/video/sessions');
    // A valid key in the header with a key-like query parameter beside it.
    const both = await fetch(`${server.url}/api/v1/video/sessions?api_key=${QUERY_SECRET}`, {
      headers: { 'X-API-Key': KEY },
    });
    await expectJson(both);
  });

  it('logs no video_path, whether refused, missing, undecodable or served', async () => {
    const outside = '/home/alice-SECRET-person/holiday-SECRET.mp4';
    const missing = path.join(root, 'missing-SECRET-name.mp4');
    const garbage = path.join(root, 'garbage-SECRET-name.mp4');
    await writeFile(garbage, Buffer.alloc(4096, 0x5a));
    const clip = await writeVideo(root, 'mp4-x264rgb', { frames: 4 }, 'clip-SECRET-name');
    secrets.push(outside, 'alice-SECRET-person', 'holiday-SECRET', 'missing-SECRET-name');
    secrets.push('garbage-SECRET-name', 'clip-SECRET-name');

    await expectApiError(await api.start({ video_path: outside }), 403, 'path_not_allowed');
    await expectApiError(await api.start({ video_path: missing }), 404, 'not_found');
    await expectApiError(await api.start({ video_path: garbage }), 422, 'invalid_video');
    const relative = await api.start({ video_path: path.basename(clip.file) });
    const started = await expectJson<{ session_id: string }>(relative);
    assert.equal(accessLine(relative).route, '/api/v1/video/session/start');
    await expectJson(await api.close(started.session_id));
    const absolute = await api.startPath(clip.file);
    await expectJson(await api.close(absolute));
    assert.equal(server.models.sessionCount(), 0);
  });

  it("logs no upload's client file name", async () => {
    const source = path.join(root, 'clip-SECRET-name.mp4');
    const named = path.join(work, 'upload-name-SECRET.mp4');
    await copyFile(source, named);
    secrets.push('upload-name-SECRET');
    const form = new FormData();
    form.append('video', new Blob([await readFile(named)]), path.basename(named));
    const response = await fetch(`${server.url}/api/v1/video/session/start`, {
      method: 'POST',
      body: form,
      headers: { 'X-API-Key': KEY },
    });
    const body = await expectJson<{ session_id: string }>(response);
    await expectJson(await api.close(body.session_id));
  });

  it('logs no image data', async () => {
    const image = await syntheticPngBase64(64, 48, 7);
    // Any 32-character run of the image would be a leak; check a few spread over it.
    for (let start = 0; start + 32 <= image.length; start += Math.floor(image.length / 8)) {
      secrets.push(image.slice(start, start + 32));
    }
    const response = await postJson(
      `${server.url}/api/v1/image/segment`,
      { image, prompts: [{ type: 'text', text: 'shape' }] },
      { 'X-API-Key': KEY },
    );
    await expectJson(response);
    const broken = await postJson(
      `${server.url}/api/v1/image/segment`,
      { image: image.slice(0, 200), prompts: [{ type: 'text', text: 'shape' }] },
      { 'X-API-Key': KEY },
    );
    await expectApiError(broken, 422, 'invalid_image');
  });

  it('has none of the secrets in any line, and every line is JSON with a level', () => {
    const text = logText();
    assert.ok(parseLogLines(logChunks).length > 20, 'the requests above were logged');
    for (const line of parseLogLines(logChunks)) assert.equal(typeof line.level, 'string');
    for (const secret of secrets) {
      assert.equal(text.includes(secret), false, `the log contains ${JSON.stringify(secret)}`);
    }
  });
});

describe('file system errors are logged without their path', () => {
  it('takes the path out of the message and the stack of an internal error', async () => {
    const work = await makeTempDir('sam3-logging-fs-');
    const chunks: string[] = [];
    const stream = new PassThrough();
    stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString('utf8')));
    const logger = createLogger({ level: 'DEBUG', format: 'json', stream });
    const secretFile = path.join(work, 'client-SECRET-file.mp4');
    const app = express();
    app.use(requestContext(logger));
    app.get('/read', async () => {
      await readFile(secretFile);
    });
    app.use(errorHandler(logger));
    const listener = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => listener.once('listening', resolve));
    try {
      const { port } = listener.address() as AddressInfo;
      const response = await fetch(`http://127.0.0.1:${port}/read`);
      await expectApiError(response, 500, 'internal_error', /^internal server error$/);
      const [line] = parseLogLines(chunks).filter((entry) => entry.level === 'error');
      const error = line.error as { message: string; code: string; stack: string };
      assert.equal(error.code, 'ENOENT');
      assert.equal(error.message, "ENOENT: no such file or directory, open '<path>'");
      assert.match(error.stack, /open '<path>'/);
      assert.equal(chunks.join('').includes('client-SECRET-file'), false);
    } finally {
      listener.close();
      await removeDir(work);
    }
  });
});
