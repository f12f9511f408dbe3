/**
 * Connections and Node-level refusals (issue 7, SECURITY.md row 20 and the connection caps):
 * a malformed request, headers over the limit and a request that does not arrive in time are
 * answered in the API's error shape with a request id (not Node's bare text) and logged as
 * one warn line without the client's bytes; connections beyond MAX_CONNECTIONS_PER_ADDRESS
 * are answered 429 and closed, beyond MAX_CONNECTIONS dropped; a slot is free again once its
 * connection closes. Over real sockets; after each test the server holds no connection.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PassThrough } from 'node:stream';
import { RawConnection, expectRawApiError, parseLogLines } from '../helpers/raw-http';
import { startTestServer, waitFor, type TestServer } from '../helpers/server';

const MAX_HEADER_BYTES = 16 * 1024;

function connectionCount(server: TestServer): Promise<number> {
  return new Promise((resolve, reject) =>
    server.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
  );
}

async function assertNoConnections(server: TestServer, where: string): Promise<void> {
  await waitFor(
    async () => (await connectionCount(server)) === 0,
    3000,
    `${where}: the server holds no connection`,
  );
}

/** A server whose JSON log lines are collected. */
async function loggedServer(
  env: Record<string, string>,
): Promise<{ server: TestServer; logs: () => Record<string, unknown>[] }> {
  const chunks: string[] = [];
  const logStream = new PassThrough();
  logStream.on('data', (chunk: Buffer) => chunks.push(chunk.toString('utf8')));
  const server = await startTestServer({ env, logStream });
  return { server, logs: () => parseLogLines(chunks) };
}

describe('Node-level refusals in the error shape (malformed, too large, too slow)', () => {
  let server: TestServer;
  let logs: () => Record<string, unknown>[];

  before(async () => {
    // REQUEST_TIMEOUT_SECONDS=2: headers and the whole request within 2 s.
    ({ server, logs } = await loggedServer({ REQUEST_TIMEOUT_SECONDS: '2' }));
  });
  after(async () => {
    await server.close();
  });

  /** The one warn line logged for `requestId`; it must not contain `secret`. */
  function assertOneWarnLine(requestId: string, reason: RegExp, secret: string): void {
    const lines = logs().filter((line) => line.requestId === requestId);
    assert.equal(lines.length, 1, `one line for ${requestId}: ${JSON.stringify(lines)}`);
    assert.equal(lines[0].level, 'warn');
    assert.match(String(lines[0].reason), reason);
    for (const line of logs()) {
      assert.equal(JSON.stringify(line).includes(secret), false, 'the raw bytes are not logged');
    }
  }

  it('answers a malformed request line with 400 invalid_request, JSON and a request id', async () => {
    const connection = await RawConnection.open(server.url);
    const marker = 'SECRETMARKER';
    connection.write(`GET /\x01${marker} HTTP/1.1\r\nHost: test\r\n\r\n`);
    await connection.untilClosed();
    const responses = connection.responses();
    assert.equal(responses.length, 1);
    const message = expectRawApiError(responses[0], 400, 'invalid_request');
    assert.match(message, /^malformed HTTP request/);
    assert.equal(message.includes(marker), false);
    assertOneWarnLine(responses[0].headers['x-request-id'], /^HPE_/, marker);
    await assertNoConnections(server, 'malformed line');
  });

  it('answers an unknown method and a broken header the same way', async () => {
    for (const request of [
      'BREW /pot HTTP/1.1\r\nHost: test\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: test\r\nBad Header Name: x\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
    ]) {
      const connection = await RawConnection.open(server.url);
      connection.write(request);
      await connection.untilClosed();
      const responses = connection.responses();
      assert.equal(responses.length, 1, request);
      expectRawApiError(responses[0], 400, 'invalid_request');
    }
    await assertNoConnections(server, 'malformed requests');
  });

  it('answers headers over 16 KiB with 431 headers_too_large, JSON and a request id', async () => {
    const connection = await RawConnection.open(server.url);
    const marker = 'HUGEHEADERVALUE';
    const value = marker.repeat(Math.ceil((MAX_HEADER_BYTES + 1) / marker.length));
    connection.write(`GET /health HTTP/1.1\r\nHost: test\r\nX-Filler: ${value}\r\n\r\n`);
    await connection.untilClosed();
    const responses = connection.responses();
    assert.equal(responses.length, 1);
    const message = expectRawApiError(responses[0], 431, 'headers_too_large');
    assert.match(message, /larger than 16384 bytes/);
    assertOneWarnLine(responses[0].headers['x-request-id'], /^HPE_HEADER_OVERFLOW$/, marker);
    await assertNoConnections(server, 'huge headers');
  });

  it('answers headers just under the limit normally', async () => {
    const connection = await RawConnection.open(server.url);
    const value = 'v'.repeat(MAX_HEADER_BYTES - 200);
    connection.write(
      `GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Filler: ${value}\r\n\r\n`,
    );
    const [response] = await connection.nextResponses(1);
    assert.equal(response.status, 200);
    await connection.untilClosed();
  });

  it('answers a request whose headers do not arrive in time with 408 request_timeout', async () => {
    const connection = await RawConnection.open(server.url);
    const started = Date.now();
    const marker = 'SLOWLORISMARKER';
    // Slowloris: part of the headers, then silence.
    connection.write(`GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ${marker}`);
    await connection.untilClosed(6000);
    const elapsed = Date.now() - started;
    const responses = connection.responses();
    assert.equal(responses.length, 1);
    const message = expectRawApiError(responses[0], 408, 'request_timeout');
    assert.match(message, /REQUEST_TIMEOUT_SECONDS/);
    // 2 s allowed, checked every second.
    assert.ok(elapsed >= 1900 && elapsed < 4500, `answered after ${elapsed} ms`);
    assertOneWarnLine(responses[0].headers['x-request-id'], /^ERR_HTTP_REQUEST_TIMEOUT$/, marker);
    await assertNoConnections(server, 'slow headers');
  });

  it('does not let headers trickled a byte at a time extend the deadline (slowloris)', async () => {
    const connection = await RawConnection.open(server.url);
    const started = Date.now();
    const request = 'GET /health HTTP/1.1\r\nHost: test\r\nX-Trickle: ' + 'x'.repeat(100);
    let sent = 0;
    const trickle = setInterval(() => {
      if (connection.closed || sent >= request.length) return;
      connection.write(request[sent]);
      sent += 1;
    }, 200);
    try {
      await connection.untilClosed(6000);
    } finally {
      clearInterval(trickle);
    }
    const elapsed = Date.now() - started;
    expectRawApiError(connection.responses()[0], 408, 'request_timeout');
    assert.ok(elapsed >= 1900 && elapsed < 4500, `answered after ${elapsed} ms`);
    assert.ok(sent < request.length, 'cut off before the headers were complete');
    await assertNoConnections(server, 'trickled headers');
  });

  it('answers a body that stops arriving with 408 once the request time is up', async () => {
    const connection = await RawConnection.open(server.url);
    const started = Date.now();
    connection.write(
      'POST /api/v1/image/segment HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n' +
        'Content-Length: 1000\r\n\r\n{"image": "',
    );
    await connection.untilClosed(6000);
    const elapsed = Date.now() - started;
    const responses = connection.responses();
    assert.equal(responses.length, 1);
    expectRawApiError(responses[0], 408, 'request_timeout');
    assert.ok(elapsed >= 1900 && elapsed < 4500, `answered after ${elapsed} ms`);
    await assertNoConnections(server, 'slow body');
  });

  it('keeps serving after all of them', async () => {
    const response = await fetch(`${server.url}/`);
    assert.equal(response.status, 200);
    await response.arrayBuffer();
  });
});

describe('connection caps', () => {
  describe('MAX_CONNECTIONS_PER_ADDRESS', () => {
    let server: TestServer;
    let logs: () => Record<string, unknown>[];
    const open: RawConnection[] = [];

    before(async () => {
      ({ server, logs } = await loggedServer({
        MAX_CONNECTIONS_PER_ADDRESS: '2',
        MAX_CONNECTIONS: '0',
        RATE_LIMIT_ENABLED: 'false',
      }));
    });
    after(async () => {
      for (const connection of open) connection.destroy();
      await server.close();
    });

    /** Opens a connection and waits until the server has accepted it (its count went up). */
    async function hold(localAddress?: string): Promise<RawConnection> {
      const before = await connectionCount(server);
      const connection = await RawConnection.open(server.url, localAddress);
      open.push(connection);
      await waitFor(
        async () => (await connectionCount(server)) > before,
        2000,
        'the server to accept the connection',
      );
      return connection;
    }

    /** A connection over the cap: answered without sending anything, then closed. */
    async function refusedConnection(): Promise<RawConnection> {
      const connection = await RawConnection.open(server.url);
      open.push(connection);
      await connection.untilClosed();
      return connection;
    }

    it('answers the third connection from one address 429 rate_limited at once, closed', async () => {
      await hold();
      await hold();
      const third = await refusedConnection();
      const responses = third.responses();
      assert.equal(responses.length, 1, 'answered before it sent a byte');
      const message = expectRawApiError(responses[0], 429, 'rate_limited');
      assert.match(message, /at most 2: MAX_CONNECTIONS_PER_ADDRESS/);
      assert.equal(responses[0].headers['retry-after'], '5');
      const lines = logs().filter(
        (line) => line.requestId === responses[0].headers['x-request-id'],
      );
      assert.equal(lines.length, 1);
      assert.equal(lines[0].level, 'warn');
      assert.equal(lines[0].code, 'rate_limited');
      // The refused socket is gone: only the two held ones are open.
      assert.equal(await connectionCount(server), 2);
    });

    it('admits a connection from another address while the first is at its cap', async () => {
      const other = await hold('127.0.0.2');
      other.write('GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n');
      const [response] = await other.nextResponses(1);
      assert.equal(response.status, 200);
      await other.untilClosed();
    });

    it('frees the slot when a connection closes', async () => {
      open[0].destroy();
      await waitFor(async () => (await connectionCount(server)) === 1, 2000, 'one connection');
      const next = await hold();
      next.write('GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n');
      const [response] = await next.nextResponses(1);
      assert.equal(response.status, 200);
      await next.untilClosed();
    });

    it('holds no connection once the clients are gone', async () => {
      for (const connection of open) connection.destroy();
      await assertNoConnections(server, 'per-address cap');
    });
  });

  describe('MAX_CONNECTIONS', () => {
    let server: TestServer;
    let logs: () => Record<string, unknown>[];
    const open: RawConnection[] = [];

    before(async () => {
      ({ server, logs } = await loggedServer({
        MAX_CONNECTIONS: '3',
        MAX_CONNECTIONS_PER_ADDRESS: '0',
      }));
    });
    after(async () => {
      for (const connection of open) connection.destroy();
      await server.close();
    });

    it('drops the connection over the cap unanswered and logs it once', async () => {
      for (let index = 0; index < 3; index += 1) {
        open.push(await RawConnection.open(server.url));
      }
      await waitFor(async () => (await connectionCount(server)) === 3, 2000, 'three connections');
      const fourth = await RawConnection.open(server.url);
      open.push(fourth);
      fourth.write('GET / HTTP/1.1\r\nHost: test\r\n\r\n');
      await fourth.untilClosed();
      assert.equal(fourth.text, '', 'no answer: closed on accept');
      assert.equal(await connectionCount(server), 3);
      const drops = logs().filter((line) => /over MAX_CONNECTIONS$/.test(String(line.message)));
      assert.equal(drops.length, 1);
      assert.equal(drops[0].level, 'warn');
      assert.equal(drops[0].dropped, 1);

      // The held ones are served as usual.
      open[0].write('GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n');
      const [response] = await open[0].nextResponses(1);
      assert.equal(response.status, 200);
      await open[0].untilClosed();
      // A slot is free again.
      await waitFor(async () => (await connectionCount(server)) === 2, 2000, 'two connections');
      const again = await RawConnection.open(server.url);
      open.push(again);
      again.write('GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n');
      const [served] = await again.nextResponses(1);
      assert.equal(served.status, 200);
    });

    it('holds no connection once the clients are gone', async () => {
      for (const connection of open) connection.destroy();
      await assertNoConnections(server, 'global cap');
    });
  });
});
