/**
 * Request bodies (issue 7, SECURITY.md row 7 and the body half of row 19): corrupt compressed
 * bodies are a 400, unknown encodings a 415; a declared Content-Length over the limit is a 413
 * before the body is read, with or without `Expect: 100-continue` (a client that asked is
 * never told to continue), and the connection is closed so the unread body is never parsed as
 * a request. Over real sockets; after each refusal, no upload file and no open connection.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { PassThrough } from 'node:stream';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { RawConnection, expectRawApiError, parseLogLines } from '../helpers/raw-http';
import {
  expectApiError,
  postJson,
  startTestServer,
  waitFor,
  type TestServer,
} from '../helpers/server';
import { makeTempDir, removeDir } from '../helpers/videos';

const SEGMENT = '/api/v1/image/segment';
const START = '/api/v1/video/session/start';
const KEY = 'bodies-test-key-0123456789';
const MIB = 1024 * 1024;
/** Limits of the server under test (small, so a declared size just over them is cheap). */
const JSON_LIMIT_MB = 1;
const UPLOAD_LIMIT_MB = 2;
/** body-limits.ts MULTIPART_OVERHEAD_BYTES: room for the form around the file. */
const MULTIPART_OVERHEAD = MIB;

describe('request bodies', () => {
  let server: TestServer;
  let uploads: string;
  const logChunks: string[] = [];

  before(async () => {
    uploads = await makeTempDir('sam3-bodies-uploads-');
    const logStream = new PassThrough();
    logStream.on('data', (chunk: Buffer) => logChunks.push(chunk.toString('utf8')));
    server = await startTestServer({
      env: {
        REQUIRE_API_KEY: 'true',
        API_KEYS: KEY,
        RATE_LIMIT_ENABLED: 'false',
        MAX_JSON_BODY_MB: String(JSON_LIMIT_MB),
        MAX_UPLOAD_SIZE_MB: String(UPLOAD_LIMIT_MB),
        UPLOAD_DIR: uploads,
      },
      logStream,
    });
  });
  after(async () => {
    await server.close();
    await removeDir(uploads);
  });

  /** No upload file left behind. */
  async function assertNoUploads(where: string): Promise<void> {
    assert.deepEqual(await readdir(uploads), [], `${where}: no file in UPLOAD_DIR`);
  }

  const connectionCount = (): Promise<number> =>
    new Promise((resolve, reject) =>
      server.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
    );
  /** Server-side connections before the raw socket of the running test was opened. */
  let baseline = 0;
  /** A raw connection, after noting how many the server held (fetch's pool keeps some). */
  async function openRaw(): Promise<RawConnection> {
    baseline = await connectionCount();
    return RawConnection.open(server.url);
  }

  /** Nothing left behind by a raw-socket test: no upload file, its connection released. */
  async function assertClean(where: string): Promise<void> {
    await assertNoUploads(where);
    await waitFor(
      async () => (await connectionCount()) <= baseline,
      2000,
      `${where}: the server released the connection`,
    );
  }

  /** The log lines of one request id. */
  function linesOf(requestId: string): Record<string, unknown>[] {
    return parseLogLines(logChunks).filter((line) => line.requestId === requestId);
  }

  const head = (
    path: string,
    contentType: string,
    length: number,
    extra: Record<string, string> = {},
  ): string =>
    `POST ${path} HTTP/1.1\r\nHost: test\r\nX-API-Key: ${KEY}\r\n` +
    `Content-Type: ${contentType}\r\nContent-Length: ${length}\r\n` +
    Object.entries(extra)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('') +
    '\r\n';

  it('answers 400 invalid_request (not 500) for corrupt gzip, deflate and br bodies', async () => {
    const good = Buffer.from(JSON.stringify({ image: 'x', prompts: [] }));
    const bodies: [string, Buffer][] = [
      ['gzip', Buffer.from('this is not gzip data at all')],
      ['gzip', gzipSync(good).subarray(0, 12)], // truncated
      ['deflate', Buffer.from('not deflate either')],
      ['br', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])],
      // A valid stream with corrupt bytes in the middle (CRC/format error, not truncation).
      ['gzip', Buffer.concat([gzipSync(good).subarray(0, 10), Buffer.alloc(40, 0xaa)])],
    ];
    for (const [encoding, body] of bodies) {
      const response = await postJson(`${server.url}${SEGMENT}`, body, {
        'content-encoding': encoding,
        'x-api-key': KEY,
      });
      const requestId = response.headers.get('x-request-id') ?? '';
      await expectApiError(response, 400, 'invalid_request', /could not be decompressed/);
      // Logged as a refusal: no stack, nothing at error level.
      const lines = linesOf(requestId);
      assert.ok(lines.length >= 1, `${encoding}: logged`);
      for (const line of lines) {
        assert.notEqual(line.level, 'error', `${encoding}: ${JSON.stringify(line)}`);
        assert.doesNotMatch(JSON.stringify(line), /"stack"|\bat .+:\d+:\d+/, encoding);
      }
    }
    // The same body uncompressed still reaches validation (the server is fine).
    await expectApiError(
      await postJson(`${server.url}${SEGMENT}`, Buffer.from('{}'), { 'x-api-key': KEY }),
      400,
      'invalid_request',
    );
    await assertNoUploads('corrupt bodies');
  });

  it('answers 415 unsupported_media for an unsupported Content-Encoding', async () => {
    for (const encoding of ['compress', 'zstd-x', 'gzip, br']) {
      const response = await postJson(`${server.url}${SEGMENT}`, Buffer.from('{}'), {
        'content-encoding': encoding,
        'x-api-key': KEY,
      });
      await expectApiError(response, 415, 'unsupported_media', /unsupported Content-Encoding/);
    }
    // Supported encodings of a valid body reach validation (400 for the empty object).
    for (const [encoding, body] of [
      ['gzip', gzipSync('{}')],
      ['deflate', deflateSync('{}')],
      ['br', brotliCompressSync('{}')],
    ] as const) {
      const response = await postJson(`${server.url}${SEGMENT}`, body, {
        'content-encoding': encoding,
        'x-api-key': KEY,
      });
      await expectApiError(response, 400, 'invalid_request', /image/);
    }
    await assertNoUploads('unsupported encodings');
  });

  it('answers an oversized Expect: 100-continue request with 413 before any body is sent', async () => {
    const connection = await openRaw();
    const started = Date.now();
    // Headers only: a 200 MB body is declared, and not a byte of it is ever sent.
    connection.write(head(SEGMENT, 'application/json', 200 * MIB, { Expect: '100-continue' }));
    await connection.untilClosed();
    const responses = connection.responses();
    assert.deepEqual(
      responses.map((response) => response.status),
      [413],
      'one 413 and no 100 Continue',
    );
    const message = expectRawApiError(responses[0], 413, 'payload_too_large');
    assert.match(message, new RegExp(`larger than ${JSON_LIMIT_MB} MB \\(MAX_JSON_BODY_MB\\)`));
    assert.ok(Date.now() - started < 2000, 'answered at once, not after a timeout');
    assert.equal(connection.text.includes('100 Continue'), false);
    await assertClean('expect 413');
  });

  it('answers an Expect: 100-continue request refused by the API key with 401, no 100', async () => {
    const connection = await openRaw();
    connection.write(
      `POST ${SEGMENT} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n` +
        'Content-Length: 100\r\nExpect: 100-continue\r\n\r\n',
    );
    await connection.untilClosed();
    assert.deepEqual(
      connection.responses().map((response) => response.status),
      [401],
    );
    await assertClean('expect 401');
  });

  it('tells an Expect: 100-continue request within the limit to continue, then serves it', async () => {
    const connection = await openRaw();
    const body = '{}';
    connection.write(
      head(SEGMENT, 'application/json', body.length, {
        Expect: '100-continue',
        Connection: 'close',
      }),
    );
    const [interim] = await connection.nextResponses(1);
    assert.equal(interim.status, 100);
    // Only now does the body go out; the app reads and validates it.
    connection.write(body);
    await connection.untilClosed();
    const statuses = connection.responses().map((response) => response.status);
    assert.deepEqual(statuses, [100, 400]);
    assert.match(connection.responses()[1].body, /"code":"invalid_request"/);
    await assertClean('expect continue');
  });

  it('answers 413 at once to a multipart upload declaring more than MAX_UPLOAD_SIZE_MB', async () => {
    const connection = await openRaw();
    const started = Date.now();
    const declared = UPLOAD_LIMIT_MB * MIB + MULTIPART_OVERHEAD + 1;
    connection.write(head(START, 'multipart/form-data; boundary=XyZ', declared));
    // A few bytes of the form, then nothing more.
    connection.write('--XyZ\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n');
    await connection.untilClosed();
    const responses = connection.responses();
    assert.equal(responses.length, 1);
    const message = expectRawApiError(responses[0], 413, 'payload_too_large');
    assert.match(message, new RegExp(`larger than ${UPLOAD_LIMIT_MB} MB \\(MAX_UPLOAD_SIZE_MB\\)`));
    assert.ok(Date.now() - started < 2000, 'answered at once');
    await assertClean('multipart 413');
  });

  it('lets a multipart upload declaring exactly the limit through to the route', async () => {
    const connection = await openRaw();
    const declared = UPLOAD_LIMIT_MB * MIB + MULTIPART_OVERHEAD;
    connection.write(head(START, 'multipart/form-data; boundary=XyZ', declared));
    // Not refused on its size: the route answers (video sessions are not loaded: 503).
    const [response] = await connection.nextResponses(1);
    expectRawApiError(response, 503, 'not_ready');
    connection.destroy();
    await assertClean('multipart at the limit');
  });

  it('closes the connection after a 413, so the unread body is never parsed as a request', async () => {
    const connection = await openRaw();
    // The "body" is a second request; were it read as one, a second response would follow.
    const smuggled = `GET /health HTTP/1.1\r\nHost: test\r\nX-API-Key: ${KEY}\r\n\r\n`;
    connection.write(head(SEGMENT, 'application/json', JSON_LIMIT_MB * MIB + 1) + smuggled);
    await connection.untilClosed();
    const responses = connection.responses();
    assert.deepEqual(
      responses.map((response) => response.status),
      [413],
    );
    expectRawApiError(responses[0], 413, 'payload_too_large');
    await assertClean('413 then close');
  });

  it('still reads a JSON body declaring exactly MAX_JSON_BODY_MB (refused by validation)', async () => {
    const body = `{"image":"${'A'.repeat(JSON_LIMIT_MB * MIB - 12)}"}`;
    assert.equal(Buffer.byteLength(body), JSON_LIMIT_MB * MIB);
    const response = await postJson(`${server.url}${SEGMENT}`, body, { 'x-api-key': KEY });
    await expectApiError(response, 400, 'invalid_request');
    await assertNoUploads('json at the limit');
  });
});
