/**
 * HTTP over a raw TCP socket, for what fetch cannot show: a request sent in pieces, headers
 * without a body, bytes Node's parser refuses, interim `100 Continue` answers, and whether the
 * server closed the connection.
 */
import assert from 'node:assert/strict';
import net from 'node:net';

export interface RawResponse {
  status: number;
  /** Lower-case names; a repeated header keeps its last value. */
  headers: Record<string, string>;
  body: string;
}

/** A client socket that records everything the server sends and when it closed. */
export class RawConnection {
  private received = Buffer.alloc(0);
  private closedAt: number | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.wake();
    });
    // A reset is one way for the server to close; the test looks at what arrived before it.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedAt = Date.now();
      this.wake();
    });
  }

  /** Connects to the host and port of `url`, from `localAddress` when given. */
  static open(url: string, localAddress?: string): Promise<RawConnection> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: hostname, port: Number(port), localAddress });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** True once the server closed (or reset) the connection. */
  get closed(): boolean {
    return this.closedAt !== undefined;
  }

  get text(): string {
    return this.received.toString('latin1');
  }

  /** The complete responses received so far, interim (1xx) ones included, in order. */
  responses(): RawResponse[] {
    return parseResponses(this.received).responses;
  }

  /** Waits until `probe` holds (checked on every arrival); throws after `ms` naming `what`. */
  async until(probe: () => boolean, ms: number, what: string): Promise<void> {
    if (probe()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; got: ${this.text}`));
      }, ms);
      const check = (): void => {
        if (!probe()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  /** Waits for `count` complete responses. */
  async nextResponses(count: number, ms = 5000): Promise<RawResponse[]> {
    await this.until(() => this.responses().length >= count, ms, `${count} response(s)`);
    return this.responses();
  }

  /** Waits for the server to close the connection. */
  async untilClosed(ms = 5000): Promise<void> {
    await this.until(() => this.closed, ms, 'the server to close the connection');
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/** Splits `data` into complete responses (bodies by Content-Length; 1xx have none). */
export function parseResponses(data: Buffer): { responses: RawResponse[]; rest: Buffer } {
  const responses: RawResponse[] = [];
  let rest = data;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...lines] = rest.subarray(0, end).toString('latin1').split('\r\n');
    const match = /^HTTP\/1\.1 (\d{3})/.exec(statusLine);
    assert.ok(match, `a status line, got ${JSON.stringify(statusLine)}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const status = Number(match[1]);
    const length = status < 200 ? 0 : Number(headers['content-length'] ?? '0');
    const bodyStart = end + 4;
    if (rest.length < bodyStart + length) break;
    const body = rest.subarray(bodyStart, bodyStart + length).toString('utf8');
    responses.push({ status, headers, body });
    rest = rest.subarray(bodyStart + length);
  }
  return { responses, rest };
}

/** Request ids the server generates (request-context.ts: randomUUID). */
export const GENERATED_REQUEST_ID =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * Asserts the SPEC error shape on a raw response: `status`, JSON of exactly {error: {code,
 * message}} with `code`, a generated X-Request-Id, Connection: close. Returns the message.
 */
export function expectRawApiError(response: RawResponse, status: number, code: string): string {
  assert.equal(response.status, status, `status of ${response.body}`);
  assert.equal(response.headers['content-type'], 'application/json; charset=utf-8');
  assert.match(response.headers['x-request-id'] ?? '', GENERATED_REQUEST_ID);
  assert.equal(response.headers.connection, 'close');
  const body = JSON.parse(response.body) as { error: { code: string; message: string } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error), ['code', 'message']);
  assert.equal(body.error.code, code, `code of ${response.body}`);
  return body.error.message;
}

/** JSON log lines captured from a stream (test/helpers/server.ts `logStream`). */
export function parseLogLines(chunks: readonly string[]): Record<string, unknown>[] {
  return chunks
    .join('')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
