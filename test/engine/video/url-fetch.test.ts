/**
 * downloadVideo against real sockets (SECURITY.md rows 1-5): a fixture HTTP(S) server on
 * 127.0.0.1 exempted by address:port, and a canary server on another loopback port that must
 * see no connection at all for any refused URL, whatever its spelling or redirect.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { VideoInputError } from '../../../src/engine/video/errors';
import {
  AddressPolicy,
  downloadVideo,
  isGlobalAddress,
  parseVideoUrl,
  type DownloadLimits,
} from '../../../src/engine/video/url-fetch';
import { makeTempDir, removeDir } from '../../helpers/videos';

const BODY = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256));
const INTERNAL_SPELLINGS = ['127.0.0.1', '::1', '169.254', '7f00', '2130706433'];

interface Fixture {
  port: number;
  /** Requests per path (with query). */
  requests: Map<string, number>;
  /** Sockets the server has open now. */
  openSockets: Set<Socket>;
  close(): Promise<void>;
}

function listen(server: http.Server | https.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function tracked(server: http.Server | https.Server, openSockets: Set<Socket>): void {
  server.on('connection', (socket: Socket) => {
    openSockets.add(socket);
    socket.on('close', () => openSockets.delete(socket));
  });
}

function closeServer(server: http.Server | https.Server, sockets: Set<Socket>): Promise<void> {
  for (const socket of sockets) socket.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** The routes both fixtures serve; `self` is the fixture's own origin. */
function routes(self: () => string, timers: Set<NodeJS.Timeout>): http.RequestListener {
  return (request, response) => {
    const url = new URL(request.url ?? '/', 'http://fixture');
    const to = url.searchParams.get('to');
    const chain = /^\/chain\/(\d+)$/.exec(url.pathname);
    if (url.pathname === '/video' || url.pathname === '/downgraded') {
      response.writeHead(200, { 'content-type': 'video/mp4', 'content-length': BODY.length });
      response.end(BODY);
    } else if (url.pathname === '/redirect' && to !== null) {
      response.writeHead(302, { location: to });
      response.end();
    } else if (chain !== null) {
      const left = Number(chain[1]);
      response.writeHead(302, { location: left === 0 ? '/video' : `/chain/${left - 1}` });
      response.end();
    } else if (url.pathname === '/to-http') {
      response.writeHead(302, { location: self().replace('https:', 'http:') + '/downgraded' });
      response.end();
    } else if (url.pathname === '/endless') {
      response.writeHead(200, { 'content-type': 'video/mp4' }); // chunked, no length
      const chunk = Buffer.alloc(1024, 1);
      const pump = (): void => {
        while (response.write(chunk));
      };
      response.on('drain', pump);
      pump();
    } else if (url.pathname === '/huge-declared') {
      response.writeHead(200, { 'content-length': String(10 ** 9) });
      response.write(Buffer.alloc(100));
    } else if (url.pathname === '/short') {
      response.writeHead(200, { 'content-length': '5000' });
      response.write(Buffer.alloc(100), () => request.socket.destroy());
    } else if (url.pathname === '/drip') {
      response.writeHead(200, { 'content-type': 'video/mp4' });
      const timer = setInterval(() => response.write('x'), 100);
      timers.add(timer);
      response.on('close', () => clearInterval(timer));
    } else if (url.pathname === '/no-headers') {
      // never answers
    } else {
      response.writeHead(404);
      response.end();
    }
  };
}

async function startFixture(tls?: { key: Buffer; cert: Buffer }): Promise<Fixture> {
  const requests = new Map<string, number>();
  const openSockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let port = 0;
  const origin = (): string => `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const handler = routes(origin, timers);
  const counting: http.RequestListener = (request, response) => {
    requests.set(request.url ?? '', (requests.get(request.url ?? '') ?? 0) + 1);
    handler(request, response);
  };
  const server = tls ? https.createServer(tls, counting) : http.createServer(counting);
  tracked(server, openSockets);
  port = await listen(server, '127.0.0.1');
  return {
    port,
    requests,
    openSockets,
    close: async () => {
      for (const timer of timers) clearInterval(timer);
      await closeServer(server, openSockets);
    },
  };
}

interface Canary {
  port: number;
  connections: number;
  close(): Promise<void>;
}

/** Listens on every loopback address (IPv6 dual-stack when the machine has it). */
async function startCanary(): Promise<Canary> {
  const sockets = new Set<Socket>();
  const canary: Canary = { port: 0, connections: 0, close: async () => undefined };
  const server = http.createServer((_request, response) => response.end('canary'));
  server.on('connection', () => (canary.connections += 1));
  tracked(server, sockets);
  try {
    canary.port = await listen(server, '::');
  } catch {
    canary.port = await listen(server, '0.0.0.0');
  }
  canary.close = () => closeServer(server, sockets);
  return canary;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

function videoError(code: string, message: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof VideoInputError, `expected a VideoInputError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    for (const spelling of INTERNAL_SPELLINGS) {
      assert.ok(!error.message.includes(spelling), `"${error.message}" names an address`);
    }
    return true;
  };
}

describe('downloadVideo', () => {
  let dir: string;
  let fixture: Fixture;
  let secure: Fixture;
  let canary: Canary;
  let ca: Buffer;
  let limits: DownloadLimits;
  let counter = 0;
  const dest = (): string => path.join(dir, `download-${(counter += 1)}.bin`);

  before(async () => {
    dir = await makeTempDir('sam3-url-test-');
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    await promisify(execFile)('openssl', [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'],
      ...['-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'],
      ...['-addext', 'subjectAltName=IP:127.0.0.1'],
    ]);
    ca = await readFile(cert);
    fixture = await startFixture();
    secure = await startFixture({ key: await readFile(key), cert: ca });
    canary = await startCanary();
    limits = {
      maxBytes: 10_000,
      timeoutMs: 5000,
      maxRedirects: 3,
      allowedAddresses: [`127.0.0.1:${fixture.port}`, `127.0.0.1:${secure.port}`],
    };
  });
  beforeEach(() => {
    fixture.requests.clear();
  });
  after(async () => {
    await fixture?.close();
    await secure?.close();
    await canary?.close();
    await removeDir(dir);
  });

  it('downloads from an allowed address into a new 0600 file', async () => {
    const file = dest();
    const result = await downloadVideo(`http://127.0.0.1:${fixture.port}/video`, file, limits);
    assert.deepEqual(result, { bytes: 3000, redirects: 0, contentType: 'video/mp4' });
    assert.ok((await readFile(file)).equals(BODY));
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  it('follows up to maxRedirects redirects and refuses one more', async () => {
    const ok = await downloadVideo(`http://127.0.0.1:${fixture.port}/chain/2`, dest(), limits);
    assert.equal(ok.redirects, 3);
    const file = dest();
    await assert.rejects(
      downloadVideo(`http://127.0.0.1:${fixture.port}/chain/3`, file, limits),
      videoError('url_not_allowed', /^the URL redirects more than 3 times$/),
    );
    assert.equal(fixture.requests.get('/video'), 1, 'only the first chain reached the video');
    assert.equal(await exists(file), false);
  });

  it('downloads over https with the given CA, and refuses an unknown certificate', async () => {
    const url = `https://127.0.0.1:${secure.port}/video`;
    const result = await downloadVideo(url, dest(), limits, { ca });
    assert.equal(result.bytes, 3000);
    await assert.rejects(
      downloadVideo(url, dest(), limits),
      videoError('download_failed', /^the video host's TLS certificate was not accepted$/),
    );
  });

  describe('refuses internal addresses in every spelling, the canary seeing nothing', () => {
    const spellings = (port: number): string[] => [
      `http://127.0.0.1:${port}/`,
      `http://127.1:${port}/`,
      `http://0x7f.1:${port}/`,
      `http://0x7f000001:${port}/`,
      `http://2130706433:${port}/`,
      `http://0177.0.0.1:${port}/`,
      `http://127.0.0.1.:${port}/`,
      `http://0.0.0.0:${port}/`,
      `http://0:${port}/`,
      `http://localhost:${port}/`,
      `http://localhost.:${port}/`,
      `http://LOCALHOST:${port}/`,
      `http://[::1]:${port}/`,
      `http://[::]:${port}/`,
      `http://[::ffff:127.0.0.1]:${port}/`,
      `http://[::ffff:7f00:1]:${port}/`,
      `http://[0:0:0:0:0:ffff:127.0.0.1]:${port}/`,
      `http://[::127.0.0.1]:${port}/`,
      `http://[64:ff9b::7f00:1]:${port}/`,
      `https://127.0.0.1:${port}/`,
    ];
    it('direct URLs to the canary', async () => {
      for (const url of spellings(canary.port)) {
        await assert.rejects(
          downloadVideo(url, dest(), limits),
          videoError('url_not_allowed', /^the URL points at an address that is not allowed/),
          url,
        );
      }
      assert.equal(canary.connections, 0);
    });

    it('redirects from the allowed fixture to the canary', async () => {
      for (const target of spellings(canary.port)) {
        const url = `http://127.0.0.1:${fixture.port}/redirect?to=${encodeURIComponent(target)}`;
        await assert.rejects(
          downloadVideo(url, dest(), limits),
          videoError('url_not_allowed', /^the URL points at an address that is not allowed/),
          target,
        );
      }
      assert.equal(canary.connections, 0);
      const sent = [...fixture.requests.values()].reduce((a, b) => a + b, 0);
      assert.equal(sent, spellings(canary.port).length);
    });

    it('private, link-local, metadata, CGNAT, multicast and broadcast ranges', async () => {
      for (const host of [
        '169.254.169.254',
        '10.0.0.1',
        '172.16.5.4',
        '192.168.1.1',
        '100.64.0.1',
        '224.0.0.1',
        '255.255.255.255',
        '[fe80::1]',
        '[fd00:ec2::254]',
        '[fc00::1]',
        '[ff02::1]',
        '[::ffff:10.0.0.1]',
        '[::ffff:169.254.169.254]',
        '[64:ff9b::a9fe:a9fe]',
        '[2002:a00:1::]',
      ]) {
        await assert.rejects(
          downloadVideo(`http://${host}/video.mp4`, dest(), limits),
          videoError('url_not_allowed', /^the URL points at an address that is not allowed/),
          host,
        );
      }
    });

    it('URL parser tricks: credentials, backslashes, spaces', async () => {
      const port = canary.port;
      for (const url of [
        `http://127.0.0.1\\@ok.example:${port}/`,
        `http://ok.example\\@127.0.0.1:${port}/`,
        `http://user:secret@127.0.0.1:${fixture.port}/video`,
        `http://user@127.0.0.1:${fixture.port}/video`,
        `http://127.0.0.1:${fixture.port}/video\tx`,
        ` http://127.0.0.1:${fixture.port}/video`,
        `http://[fe80::1%25lo]:${port}/`,
        '/etc/passwd',
        'not a url',
      ]) {
        await assert.rejects(
          downloadVideo(url, dest(), limits),
          videoError('url_not_allowed', /./),
          url,
        );
      }
      assert.equal(canary.connections, 0);
      assert.equal(fixture.requests.size, 0);
    });

    it('an https -> http hop, even to an allowed address', async () => {
      await assert.rejects(
        downloadVideo(`https://127.0.0.1:${secure.port}/to-http`, dest(), limits, { ca }),
        videoError('url_not_allowed', /^a redirect from https to http is not followed$/),
      );
      assert.equal(fixture.requests.get('/downgraded'), undefined);
    });
  });

  it('refuses other schemes and demuxer protocols with unsupported_scheme', async () => {
    for (const [url, scheme] of [
      ['file:///etc/passwd', 'file'],
      ['FILE:///etc/passwd', 'file'],
      [`ftp://127.0.0.1:${canary.port}/v.mp4`, 'ftp'],
      [`gopher://127.0.0.1:${canary.port}/_GET`, 'gopher'],
      ['data:video/mp4;base64,AAAA', 'data'],
      [`concat:http://127.0.0.1:${canary.port}/a|file:///etc/passwd`, 'concat'],
      ['javascript:alert(1)', 'javascript'],
      [`ws://127.0.0.1:${canary.port}/`, 'ws'],
    ] as const) {
      await assert.rejects(
        downloadVideo(url, dest(), limits),
        videoError(
          'unsupported_scheme',
          new RegExp(
            `^the ${scheme}: scheme is not supported; video_url must be an http or https URL$`,
          ),
        ),
        url,
      );
    }
    const redirect = `http://127.0.0.1:${fixture.port}/redirect?to=${encodeURIComponent('file:///etc/passwd')}`;
    await assert.rejects(
      downloadVideo(redirect, dest(), limits),
      videoError('unsupported_scheme', /^the file: scheme is not supported/),
    );
    assert.equal(canary.connections, 0);
  });

  describe('bounds the download (row 5) and removes the partial file', () => {
    it('an endless chunked body stops at the byte cap', async () => {
      const file = dest();
      await assert.rejects(
        downloadVideo(`http://127.0.0.1:${fixture.port}/endless`, file, limits),
        videoError(
          'payload_too_large',
          /^the video at video_url is larger than 10000 bytes \(MAX_UPLOAD_SIZE_MB\)$/,
        ),
      );
      assert.equal(await exists(file), false);
      await waitFor(() => fixture.openSockets.size === 0, 'the endless connection is closed');
    });

    it('a Content-Length over the cap is refused before the body', async () => {
      const file = dest();
      await assert.rejects(
        downloadVideo(`http://127.0.0.1:${fixture.port}/huge-declared`, file, limits),
        videoError('payload_too_large', /^the video at video_url is larger than 10000 bytes/),
      );
      assert.equal(await exists(file), false);
    });

    it('a body shorter than its Content-Length is a failed download', async () => {
      const file = dest();
      await assert.rejects(
        downloadVideo(`http://127.0.0.1:${fixture.port}/short`, file, limits),
        videoError(
          'download_failed',
          /^the video host closed the connection before the video was complete$/,
        ),
      );
      assert.equal(await exists(file), false);
    });

    it('a 1 byte per 100 ms drip hits the whole-download deadline', async () => {
      const file = dest();
      const started = Date.now();
      await assert.rejects(
        downloadVideo(`http://127.0.0.1:${fixture.port}/drip`, file, {
          ...limits,
          timeoutMs: 1000,
        }),
        videoError('download_timeout', /^the video download did not finish within 1 s$/),
      );
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 1000 && elapsed < 3000, `took ${elapsed} ms`);
      assert.equal(await exists(file), false);
      await waitFor(() => fixture.openSockets.size === 0, 'the drip connection is closed');
    });

    it('a server that never answers hits the deadline too', async () => {
      await assert.rejects(
        downloadVideo(`http://127.0.0.1:${fixture.port}/no-headers`, dest(), {
          ...limits,
          timeoutMs: 300,
        }),
        videoError('download_timeout', /^the video download did not finish within 0.3 s$/),
      );
    });

    it("the caller's abort stops it with the caller's reason", async () => {
      const file = dest();
      const controller = new AbortController();
      const reason = new Error('client went away');
      setTimeout(() => controller.abort(reason), 300);
      await assert.rejects(
        downloadVideo(`http://127.0.0.1:${fixture.port}/drip`, file, limits, {
          signal: controller.signal,
        }),
        (error: unknown) => error === reason,
      );
      assert.equal(await exists(file), false);
    });
  });

  it('other failures are download_failed without an address', async () => {
    await assert.rejects(
      downloadVideo(`http://127.0.0.1:${fixture.port}/missing`, dest(), limits),
      videoError('download_failed', /^the video host answered HTTP 404$/),
    );
    const closed = http.createServer();
    const port = await listen(closed, '127.0.0.1');
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(
      downloadVideo(`http://127.0.0.1:${port}/`, dest(), {
        ...limits,
        allowedAddresses: [`127.0.0.1:${port}`],
      }),
      videoError('download_failed', /^the video host refused the connection$/),
    );
    await assert.rejects(
      downloadVideo('http://no-such-host.invalid/v.mp4', dest(), limits),
      videoError('download_failed', /^the video URL host name could not be resolved$/),
    );
  });
});

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !condition(); i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.ok(condition(), what);
}

describe('address rules', () => {
  it('only global unicast addresses pass, embedded IPv4 judged as IPv4', () => {
    const verdicts = Object.fromEntries(
      [
        '8.8.8.8',
        '1.1.1.1',
        '2606:4700:4700::1111',
        '::ffff:8.8.8.8',
        '64:ff9b::808:808',
        '127.0.0.1',
        '127.255.255.254',
        '10.1.2.3',
        '172.31.255.255',
        '172.32.0.1',
        '192.168.0.1',
        '100.64.0.1',
        '100.128.0.1',
        '169.254.169.254',
        '0.0.0.0',
        '255.255.255.255',
        '224.0.0.251',
        '192.0.2.1',
        '::',
        '::1',
        'fe80::1',
        'fc00::1',
        'fd00:ec2::254',
        'ff02::1',
        '::ffff:127.0.0.1',
        '::127.0.0.1',
        '64:ff9b::7f00:1',
        '64:ff9b::a00:1',
        '2001:db8::1',
        'not-an-ip',
      ].map((address) => [address, isGlobalAddress(address)]),
    );
    assert.deepEqual(verdicts, {
      '8.8.8.8': true,
      '1.1.1.1': true,
      '2606:4700:4700::1111': true,
      '::ffff:8.8.8.8': true,
      '64:ff9b::808:808': true,
      '127.0.0.1': false,
      '127.255.255.254': false,
      '10.1.2.3': false,
      '172.31.255.255': false,
      '172.32.0.1': true,
      '192.168.0.1': false,
      '100.64.0.1': false,
      '100.128.0.1': true,
      '169.254.169.254': false,
      '0.0.0.0': false,
      '255.255.255.255': false,
      '224.0.0.251': false,
      '192.0.2.1': false,
      '::': false,
      '::1': false,
      'fe80::1': false,
      'fc00::1': false,
      'fd00:ec2::254': false,
      'ff02::1': false,
      '::ffff:127.0.0.1': false,
      '::127.0.0.1': false,
      '64:ff9b::7f00:1': false,
      '64:ff9b::a00:1': false,
      '2001:db8::1': false,
      'not-an-ip': false,
    });
  });

  it('exempts exactly the listed addresses and ports', () => {
    const policy = new AddressPolicy(['127.0.0.1:8080', '10.0.0.5', '[::1]:9000']);
    assert.deepEqual(
      [
        policy.allows('127.0.0.1', 8080),
        policy.allows('127.0.0.1', 8081),
        policy.allows('10.0.0.5', 1),
        policy.allows('10.0.0.6', 1),
        policy.allows('::1', 9000),
        policy.allows('0:0:0:0:0:0:0:1', 9000),
        policy.allows('::1', 9001),
        policy.allows('8.8.8.8', 1),
      ],
      [true, false, true, false, true, true, false, true],
    );
    assert.throws(() => new AddressPolicy(['localhost:80']), /is not "ip" or "ip:port"/);
    assert.throws(() => new AddressPolicy(['127.1']), /is not "ip" or "ip:port"/);
  });

  it('parses redirects relative to the current URL', () => {
    const base = new URL('http://example.com/a/b');
    assert.equal(parseVideoUrl('../c.mp4', base).href, 'http://example.com/c.mp4');
    assert.equal(parseVideoUrl('//other.example/v', base).href, 'http://other.example/v');
  });
});
